"""`vlmctl train` (placeholder until its module lands)."""

from __future__ import annotations

import sys

import typer


def train() -> None:
    """Not implemented yet."""
    print("vlmctl train: not implemented yet", file=sys.stderr)
    raise typer.Exit(2)
