"""pydantic's validation errors in the config's own words.

"r: expected a positive integer, got 'sixty-four'" instead of pydantic's wording: the key path
as written in the YAML (no union branch names), the expected type described from the field's
annotation and constraints, did-you-mean for unknown keys, and the file a misplaced top-level
key belongs in. Pure functions; `load.py` adds where each key is (file:line:col).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel

from vlmctl.config import FILES, MODELS
from vlmctl.config.yamlio import KeyPath
from vlmctl.errors import did_you_mean


def clean_path(loc: tuple, data: Any, kind: str | None = None) -> KeyPath:
    """pydantic's loc minus union-branch tags (`str`, `list[ContentPart]`), checked on the data.

    A last element that is not in the data is the key meant only for a `missing` error (with
    `kind` given); otherwise it is a union tag (`target_modules: {a: 1}` -> `str`, `list[str]`).
    """
    out: list[str | int] = []
    node = data
    for i, el in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and isinstance(el, str) and el in node:
            out.append(el)
            node = node[el]
        elif isinstance(node, list) and isinstance(el, int) and 0 <= el < len(node):
            out.append(el)
            node = node[el]
        elif isinstance(node, dict) and isinstance(el, str) and last and kind in (None, "missing"):
            out.append(el)  # a missing key: not in the data, but it is the key meant
            node = None
    return tuple(out)


def _unwrap(annotation: Any) -> list[Any]:
    """Union members of an annotation (Optional[X] -> [X, NoneType])."""
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return [m for a in typing.get_args(annotation) for m in _unwrap(a)]
    return [annotation]


def model_in(annotation: Any) -> type[BaseModel] | None:
    """The config model inside an annotation (Optional, list, union), to walk nested keys."""
    for member in _unwrap(annotation):
        if isinstance(member, type) and issubclass(member, BaseModel):
            return member
        for arg in typing.get_args(member):
            found = model_in(arg)
            if found is not None:
                return found
    return None


def _field_for(model_cls: type[BaseModel], path: KeyPath):
    """The FieldInfo that validates `path` (None when the path leaves typed ground)."""
    cls: type[BaseModel] | None = model_cls
    info = None
    for part in path:
        if isinstance(part, int):
            continue
        if cls is None or part not in cls.model_fields:
            return None
        info = cls.model_fields[part]
        cls = model_in(info.annotation)
    return info


def _literal_values(annotation: Any) -> list[Any]:
    values = []
    for member in _unwrap(annotation):
        if typing.get_origin(member) is Literal:
            values.extend(typing.get_args(member))
    return values


def _bounds(metadata: Iterable[Any]) -> str:
    """` >= 0 and < 1` from a field's constraints (a bare `> 0` is already "positive")."""
    parts = []
    for attr, sym in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
        for m in metadata:
            bound = getattr(m, attr, None)
            if bound is not None and not (attr == "gt" and bound == 0):
                parts.append(f"{sym} {bound}")
    return (" " + " and ".join(dict.fromkeys(parts))) if parts else ""


def describe_type(annotation: Any, metadata: Iterable[Any]) -> str:
    """`PositiveInt | None` -> 'a positive integer or null'."""
    positive = any(getattr(m, "gt", None) == 0 for m in metadata)
    names: list[str] = []
    for member in _unwrap(annotation):
        meta = list(metadata)
        if typing.get_origin(member) is typing.Annotated:
            meta += list(typing.get_args(member)[1:])
            member = typing.get_args(member)[0]
        pos = positive or any(getattr(m, "gt", None) == 0 for m in meta)
        origin = typing.get_origin(member) or member
        if member is type(None):
            names.append("null")
        elif member is bool:
            names.append("true or false")
        elif member is int:
            names.append(("a positive integer" if pos else "an integer") + _bounds(meta))
        elif member is float:
            names.append(("a positive number" if pos else "a number") + _bounds(meta))
        elif member is str:
            names.append("a string")
        elif origin is Literal:
            names.append("one of " + ", ".join(str(v) for v in typing.get_args(member)))
        elif origin in (list, tuple, set):
            names.append("a list")
        elif origin is dict or (isinstance(member, type) and issubclass(member, BaseModel)):
            names.append("a mapping (key: value lines)")
        else:
            names.append(getattr(member, "__name__", str(member)))
    seen: list[str] = []
    for n in names:
        if n not in seen:
            seen.append(n)
    if len(seen) > 1 and "null" in seen:
        seen.remove("null")
        seen.append("null")
    return " or ".join(seen)


def show_value(value: Any) -> str:
    """A value as the user wrote it, short: `null`, `true`, 'text', "a list"."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    if value is None:
        text = "null"
    return text if len(text) <= 60 else text[:57] + "...'"


_FALLBACK_EXPECT = {
    "int_parsing": "an integer",
    "int_type": "an integer",
    "int_from_float": "a whole number",
    "float_parsing": "a number",
    "float_type": "a number",
    "bool_parsing": "true or false",
    "bool_type": "true or false",
    "string_type": "a string",
    "list_type": "a list",
    "dict_type": "a mapping (key: value lines)",
    "model_type": "a mapping (key: value lines)",
    "model_attributes_type": "a mapping (key: value lines)",
}


def describe_error(
    err: dict, model_cls: type[BaseModel], path: KeyPath, file_key: str
) -> tuple[str, str | None, str]:
    """(message, hint, code) for one pydantic error."""
    kind = err["type"]
    leaf = str(next((p for p in reversed(path) if isinstance(p, str)), file_key))
    if kind == "extra_forbidden":
        parent = _field_for(model_cls, path[:-1]) if len(path) > 1 else None
        parent_cls = model_in(parent.annotation) if parent is not None else model_cls
        choices = list(parent_cls.model_fields) if parent_cls else []
        return unknown_key(leaf, choices, file_key, top_level=len(path) == 1)
    if kind == "missing":
        return f"{leaf}: required key missing", f"add `{leaf}:` here", "missing-key"
    if kind in ("value_error", "assertion_error"):
        msg = str(err.get("ctx", {}).get("error") or err["msg"])
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        what, sep, how = msg.partition("; ")
        if sep and how.startswith(("use ", "write ", "set ")):
            return f"{leaf}: {what}", how, "invalid-value"  # "...; use one of X" is the fix
        return f"{leaf}: {msg}", None, "invalid-value"
    info = _field_for(model_cls, path)
    got = show_value(err.get("input"))
    if info is not None and any(isinstance(p, str) for p in path):
        expected = describe_type(info.annotation, info.metadata)
        hint = None
        allowed = _literal_values(info.annotation)
        if allowed:
            close = did_you_mean(str(err.get("input")), [str(a) for a in allowed])
            hint = f"did you mean {close!r}?" if close else None
        return f"{leaf}: expected {expected}, got {got}", hint, "invalid-value"
    if kind == "literal_error":
        expected = "one of " + str(err.get("ctx", {}).get("expected", "")).replace("'", "")
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        ctx = err.get("ctx", {})
        sym = {
            "greater_than": ">",
            "greater_than_equal": ">=",
            "less_than": "<",
            "less_than_equal": "<=",
        }[kind]
        expected = f"a number {sym} {next(iter(ctx.values()), '')}"
    else:
        expected = _FALLBACK_EXPECT.get(kind, "")
    if not expected:
        return f"{leaf}: {err['msg']}", None, "invalid-value"
    return f"{leaf}: expected {expected}, got {got}", None, "invalid-value"


# Every top-level key of every file, to say "this key belongs in train_config.yaml".
def _top_level_keys() -> dict[str, str]:
    out = {}
    for key, cls in MODELS.items():
        for name in cls.model_fields:
            out.setdefault(name, key)
    return out


def unknown_key(
    name: str,
    choices: Iterable[str],
    file_key: str,
    top_level: bool,
    extra_choices: Iterable[str] = (),
) -> tuple[str, str | None, str]:
    """(message, hint, code) for an unknown key: did-you-mean, or the file it belongs in."""
    choices = list(choices)
    close = did_you_mean(name, choices) or did_you_mean(name, list(extra_choices))
    hint = f"did you mean {close!r}?" if close else None
    if top_level and not close:
        owner = _top_level_keys().get(name)
        if owner and owner != file_key:
            hint = f"this key belongs in {FILES[owner]}"
    return f"{name}: unknown key", hint, "unknown-key"
