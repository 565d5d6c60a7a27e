"""Helpers for config/CLI tests: a fresh `vlmctl init` folder and in-place edits of its files."""

from __future__ import annotations

from pathlib import Path

from vlmctl.config import FILES
from vlmctl.config.templates import render_templates
from vlmctl.config.yamlio import YamlDoc, read_yaml
from vlmctl.errors import ConfigError


def write_set(directory: Path, **replacements: tuple[str, str]) -> Path:
    """Write the templates to `directory`; `file_key=(old, new)` edits one file's text."""
    directory.mkdir(parents=True, exist_ok=True)
    texts = render_templates()
    for key, name in FILES.items():
        text = texts[name]
        if key in replacements:
            old, new = replacements[key]
            assert old in text, f"{old!r} not in {name}"
            text = text.replace(old, new, 1)
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def edit(path: Path, old: str, new: str) -> None:
    """Replace the first `old` in a file (asserting it is there)."""
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def line_of(path: Path, needle: str) -> int:
    """1-based line number of the first line containing `needle`."""
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError(f"{needle!r} not in {path}")


def load_yaml(path: Path) -> YamlDoc:
    """Load one YAML file or raise ConfigError (one finding per problem)."""
    doc, problems = read_yaml(path)
    if problems:
        raise ConfigError(problems)
    assert doc is not None
    return doc
