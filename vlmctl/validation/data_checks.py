"""Dataset-level `validate`: the config set against the real rows, media and processor.

What runs, in order (each step runs when what it needs is reachable; the others still run):
1. model: which classes and processor load it and why (`models.resolve`, pure);
2. dataset: loaded with the SAME loader as `train` (`data.dataset.load_splits`) but with
   `eval_size` ignored, so row indices are the file's own rows;
3. columns: every column the config uses exists (did-you-mean over the real names); chat
   datasets: the conversation column, role/content keys, roles and media tags;
4. rows (all rows of local data by default, a seeded sample with `--sample N`; hub data
   defaults to a sample): each row goes through `row_to_example` (empty/missing values,
   tag/media counts), videos are probed (too short, undecodable), and with the processor each
   row goes through `VLMCollator.encode_example` — the encode path `train` uses — which
   decodes every image (missing, truncated, not an image) and gives exact token counts, media
   spans and supervised tokens. The truncation policy is applied to each over-long row
   exactly as the collator would (dropped, text cut, error, media span cut);
5. statistics are streamed: per-row lengths are kept as int32 arrays (12 bytes a row) and
   findings are capped per kind, so memory does not grow with the rows' content.

Nothing is written: `datasets` builds its Arrow files in a private temporary folder that is
removed at the end (the user's HF_DATASETS_CACHE, the config folder and the dataset folder
stay untouched), and no `map()` runs. `--num-proc N` checks rows in N forked processes that
inherit the processor; at most 2N chunks are in flight so rows are never all in memory.

This module runs the pass and sums it up; the steps live beside it: `access` (model type,
processor, private datasets cache), `columns` (step 3), `rows` (step 4, one row), `row_pool`
(step 4, many rows, forked), `collect` (step 5), `budget_advice` (what would make rows fit).
"""

from __future__ import annotations

import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmctl.checks.access import load_data, model_section
from vlmctl.checks.collect import Collector, Progress, describe
from vlmctl.checks.columns import column_findings, conversation_findings
from vlmctl.checks.row_pool import run_rows
from vlmctl.checks.rows import RowState
from vlmctl.errors import Finding, VlmctlError
from vlmctl.quiet import quiet_transformers
from vlmctl.runtime import private_datasets_cache

HUB_DEFAULT_SAMPLE = 1000


@dataclass
class DataCheckOptions:
    """How much of the data to check and how."""

    sample: int | None = None  # None: every row (local data) / HUB_DEFAULT_SAMPLE (hub)
    all_rows: bool = False  # force every row, also for hub data
    num_proc: int = 1
    progress: bool = False  # the caller decides (a TTY and the text format)


@dataclass
class DataCheckResult:
    """Findings (with row indices) plus the summary `validate` prints and puts in JSON."""

    findings: list[Finding] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# entry point


def check_data(cs: Any, opts: DataCheckOptions | None = None) -> DataCheckResult:
    """Run every dataset-level check of a loaded config set; never raises for data problems."""
    opts = opts or DataCheckOptions()
    t0 = time.monotonic()
    result = DataCheckResult()
    findings = result.findings
    summary: dict[str, Any] = {"skipped": []}
    result.summary = summary
    summary["model"], res = model_section(cs, findings)
    with private_datasets_cache():
        data, kind = load_data(cs, findings)
        summary["dataset"] = {
            "reachable": data is not None,
            "kind": kind,
            "description": data.description if data is not None else None,
        }
        if data is None:
            summary["skipped"].append("columns and rows: the dataset could not be loaded")
        processor = None
        if res is not None:
            from vlmctl.runtime import locate, try_processor

            processor, problem = try_processor(cs, locate(cs, res))
            if problem is not None:
                findings.append(problem)
                summary["skipped"].append("token lengths and masking: no processor")
            summary["model"]["processor_loaded"] = processor is not None
        else:
            summary["skipped"].append("token lengths and masking: the model does not resolve")
        if data is not None:
            _check_loaded(cs, data, kind, processor, res, opts, result)
        del data
    summary["seconds"] = round(time.monotonic() - t0, 2)
    return result


def _build_collator(cs: Any, data: Any, processor: Any, result: DataCheckResult) -> Any | None:
    """The training collator over this processor, or None with the reason in the result."""
    from vlmctl.runtime import build_collator, model_type_of

    try:
        model_type = model_type_of(cs.model_location(), cs.model.revision)
        with quiet_transformers():
            return build_collator(processor, cs.collator, data.media_dirs, model_type)
    except VlmctlError as exc:
        result.findings.extend(exc.findings)
        result.summary["skipped"].append("token lengths and masking: the collator cannot be built")
        return None


def _sample_size(
    kind: str | None, total: int, opts: DataCheckOptions, findings: list
) -> int | None:
    """How many rows to check: the asked sample, a default sample for big hub data, or all."""
    sample = opts.sample
    if sample is None and kind == "hub" and not opts.all_rows and total > HUB_DEFAULT_SAMPLE:
        sample = HUB_DEFAULT_SAMPLE
        findings.append(
            Finding(
                "info",
                f"hub dataset: checked a seeded sample of {sample} of {total} rows",
                hint="--all checks every row",
                code="rows-sampled",
            )
        )
    return None if opts.all_rows else sample


def _check_loaded(
    cs: Any,
    data: Any,
    kind: str | None,
    processor: Any,
    res: Any,
    opts: DataCheckOptions,
    result: DataCheckResult,
) -> None:
    from vlmctl.data.dataset import iter_rows

    findings, summary = result.findings, result.summary
    ds = data.train
    columns = list(ds.column_names)
    summary["dataset"]["columns"] = columns
    col_findings = column_findings(cs, columns)
    if cs.collator.conversation is not None and not any(
        f.severity == "error" for f in col_findings
    ):
        col_findings += conversation_findings(cs, ds)
    findings += col_findings
    if any(f.severity == "error" for f in col_findings):
        summary["skipped"].append("rows: fix the column mapping first (every row would fail)")
        return

    collator = _build_collator(cs, data, processor, result) if processor is not None else None
    if collator is not None:
        from vlmctl.models.media_tokens import count_media_from_sizes

        count_media_from_sizes(collator)  # ids from image sizes where the arithmetic is exact
    total = len(ds)
    sample = _sample_size(kind, total, opts, findings)
    n_checked = min(sample, total) if sample else total
    col = Collector()
    bar = Progress(
        opts.progress,
        n_checked + (len(data.eval) if data.eval is not None else 0),
        "validating rows",
    )
    state = RowState(cfg=cs.collator, media_dirs=data.media_dirs, collator=collator)
    t_rows = time.monotonic()
    try:
        with quiet_transformers():
            for r in run_rows(state, iter_rows(ds, sample=sample), opts.num_proc):
                if r.fatal:
                    col.fatal = r.fatal
                    break
                col.add(r)
                bar.advance()
            if data.eval is not None and col.fatal is None:
                eval_state = RowState(
                    cfg=cs.collator, media_dirs=data.media_dirs, collator=collator, split="eval"
                )
                for r in run_rows(eval_state, iter_rows(data.eval, sample=sample), opts.num_proc):
                    if r.fatal:
                        col.fatal = r.fatal
                        break
                    col.add(r, stats=False)
                    bar.advance()
    finally:
        bar.close()
    summary["row_pass_seconds"] = round(time.monotonic() - t_rows, 3)
    if col.fatal:
        findings += col.fatal
        summary["skipped"].append("rows: stopped at a problem every row would have")
    findings += col.findings
    findings += col.overflow_findings()
    findings += _media_and_system_notes(cs, col)
    locate_rows(cs, data, findings)
    _summarise(cs, col, collator, total, n_checked, sample, opts, result)


def _row_lines(path: Path, rows: set[int]) -> dict[int, int]:
    """Row index -> the line its record starts on, for CSV/TSV and JSON-lines files."""
    out: dict[int, int] = {}
    if not rows:
        return out
    last = max(rows)
    suffix = path.suffix.lower()
    with open(path, newline="", encoding="utf-8-sig") as f:
        if suffix in (".csv", ".tsv"):
            import csv

            reader = csv.reader(f, delimiter="\t" if suffix == ".tsv" else ",")
            next(reader, None)  # the header
            idx = 0
            while idx <= last:
                start = reader.line_num + 1
                record = next(reader, None)
                if record is None:
                    break
                if not record:
                    continue  # a blank line is no row
                if idx in rows:
                    out[idx] = start
                idx += 1
            return out
        head = f.read(4096).lstrip()
        if head.startswith("["):
            return out  # one JSON document: no line per row
        f.seek(0)
        idx = 0
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if idx in rows:
                out[idx] = lineno
            idx += 1
            if idx > last:
                break
    return out


def locate_rows(cs: Any, data: Any, findings: list[Finding]) -> None:
    """Give each row finding a place in a file, for `--format github` (`extra["at"]`):
    the data file and the row's line (CSV/JSON lines), else the config's `dataset.path` line.

    Text and JSON keep their shape (row findings say `row N`); annotations need a file.
    """
    row_findings = [f for f in findings if f.row is not None and f.file is None]
    if not row_findings:
        return
    c = cs.collator
    fallback = cs.location("collator", "dataset.path")
    sources: dict[str, Path | None] = {"train": None, "eval": None}
    if isinstance(data.source, Path) and data.source.is_file():
        sources["train"] = data.source
    if c.dataset.eval_path:
        eval_file = (Path(cs.dir) / Path(c.dataset.eval_path).expanduser()).resolve()
        sources["eval"] = eval_file if eval_file.is_file() else None
    elif c.dataset.eval_split is None:
        sources["eval"] = sources["train"]
    lines: dict[str, dict[int, int]] = {}
    for split, path in sources.items():
        if path is None:
            continue
        wanted = {f.row for f in row_findings if f.extra.get("split", "train") == split}
        try:
            lines[split] = _row_lines(path, wanted)
        except (OSError, UnicodeDecodeError, ValueError):
            lines[split] = {}
    for f in row_findings:
        split = f.extra.get("split", "train")
        path = sources.get(split)
        if path is None:
            file, line, _col = fallback
            f.extra = {**f.extra, "at": (file, line)}
        else:
            f.extra = {**f.extra, "at": (str(path), lines.get(split, {}).get(f.row))}


_SYSTEM_WORDS = {
    "system turn": "their own system turn",
    "system_column": "the system_column value",
    "conversation.system_prompt": "conversation.system_prompt",
    "template default": "no system turn from vlmctl: the chat template's default applies",
}


def _media_and_system_notes(cs: Any, col: Collector) -> list[Finding]:
    """The media the rows really carry (column and inline alike), and chat rows' system turn."""
    c = cs.collator
    out: list[Finding] = []
    if col.fatal or not col.rows_checked:
        return out
    for kind, on, n in (("image", c.use_images, col.images), ("video", c.use_video, col.videos)):
        if on and n == 0 and not (kind == "image" and c.use_video and col.videos):
            out.append(
                cs.finding(
                    "warning",
                    "collator",
                    f"data_processing.{kind}_data",
                    f"{kind}_data is true but none of the {col.rows_checked} checked rows "
                    f"carries a {kind} (column or inline content part)",
                    hint=f"set {kind}_data: false, or check the {kind} column / tags",
                    code="no-media-in-rows",
                )
            )
    if c.conversation is not None and col.system_sources:
        shapes = "; ".join(
            f"{n} row(s) (e.g. row {col.system_rows[src]}): {_SYSTEM_WORDS.get(src, src)}"
            for src, n in col.system_sources.most_common()
        )
        out.append(
            cs.finding(
                "info",
                "collator",
                "conversation.system_prompt",
                f"system prompt per row shape: {shapes}",
                code="system-prompt-rows",
            )
        )
    return out


def _summarise(
    cs: Any,
    col: Collector,
    collator: Any,
    total: int,
    n_checked: int,
    sample: int | None,
    opts: DataCheckOptions,
    result: DataCheckResult,
) -> None:
    c = cs.collator
    tp = c.text_processing
    summary, findings = result.summary, result.findings
    summary["rows"] = {
        "total": total,
        "checked": col.rows_checked,
        "eval_checked": col.eval_rows_checked,
        "sampled": bool(sample and sample < total),
        "with_errors": col.rows_with_errors,
        "with_warnings_only": col.rows_with_warnings,
        "num_proc": opts.num_proc,
    }
    summary["media"] = {
        "images": col.images,
        "videos": col.videos,
        "rows_with_images": col.rows_with_images,
        "rows_with_videos": col.rows_with_videos,
    }
    if collator is None:
        summary["lengths"] = None
        summary["truncation"] = None
        summary["supervised"] = None
        return
    text = array("i", (a - b for a, b in zip(col.lengths, col.media, strict=True)))
    o = col.outcomes
    summary["lengths"] = {
        "rows": len(col.lengths),
        "total": describe(col.lengths),
        "text": describe(text),
        "media": describe(col.media),
        "max_length": tp.max_length if tp.truncation else None,
    }
    summary["truncation"] = {
        "policy": tp.truncation_policy if tp.truncation else "off",
        "over_max_length": sum(1 for v in col.lengths if tp.truncation and v > tp.max_length),
        "dropped_too_long": o["dropped_too_long"],
        "dropped_media_span": o["dropped_media_span"],
        "cut_text": o["cut_text"],
        "errors": o["length_error"],
    }
    if summary["truncation"]["over_max_length"]:
        from vlmctl.validation.budget_advice import fit_advice

        advice = fit_advice(cs, col, tp.max_length)
        if advice is not None:
            summary["truncation"]["fit"] = advice["changes"]
            findings.append(advice["finding"])
    from vlmctl.packing_checks import validate_bins

    summary["packing"], packing_note = validate_bins(cs, col.lengths)
    if packing_note is not None:
        findings.append(packing_note)
    _supervised_section(cs, col, total, n_checked, sample, result)


def _supervised_section(
    cs: Any, col: Collector, total: int, n_checked: int, sample: int | None, result: DataCheckResult
) -> None:
    """Supervised tokens per epoch (scaled when sampled or with eval_size), and an error when
    no encoded row survives."""
    c = cs.collator
    o = col.outcomes
    findings = result.findings
    scale = 1.0
    estimated = False
    if sample and n_checked and n_checked < total:
        scale, estimated = total / n_checked, True
    if c.dataset.eval_size and c.dataset.eval_path is None and c.dataset.eval_split is None:
        scale *= 1 - c.dataset.eval_size
        estimated = True
    per_epoch = int(round(col.supervised_total * scale))
    kept = sum(o[k] for k in ("ok", "cut_text"))
    result.summary["supervised"] = {
        "rows_without_supervised_tokens": o["dropped_no_labels"],
        "rows_kept": kept,
        "tokens_checked": col.supervised_total,
        "tokens_per_epoch": per_epoch,
        "estimated": estimated,
    }
    encoded = len(col.lengths)
    if encoded and kept == 0:
        findings.append(
            cs.finding(
                "error",
                "collator",
                "text_processing",
                f"no row survives: all {encoded} encoded rows are dropped (too long or nothing to "
                "train on)",
                hint="see the row findings; raise max_length or fix label_masking",
                code="all-rows-dropped",
            )
        )
