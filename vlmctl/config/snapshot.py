"""Facts that config checking reads from the heavy libraries, shipped as a snapshot.

Config-level validation asks the installed libraries, without importing them: which keys TRL's
`SFTConfig` accepts and with which annotations (`sft_fields.py`), whether transformers defines a
class named in `model_classes` (`models/resolve.py`) and which model types its Auto mappings load
with each class (`class_checks.py`). The light install (`pip install vlmctl`, no
extras) has neither library, so the answers for the versions vlmctl is tested with ship in
`facts_snapshot.json`, written by `python scripts/snapshot_facts.py` and kept equal to the
installed libraries by `tests/test_facts_snapshot.py`. When a library is installed, its own
files win and the snapshot is not read. Writing it (from the installed libraries) is
`snapshot_write.py`: this module only reads, so the modules that fall back to it import
nothing back.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

SNAPSHOT_FILE = Path(__file__).with_name("facts_snapshot.json")


@lru_cache(maxsize=1)
def load_snapshot() -> dict:
    """The shipped snapshot: {"versions": {...}, "sft_config_fields": [...], ...}."""
    return json.loads(SNAPSHOT_FILE.read_text(encoding="utf-8"))


def snapshot_sft_annotations() -> dict[str, str]:
    """SFTConfig field -> annotation, of the TRL the snapshot was taken from."""
    return dict(load_snapshot()["sft_config_annotations"])


def snapshot_class_model_types() -> dict[str, frozenset[str]]:
    """Class name -> the model types transformers' Auto mappings load with it (snapshot)."""
    return {k: frozenset(v) for k, v in load_snapshot()["class_model_types"].items()}


def snapshot_transformers_classes() -> frozenset[str]:
    """Class names transformers defined when the snapshot was taken."""
    return frozenset(load_snapshot()["transformers_classes"])


def snapshot_version(dist: str) -> str:
    """The version of `dist` ("trl", "transformers") the snapshot was taken from."""
    return load_snapshot()["versions"].get(dist, "?")
