"""`vlmctl validate`: check one or many config sets and report every finding at once."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from vlmctl.commands._options import OverridesOpt
from vlmctl.errors import UsageError


class OutputFormat(str, Enum):
    """How findings are printed."""

    text = "text"
    json = "json"
    github = "github"


# The command's own arguments and options (shared ones are in _options.py).
DirsArg = Annotated[
    list[Path] | None,
    typer.Argument(
        help="Config folders (each holding the four YAML files). Default: .", show_default=False
    ),
]

FormatOpt = Annotated[
    OutputFormat, typer.Option("--format", help="text | json | github (CI annotations).")
]

StrictOpt = Annotated[bool, typer.Option("--strict", help="Warnings fail too.")]

ConfigOnlyOpt = Annotated[
    bool,
    typer.Option("--config-only", help="Skip the dataset pass (configs only; fast, no torch)."),
]

SampleOpt = Annotated[
    int | None,
    typer.Option(
        "--sample",
        min=1,
        help="Dataset pass: check a seeded sample of N rows.",
        show_default=False,
    ),
]

AllRowsOpt = Annotated[
    bool, typer.Option("--all", help="Dataset pass: every row (default for local data).")
]

NumProcOpt = Annotated[
    int, typer.Option("--num-proc", min=1, help="Dataset pass: worker processes for rows.")
]

HideNotesOpt = Annotated[
    str | None,
    typer.Option(
        "--hide-notes",
        help="Leave notes out of text/GitHub output: their [code]s, comma-separated, or "
        "all (also VLMCTL_HIDE_NOTES). JSON keeps every finding.",
        show_default=False,
    ),
]


def validate(
    directories: DirsArg = None,
    output_format: FormatOpt = OutputFormat.text,
    strict: StrictOpt = False,
    overrides: OverridesOpt = None,
    config_only: ConfigOnlyOpt = False,
    sample: SampleOpt = None,
    all_rows: AllRowsOpt = False,
    num_proc: NumProcOpt = 1,
    hide_notes: HideNotesOpt = None,
) -> None:
    """Check config sets: YAML, keys, types, cross-field rules; then the dataset: columns, rows,
    media and token lengths with the real processor (skip with --config-only). Exit 0 ok (or
    warnings only), 1 errors, 2 usage. Writes nothing.
    """
    from vlmctl.config.load import collect_config_set, parse_override
    from vlmctl.report import SetReport, exit_code

    parsed = [parse_override(o) for o in overrides or []]  # a bad --set is a usage error (2)
    if sample is not None and all_rows:
        raise UsageError("--sample and --all exclude each other", hint="pick one")
    if config_only and (sample is not None or all_rows or num_proc != 1):
        raise UsageError(
            "--sample/--all/--num-proc need the dataset pass", hint="drop --config-only"
        )
    reports, summaries = [], []
    for directory in directories or [Path(".")]:
        cs, findings = collect_config_set(directory, parsed)
        summary = None
        if cs is not None and not config_only:
            if cs.collator.dataset.path is not None:
                from vlmctl.extras import require

                require("validate", also=", or pass --config-only to check the configs only")
            # The dataset pass (heavy imports happen only here).
            from vlmctl.validation.data_checks import DataCheckOptions
            from vlmctl.validation.data_report import add_dataset_pass

            progress = output_format is OutputFormat.text and sys.stderr.isatty()
            opts = DataCheckOptions(
                sample=sample, all_rows=all_rows, num_proc=num_proc, progress=progress
            )
            summary = add_dataset_pass(cs, findings, opts)
        reports.append(SetReport(dir=str(directory), findings=findings))
        summaries.append(summary)
    _print(reports, summaries, output_format, strict, config_only, hide_notes)
    raise typer.Exit(exit_code(reports, strict))


def _print(reports, summaries, output_format, strict, config_only, hide_notes) -> None:
    """Write the reports (and each set's dataset summary) in the format asked for."""
    from vlmctl.report import SetReport, hidden_note_codes, render_github, render_json, render_text

    if output_format is OutputFormat.json:
        print(render_json(reports, strict, data=None if config_only else summaries))
    elif output_format is OutputFormat.github:
        if any(s is not None for s in summaries):
            from vlmctl.validation.data_report import github_ready

            reports = [SetReport(dir=r.dir, findings=github_ready(r.findings)) for r in reports]
        text = render_github(reports, hidden_note_codes(hide_notes))
        if text:
            print(text)
    else:
        render_text(reports, strict, hide=hidden_note_codes(hide_notes))
        for report, summary in zip(reports, summaries, strict=True):
            if summary is not None:
                from vlmctl.validation.data_report import render_summary_text

                render_summary_text(report.dir, summary)
