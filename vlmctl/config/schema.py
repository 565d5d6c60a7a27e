"""JSON Schemas of the four files, for editors (yaml-language-server) and `vlmctl schema`."""

from __future__ import annotations

from vlmctl.config import FILES, MODELS

SCHEMA_DIR = ".vlmctl-schema"


def schema_file_name(file_key: str) -> str:
    """`train` -> `train_config.schema.json`."""
    return FILES[file_key].removesuffix(".yaml") + ".schema.json"


def json_schema(file_key: str) -> dict:
    """The JSON Schema of one file; train lists the installed SFTConfig fields as allowed keys."""
    schema = MODELS[file_key].model_json_schema()
    schema["title"] = FILES[file_key]
    if file_key == "train":
        from vlmctl.config.sft_fields import sft_config_fields

        props = schema.setdefault("properties", {})
        for name in sorted(sft_config_fields()):
            props.setdefault(name, {"description": "A field of the installed TRL SFTConfig."})
        if props:
            # Editors then flag typos like `learning_rat` as vlmctl validate does.
            schema["additionalProperties"] = False
    return schema
