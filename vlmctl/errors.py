"""Errors a user can act on: where, what, and how to fix it.

Every problem vlmctl reports is a `Finding`. Exceptions carry findings so that one boundary
(`vlmctl.cli`) can print them as one line each and choose the exit code.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

Severity = Literal["error", "warning", "info"]


@dataclass
class Finding:
    """One problem (or note) with its location: file:line:col and key path, or a row index."""

    severity: Severity
    message: str
    hint: str | None = None
    file: str | None = None
    line: int | None = None
    col: int | None = None
    key: str | None = None
    row: int | None = None
    code: str = ""
    extra: dict = field(default_factory=dict)

    def where(self) -> str:
        """Location as people read it: `file:line:col (key)`, `row N`, or ``."""
        parts: list[str] = []
        if self.file:
            loc = self.file
            if self.line is not None:
                loc += f":{self.line}"
                if self.col is not None:
                    loc += f":{self.col}"
            parts.append(loc)
        if self.key:
            parts.append(f"({self.key})" if parts else self.key)
        if self.row is not None:
            parts.append(f"row {self.row}")
        return " ".join(parts)

    def one_line(self) -> str:
        """`<where>: <message> (fix: <hint>)` — the single line the CLI prints."""
        where = self.where()
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text += f" (fix: {self.hint})"
        return text


class VlmctlError(Exception):
    """A user-facing error: printed as one line per finding, no traceback, exit 1."""

    exit_code = 1

    def __init__(self, findings: Finding | str | Iterable[Finding], hint: str | None = None):
        if isinstance(findings, str):
            findings = [Finding("error", findings, hint=hint)]
        elif isinstance(findings, Finding):
            findings = [findings]
        self.findings: list[Finding] = list(findings)
        super().__init__("\n".join(f.one_line() for f in self.findings))


class ConfigError(VlmctlError):
    """A problem in the config files (carries file:line:col)."""


class DataError(VlmctlError):
    """A problem in the dataset, a row or a media file (carries the row index)."""


class UsageError(VlmctlError):
    """A bad flag or flag combination (exit 2, like Typer's own usage errors)."""

    exit_code = 2


def did_you_mean(name: str, choices: Iterable[str], cutoff: float = 0.6) -> str | None:
    """The closest choice to a misspelt name, or None."""
    matches = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1, cutoff=cutoff)
    return matches[0] if matches else None
