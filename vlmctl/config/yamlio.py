"""Read a YAML config file into plain Python data plus the line/col of every key.

ruamel.yaml's round-trip loader keeps positions; nothing is ever constructed from tags (a
`!!python/...` tag is refused, not run). Every way a file can be unreadable becomes one
`Finding` with file:line:col, so the loader can report all four files' problems at once.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmctl.errors import ConfigError, Finding

# A key path: mapping keys (str) and list indexes (int), e.g. ("message_format",
# "training_messages", 1, "content", 0, "text").
KeyPath = tuple[str | int, ...]

_SIMPLE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DOTTED_PART = re.compile(r'\.?([A-Za-z_][A-Za-z0-9_\-]*)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]')


def dotted(path: KeyPath) -> str:
    """`("a", "b", 1, "c")` -> `a.b[1].c`; keys that are not identifiers become `["x.y"]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _SIMPLE_KEY.match(part):
            out += f".{part}" if out else part
        else:
            escaped = part.replace("\\", "\\\\").replace('"', '\\"')
            out += f'["{escaped}"]'
    return out


def parse_dotted(text: str) -> KeyPath:
    """Inverse of `dotted`: `a.b[1]["x.y"]` -> `("a", "b", 1, "x.y")`. ValueError if malformed."""
    parts: list[str | int] = []
    pos = 0
    while pos < len(text):
        m = _DOTTED_PART.match(text, pos)
        if not m or m.end() == pos or (pos == 0 and text.startswith(".")):
            raise ValueError(f"malformed key path {text!r} at character {pos + 1}")
        if m.group(1) is not None:
            parts.append(m.group(1))
        elif m.group(2) is not None:
            parts.append(int(m.group(2)))
        else:
            parts.append(re.sub(r"\\(.)", r"\1", m.group(3)))
        pos = m.end()
    if not parts:
        raise ValueError("empty key path")
    return tuple(parts)


@dataclass
class YamlDoc:
    """One loaded file: plain data and 1-based (line, col) of every key and list item."""

    path: Path
    data: dict[str, Any]
    positions: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: KeyPath) -> tuple[int, int] | None:
        """Where `path` is written, or where its closest written parent is (None: nowhere)."""
        path = tuple(path)
        while path:
            if path in self.positions:
                return self.positions[path]
            path = path[:-1]
        return None


def _finding(
    path: Path, message: str, hint: str | None, line: int | None, col: int | None, code: str
) -> Finding:
    return Finding("error", message, hint=hint, file=str(path), line=line, col=col, code=code)


def _mark(exc: Exception) -> tuple[int | None, int | None]:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is None:
        return None, None
    return mark.line + 1, mark.column + 1


def _tag_of(node: Any) -> str | None:
    tag = getattr(node, "tag", None)
    value = getattr(tag, "value", tag)
    if isinstance(value, str) and value and not value.startswith("tag:yaml.org,2002:"):
        return value
    if isinstance(value, str) and value.startswith("tag:yaml.org,2002:python"):
        return value
    return None


def _plain(node: Any, path: KeyPath, doc: YamlDoc, problems: list[Finding]) -> Any:
    """Round-trip node -> plain dict/list/str/int/float/bool/None, recording positions."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar

    tag = _tag_of(node)
    if tag is not None or isinstance(node, TaggedScalar):
        line, col = doc.position(path) or (None, None)
        problems.append(
            _finding(
                doc.path,
                f"YAML tag {tag or getattr(node, 'tag', '')!s} is not supported",
                "remove the tag: config values are plain strings, numbers, lists and mappings",
                line,
                col,
                "yaml-tag",
            )
        )
        return None
    if isinstance(node, CommentedMap):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if not isinstance(key, str):
                key = str(key)  # `1: x` or `true: x` as a key: keep it addressable
            line, col = node.lc.key(key) if key in node else (None, None)
            if line is not None:
                doc.positions[path + (key,)] = (line + 1, col + 1)
            out[key] = _plain(value, path + (key,), doc, problems)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            try:
                line, col = node.lc.item(i)
                doc.positions[path + (i,)] = (line + 1, col + 1)
            except (KeyError, TypeError, IndexError):
                pass
            items.append(_plain(value, path + (i,), doc, problems))
        return items
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    if isinstance(node, (_dt.date, _dt.datetime)):
        return node.isoformat()  # a date written unquoted (e.g. in run_name) stays text
    return str(node)


def _decode(path: Path, raw: bytes) -> tuple[str | None, Finding | None]:
    try:
        return raw.decode("utf-8-sig"), None
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        col = exc.start - (before.rfind(b"\n") + 1) + 1
        return None, _finding(
            path,
            f"not UTF-8 text: byte 0x{raw[exc.start]:02x} cannot be decoded",
            "save the file as UTF-8",
            line,
            col,
            "yaml-encoding",
        )


def _tab_indent(text: str, near_line: int | None) -> tuple[int, int] | None:
    """(line, col) of a tab in the indentation, preferring the line an error points at."""
    lines = text.splitlines()
    order = list(range(len(lines)))
    if near_line is not None and 0 < near_line <= len(lines):
        order.insert(0, near_line - 1)
    for i in order:
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip(" \t"))]
        if "\t" in indent:
            return i + 1, indent.index("\t") + 1
    return None


def read_yaml(path: Path) -> tuple[YamlDoc | None, list[Finding]]:
    """Load one file. Returns (doc, []) or (None, findings); never raises for bad content."""
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    path = Path(path)
    if not path.is_file():
        return None, [
            _finding(
                path,
                "file not found" if not path.exists() else "not a file",
                f"run `vlmctl init {path.parent}` to write the four files",
                None,
                None,
                "missing-file",
            )
        ]
    text, problem = _decode(path, path.read_bytes())
    if problem:
        return None, [problem]
    assert text is not None
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        node = yaml.load(text)
    except DuplicateKeyError as exc:
        line, col = _mark(exc)
        key = re.search(r'duplicate key "([^"]*)"', str(exc))
        name = key.group(1) if key else "?"
        first = getattr(exc, "context_mark", None)
        where = f" (first at line {first.line + 1})" if first is not None else ""
        return None, [
            _finding(
                path,
                f"duplicate key {name!r}{where}",
                "keep one of them",
                line,
                col,
                "yaml-duplicate",
            )
        ]
    except MarkedYAMLError as exc:
        line, col = _mark(exc)
        tab = _tab_indent(text, line)
        if tab is not None:
            # ruamel says "cannot start any token": say what it means instead.
            return None, [
                _finding(
                    path,
                    "tab character in the indentation",
                    "indent with spaces (YAML does not allow tabs)",
                    tab[0],
                    tab[1],
                    "yaml-tab",
                )
            ]
        problem_text = (exc.problem or exc.context or "invalid YAML").strip()
        return None, [
            _finding(
                path,
                f"YAML syntax error: {problem_text}",
                "check quotes, colons and indentation on this line or the one above",
                line,
                col,
                "yaml-syntax",
            )
        ]
    except YAMLError as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid YAML"
        return None, [_finding(path, f"YAML error: {msg}", None, None, None, "yaml-syntax")]
    if node is None:
        return None, [
            _finding(
                path,
                "file is empty (no keys)",
                f"run `vlmctl init` to get a commented template of {path.name}",
                None,
                None,
                "yaml-empty",
            )
        ]
    from ruamel.yaml.comments import CommentedMap

    if not isinstance(node, CommentedMap):
        kind = "a list" if isinstance(node, list) else f"a single value ({type(node).__name__})"
        return None, [
            _finding(
                path,
                f"the file holds {kind}; expected a mapping of `key: value` lines",
                "write top-level keys (e.g. `learning_rate: 1.0e-05`), not `- items`",
                1,
                1,
                "yaml-not-mapping",
            )
        ]
    doc = YamlDoc(path=path, data={})
    problems: list[Finding] = []
    doc.data = _plain(node, (), doc, problems)
    if problems:
        return None, problems
    return doc, []


def load_yaml(path: Path) -> YamlDoc:
    """Load one file or raise ConfigError (one finding per problem)."""
    doc, problems = read_yaml(path)
    if problems:
        raise ConfigError(problems)
    assert doc is not None
    return doc


def parse_scalar(text: str) -> Any:
    """A `--set` value as YAML (safe loader): `2e-4` -> float, `true` -> bool, `[a, b]` -> list."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        value = YAML(typ="safe", pure=True).load(text)
    except YAMLError:
        return text  # not YAML: take it as the literal string the user typed
    if isinstance(value, (_dt.date, _dt.datetime)):
        return text
    return value
