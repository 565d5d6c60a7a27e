"""`vlmctl preview` (placeholder until its module lands)."""

from __future__ import annotations

import sys

import typer


def preview() -> None:
    """Not implemented yet."""
    print("vlmctl preview: not implemented yet", file=sys.stderr)
    raise typer.Exit(2)
