"""The field names of the installed TRL `SFTConfig`, read from its source without importing it.

Importing TRL takes ~16 s (it pulls torch and transformers); `validate` must answer in well
under a second. The dataclass fields are read from the installed files (a line scan of the class body, `ast`
for imports and class headers), following
the class's bases through its imports (SFTConfig -> _BaseConfig -> TrainingArguments), so the
list always matches the versions installed, with no hand-kept copy.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from functools import lru_cache
from pathlib import Path


def _module_file(module: str) -> Path | None:
    """Path of a module's source without executing it (parent packages are not imported)."""
    parts = module.split(".")
    spec = importlib.util.find_spec(parts[0])
    if spec is None or not spec.submodule_search_locations:
        return Path(spec.origin) if spec and spec.origin and len(parts) == 1 else None
    base = Path(next(iter(spec.submodule_search_locations)))
    rel = Path(*parts[1:]) if len(parts) > 1 else Path()
    for cand in (base / rel / "__init__.py", (base / rel).with_suffix(".py")):
        if cand.is_file():
            return cand
    return None


def _resolve_import(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    pkg = module.split(".")[: -node.level]
    return ".".join(pkg + ([node.module] if node.module else []))


_FIELD_RE = re.compile(r"^    ([A-Za-z]\w*)\s*:(?!=)(.*)$")


def _class_span(text: str, cls_name: str) -> tuple[int, int, int] | None:
    """(prefix end, body start, body end) offsets of a top-level class, found by line scan."""
    m = re.search(rf"^class {re.escape(cls_name)}\b[^\n]*\n", text, re.MULTILINE)
    if m is None:
        return None
    prefix_end = m.start()
    # Decorators above the class are not part of the (parsable) module prefix.
    while True:
        line_start = text.rfind("\n", 0, max(prefix_end - 1, 0)) + 1
        if prefix_end and text[line_start:prefix_end].lstrip().startswith("@"):
            prefix_end = line_start
        else:
            break
    nxt = re.search(r"^[^\s#]", text[m.end() :], re.MULTILINE)
    return prefix_end, m.start(), m.end() + nxt.start() if nxt else len(text)


def _body_annotations(body: str) -> dict[str, str]:
    """Annotated class-level names -> annotation text (4-space indent, outside strings)."""
    fields: dict[str, str] = {}
    in_string: str | None = None
    for line in body.splitlines():
        if in_string is None:
            fm = _FIELD_RE.match(line)
            if fm and "ClassVar" not in fm.group(2) and not fm.group(1).startswith("_"):
                fields[fm.group(1)] = fm.group(2).split(" = ", 1)[0].strip()
        for quote in re.findall(r'"""|\'\'\'', line):
            if in_string is None:
                in_string = quote
            elif in_string == quote:
                in_string = None
    return fields


def _class_fields(module: str, cls_name: str, seen: set[tuple[str, str]]) -> dict[str, str]:
    """Dataclass field names of `module.cls_name` and its bases, read from source.

    A line scan of the class body, not `ast.parse` of whole files: transformers'
    training_args.py alone costs ~40 ms to parse, a fifth of `vlmctl validate`'s budget. Only
    the module prefix (imports) and the class header go through `ast`.
    """
    if (module, cls_name) in seen:
        return {}
    seen.add((module, cls_name))
    path = _module_file(module)
    if path is None:
        return {}
    text = path.read_text(encoding="utf-8")
    span = _class_span(text, cls_name)
    if span is None:
        # Re-exported from a lazily-importing package (`from transformers import
        # TrainingArguments`): find the sibling module that defines it.
        if path.name == "__init__.py":
            # Its TYPE_CHECKING block names the module: `from .training_args import X as X`.
            hint = re.search(
                rf"^\s*from \.([\w.]+) import [^\n]*\b{re.escape(cls_name)}\b", text, re.MULTILINE
            )
            if hint:
                found = _class_fields(f"{module}.{hint.group(1)}", cls_name, seen)
                if found:
                    return found
            needle = re.compile(rf"^class {re.escape(cls_name)}\b", re.MULTILINE)
            for sib in sorted(path.parent.glob("*.py")):
                if sib.name != "__init__.py" and needle.search(sib.read_text(encoding="utf-8")):
                    return _class_fields(f"{module}.{sib.stem}", cls_name, seen)
        return {}
    prefix_end, body_start, body_end = span
    imports: dict[str, tuple[str, str]] = {}
    for node in ast.parse(text[:prefix_end]).body:
        if isinstance(node, ast.ImportFrom):
            src = _resolve_import(module, node)
            for alias in node.names:
                imports[alias.asname or alias.name] = (src, alias.name)
    header_end = text.index("\n", body_start)
    header = ast.parse(text[body_start:header_end].rstrip() + " pass").body[0]
    fields: dict[str, str] = {}
    for base in getattr(header, "bases", []):
        if isinstance(base, ast.Name):
            src, name = imports.get(base.id, (module, base.id))
            fields.update(_class_fields(src, name, seen))
    fields.update(_body_annotations(text[header_end:body_end]))  # a subclass's annotation wins
    return fields


@lru_cache(maxsize=1)
def sft_config_annotations() -> dict[str, str]:
    """Every field of the installed `trl.SFTConfig` -> its annotation as written in the source.

    Without TRL (the light install), those of the TRL vlmctl ships a snapshot of
    (`vlmctl/config/facts_snapshot.json`), so typos and wrong types are still caught in CI.
    """
    if importlib.util.find_spec("trl") is None:
        from vlmctl.config.snapshot import snapshot_sft_annotations

        return snapshot_sft_annotations()
    return _class_fields("trl.trainer.sft_config", "SFTConfig", set())


@lru_cache(maxsize=1)
def sft_config_fields() -> frozenset[str]:
    """Names of every field of the installed `trl.SFTConfig` (or of the snapshot's, without TRL)."""
    return frozenset(sft_config_annotations())


_SIMPLE = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "str": "a string",
    "list": "a list",
    "dict": "a mapping",
    "None": "null",
}


def _members(annotation: str) -> list[str] | None:
    """`int | None`, `Optional[int]`, `Union[int, str]` -> their top-level members."""
    text = annotation.strip().strip("'\"")
    m = re.fullmatch(r"(?:typing\.)?(Optional|Union)\[(.*)\]", text)
    if m:
        inner = _split_top(m.group(2), ",")
        return inner + (["None"] if m.group(1) == "Optional" else [])
    return _split_top(text, "|")


def _split_top(text: str, sep: str) -> list[str]:
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += ch in "[("
        depth -= ch in "])"
        if ch == sep and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return [*out, cur.strip()] if cur.strip() else out


def _kind(member: str) -> str | None:
    base = re.split(r"\[", member, maxsplit=1)[0].strip().removeprefix("typing.")
    base = {"List": "list", "Dict": "dict", "NoneType": "None"}.get(base, base)
    return base if base in _SIMPLE else None


def _matches(kind: str, value: object) -> bool:
    if kind == "None":
        return value is None
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, {"str": str, "list": list, "dict": dict}[kind])


def sft_type_problem(name: str, value: object) -> str | None:
    """'an integer' when `value` cannot be SFTConfig's `name`, else None.

    Only plain annotations are judged (int, float, bool, str, list, dict, None and unions of
    them); an enum, a Literal or a class accepts anything here and is left to the library.
    """
    annotation = sft_config_annotations().get(name)
    if annotation is None:
        return None
    members = _members(annotation)
    if not members:
        return None
    kinds = [_kind(m) for m in members]
    if any(k is None for k in kinds):
        return None
    if any(_matches(k, value) for k in kinds):  # type: ignore[arg-type]
        return None
    names = [_SIMPLE[k] for k in dict.fromkeys(kinds) if k != "None"]  # type: ignore[index]
    if "None" in kinds:
        names.append("null")
    return " or ".join(names)
