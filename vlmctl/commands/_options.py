"""Argument and option types that several verbs share, defined once so help text stays the same.

`Annotated` aliases in the way of huggingface_hub's `cli/_cli_utils.py`: a verb's signature
names the type, and the flag, its help and its default live here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigDirArg = Annotated[
    Path, typer.Argument(help="Config folder (the four YAML files).", show_default=False)
]

OverridesOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a key: model.X=v, collator.X=v, train.X=v, peft.X=v "
        "(a bare key means train). Repeatable.",
        show_default=False,
    ),
]
