"""`vlmctl demo`: validate -> preview -> train -> merge -> eval, offline, on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vlmctl.commands._options import OverridesOpt


def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for everything the demo writes.")
    ] = Path("vlmctl-demo"),
    model: Annotated[
        str | None,
        typer.Option("--model", help="Model id or folder. Default: a tiny Qwen2-VL built here."),
    ] = None,
    steps: Annotated[int, typer.Option("--steps", help="Training steps.", min=1)] = 120,
    overrides: OverridesOpt = None,
) -> None:
    """Run the whole pipeline offline on a generated colour dataset; writes demo-report.json."""
    import sys

    from vlmctl.extras import require

    require("demo")
    from vlmctl.demo.colors import DemoOptions
    from vlmctl.demo.pipeline import run_demo

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    opts = DemoOptions(out=out, model=model, steps=steps, extra_overrides=tuple(overrides or ()))
    report = run_demo(opts, log=log)
    print(json.dumps({k: v for k, v in report.items() if k != "samples"}, indent=2))
    verdict = "learned" if report["accuracy"] >= 3 * report["chance"] else "did NOT learn"
    log(
        f"demo: {report['correct']}/{report['total']} held-out images answered right "
        f"(chance {report['chance']:.0%}): the model {verdict} colours. "
        f"Report: {Path(out) / 'demo-report.json'}; page: {Path(out) / report['eval_page']}"
    )
