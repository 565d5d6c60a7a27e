"""`vlmctl preview`: show the batch `train` would build, token by token (see vlmctl/preview/)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from vlmctl.commands._options import ConfigDirArg
from vlmctl.errors import UsageError


class PreviewFormat(str, Enum):
    """How the preview is printed."""

    text = "text"
    json = "json"


def preview(
    directory: ConfigDirArg = Path("."),
    rows: Annotated[
        str | None,
        typer.Option(
            "--rows",
            help="Rows to show, e.g. 0,5,7 or 0-3 (the file's rows, from 0).",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            help="Show the first N rows (default: per_device_train_batch_size).",
            show_default=False,
        ),
    ] = None,
    output_format: Annotated[
        PreviewFormat, typer.Option("--format", help="text | json (stable schema).")
    ] = PreviewFormat.text,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Override a key, as in validate. Repeatable.", show_default=False
        ),
    ] = None,
) -> None:
    """Render a collated batch: each token coloured by trained / masked prompt / masked media /
    padding, the rendered chat, tensor shapes and dtypes, padding and supervised tokens.
    Loads only the processor (never weights) and writes nothing.
    """
    from vlmctl.extras import require

    require("preview")
    from vlmctl.config.load import load_config_set, parse_override
    from vlmctl.preview.batch import build_preview, parse_rows
    from vlmctl.preview.document import render_preview_text

    if rows is not None and batch_size is not None:
        raise UsageError("--rows and --batch-size exclude each other", hint="pick one")
    parsed = [parse_override(o) for o in overrides or []]
    row_list = parse_rows(rows) if rows is not None else None
    cs = load_config_set(directory, parsed)
    doc = build_preview(cs, row_list, batch_size)
    if output_format is PreviewFormat.json:
        import json

        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        render_preview_text(doc)
