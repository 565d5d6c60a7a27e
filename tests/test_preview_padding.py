"""Issue #19 items 3-4: `padding` values and `mask_pad_token: false` as preview shows them.

Preview must show the batch train gets: padded to max_length when asked, and padding that
keeps its labels shown (and counted) as trained.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _validate_util import Row, jpeg_bytes, write_config_set, write_csv

from vlmctl.config.load import load_config_set
from vlmctl.preview.batch import build_preview

ROWS = [
    Row("a.jpg", "what colour is it", "red"),
    Row("b.jpg", "and the size of this picture please", "small and square"),
]


@pytest.fixture(scope="module")
def config(tmp_path_factory, tiny_model_dir) -> Path:
    root = tmp_path_factory.mktemp("pv-pad")
    data = root / "data"
    data.mkdir()
    (data / "a.jpg").write_bytes(jpeg_bytes(0, 32))
    (data / "b.jpg").write_bytes(jpeg_bytes(1, 32))
    write_csv(data / "train.csv", ROWS)
    return write_config_set(root / "config", data / "train.csv", tiny_model_dir("qwen2_vl"))


def _batch_labels(cs, rows):
    """The labels of the batch train's collator builds from these rows."""
    from vlmctl.collate import VLMCollator
    from vlmctl.data.dataset import load_splits
    from vlmctl.models.resolve import load_processor, resolve_model

    res = resolve_model(cs.model)
    proc = load_processor(res, cs.model, cs.model_location())
    data = load_splits(cs.collator, cs.dir)
    col = VLMCollator(proc, cs.collator, data.media_dirs, model_type="qwen2_vl")
    return col([data.train[i] for i in rows])


def test_padding_max_length_previews_the_padded_batch(config):
    cs = load_config_set(config, ["collator.text_processing.padding=max_length"])
    doc = build_preview(cs, [0, 1])
    assert doc["batch"]["tensors"]["input_ids"]["shape"] == [2, 100]
    for s in doc["samples"]:
        assert len(s["tokens"]) == 100
        assert s["padding_tokens"] == 100 - s["length"]
    assert doc["batch"]["pad_tokens"] == sum(s["padding_tokens"] for s in doc["samples"])


def test_mask_pad_token_false_shows_padding_as_trained(config):
    cs = load_config_set(config, ["collator.label_masking.mask_pad_token=false"])
    doc = build_preview(cs, [0, 1])
    batch = _batch_labels(cs, [0, 1])
    short = min(doc["samples"], key=lambda s: s["length"])
    pads = [t for t in short["tokens"] if t["part"] == "pad"]
    assert pads, "the shorter row must be padded"
    assert all(t["kind"] == "trained" and t["label"] != -100 for t in pads)
    for i, s in enumerate(doc["samples"]):
        assert s["supervised_tokens"] == int((batch["labels"][i] != -100).sum())
    cs = load_config_set(config)
    doc = build_preview(cs, [0, 1])
    short = min(doc["samples"], key=lambda s: s["length"])
    assert all(t["kind"] == "pad" for t in short["tokens"] if t["part"] == "pad")
