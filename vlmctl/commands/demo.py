"""`vlmctl demo` (placeholder until its module lands)."""

from __future__ import annotations

import sys

import typer


def demo() -> None:
    """Not implemented yet."""
    print("vlmctl demo: not implemented yet", file=sys.stderr)
    raise typer.Exit(2)
