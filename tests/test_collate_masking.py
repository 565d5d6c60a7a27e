"""Label masking on every tiny family: which tokens keep labels, from template spans."""

from __future__ import annotations

import pytest
import torch
from _collate_util import cfg, chat, media_ids, processor

from vlmctl.collate import TokenKind, VLMCollator
from vlmctl.testing.tiny import FAMILIES, FAMILY_INFO

ANSWERS = ["red 1 square", "The circle is blue."]


def _collator(tiny_model_dir, family, **label_masking):
    proc = processor(tiny_model_dir(family))
    return VLMCollator(proc, cfg(label_masking=label_masking), model_type=family)


def _runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    out, start = [], None
    for i, v in enumerate(mask.tolist() + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i))
            start = None
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_mask_input_tokens_keeps_exactly_answers_and_end_of_turn(tiny_model_dir, family):
    col = _collator(tiny_model_dir, family, mask_input_tokens=True)
    tok = col.tokenizer
    eot = FAMILY_INFO[family]["end_of_turn"]
    # PaliGemma is prefix -> suffix: only the LAST answer is the target.
    answers = ANSWERS if FAMILY_INFO[family]["has_chat_template"] else ANSWERS[-1:]
    enc = col.encode_example(chat(ANSWERS, n_images=1))
    kept = enc.labels != -100
    runs = _runs(kept)
    assert len(runs) == len(answers)
    for (s, e), answer in zip(runs, answers, strict=True):
        decoded = tok.decode(enc.labels[s:e])
        # Byte-level BPE glues the space after "ASSISTANT:"/"Assistant:" to the first word.
        assert decoded.strip() == answer + eot, (family, decoded)
        assert enc.labels[e - 1].item() == tok.convert_tokens_to_ids(eot)
    assert enc.num_supervised == int(kept.sum())
    assert torch.equal(kept, enc.kinds == TokenKind.ANSWER)


@pytest.mark.parametrize("family", FAMILIES)
def test_no_media_token_keeps_a_label(tiny_model_dir, family):
    col = _collator(tiny_model_dir, family, mask_image_token=True, mask_input_tokens=False)
    ids = media_ids(col.tokenizer)
    enc = col.encode_example(chat(ANSWERS[:1], n_images=2))
    is_media = torch.tensor([t in ids for t in enc.input_ids.tolist()])
    assert is_media.sum() >= 2  # the expansion is there
    assert (enc.labels[is_media] == -100).all()
    # everything else is trained (mask_input_tokens false)
    assert (enc.labels[~is_media] == enc.input_ids[~is_media]).all()
    assert torch.equal(is_media, enc.kinds == TokenKind.MEDIA)


@pytest.mark.parametrize("family", FAMILIES)
def test_pad_tokens_keep_no_label_and_masking_off_keeps_all(tiny_model_dir, family):
    col = _collator(tiny_model_dir, family)
    short = col.encode_example(chat(["red"], n_images=1))
    long = col.encode_example(chat(["a much longer answer with many words in it"], n_images=1))
    batch = col.collate_encoded([short, long])
    pad = batch["attention_mask"] == 0
    assert pad[0].sum() == long.length - short.length > 0
    assert (batch["labels"][pad] == -100).all()

    off = _collator(
        tiny_model_dir,
        family,
        mask_pad_token=False,
        mask_image_token=False,
        mask_input_tokens=False,
    )
    batch = off.collate_encoded(
        [off.encode_example(chat(["red"])), off.encode_example(chat(["a much longer answer"]))]
    )
    assert torch.equal(batch["labels"], batch["input_ids"])
    assert (batch["input_ids"][batch["attention_mask"] == 0] == off.pad_token_id).all()


def test_custom_ignore_index(tiny_model_dir):
    col = _collator(tiny_model_dir, "qwen2_vl", mask_input_tokens=True, ignore_index=-1)
    enc = col.encode_example(chat(["red"]))
    assert set(enc.labels[enc.kinds != TokenKind.ANSWER].tolist()) == {-1}


def test_generation_markers_give_the_same_spans(tiny_model_dir):
    """A template with {% generation %} markers takes the marker path: same labels."""
    proc = processor(tiny_model_dir("qwen2_vl"))
    base = VLMCollator(proc, cfg(label_masking={"mask_input_tokens": True}))
    marked = VLMCollator(proc, cfg(label_masking={"mask_input_tokens": True}))
    tmpl = base.chat_template
    old = "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    assert old in tmpl
    new = (
        "{% elif 'text' in content %}{% if message['role'] == 'assistant' %}{% generation %}"
        "{{ content['text'] }}<|im_end|>{% endgeneration %}{% else %}{{ content['text'] }}"
        "{% endif %}{% endif %}{% endfor %}{% if message['role'] != 'assistant' %}<|im_end|>"
        "{% endif %}{{ '\\n' }}"  # a literal newline after a tag would be trimmed
    )
    marked.chat_template = tmpl.replace(old, new)
    marked._has_generation_markers = True
    ex = chat(ANSWERS)
    a, b = base.encode_example(ex), marked.encode_example(ex)
    assert torch.equal(a.input_ids, b.input_ids)
    assert torch.equal(a.labels, b.labels)


def test_add_generation_prompt_only_after_a_final_user_turn(tiny_model_dir):
    proc = processor(tiny_model_dir("qwen2_vl"))
    col = VLMCollator(proc, cfg(text_processing={"add_generation_prompt": True}))
    ex = chat(["red"])
    ex.messages.append({"role": "user", "content": [{"type": "text", "text": "And?"}]})
    enc = col.encode_example(ex)
    assert enc.text.endswith("<|im_start|>assistant\n")
    # a chat that ends with the answer gets no dangling assistant header
    enc = col.encode_example(chat(["red"]))
    assert enc.text.endswith("red<|im_end|>\n")


def test_kinds_are_uint8_and_labels_int64(tiny_model_dir):
    """EncodedExample.kinds is documented uint8 (one byte per token, kept for every encoded
    row, and `kinds_batch` pads into uint8); labels are int64, the dtype the loss's
    cross-entropy takes as targets."""
    col = _collator(tiny_model_dir, "qwen2_vl", mask_input_tokens=True)
    enc = col.encode_example(chat(["red"]))
    assert enc.kinds.dtype == torch.uint8
    assert enc.labels.dtype == torch.int64
    assert col.kinds_batch([enc]).dtype == torch.uint8
