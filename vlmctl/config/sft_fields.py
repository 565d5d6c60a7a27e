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


def _body_fields(body: str) -> set[str]:
    """Annotated class-level names (4-space indent, outside string literals)."""
    fields: set[str] = set()
    in_string: str | None = None
    for line in body.splitlines():
        if in_string is None:
            fm = _FIELD_RE.match(line)
            if fm and "ClassVar" not in fm.group(2) and not fm.group(1).startswith("_"):
                fields.add(fm.group(1))
        for quote in re.findall(r'"""|\'\'\'', line):
            if in_string is None:
                in_string = quote
            elif in_string == quote:
                in_string = None
    return fields


def _class_fields(module: str, cls_name: str, seen: set[tuple[str, str]]) -> set[str]:
    """Dataclass field names of `module.cls_name` and its bases, read from source.

    A line scan of the class body, not `ast.parse` of whole files: transformers'
    training_args.py alone costs ~40 ms to parse, a fifth of `vlmctl validate`'s budget. Only
    the module prefix (imports) and the class header go through `ast`.
    """
    if (module, cls_name) in seen:
        return set()
    seen.add((module, cls_name))
    path = _module_file(module)
    if path is None:
        return set()
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
        return set()
    prefix_end, body_start, body_end = span
    imports: dict[str, tuple[str, str]] = {}
    for node in ast.parse(text[:prefix_end]).body:
        if isinstance(node, ast.ImportFrom):
            src = _resolve_import(module, node)
            for alias in node.names:
                imports[alias.asname or alias.name] = (src, alias.name)
    header_end = text.index("\n", body_start)
    header = ast.parse(text[body_start:header_end].rstrip() + " pass").body[0]
    fields: set[str] = set()
    for base in getattr(header, "bases", []):
        if isinstance(base, ast.Name):
            src, name = imports.get(base.id, (module, base.id))
            fields |= _class_fields(src, name, seen)
    return fields | _body_fields(text[header_end:body_end])


@lru_cache(maxsize=1)
def sft_config_fields() -> frozenset[str]:
    """Names of every field of the installed `trl.SFTConfig` (empty if TRL is not installed)."""
    return frozenset(_class_fields("trl.trainer.sft_config", "SFTConfig", set()))
