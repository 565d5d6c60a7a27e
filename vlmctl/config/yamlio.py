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

from vlmctl.errors import Finding

# A key path: mapping keys (str) and list indexes (int), e.g. ("message_format",
# "training_messages", 1, "content", 0, "text").
KeyPath = tuple[str | int, ...]

# Config files are a few KB; a 1 MB one is a mistake or an attack (ruamel's time grows faster
# than the size: 16 MB took 121 s). Checked before anything is read.
MAX_CONFIG_BYTES = 1024 * 1024
# Values after expanding aliases: a real config has a few hundred; "9 levels of 9" has 9**9.
MAX_VALUES = 100_000

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


class _TooBig(Exception):
    """More values than MAX_VALUES once aliases are expanded."""


def _expanded_size(node: Any, memo: dict[int, int]) -> int:
    """How many values `node` becomes once aliases are expanded, in time linear in the file
    (an alias is the same object as its anchor, so its size is computed once)."""
    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, dict):
        size = 1 + sum(_expanded_size(v, memo) for v in node.values()) + len(node)
    elif isinstance(node, list):
        size = 1 + sum(_expanded_size(v, memo) for v in node)
    else:
        return 1
    memo[id(node)] = size = min(size, MAX_VALUES + 1)
    return size


def _plain(
    node: Any,
    path: KeyPath,
    doc: YamlDoc,
    problems: list[Finding],
    budget: list[int] | None = None,
) -> Any:
    """Round-trip node -> plain dict/list/str/int/float/bool/None, recording positions.

    `budget` counts values as they are expanded (an alias is expanded each time it is used), so
    an alias bomb stops at MAX_VALUES instead of filling memory.
    """
    from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar

    if budget is None:
        budget = [MAX_VALUES]
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooBig

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
            out[key] = _plain(value, path + (key,), doc, problems, budget)
        return out
    if isinstance(node, CommentedSeq):
        items = []
        for i, value in enumerate(node):
            try:
                line, col = node.lc.item(i)
                doc.positions[path + (i,)] = (line + 1, col + 1)
            except (KeyError, TypeError, IndexError):
                pass
            items.append(_plain(value, path + (i,), doc, problems, budget))
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


def _read_limited(path: Path) -> tuple[bytes | None, Finding | None]:
    """The file's bytes, or one finding: missing, a folder, not a regular file (a device, a
    pipe), unreadable (permission), or over MAX_CONFIG_BYTES. Never reads more than the limit."""
    import stat

    hint_init = f"run `vlmctl init {path.parent}` to write the four files"
    try:
        st = path.stat()
    except FileNotFoundError:
        return None, _finding(path, "file not found", hint_init, None, None, "missing-file")
    except PermissionError:
        return None, _finding(
            path,
            "permission denied (cannot look at the file)",
            "let this user read the file and its folders (chmod/chown)",
            None,
            None,
            "permission",
        )
    except OSError as exc:
        return None, _finding(
            path, f"cannot read: {exc.strerror or exc}", None, None, None, "unreadable"
        )
    if stat.S_ISDIR(st.st_mode):
        return None, _finding(
            path,
            "is a folder, not a file",
            f"remove the folder; {hint_init}",
            None,
            None,
            "not-file",
        )
    if not stat.S_ISREG(st.st_mode):
        target = f" ({path.resolve()})" if path.is_symlink() else ""
        return None, _finding(
            path,
            f"not a regular file{target}: a device, pipe or socket",
            "point it at (or replace it with) a regular YAML file",
            None,
            None,
            "not-file",
        )
    if st.st_size > MAX_CONFIG_BYTES:
        return None, _finding(
            path,
            f"file too large: {st.st_size / 1e6:.1f} MB (a config file may have at most "
            f"{MAX_CONFIG_BYTES / 1e6:.1f} MB)",
            "check that this is the right file: config files are a few KB",
            None,
            None,
            "yaml-too-large",
        )
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except PermissionError:
        return None, _finding(
            path,
            "permission denied (cannot read the file)",
            "let this user read it (e.g. chmod a+r)",
            None,
            None,
            "permission",
        )
    except OSError as exc:
        return None, _finding(
            path, f"cannot read: {exc.strerror or exc}", None, None, None, "unreadable"
        )
    if len(raw) > MAX_CONFIG_BYTES:  # grew while we looked
        return None, _finding(
            path, "file too large", "config files are a few KB", None, None, "yaml-too-large"
        )
    return raw, None


def _unclosed_quote(text: str, error_line: int | None) -> tuple[int, int, str] | None:
    """(line, col, quote) of the last line at or before the error whose quote is never closed
    on that line. Multi-line quoted strings are legal YAML but not in config files, and this is
    asked only after the parser has failed."""
    found = None
    lines = text.splitlines()
    last = min(error_line or len(lines), len(lines))
    for number, line in enumerate(lines[:last], 1):
        quote, start, i = None, 0, 0
        while i < len(line):
            ch = line[i]
            if quote is None:
                if ch == "#" and (i == 0 or line[i - 1] in " \t"):
                    break
                if ch in "\"'" and (i == 0 or line[i - 1] in " \t:[{,-"):
                    quote, start = ch, i
            elif quote == '"' and ch == "\\":
                i += 1
            elif ch == quote:
                if quote == "'" and line[i + 1 : i + 2] == "'":
                    i += 1  # '' is an escaped quote
                else:
                    quote = None
            i += 1
        if quote is not None:
            found = (number, start + 1, quote)
    return found


def _first_alias(text: str) -> tuple[int | None, int | None]:
    """(line, col) of the first alias use (`*name`), for the alias-bomb message."""
    m = re.search(r"(?:^|[\s\[{,:-])\*[A-Za-z0-9_]", text)
    if not m:
        return None, None
    star = text.index("*", m.start())
    line = text.count("\n", 0, star) + 1
    return line, star - (text.rfind("\n", 0, star) + 1) + 1


def read_yaml(path: Path) -> tuple[YamlDoc | None, list[Finding]]:
    """Load one file. Returns (doc, []) or (None, findings); never raises for bad content."""
    path = Path(path)
    raw, problem = _read_limited(path)
    if problem:
        return None, [problem]
    assert raw is not None
    text, problem = _decode(path, raw)
    if problem:
        return None, [problem]
    assert text is not None
    node, problem = _load(path, text)
    if problem is None:
        problem = _shape_problem(path, node)
    if problem:
        return None, [problem]
    return _to_doc(path, node, text)


def _load(path: Path, text: str) -> tuple[Any, Finding | None]:
    """ruamel's round-trip node tree, or the one finding that says why the text is not YAML."""
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import DuplicateKeyError
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        return yaml.load(text), None
    except DuplicateKeyError as exc:
        return None, _duplicate_key(path, exc)
    except MarkedYAMLError as exc:
        return None, _syntax_error(path, text, exc)
    except RecursionError:
        return None, _finding(
            path,
            "nested too deeply (thousands of levels of [ or {)",
            "a config nests a few levels: remove the runaway brackets",
            1,
            1,
            "yaml-too-deep",
        )
    except YAMLError as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid YAML"
        return None, _finding(path, f"YAML error: {msg}", None, None, None, "yaml-syntax")


def _duplicate_key(path: Path, exc: Exception) -> Finding:
    line, col = _mark(exc)
    key = re.search(r'duplicate key "([^"]*)"', str(exc))
    name = key.group(1) if key else "?"
    first = getattr(exc, "context_mark", None)
    where = f" (first at line {first.line + 1})" if first is not None else ""
    return _finding(
        path,
        f"duplicate key {name!r}{where}",
        "keep one of them",
        line,
        col,
        "yaml-duplicate",
    )


def _syntax_error(path: Path, text: str, exc: Any) -> Finding:
    """A tab in the indentation, an unclosed quote, or ruamel's own words, at the line."""
    line, col = _mark(exc)
    tab = _tab_indent(text, line)
    if tab is not None:
        # ruamel says "cannot start any token": say what it means instead.
        return _finding(
            path,
            "tab character in the indentation",
            "indent with spaces (YAML does not allow tabs)",
            tab[0],
            tab[1],
            "yaml-tab",
        )
    quote = _unclosed_quote(text, line)
    if quote is not None:
        return _finding(
            path,
            f"unclosed {quote[2]} quote",
            f"close the string with {quote[2]} on this line (or remove the opening one)",
            quote[0],
            quote[1],
            "yaml-quote",
        )
    if line is not None:
        line = min(line, max(1, len(text.splitlines())))  # never past the last line
    problem_text = (exc.problem or exc.context or "invalid YAML").strip()
    return _finding(
        path,
        f"YAML syntax error: {problem_text}",
        "check quotes, colons and indentation on this line or the one above",
        line,
        col,
        "yaml-syntax",
    )


def _shape_problem(path: Path, node: Any) -> Finding | None:
    """An empty file or one that is not a `key: value` mapping."""
    from ruamel.yaml.comments import CommentedMap

    if node is None:
        return _finding(
            path,
            "file is empty (no keys)",
            f"run `vlmctl init` to get a commented template of {path.name}",
            None,
            None,
            "yaml-empty",
        )
    if not isinstance(node, CommentedMap):
        kind = "a list" if isinstance(node, list) else f"a single value ({type(node).__name__})"
        return _finding(
            path,
            f"the file holds {kind}; expected a mapping of `key: value` lines",
            "write top-level keys (e.g. `learning_rate: 1.0e-05`), not `- items`",
            1,
            1,
            "yaml-not-mapping",
        )
    return None


def _to_doc(path: Path, node: Any, text: str) -> tuple[YamlDoc | None, list[Finding]]:
    """Plain data plus positions; refuses alias bombs before expanding them."""
    doc = YamlDoc(path=path, data={})
    problems: list[Finding] = []
    try:
        if _expanded_size(node, {}) > MAX_VALUES:
            raise _TooBig  # counted without expanding: each shared node is sized once
        doc.data = _plain(node, (), doc, problems)
    except (_TooBig, RecursionError):
        return None, [
            _finding(
                path,
                f"more than {MAX_VALUES:,} values once YAML aliases (*name) are expanded",
                "write the values out, or use far fewer aliases: a config needs a few hundred",
                *_first_alias(text),
                "yaml-alias-bomb",
            )
        ]
    if problems:
        return None, problems
    return doc, []


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
