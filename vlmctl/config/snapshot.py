"""Facts that config checking reads from the heavy libraries, shipped as a snapshot.

Config-level validation asks the installed libraries, without importing them: which keys TRL's
`SFTConfig` accepts and with which annotations (`sft_fields.py`), whether transformers defines a
class named in `model_classes` (`models/resolve.py`) and which model types its Auto mappings load
with each class (`class_checks.py`). The light install (`pip install vlmctl`, no
extras) has neither library, so the answers for the versions vlmctl is tested with ship in
`facts_snapshot.json`, written by `python scripts/snapshot_facts.py` and kept equal to the
installed libraries by `tests/test_facts_snapshot.py`. When a library is installed, its own
files win and the snapshot is not read.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from importlib import metadata
from pathlib import Path

SNAPSHOT_FILE = Path(__file__).with_name("facts_snapshot.json")
_CLASS_RE = re.compile(rb"class ([A-Za-z_][A-Za-z0-9_]*)\(")


@lru_cache(maxsize=1)
def load_snapshot() -> dict:
    """The shipped snapshot: {"versions": {...}, "sft_config_fields": [...], ...}."""
    return json.loads(SNAPSHOT_FILE.read_text(encoding="utf-8"))


def snapshot_sft_annotations() -> dict[str, str]:
    """SFTConfig field -> annotation, of the TRL the snapshot was taken from."""
    return dict(load_snapshot()["sft_config_annotations"])


def snapshot_sft_fields() -> frozenset[str]:
    """SFTConfig field names of the TRL the snapshot was taken from."""
    return frozenset(load_snapshot()["sft_config_annotations"])


def snapshot_class_model_types() -> dict[str, frozenset[str]]:
    """Class name -> the model types transformers' Auto mappings load with it (snapshot)."""
    return {k: frozenset(v) for k, v in load_snapshot()["class_model_types"].items()}


def snapshot_transformers_classes() -> frozenset[str]:
    """Class names transformers defined when the snapshot was taken."""
    return frozenset(load_snapshot()["transformers_classes"])


def snapshot_version(dist: str) -> str:
    """The version of `dist` ("trl", "transformers") the snapshot was taken from."""
    return load_snapshot()["versions"].get(dist, "?")


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
