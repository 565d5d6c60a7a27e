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
        bool,
        typer.Option("--force", help="Overwrite existing config files and their JSON Schemas."),
    ] = False,
) -> None:
    """Scaffold vlm_model_config.yaml, vlm_collator_config.yaml, train_config.yaml, peft_config.yaml."""
    from vlmctl.config import FILES
    from vlmctl.config.schema import SCHEMA_DIR, json_schema, schema_file_name
    from vlmctl.config.templates import render_templates

    texts = render_templates(model)
    budget_note = _fit_typical_row(texts, model) if model is not None else None
    targets = [directory / name for name in FILES.values()]
    schema_dir = directory / SCHEMA_DIR
    schemas = [schema_dir / schema_file_name(key) for key in FILES]
    existing = [p for p in targets if p.exists() or p.is_symlink()]
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
    # The schema files are ours too, but a user may have edited them: same rule, one line.
    kept = [p.name for p in schemas if p.exists() or p.is_symlink()]
    if kept and not force:
        raise VlmctlError(
            Finding(
                "error",
                f"already holds {', '.join(kept)}, not overwritten",
                file=str(schema_dir),
                hint="pass --force to overwrite them (and write the four config files)",
                code="exists",
            )
        )
    if directory.exists() and not directory.is_dir():
        raise VlmctlError(
            Finding(
                "error",
                "not a folder",
                hint="name a new or existing folder for the four files",
                file=str(directory),
                code="not-dir",
            )
        )
    directory.mkdir(parents=True, exist_ok=True)
    for path in targets:
        path.write_text(texts[path.name], encoding="utf-8")
    # Editors read the `# yaml-language-server: $schema=./.vlmctl-schema/...` line of each file.
    schema_dir.mkdir(exist_ok=True)
    for key in FILES:
        (schema_dir / schema_file_name(key)).write_text(
            json.dumps(json_schema(key), indent=2) + "\n", encoding="utf-8"
        )
    for path in targets:
        print(f"wrote {path}")
    print(f"wrote {schema_dir}/ (JSON Schemas for editor completion)")
    if budget_note:
        print(budget_note)
    print(
        f"next: set dataset.path in {directory / FILES['collator']}, "
        f"then `vlmctl validate {directory}`"
    )


def _fit_typical_row(texts: dict[str, str], model: str) -> str | None:
    """Edit the templates so a typical row (two images, a short Q/A) fits `max_length`.

    With a family's released processor settings one image can cost thousands of tokens
    (InternVL2 ~3,300, Idefics3 ~2,200): a processor setting that makes an image cheaper is
    written under `processor_params` when the family has one, else `max_length` is raised.
    Returns the line `init` prints, or None when the model's family is unknown.
    """
    import re

    from vlmctl.config import FILES
    from vlmctl.models import budgets as B

    budget = B.budget_for(model)
    if budget is None:
        return None
    coll, mod = FILES["collator"], FILES["model"]
    m = re.search(r"(?m)^(\s+max_length:[ \t]*)(\d+)", texts[coll])
    if m is None:
        return None
    max_length = int(m.group(2))
    w, h = B.TYPICAL_IMAGE
    n, text = B.TYPICAL_IMAGES_PER_ROW, B.TYPICAL_TEXT_TOKENS
    per_image = budget.image_tokens()
    row = B.row_tokens(budget)
    about = "at most " if budget.upper_bound else ""
    head = (
        f"budget ({budget.model_type}): one {w}x{h} image costs {about}{per_image} tokens; "
        f"a row of {n} images and ~{text} text tokens costs {row}"
    )
    if row <= max_length:
        return f"{head}: fits max_length {max_length}"
    # InternVL2's remote-code processing takes no processor_params: raise max_length there.
    knob = None if budget.model_type == "internvl_chat" else budget.knob((max_length - text) // n)
    if knob is not None:
        params, why = knob
        pm = re.search(r"(?m)^processor_params:[ \t]*\n((?:[ \t]+.*\n)*)", texts[mod])
        if pm is not None:
            indent = re.match(r"[ \t]*", pm.group(1)).group(0) or "    "
            lines = "".join(
                f"{indent}{key}: {json.dumps(value)}   # vlmctl init: a typical row fits "
                f"max_length {max_length} ({why})\n"
                for key, value in params.items()
            )
            end = pm.end()
            texts[mod] = texts[mod][:end] + lines + texts[mod][end:]
            keys = ", ".join(f"processor_params.{k}" for k in params)
            return f"{head}: wrote {keys} ({why}) so it fits max_length {max_length}"
    new = int(-(-row // 256) * 256)
    texts[coll] = texts[coll][: m.start(2)] + str(new) + texts[coll][m.end(2) :]
    return f"{head}: raised text_processing.max_length {max_length} -> {new}"
