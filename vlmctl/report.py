"""Findings -> what people and machines read: rich text, JSON, or GitHub annotations.

The JSON shape is stable (scripts and CI parse it):
`{"version": 1, "config_sets": [{"dir", "ok", "counts", "findings": [...]}], "summary": {...}}`.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from vlmctl.errors import Finding

JSON_VERSION = 1
SEVERITIES = ("error", "warning", "info")
_ORDER = {s: i for i, s in enumerate(SEVERITIES)}
_NOUN = {"error": "error", "warning": "warning", "info": "note"}


@dataclass
class SetReport:
    """The findings of one config set."""

    dir: str
    findings: list[Finding] = field(default_factory=list)

    def count(self, severity: str) -> int:
        """How many findings of one severity."""
        return sum(1 for f in self.findings if f.severity == severity)

    def ok(self, strict: bool = False) -> bool:
        """No error (and, with `strict`, no warning either)."""
        return self.count("error") == 0 and not (strict and self.count("warning"))

    def sorted(self) -> list[Finding]:
        """Errors first, then warnings, then notes; each in file/line order."""
        return sorted(
            self.findings, key=lambda f: (_ORDER[f.severity], f.file or "", f.line or 0, f.col or 0)
        )


def exit_code(reports: Sequence[SetReport], strict: bool = False) -> int:
    """0 when every set is ok, else 1."""
    return 0 if all(r.ok(strict) for r in reports) else 1


def _summary(reports: Sequence[SetReport], strict: bool) -> dict:
    return {
        "config_sets": len(reports),
        "ok": all(r.ok(strict) for r in reports),
        "strict": strict,
        **{f"{s}s": sum(r.count(s) for r in reports) for s in SEVERITIES},
    }


def render_json(
    reports: Sequence[SetReport],
    strict: bool = False,
    data: Sequence[dict | None] | None = None,
) -> str:
    """The stable JSON document; with `data` (the dataset pass ran), each set's `data` summary
    (null when the set had no dataset to check)."""
    sets = [
        {
            "dir": r.dir,
            "ok": r.ok(strict),
            "counts": {f"{s}s": r.count(s) for s in SEVERITIES},
            "findings": [_finding_json(f) for f in r.sorted()],
        }
        for r in reports
    ]
    if data is not None:
        for entry, summary in zip(sets, data, strict=True):
            entry["data"] = summary
    doc = {"version": JSON_VERSION, "config_sets": sets, "summary": _summary(reports, strict)}
    return json.dumps(doc, indent=2)


def _finding_json(f: Finding) -> dict:
    return {
        "severity": f.severity,
        "message": f.message,
        "hint": f.hint,
        "file": f.file,
        "line": f.line,
        "col": f.col,
        "key": f.key,
        "row": f.row,
        # A "N more rows" finding: every row number it stands for.
        "rows": f.extra.get("rows"),
        "code": f.code,
        "text": f.one_line(),
    }


def _gh_escape(text: str, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def render_github(reports: Sequence[SetReport], hide: set[str] | frozenset = frozenset()) -> str:
    """GitHub Actions workflow commands: `::error file=..,line=..,col=..,title=..::message`."""
    level = {"error": "error", "warning": "warning", "info": "notice"}
    lines = []
    for r in reports:
        for f in shown_findings(r.sorted(), hide):
            props = []
            if f.file and not f.file.startswith("--set"):
                props.append(f"file={_gh_escape(f.file, True)}")
                if f.line is not None:
                    props.append(f"line={f.line}")
                    if f.col is not None:
                        props.append(f"col={f.col}")
            title = f"vlmctl: {f.key}" if f.key else "vlmctl"
            props.append(f"title={_gh_escape(title, True)}")
            msg = f.message + (f" (fix: {f.hint})" if f.hint else "")
            if f.file and f.file.startswith("--set"):
                msg = f"{f.file}: {msg}"
            lines.append(f"::{level[f.severity]} {','.join(props)}::{_gh_escape(msg)}")
    return "\n".join(lines)


def _wants_colour(out: TextIO) -> bool:
    """Colour only for a terminal (or with FORCE_COLOR), as rich itself decides."""
    if os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(out, "isatty", None)
    return bool(isatty and isatty())


def _count_words(counts: dict[str, int]) -> str:
    """`1 error, 2 warnings, 0 notes`."""
    return ", ".join(f"{n} {_NOUN[sev]}{'s' if n != 1 else ''}" for sev, n in counts.items())


HIDE_NOTES_ENV = "VLMCTL_HIDE_NOTES"


def hidden_note_codes(option: str | None = None) -> set[str]:
    """Note codes to leave out of text/GitHub output: `--hide-notes` plus VLMCTL_HIDE_NOTES
    (comma-separated codes, or `all`)."""
    out: set[str] = set()
    for text in (option, os.environ.get(HIDE_NOTES_ENV)):
        out |= {c.strip() for c in (text or "").split(",") if c.strip()}
    return out


def shown_findings(findings: Sequence[Finding], hide: set[str] | frozenset = frozenset()):
    """Findings as people read them: each note once (the same note said twice, e.g. for the
    same key in two places, is one line), notes whose code is hidden left out."""
    seen: set[tuple] = set()
    out = []
    for f in findings:
        if f.severity == "info":
            if "all" in hide or (f.code and f.code in hide):
                continue
            sig = (f.code, f.message)
            if sig in seen:
                continue
            seen.add(sig)
        out.append(f)
    return out


def _text_lines(
    reports: Sequence[SetReport],
    strict: bool,
    mark: Callable[[str, str], str],
    hide: set[str] | frozenset = frozenset(),
) -> list[str]:
    """The report's lines; `mark(style, text)` adds colour (or nothing) around text.

    Each note ends with its code in brackets, the name `--hide-notes` / VLMCTL_HIDE_NOTES take
    to silence it; a note already shown for an earlier config set is not repeated."""
    style = {"error": "bold red", "warning": "yellow", "info": "cyan"}
    lines = []
    said: set[tuple] = set()
    notes_shown = 0
    for r in reports:
        ok = mark("green", "ok") if r.ok(strict) else mark("bold red", "FAILED")
        counts = _count_words({sev: r.count(sev) for sev in SEVERITIES})
        shown = shown_findings(r.sorted(), hide)
        hidden = r.count("info") - sum(1 for f in shown if f.severity == "info")
        if hidden:
            counts += f", {hidden} hidden"
        lines.append(f"{mark('bold', r.dir)}: {ok} ({counts})")
        for f in shown:
            text = f.one_line()
            if f.severity == "info":
                sig = (f.code, f.message, f.hint)
                if sig in said:
                    continue
                said.add(sig)
                notes_shown += 1
                if f.code:
                    text += f" [{f.code}]"
            lines.append(f"  {mark(style[f.severity], f.severity)}: {mark('', text)}")
    if notes_shown:
        lines.append(
            mark(
                "dim",
                f"(silence notes by their [code]: --hide-notes CODE,CODE or --hide-notes all, "
                f"or {HIDE_NOTES_ENV}=...)",
            )
        )
    if len(reports) > 1:
        s = _summary(reports, strict)
        counts = _count_words({sev: s[f"{sev}s"] for sev in SEVERITIES})
        lines.append(f"{s['config_sets']} config sets: {counts}")
    return lines


def render_text(
    reports: Sequence[SetReport],
    strict: bool = False,
    file: TextIO | None = None,
    hide: set[str] | frozenset = frozenset(),
) -> None:
    """Findings grouped per config set, coloured by severity (plain when not a terminal).

    Plain output (CI logs, pipes) is written directly: it is exactly what rich prints there,
    and not importing rich saves a share of `vlmctl validate`'s start-up.
    """
    out = file or sys.stdout
    if not _wants_colour(out):
        lines = _text_lines(reports, strict, lambda _s, t: t, hide)
        out.write("".join(line + "\n" for line in lines))
        return
    from rich.console import Console
    from rich.markup import escape

    def mark(style: str, text: str) -> str:
        return f"[{style}]{escape(text)}[/]" if style else escape(text)

    console = Console(file=out, highlight=False, soft_wrap=True)
    for line in _text_lines(reports, strict, mark, hide):
        console.print(line)
