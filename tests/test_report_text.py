"""`render_text` writes plain text itself when not on a terminal: it must be exactly what rich
prints there (markup stripped, brackets in messages kept), and coloured on a terminal."""

import io
import json

from vlmctl.errors import Finding
from vlmctl.report import SetReport, render_json, render_text


def _reports():
    return [
        SetReport(
            dir="runs/[a]",
            findings=[
                Finding(
                    "error",
                    "r: expected a positive integer, got '[x]'",
                    hint="use 8",
                    file="runs/[a]/peft_config.yaml",
                    line=6,
                    col=1,
                    key="r",
                ),
                Finding("info", "note [bold]not markup[/]"),
            ],
        ),
        SetReport(dir="runs/b", findings=[Finding("warning", "dataset.path is not set")]),
    ]


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_plain_output_equals_richs_output_without_a_terminal(monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    plain = io.StringIO()
    render_text(_reports(), file=plain)

    # What rich prints for the coloured path when its console is not a terminal.
    from rich.console import Console

    import vlmctl.report as report

    rich_out = io.StringIO()
    console = Console(file=rich_out, highlight=False, soft_wrap=True, force_terminal=False)
    from rich.markup import escape

    def mark(style, text):
        return f"[{style}]{escape(text)}[/]" if style else escape(text)

    for line in report._text_lines(_reports(), False, mark):
        console.print(line)
    assert plain.getvalue() == rich_out.getvalue()
    assert "runs/[a]: FAILED (1 error, 0 warnings, 1 note)" in plain.getvalue()
    assert "note [bold]not markup[/]" in plain.getvalue()
    assert "2 config sets: 1 error, 1 warning, 1 note" in plain.getvalue()


def test_terminal_output_is_coloured(monkeypatch):
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    out = _Tty()
    render_text(_reports(), file=out)
    assert "\x1b[" in out.getvalue() and "FAILED" in out.getvalue()


def test_json_carries_each_sets_dataset_summary_only_after_a_dataset_pass():
    """The dataset summary joins each set's entry as its last key, null for a set without a
    dataset; config-only output has no `data` key (one document, built once, no re-parse)."""
    reports = [
        SetReport("a", [Finding("warning", "w", row=3, extra={"rows": [3, 4]})]),
        SetReport("b"),
    ]
    doc = json.loads(render_json(reports, data=[{"rows": {"checked": 2}}, None]))
    first, second = doc["config_sets"]
    assert list(first)[-1] == "data" and first["data"] == {"rows": {"checked": 2}}
    assert second["data"] is None
    assert first["findings"][0]["rows"] == [3, 4]
    assert all("data" not in s for s in json.loads(render_json(reports))["config_sets"])
