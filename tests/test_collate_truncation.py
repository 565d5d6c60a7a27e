"""Media-aware truncation: policies, never a cut media span, never mismatched media tokens."""

from __future__ import annotations

import math

import pytest
import torch
from _collate_util import cfg, chat, media_ids, model, processor

from vlmctl.collate import TokenKind, VLMCollator
from vlmctl.errors import DataError
from vlmctl.testing.tiny import FAMILIES

LONG = "red green blue yellow " * 12


def _col(tiny_model_dir, family, max_length, policy, truncation=True):
    tp = {"max_length": max_length, "truncation_policy": policy, "truncation": truncation}
    c = cfg(text_processing=tp, label_masking={"mask_input_tokens": True})
    return VLMCollator(processor(tiny_model_dir(family)), c, model_type=family)


def _full(tiny_model_dir, family, example):
    return _col(tiny_model_dir, family, 10_000, "drop").encode_example(example)


@pytest.mark.parametrize("family", ["qwen2_vl", "paligemma", "idefics3"])
def test_answer_longer_than_max_length(tiny_model_dir, family):
    example = chat([LONG])
    full = _full(tiny_model_dir, family, example)
    media_end = max(e for _, e in full.media_spans)
    limit = media_end + 30
    assert full.length > limit

    drop = _col(tiny_model_dir, family, limit, "drop")
    enc = drop.encode_example(example)
    assert enc.drop_reason == "too_long" and drop.stats["dropped_too_long"] == 1

    cut = _col(tiny_model_dir, family, limit, "truncate_text")
    enc = cut.encode_example(example)
    assert enc.drop_reason is None and enc.truncated and enc.length == limit
    assert enc.original_length == full.length
    assert torch.equal(enc.input_ids, full.input_ids[:limit])
    assert torch.equal(enc.labels, full.labels[:limit])
    assert enc.media_spans == full.media_spans
    assert 0 < enc.num_supervised < full.num_supervised
    batch = cut.collate_encoded([enc])
    per_token = ("input_ids", "attention_mask", "labels", "mm_token_type_ids", "token_type_ids")
    for key in per_token:
        if key in batch:
            assert batch[key].shape[1] == limit, key  # per-token extras cut with the ids
    assert math.isfinite(float(model(tiny_model_dir(family))(**batch).loss))

    err = _col(tiny_model_dir, family, limit, "error")
    with pytest.raises(DataError) as exc:
        err.encode_example(example)
    f = exc.value.findings[0]
    assert f.row == 7 and str(limit) in f.message and f.code == "row-too-long"


def test_truncation_false_has_no_limit(tiny_model_dir):
    col = _col(tiny_model_dir, "qwen2_vl", 16, "error", truncation=False)
    enc = col.encode_example(chat([LONG]))
    assert enc.length > 16 and not enc.truncated and enc.drop_reason is None


def test_cut_inside_image_span_drops_the_row(tiny_model_dir):
    example = chat(["red"], n_images=2)
    full = _full(tiny_model_dir, "qwen2_vl", example)
    s, e = full.media_spans[0]
    col = _col(tiny_model_dir, "qwen2_vl", s + 2, "truncate_text")
    enc = col.encode_example(example)
    assert enc.drop_reason == "media_too_long"
    assert col.stats["dropped_media_too_long"] == 1


def test_answer_cut_away_entirely_is_dropped_not_trained_on_nothing(tiny_model_dir):
    example = chat([LONG])
    full = _full(tiny_model_dir, "qwen2_vl", example)
    first_trained = int((full.kinds == TokenKind.ANSWER).nonzero().min())
    col = _col(tiny_model_dir, "qwen2_vl", first_trained, "truncate_text")
    enc = col.encode_example(example)
    assert enc.drop_reason == "no_labels" and enc.num_supervised == 0


@pytest.mark.parametrize("family", FAMILIES)
def test_no_length_ever_cuts_media(tiny_model_dir, family):
    """Every max_length: the row is dropped, or all its media tokens survive intact."""
    example = chat(["a blue circle and a red square"], n_images=2)
    full = _full(tiny_model_dir, family, example)
    ids = media_ids(processor(tiny_model_dir(family)).tokenizer)
    full_media = [t for t in full.input_ids.tolist() if t in ids]
    kept_lengths = []
    for limit in range(1, full.length + 2):
        enc = _col(tiny_model_dir, family, limit, "truncate_text").encode_example(example)
        if enc.drop_reason:
            assert enc.drop_reason in ("media_too_long", "no_labels")
            continue
        assert enc.length <= limit
        assert [t for t in enc.input_ids.tolist() if t in ids] == full_media
        assert enc.media_spans == full.media_spans
        kept_lengths.append(enc.length)
    assert kept_lengths and max(kept_lengths) == full.length
    # The shortest surviving cut still runs: the model's own token/feature count checks pass.
    col = _col(tiny_model_dir, family, min(kept_lengths), "truncate_text")
    batch = col.collate_encoded([col.encode_example(example), col.encode_example(chat(["x"]))])
    out = model(tiny_model_dir(family))(**batch)
    assert math.isfinite(float(out.loss))
