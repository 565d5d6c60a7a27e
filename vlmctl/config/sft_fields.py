"""The field names of the installed TRL `SFTConfig`, read from its source without importing it.

Importing TRL takes ~16 s (it pulls torch and transformers); `validate` must answer in well
under a second. The dataclass fields are read with `ast` from the installed files, following
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


def _class_fields(module: str, cls_name: str, seen: set[tuple[str, str]]) -> set[str]:
    if (module, cls_name) in seen:
        return set()
    seen.add((module, cls_name))
    path = _module_file(module)
    if path is None:
        return set()
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imports: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            src = _resolve_import(module, node)
            for alias in node.names:
                imports[alias.asname or alias.name] = (src, alias.name)
    fields: set[str] = set()
    if not any(isinstance(n, ast.ClassDef) and n.name == cls_name for n in tree.body):
        # Re-exported from a lazily-importing package (`from transformers import
        # TrainingArguments`): find the sibling module that defines it.
        if path.name == "__init__.py":
            needle = re.compile(rf"^class {re.escape(cls_name)}\b", re.MULTILINE)
            for sib in sorted(path.parent.glob("*.py")):
                if sib.name != "__init__.py" and needle.search(sib.read_text(encoding="utf-8")):
                    return _class_fields(f"{module}.{sib.stem}", cls_name, seen)
        return fields
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == cls_name:
            for base in node.bases:
                if isinstance(base, ast.Name):
                    if base.id in imports:
                        src, name = imports[base.id]
                        fields |= _class_fields(src, name, seen)
                    else:
                        fields |= _class_fields(module, base.id, seen)
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    if not stmt.target.id.startswith("_"):
                        fields.add(stmt.target.id)
    return fields


@lru_cache(maxsize=1)
def sft_config_fields() -> frozenset[str]:
    """Names of every field of the installed `trl.SFTConfig` (empty if TRL is not installed)."""
    return frozenset(_class_fields("trl.trainer.sft_config", "SFTConfig", set()))
