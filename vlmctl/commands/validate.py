"""`vlmctl validate`: check one or many config sets and report every finding at once."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class OutputFormat(str, Enum):
    """How findings are printed."""

    text = "text"
    json = "json"
    github = "github"


def validate(
    directories: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Config folders (each holding the four YAML files). Default: .", show_default=False
        ),
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="text | json | github (CI annotations).")
    ] = OutputFormat.text,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail too.")] = False,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Override a key: model.X=v, collator.X=v, train.X=v, peft.X=v "
            "(a bare key means train). Repeatable.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Check config sets: YAML, keys, types, cross-field rules. Exit 0 ok, 1 errors, 2 usage."""
    from vlmctl.config.load import collect_config_set, parse_override
    from vlmctl.report import SetReport, exit_code, render_github, render_json, render_text

    parsed = [parse_override(o) for o in overrides or []]  # a bad --set is a usage error (2)
    reports = []
    for directory in directories or [Path(".")]:
        _, findings = collect_config_set(directory, parsed)
        reports.append(SetReport(dir=str(directory), findings=findings))
    if output_format is OutputFormat.json:
        print(render_json(reports, strict))
    elif output_format is OutputFormat.github:
        text = render_github(reports)
        if text:
            print(text)
    else:
        render_text(reports, strict)
    raise typer.Exit(exit_code(reports, strict))
