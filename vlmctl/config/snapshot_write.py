"""Write `facts_snapshot.json` from the libraries installed now (`scripts/snapshot_facts.py`).

Kept apart from `snapshot.py` (which only reads the file): writing asks the modules that read
the snapshot as a fallback (`sft_fields`, `class_checks`, `models.resolve`), so together they
would import each other.
"""

from __future__ import annotations

import json
import re
from importlib import metadata
from pathlib import Path

_CLASS_RE = re.compile(rb"class ([A-Za-z_][A-Za-z0-9_]*)\(")


def installed_transformers_classes(root: Path) -> set[str]:
    """Every name `resolve.is_transformers_class` answers True for, read from `root`'s files."""
    from vlmctl.models.resolve import _auto_mapped_names

    names = set(_auto_mapped_names())
    for pattern in ("models/*/modeling_*.py", "models/*/processing_*.py", "*.py"):
        for path in root.glob(pattern):
            names.update(n.decode() for n in _CLASS_RE.findall(path.read_bytes()))
    return names


def generate() -> dict:
    """The snapshot of the libraries installed now (raises when TRL or transformers is absent)."""
    from vlmctl.config.class_checks import _PAIR_RE
    from vlmctl.config.sft_fields import _class_fields
    from vlmctl.models.resolve import _transformers_dir

    root = _transformers_dir()
    fields = _class_fields("trl.trainer.sft_config", "SFTConfig", set())
    if root is None or not fields:
        raise RuntimeError("the snapshot needs TRL and transformers installed")
    return {
        "about": "Written by scripts/snapshot_facts.py; read by vlmctl only when the library "
        "is not installed (the light install). tests/test_facts_snapshot.py keeps it equal.",
        "versions": {d: metadata.version(d) for d in ("trl", "transformers")},
        "sft_config_annotations": dict(sorted(fields.items())),
        "transformers_classes": sorted(installed_transformers_classes(root)),
        "class_model_types": _class_model_types(root, _PAIR_RE),
    }


def _class_model_types(root: Path, pair_re: re.Pattern) -> dict[str, list[str]]:
    """What `class_checks.class_model_types` reads from `root`, as sorted lists."""
    out: dict[str, set[str]] = {}
    for path in sorted((root / "models" / "auto").glob("*.py")):
        for mtype, cls in pair_re.findall(path.read_text(encoding="utf-8")):
            out.setdefault(cls, set()).add(mtype)
    return {k: sorted(v) for k, v in sorted(out.items())}


def dumps(snapshot: dict) -> str:
    """The file's text: one name per line, so a regenerated snapshot diffs readably."""
    return json.dumps(snapshot, indent=1, sort_keys=False) + "\n"
