"""`vlmctl schema`: the JSON Schema of each config file (for editors and CI)."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer


class FileChoice(str, Enum):
    """Which config file."""

    model = "model"
    collator = "collator"
    train = "train"
    peft = "peft"


def schema(
    file: Annotated[
        FileChoice | None, typer.Option("--file", "-f", help="Only this file's schema.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write <file>.schema.json files to this folder."),
    ] = None,
) -> None:
    """Print the JSON Schema of the config files (all four, keyed by file name, by default)."""
    from vlmctl.config import FILES
    from vlmctl.config.schema import json_schema, schema_file_name

    keys = [file.value] if file else list(FILES)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for key in keys:
            path = out / schema_file_name(key)
            path.write_text(json.dumps(json_schema(key), indent=2) + "\n", encoding="utf-8")
            print(f"wrote {path}")
        return
    doc = json_schema(keys[0]) if file else {FILES[k]: json_schema(k) for k in keys}
    print(json.dumps(doc, indent=2))
