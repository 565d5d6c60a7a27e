"""`vlmctl init`: write the four commented config files (and their JSON Schemas) to a folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from vlmctl.errors import Finding, VlmctlError


def init(
    directory: Annotated[
        Path, typer.Argument(help="Folder to write the four config files to (created if absent).")
    ] = Path("."),
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Hub id or local folder to fill model_name_or_path."),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Overwrite existing config files.")
    ] = False,
) -> None:
    """Scaffold vlm_model_config.yaml, vlm_collator_config.yaml, train_config.yaml, peft_config.yaml."""
    from vlmctl.config import FILES
    from vlmctl.config.schema import SCHEMA_DIR, json_schema, schema_file_name
    from vlmctl.config.templates import render_templates

    texts = render_templates(model)
    targets = [directory / name for name in FILES.values()]
    existing = [p for p in targets if p.exists()]
    if existing and not force:
        raise VlmctlError(
            [
                Finding(
                    "error",
                    "already exists, not overwritten",
                    file=str(p),
                    hint="pass --force to overwrite",
                    code="exists",
                )
                for p in existing
            ]
        )
    if directory.exists() and not directory.is_dir():
        raise VlmctlError(Finding("error", "not a folder", file=str(directory), code="not-dir"))
    directory.mkdir(parents=True, exist_ok=True)
    for path in targets:
        path.write_text(texts[path.name], encoding="utf-8")
    # Editors read the `# yaml-language-server: $schema=./.vlmctl-schema/...` line of each file.
    schema_dir = directory / SCHEMA_DIR
    schema_dir.mkdir(exist_ok=True)
    for key in FILES:
        (schema_dir / schema_file_name(key)).write_text(
            json.dumps(json_schema(key), indent=2) + "\n", encoding="utf-8"
        )
    for path in targets:
        print(f"wrote {path}")
    print(f"wrote {schema_dir}/ (JSON Schemas for editor completion)")
    print(
        f"next: set dataset.path in {directory / FILES['collator']}, "
        f"then `vlmctl validate {directory}`"
    )
