"""Batches through the tiny models: every family trains, media mix, video, PaliGemma prefix-LM."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from _collate_util import VIDEO_FAMILIES, cfg, chat, frames, image, model, processor

from vlmctl.collate import ROW_INDEX_KEY, TokenKind, VLMCollator
from vlmctl.data.example import Example
from vlmctl.errors import DataError
from vlmctl.testing.tiny import FAMILIES, FAMILY_INFO

MASKED = {"label_masking": {"mask_input_tokens": True}}


def _forward_backward(path, batch) -> float:
    m = model(path)
    m.zero_grad()
    out = m(**batch)
    out.loss.backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    return float(out.loss)


def _image_token_count(col, batch) -> int:
    tok = col.tokenizer
    ids = {tok.convert_tokens_to_ids(t) for t in ("<image>", "<|image_pad|>", "<IMG_CONTEXT>")}
    ids.discard(tok.unk_token_id)
    return int(sum((batch["input_ids"] == i).sum() for i in ids if i is not None))


@pytest.mark.parametrize("family", FAMILIES)
def test_mixed_batch_forward_backward(tiny_model_dir, family):
    """One image, no image, two images in ONE batch; the loss is finite, gradients flow."""
    path = tiny_model_dir(family)
    col = VLMCollator(processor(path), cfg(**MASKED), model_type=family)
    rows = [chat(["red"], n_images=1), chat(["two", "more"], n_images=2)]
    if family == "paligemma":
        with pytest.raises(DataError) as err:
            col.encode_example(chat(["no image"], n_images=0))
        assert err.value.findings[0].row == 7
    else:
        rows.insert(1, chat(["no image here"], n_images=0))
    encoded = [col.encode_example(ex) for ex in rows]
    batch = col.collate_encoded(encoded)
    assert batch["input_ids"].shape[0] == len(rows)
    assert "labels" in batch and (batch["labels"] != -100).any()
    loss = _forward_backward(path, batch)
    assert math.isfinite(loss) and loss > 0


def test_qwen_batch_carries_mm_token_type_ids(tiny_model_dir):
    col = VLMCollator(processor(tiny_model_dir("qwen2_vl")), cfg())
    batch = col.collate_encoded(
        [col.encode_example(chat(["red"])), col.encode_example(chat(["a b c d"]))]
    )
    mm = batch["mm_token_type_ids"]
    assert mm.shape == batch["input_ids"].shape
    pad_id = col.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert torch.equal(mm == 1, batch["input_ids"] == pad_id)
    assert batch["image_grid_thw"].shape == (2, 3)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_own_mm_token_type_ids_equal_the_processors(tiny_model_dir, family):
    """vlmctl builds mm_token_type_ids itself (one pass per batch); they must be exactly the
    processor's own, for images and video frames in one padded batch."""
    proc = processor(tiny_model_dir(family))
    col = VLMCollator(
        proc, cfg(data_processing={"image_data": True, "video_data": True}), model_type=family
    )
    assert col.encoder.mm_type_ids is not None  # the fast path is the one under test
    encoded = [
        col.encode_example(chat(["a red video"], n_images=1, video=True)),
        col.encode_example(chat(["two", "images"], n_images=2)),
        col.encode_example(chat(["no media at all, a longer answer"], n_images=0)),
    ]
    batch = col.collate_encoded(encoded)
    mm = batch["mm_token_type_ids"]
    assert (mm == 1).any() and (mm == 2).any()
    ids = batch["input_ids"]
    own = proc.create_mm_token_type_ids(ids.tolist())
    assert mm.dtype == torch.int64 and mm.tolist() == own
    # and the processor, asked directly on the same text, agrees
    texts = [e.text for e in encoded]
    kw = {"padding": True, "padding_side": "right", "return_tensors": "pt"}
    direct = proc(
        text=texts,
        images=[[*e._prepared.images] for e in encoded if e._prepared.images] or None,
        videos=[v for e in encoded for v in e._prepared.videos] or None,
        **kw,
    )
    assert torch.equal(direct["input_ids"], ids)
    assert torch.equal(direct["mm_token_type_ids"], mm)


def test_processor_that_overrides_mm_token_type_ids_builds_them_itself(tiny_model_dir):
    """GLM-4V-style processors override `create_mm_token_type_ids` (video frames share the
    image token; only the video markers make them type 2): vlmctl must not build them."""
    from vlmctl.collate.introspect import own_mm_type_ids

    shared = processor(tiny_model_dir("qwen2_vl"))  # cached for other tests: left untouched
    assert own_mm_type_ids(shared) is not None

    class OwnTypes(type(shared)):
        def create_mm_token_type_ids(self, input_ids):
            return [[7] * len(row) for row in input_ids]

    proc = copy.copy(shared)
    proc.__class__ = OwnTypes
    assert own_mm_type_ids(proc) is None
    col = VLMCollator(proc, cfg(), model_type="qwen2_vl")
    batch = col.collate_encoded([col.encode_example(chat(["red"]))])
    assert (batch["mm_token_type_ids"] == 7).all()


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_video_rows_through_processor_video_path(tiny_model_dir, family):
    path = tiny_model_dir(family)
    col = VLMCollator(
        processor(path),
        cfg(data_processing={"image_data": False, "video_data": True}, **MASKED),
        model_type=family,
    )
    encoded = [
        col.encode_example(chat(["a red video"], n_images=1, video=True)),
        col.encode_example(chat(["a plain image"], n_images=1)),  # images and video in one batch
    ]
    video_id = col.tokenizer.convert_tokens_to_ids(FAMILY_INFO[family]["video_token"])
    assert int((encoded[0].input_ids == video_id).sum()) > 0
    assert encoded[0].num_media_tokens == int((encoded[0].kinds == TokenKind.MEDIA).sum())
    batch = col.collate_encoded(encoded)
    assert "pixel_values_videos" in batch and "pixel_values" in batch
    assert math.isfinite(_forward_backward(path, batch))


def _write_mp4(path, n=12):
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=6)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            arr = np.full((32, 32, 3), i * 20, dtype=np.uint8)
            for pkt in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)


def test_raw_rows_with_files_and_video_metadata(tiny_model_dir, tmp_path):
    """__call__ on raw rows: relative paths resolve against media_dirs, video decoded by vlmctl."""
    image(1).save(tmp_path / "a.png")
    _write_mp4(tmp_path / "v.mp4")
    path = tiny_model_dir("qwen2_5_vl")
    img_cfg = cfg(**MASKED)
    col = VLMCollator(processor(path), img_cfg, media_dirs=[tmp_path], model_type="qwen2_5_vl")
    rows = [
        {"image": "a.png", "question": "What?", "answer": "red", ROW_INDEX_KEY: 4},
        {"image": ["a.png", "a.png"], "question": "Both?", "answer": "yes"},
    ]
    batch = col(rows)
    assert batch["image_grid_thw"].shape[0] == 3
    assert math.isfinite(_forward_backward(path, batch))
    with pytest.raises(DataError) as err:
        col([{"image": "missing.png", "question": "q", "answer": "a", ROW_INDEX_KEY: 12}])
    assert err.value.findings[0].row == 12

    vid_cfg = cfg(data_processing={"image_data": False, "video_data": True}, **MASKED)
    vcol = VLMCollator(processor(path), vid_cfg, media_dirs=[tmp_path], model_type="qwen2_5_vl")
    batch = vcol([{"video": "v.mp4", "question": "What happens?", "answer": "it fades"}])
    assert batch["video_grid_thw"].tolist() == [[4, 4, 4]]  # 8 frames / temporal patch 2
    # 8 frames sampled from a 2 s clip (12 frames at 6 fps) are 4 fps: temporal patch 2 / 4 fps.
    # Without the clip's metadata the processor would assume 2 fps (1.0 s per grid).
    assert batch["second_per_grid_ts"].tolist() == pytest.approx([0.5])
    assert math.isfinite(_forward_backward(path, batch))


def test_paligemma_answer_is_causal(tiny_model_dir):
    """Changing the last answer token leaves every earlier position's logits unchanged."""
    path = tiny_model_dir("paligemma")
    col = VLMCollator(processor(path), cfg(**MASKED), model_type="paligemma")
    enc = col.encode_example(chat(["red green blue square"]))
    batch = col.collate_encoded([enc])
    tt = batch["token_type_ids"][0]
    assert torch.equal(tt == 1, enc.kinds == TokenKind.ANSWER)  # suffix (+eos) marked
    last = (
        int((enc.kinds == TokenKind.ANSWER).nonzero().max()) - 1
    )  # last answer token (before eos)
    assert enc.input_ids[last + 1] == col.tokenizer.eos_token_id
    m = model(path)

    def logits(b):
        with torch.no_grad():
            return m(**{k: v for k, v in b.items() if k != "labels"}).logits[0]

    changed = {k: v.clone() for k, v in batch.items()}
    changed["input_ids"][0, last] = (changed["input_ids"][0, last] + 1) % 300
    diff = (logits(batch)[:last] - logits(changed)[:last]).abs().max().item()
    assert diff < 1e-6
    # Control: without the suffix marking (TRL's messages path) the prefix sees the answer.
    bidir = {k: v.clone() for k, v in batch.items()}
    bidir["token_type_ids"].zero_()
    bidir_changed = {k: v.clone() for k, v in changed.items()}
    bidir_changed["token_type_ids"].zero_()
    leak = (logits(bidir)[:last] - logits(bidir_changed)[:last]).abs().max().item()
    assert leak > 1e-4


def test_stats_and_all_dropped_batch(tiny_model_dir):
    col = VLMCollator(
        processor(tiny_model_dir("qwen2_vl")),
        cfg(text_processing={"max_length": 64}, **MASKED),
    )
    short = {"image": image(0), "question": "Q?", "answer": "red"}
    long = {"image": image(0), "question": "Q?", "answer": "red " * 40}
    batch = col([short, long, short])
    assert batch["input_ids"].shape[0] == 2
    # the survivors' media are re-collated without the dropped row's image
    assert batch["image_grid_thw"].shape == (2, 3) and batch["pixel_values"].shape[0] == 32
    assert col.stats["rows"] == 3 and col.stats["dropped_too_long"] == 1
    with pytest.raises(DataError) as err:
        col([long, long])
    assert err.value.findings[0].code == "all-rows-dropped"
    assert "too_long=3" in err.value.findings[0].message
    assert col.stats["all_dropped_batches"] == 1


@pytest.mark.parametrize("padding", [True, "longest", "max_length", False])
def test_padding_modes(tiny_model_dir, padding):
    col = VLMCollator(
        processor(tiny_model_dir("qwen2_vl")),
        cfg(text_processing={"padding": padding, "max_length": 96}),
    )
    encs = [col.encode_example(chat(["red"])), col.encode_example(chat(["red green blue"]))]
    batch = col.collate_encoded(encs)
    longest = max(e.length for e in encs)
    assert batch["input_ids"].shape[1] == (96 if padding == "max_length" else longest)
    assert batch["attention_mask"].sum(1).tolist() == [e.length for e in encs]


def test_example_without_media_on_text_only_template(tiny_model_dir):
    col = VLMCollator(processor(tiny_model_dir("qwen2_vl")), cfg(**MASKED))
    ex = Example(
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
        ]
    )
    batch = col.collate_encoded([col.encode_example(ex)])
    assert "pixel_values" not in batch
    assert col.tokenizer.decode(batch["labels"][0][batch["labels"][0] != -100]) == "Hello<|im_end|>"


def test_info_end_of_turn_matches_collator(tiny_model_dir):
    """The eos the collator inserts for llava is the family's documented end-of-turn token."""
    col = VLMCollator(processor(tiny_model_dir("llava")), cfg(**MASKED), model_type="llava")
    enc = col.encode_example(chat(["red"]))
    assert enc.text.count(FAMILY_INFO["llava"]["end_of_turn"]) == 1
    assert frames(0).shape == (8, 32, 32, 3)
