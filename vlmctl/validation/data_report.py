"""Glue between `vlmctl validate` and the dataset pass, and how its summary is shown.

Kept out of `commands/validate.py` so the command stays thin, and out of `report.py` so the
config-level report keeps its own shape: the dataset summary is an extra `data` object on each
config set in JSON, a table after the findings in text, and nothing in GitHub annotations
(there, row findings say their row in the message, since an annotation has no row field).
Nothing heavy is imported at module level (config-only validate imports this module never).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from vlmctl.errors import Finding
from vlmctl.validation.data_checks import DataCheckOptions, check_data


def add_dataset_pass(cs: Any, findings: list[Finding], opts: DataCheckOptions) -> dict | None:
    """Run the dataset pass for a loaded config set; extend `findings`; return the summary.

    None when the set names no dataset (config checks already warn about that).
    """
    if cs.collator.dataset.path is None:
        return None
    result = check_data(cs, opts)
    # Rows in row order (the report sorts by severity and file only, stably).
    findings += sorted(result.findings, key=lambda f: -1 if f.row is None else f.row)
    return result.summary


def github_ready(findings: Sequence[Finding]) -> list[Finding]:
    """Copies whose message starts with `row N:` (an annotation has no row field), placed at
    the data file and the row's line (or the config's `dataset.path` line) so they attach."""
    out = []
    for f in findings:
        if f.row is not None:
            f = copy.copy(f)
            if not f.message.startswith(f"row {f.row}"):
                f.message = f"row {f.row}: {f.message}"
            at = f.extra.get("at")
            if f.file is None and at:
                f.file, f.line, f.col = at[0], at[1], None
        out.append(f)
    return out


def _fmt(n: Any) -> str:
    if isinstance(n, float) and not n.is_integer():
        return f"{n:,.1f}"
    return f"{int(n):,}" if isinstance(n, (int, float)) else str(n)


def render_summary_text(directory: str, summary: dict, file: TextIO | None = None) -> None:
    """The dataset summary of one set as a small rich table (plain when not a terminal)."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(file=file or sys.stdout, highlight=False, soft_wrap=True)
    console.print(f"[bold]{escape(directory)}[/]: dataset pass")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    model = summary.get("model") or {}
    if model.get("resolved"):
        how = {
            "entry": "model_classes entry",
            "auto": "Auto fallback",
            "remote_code": "remote code",
        }[model["source"]]
        proc = "processor loaded" if model.get("processor_loaded") else "processor NOT loaded"
        remote = " · remote code in use" if model.get("remote_code") else ""
        grid.add_row(
            "model",
            escape(f"{model['model_class']} + {model['processor_class']} ({how}) · {proc}{remote}"),
        )
    ds = summary.get("dataset") or {}
    grid.add_row("dataset", escape(ds.get("description") or "not reachable"))
    rows = summary.get("rows")
    if rows:
        sampled = " (seeded sample)" if rows["sampled"] else ""
        if rows.get("eval_checked"):
            sampled += f" + {_fmt(rows['eval_checked'])} eval rows"
        grid.add_row(
            "rows",
            f"{_fmt(rows['checked'])} checked of {_fmt(rows['total'])}{sampled}"
            f" · {_fmt(rows['with_errors'])} with errors · "
            f"{_fmt(rows['with_warnings_only'])} with warnings only · "
            f"num-proc {rows['num_proc']} · {summary.get('seconds', 0)} s",
        )
    media = summary.get("media")
    if media:
        grid.add_row(
            "media",
            f"{_fmt(media['images'])} images in {_fmt(media['rows_with_images'])} rows · "
            f"{_fmt(media['videos'])} videos in {_fmt(media['rows_with_videos'])} rows "
            "(columns and inline parts)",
        )
    lengths = summary.get("lengths")
    if lengths and lengths.get("total"):
        table = Table(box=None, pad_edge=False, show_edge=False)
        table.add_column("tokens")
        for name in ("min", "median", "p95", "max"):
            table.add_column(name, justify="right")
        for what in ("total", "text", "media"):
            d = lengths.get(what)
            if d:
                table.add_row(what, *(_fmt(d[k]) for k in ("min", "median", "p95", "max")))
        grid.add_row("lengths", table)
    trunc = summary.get("truncation")
    if trunc:
        limit = lengths.get("max_length") if lengths else None
        grid.add_row(
            "max_length",
            f"{limit if limit is not None else 'no limit'} · policy "
            f"{trunc['policy']}: {trunc['over_max_length']} rows over → "
            f"{trunc['dropped_too_long']} dropped, {trunc['cut_text']} text cut, "
            f"{trunc['dropped_media_span']} dropped (media span), "
            f"{trunc['errors']} errors",
        )
    sup = summary.get("supervised")
    if sup:
        est = " (estimated)" if sup["estimated"] else ""
        grid.add_row(
            "supervised",
            f"{_fmt(sup['tokens_per_epoch'])} tokens per epoch{est} · "
            f"{_fmt(sup['rows_kept'])} rows kept · "
            f"{_fmt(sup['rows_without_supervised_tokens'])} rows with none",
        )
    for note in summary.get("skipped") or []:
        grid.add_row("skipped", escape(note))
    console.print(grid)
