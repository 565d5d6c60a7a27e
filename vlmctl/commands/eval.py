"""`vlmctl eval`: does the fine-tune answer better? Generation, metrics, a page with pictures."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from vlmctl.commands._options import ConfigDirArg


class EvalFormat(str, Enum):
    """How the result is printed."""

    text = "text"
    json = "json"


def eval_(
    config_dir: ConfigDirArg,
    model: Annotated[
        list[str],
        typer.Option(
            "--model",
            "-m",
            help="A model folder, a merged model, or a run folder of `vlmctl train` (its "
            "adapter on its base). Repeat to compare models on the same rows.",
            show_default=False,
        ),
    ],
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Rows to evaluate (csv/json/jsonl/parquet/folder). Default: the config set's "
            "eval split (eval_path / eval_size), never training rows.",
            show_default=False,
        ),
    ] = None,
    rows: Annotated[
        int,
        typer.Option("--rows", help="Evaluate the first N rows.", min=1),
    ] = 200,
    all_rows: Annotated[bool, typer.Option("--all", help="Evaluate every row.")] = False,
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Folder for eval-report.json, predictions.jsonl and report.html."
        ),
    ] = Path("vlmctl-eval"),
    max_new_tokens: Annotated[
        int, typer.Option("--max-new-tokens", help="Longest answer, in tokens.", min=1)
    ] = 32,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Rows generated together.", min=1)
    ] = 8,
    fmt: Annotated[
        EvalFormat, typer.Option("--format", help="text (a table) or json (the report).")
    ] = EvalFormat.text,
) -> None:
    """Evaluate models by generating answers: exact match, token F1, ROUGE-L, ANLS, a page.

    Each --model answers the same rows with greedy decoding, from prompts built exactly as in
    training (same collator, with the generation prompt). Writes eval-report.json,
    predictions.jsonl and a self-contained report.html. Several processes: `accelerate launch
    -m vlmctl eval ...` (rows are split between them and gathered).
    """
    import sys

    from vlmctl.extras import require

    require("eval")
    from vlmctl.evaluation.run import EvalOptions, run_eval

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    report = run_eval(
        EvalOptions(
            config_dir=config_dir,
            models=list(model),
            data=data,
            rows=None if all_rows else rows,
            out=out,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        ),
        log=log,
    )
    if report is None:  # a non-main process: rank 0 prints
        return
    if fmt is EvalFormat.json:
        print(json.dumps(report, indent=2, ensure_ascii=False))
        return
    print_table(report)


def print_table(report: dict) -> None:
    """The metric table, then where the page is (the last line)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    keys = list(dict.fromkeys(k for m in report["metrics"].values() for k in m))
    table = Table(title=f"vlmctl eval ({report['n']} rows)", caption=report["data"]["source"])
    table.add_column("model")
    for k in keys:
        table.add_column(k, justify="right")
    for name, m in report["metrics"].items():
        table.add_row(name, *(f"{m.get(k, 0.0):.3f}" for k in keys))
    console.print(table)
    console.print(
        f"report: {report['files']['page']}", markup=False, highlight=False, soft_wrap=True
    )


eval_.__name__ = "eval"
