"""The shipped snapshot of TRL/transformers facts equals the installed libraries, and is what the
light install reads (the installed libraries win when present)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from vlmctl.config import sft_fields
from vlmctl.config.snapshot import (
    SNAPSHOT_FILE,
    load_snapshot,
    snapshot_class_model_types,
    snapshot_sft_annotations,
    snapshot_transformers_classes,
)
from vlmctl.config.snapshot_write import dumps, generate
from vlmctl.models import resolve

REPO = Path(__file__).resolve().parents[1]
needs_libs = pytest.mark.skipif(
    importlib.util.find_spec("trl") is None or importlib.util.find_spec("transformers") is None,
    reason="the snapshot is compared with an installed TRL and transformers (the full install)",
)


@needs_libs
def test_snapshot_equals_the_installed_libraries():
    """Fails after a TRL/transformers upgrade: run `python scripts/snapshot_facts.py`."""
    fresh = generate()
    shipped = load_snapshot()
    assert shipped["versions"] == fresh["versions"], "rerun scripts/snapshot_facts.py"
    assert shipped["sft_config_annotations"] == fresh["sft_config_annotations"]
    assert shipped["transformers_classes"] == fresh["transformers_classes"]
    assert shipped["class_model_types"] == fresh["class_model_types"]
    assert SNAPSHOT_FILE.read_text(encoding="utf-8") == dumps(fresh)


@needs_libs
def test_the_script_check_mode_agrees():
    r = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "snapshot_facts.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "up to date" in r.stdout


@needs_libs
def test_snapshot_answers_like_the_installed_transformers(monkeypatch):
    names = [
        "Qwen2VLForConditionalGeneration",
        "Qwen2VLProcessor",
        "LlavaForConditionalGeneration",
        "Idefics3Processor",
        "PaliGemmaForConditionalGeneration",
        "InternVLChatModel",  # remote code: in neither
        "Phi3VForCausalLM",
        "TrainingArguments",
        "NotAClassAnywhere",
    ]
    installed = {n: resolve.is_transformers_class(n) for n in names}
    assert installed["Qwen2VLForConditionalGeneration"] and not installed["Phi3VForCausalLM"]
    # Without transformers (the light install) the snapshot answers.
    monkeypatch.setattr(resolve, "_transformers_dir", lambda: None)
    monkeypatch.setattr(resolve, "_auto_mapped_names", lambda: frozenset())
    resolve.is_transformers_class.cache_clear()
    try:
        assert {n: resolve.is_transformers_class(n) for n in names} == installed
    finally:
        resolve.is_transformers_class.cache_clear()


def test_sft_fields_come_from_the_snapshot_only_without_trl(monkeypatch):
    real_find_spec = importlib.util.find_spec
    sft_fields.sft_config_fields.cache_clear()
    sft_fields.sft_config_annotations.cache_clear()
    try:
        monkeypatch.setattr(
            sft_fields.importlib.util,
            "find_spec",
            lambda name, *a: None if name == "trl" else real_find_spec(name, *a),
        )
        monkeypatch.setattr(sft_fields, "_class_fields", lambda *a: pytest.fail("read TRL"))
        assert sft_fields.sft_config_fields() == frozenset(snapshot_sft_annotations())
        # the annotations too: a wrong type is still an error in the light install
        assert sft_fields.sft_type_problem("dataloader_num_workers", "two") == "an integer"
    finally:
        sft_fields.sft_config_fields.cache_clear()
        sft_fields.sft_config_annotations.cache_clear()


@needs_libs
def test_installed_trl_wins_over_the_snapshot(monkeypatch):
    import vlmctl.config.snapshot as snapshot

    monkeypatch.setattr(snapshot, "load_snapshot", lambda: pytest.fail("read the snapshot"))
    sft_fields.sft_config_fields.cache_clear()
    sft_fields.sft_config_annotations.cache_clear()
    try:
        assert "learning_rate" in sft_fields.sft_config_fields()
    finally:
        sft_fields.sft_config_fields.cache_clear()
        sft_fields.sft_config_annotations.cache_clear()


def test_snapshot_holds_what_config_checks_need():
    assert {"learning_rate", "train_sampling_strategy", "max_length"} <= frozenset(
        snapshot_sft_annotations()
    )
    assert "group_by_length" not in frozenset(snapshot_sft_annotations())  # gone in transformers 5
    assert "Qwen2VLForConditionalGeneration" in snapshot_transformers_classes()
    types = snapshot_class_model_types()
    assert "qwen2_vl" in types["Qwen2VLForConditionalGeneration"]
