"""Packing's pieces: bins, the packed batch, the config keys, validate's findings, train wiring.

The exactness proof (packed == rows alone, per family) is tests/test_packing_exact.py.
"""

from __future__ import annotations

import random

import pytest
import torch
from _collate_util import cfg, chat
from _collate_util import processor as load_processor

from vlmctl.collate import VLMCollator
from vlmctl.packing import (
    BIN_KEY,
    SEQ_LENS_KEY,
    SPLIT_KEY,
    PackingCollator,
    bin_dataset,
    bin_report,
    describe,
    make_bins,
    pack_batch,
    refusal,
)


def test_bins_hold_every_row_once_within_capacity_and_fill_well():
    rng = random.Random(0)
    lengths = [rng.randint(40, 700) for _ in range(300)] + [None, None]
    bins = make_bins(lengths, 1024)
    placed = sorted(i for b in bins for i in b)
    assert placed == list(range(300))  # the dropped (None) rows are in no bin
    assert all(sum(lengths[i] for i in b) <= 1024 for b in bins)
    report = bin_report(bins, lengths, 1024)
    # best-fit decreasing is within a few % of the lower bound ceil(total / capacity)
    lower = -(-sum(x for x in lengths if x) // 1024)
    assert report["bins"] <= lower + 2 and report["fill_ratio"] > 0.95, report
    assert make_bins(lengths, 1024) == bins  # deterministic (every rank, every resume)
    assert "bins of 1024 tokens" in describe(report)


def test_a_row_longer_than_a_bin_sits_alone():
    bins = make_bins([10, 5000, 20], 100)
    assert [1] in bins and sorted(i for b in bins for i in b) == [0, 1, 2]
    assert bin_report(bins, [10, 5000, 20], 100)["over_capacity"] == 1


def test_pack_batch_unpads_restarts_positions_and_ignores_each_first_label():
    batch = {
        "input_ids": torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0], [1, 2, 3, 4]]),
        "attention_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]]),
        "labels": torch.tensor([[5, 6, 7, -100], [8, 9, -100, -100], [1, 2, 3, 4]]),
        "pixel_values": torch.ones(5, 3),
    }
    out = pack_batch(batch, [3, 2, 4])
    assert out["input_ids"].tolist() == [[5, 6, 7, 8, 9, 1, 2, 3, 4]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2, 3]]
    assert out["labels"].tolist() == [[-100, 6, 7, -100, 9, -100, 2, 3, 4]]
    assert "attention_mask" not in out  # the packed mask comes from the position ids
    assert out["pixel_values"] is batch["pixel_values"]  # media keep row order
    assert out[SEQ_LENS_KEY].tolist() == [3, 2, 4]
    with pytest.raises(ValueError, match="right-padded"):
        pack_batch(batch, [2, 2, 4])


def test_packing_collator_flattens_bins_in_order(tiny_model_dir):
    proc = load_processor(tiny_model_dir("qwen2_vl"))
    col = VLMCollator(proc, cfg(), model_type="qwen2_vl")
    rows = [chat(["red"], 1), chat(["a much longer answer " * 5, "two"], 2), chat(["x"], 3)]
    encoded = col.encode_examples(rows)
    packed = PackingCollator(col).collate_encoded(encoded)
    lengths = [e.length for e in encoded]
    assert packed["input_ids"].shape == (1, sum(lengths))
    assert packed["image_grid_thw"].shape[0] == 6  # 1 + 2 + 3 images, row order
    assert torch.equal(packed["input_ids"][0], torch.cat([e.input_ids for e in encoded]))


def test_bin_items_bring_their_rows_in_bin_order(monkeypatch):
    from types import SimpleNamespace

    import vlmctl.data.messages as messages

    ds = bin_dataset([[2, 0], [1]], "train")
    assert len(ds) == 2 and ds[0] == {BIN_KEY: [2, 0], SPLIT_KEY: "train"}
    monkeypatch.setattr(messages, "row_to_example", lambda row, cfg, index: row["i"])
    inner = SimpleNamespace(
        cfg=None, encode_examples=lambda xs: [SimpleNamespace(drop_reason=None, i=x) for x in xs]
    )
    packer = PackingCollator(inner, {"train": [{"i": f"row{k}"} for k in range(3)]})
    assert [e.i for e in packer.encode([ds[0], ds[1]])] == ["row2", "row0", "row1"]


@pytest.mark.parametrize(
    "cls,model_type,remote,refused",
    [
        ("Qwen2VLForConditionalGeneration", "qwen2_vl", False, None),
        ("PaliGemmaForConditionalGeneration", "paligemma", False, "token_type_ids"),
        ("Gemma3ForConditionalGeneration", "gemma3", False, "token_type_ids"),
        ("MllamaForConditionalGeneration", "mllama", False, "cross-attention"),
        ("InternVLChatModel", "internvl_chat", True, "remote code"),
        ("Florence2ForConditionalGeneration", "florence2", False, "not proven exact"),
    ],
)
def test_refusal_reasons(cls, model_type, remote, refused):
    why = refusal(cls, model_type, remote)
    assert (why is None) if refused is None else (refused in why), why


def test_packing_keys_never_reach_sftconfig():
    from vlmctl.config.train import TrainConfig

    t = TrainConfig(packing=True, padding_free=True)
    kw = t.to_sft_kwargs()
    assert not {"packing", "padding_free", "packing_strategy"} & set(kw)  # TRL would refuse
    with pytest.raises(ValueError):
        TrainConfig(packing_strategy="wrapped")  # splits rows: media spans forbid it


def _validate_findings(tmp_path, tiny_model_dir, family, *sets):
    from vlmctl.config.load import collect_config_set
    from vlmctl.demo.colors import DemoOptions, write_color_dataset, write_config_set

    write_color_dataset(tmp_path / "data", 4, 0, seed=1)
    write_config_set(tmp_path / "config", str(tiny_model_dir(family)), DemoOptions(out=tmp_path))
    cs, findings = collect_config_set(tmp_path / "config", list(sets))
    return [f for f in findings if f.code.startswith("packing")]


def test_validate_refuses_paligemma_at_the_packing_key(tmp_path, tiny_model_dir):
    found = _validate_findings(tmp_path, tiny_model_dir, "paligemma", "train.packing=true")
    errors = [f for f in found if f.severity == "error"]
    assert len(errors) == 1 and errors[0].key == "packing"
    assert "token_type_ids" in errors[0].message and "packing: false" in errors[0].hint


def test_validate_says_what_packing_does(tmp_path, tiny_model_dir):
    found = _validate_findings(tmp_path, tiny_model_dir, "qwen2_vl", "train.packing=true")
    assert [f.severity for f in found] == ["info"]
    assert "bins of text_processing.max_length" in found[0].message
    assert not _validate_findings(tmp_path / "b", tiny_model_dir, "qwen2_vl")  # off: silent


def _config_set(root, tiny_model_dir, n=12):
    from vlmctl.demo.colors import DemoOptions, write_color_dataset, write_config_set

    write_color_dataset(root / "data", n, 0, seed=1)
    write_config_set(root / "config", str(tiny_model_dir("qwen2_vl")), DemoOptions(out=root))
    return root / "config"


def _vlmctl(args, timeout=600):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    env.update(HF_HUB_OFFLINE="1", WANDB_MODE="disabled")
    return subprocess.run(
        [sys.executable, "-m", "vlmctl", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_validate_and_preview_show_bins_fill_and_rows_per_bin(tmp_path, tiny_model_dir):
    config = _config_set(tmp_path, tiny_model_dir)
    out = _vlmctl(["validate", str(config), "--set", "train.packing=true"])
    assert out.returncode == 0, out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "packing the checked rows: 12 rows -> " in text and "fill " in text, text[-2000:]
    assert "rows per bin" in text
    out = _vlmctl(["preview", str(config), "--set", "train.packing=true"])
    assert out.returncode == 0, out.stderr[-2000:]
    assert "packing (train): " in out.stdout and "rows per bin" in out.stdout


@pytest.mark.slow
def test_train_with_packing_end_to_end(tmp_path, tiny_model_dir):
    """The worker packs (bins said on stderr), the trainer computes M-RoPE per row, it trains."""
    import json

    config = _config_set(tmp_path, tiny_model_dir)
    run = tmp_path / "run"
    out = _vlmctl(
        ["train", str(config), "--output-dir", str(run), "--set", "train.packing=true",
         "--set", "train.max_steps=2", "--set", "train.report_to=none",
         "--set", "train.per_device_train_batch_size=1"]
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    assert "packing train: 12 rows -> " in out.stderr
    manifest = json.loads((run / "vlmctl-run.json").read_text())
    assert manifest["finished"] and manifest["global_step"] == 2
    assert manifest["dataset_fingerprint"]["train_rows"] == 12  # the rows, not the bins
