"""`vlmctl models`: the model matrix (families, classes, media support, what is verified)."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated

import typer


class MatrixFormat(str, Enum):
    """How to print the matrix."""

    text = "text"
    json = "json"
    markdown = "markdown"


def models(
    output_format: Annotated[
        MatrixFormat,
        typer.Option("--format", help="text | json | markdown (the README's table)."),
    ] = MatrixFormat.text,
) -> None:
    """List the model families checked on their real files: class, template, media, verified."""
    from vlmctl.models.families import CHECKS, FAMILIES, markdown_table, rows

    if output_format is MatrixFormat.json:
        print(json.dumps({"families": rows(), "checks": CHECKS}, indent=2))
        return
    if output_format is MatrixFormat.markdown:
        print(markdown_table(), end="")
        return
    from rich.console import Console
    from rich.table import Table

    from vlmctl.models.families import CHECKS as _C

    table = Table(title="vlmctl model matrix (checked on the conformance kit's real files)")
    for col in ("family", "checkpoint", "model class", "template", "image", "multi", "video",
                *_C):  # fmt: skip
        table.add_column(col, overflow="fold")
    for f in FAMILIES:
        table.add_row(
            f.title,
            f.hub_id,
            f.model_class + (" (remote code)" if f.remote_code else ""),
            f.template,
            *("yes" if v else "-" for v in (f.image, f.multi_image, f.video)),
            *("yes" if c in f.verified else "-" for c in _C),
        )
    Console(width=240).print(table)
    for key, what in CHECKS.items():
        print(f"{key}: {what}")
