"""Labels on the REAL released files of each kit family (tests/realkit/<family>/).

Every check runs on the family's real tokenizer, chat template and processor (remote code for
Phi-3-vision), so template details the tiny twins do not imitate are covered.
"""

from __future__ import annotations

import pytest
import torch
from _collate_util import cfg
from _realkit_util import (
    ANSWERS,
    end_of_turn,
    has_template,
    kit,
    kit_params,
    kit_processor,
    template_text,
    two_turn_chat,
)

from vlmctl.collate import TokenKind, VLMCollator

KITS = kit_params()


def _collator(family, **sections):
    return VLMCollator(kit_processor(family), cfg(**sections), model_type=kit(family).model_type)


def _runs(mask: torch.Tensor) -> list[tuple[int, int]]:
    out, start = [], None
    for i, v in enumerate(mask.tolist() + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i))
            start = None
    return out


def _image_mask(family, ids: torch.Tensor) -> torch.Tensor:
    proc = kit_processor(family)
    tok = proc.tokenizer
    image_id = getattr(proc, "image_token_id", None) or getattr(tok, "image_token_id", None)
    mask = ids < 0
    if image_id is not None:
        mask |= ids == image_id
    return mask


@pytest.mark.parametrize("family", KITS)
def test_kept_labels_are_each_answer_plus_end_of_turn(family):
    col = _collator(family, label_masking={"mask_input_tokens": True})
    tok = col.tokenizer
    eot = end_of_turn(family)
    # No chat template (PaliGemma): prefix -> suffix, only the LAST answer is the target.
    answers = ANSWERS if has_template(family) else ANSWERS[-1:]
    enc = col.encode_example(two_turn_chat())
    kept = enc.labels != -100
    runs = _runs(kept)
    assert len(runs) == len(answers), [tok.decode(enc.labels[s:e]) for s, e in runs]
    for (s, e), answer in zip(runs, answers, strict=True):
        decoded = tok.decode(enc.labels[s:e])
        # The answer's first token may carry the space before it (▁red, Ġred): nothing else.
        assert decoded in (answer + eot, " " + answer + eot), (family, decoded)
        assert enc.labels[e - 1].item() == tok.convert_tokens_to_ids(eot)
        assert enc.labels[e - 2].item() != enc.labels[e - 1].item()  # one end-of-turn, not two
    assert torch.equal(kept, enc.kinds == TokenKind.ANSWER)
    # The end-of-turn appears in the INPUT exactly once per answer (never doubled).
    eot_id = tok.convert_tokens_to_ids(eot)
    assert int((enc.input_ids == eot_id).sum()) == len(answers) + _eot_in_prompt(family)


def _eot_in_prompt(family) -> int:
    """End-of-turn markers the template puts after USER turns (not trained)."""
    if not has_template(family):
        return 0
    text = template_text(family, two_turn_chat())
    eot = end_of_turn(family)
    return text.count(eot) - (0 if kit(family).raw.get("end_of_turn_added") else len(ANSWERS))


@pytest.mark.parametrize("family", KITS)
def test_no_media_token_keeps_a_label(family):
    col = _collator(family, label_masking={"mask_input_tokens": False, "mask_image_token": True})
    enc = col.encode_example(two_turn_chat())
    media = _image_mask(family, enc.input_ids)
    assert media.sum() >= 2
    assert (enc.labels[media] == -100).all()
    assert (enc.kinds[media] == TokenKind.MEDIA).all()


@pytest.mark.parametrize("family", KITS)
def test_processor_text_is_the_templates_own_rendering(family):
    if not has_template(family):
        pytest.skip(f"{family} has no chat template (prefix/suffix processor)")
    col = _collator(family, label_masking={"mask_input_tokens": True})
    enc = col.encode_example(two_turn_chat())
    own = template_text(family, two_turn_chat())
    if kit(family).raw.get("end_of_turn_added"):
        eos = col.tokenizer.eos_token
        assert enc.text.count(eos) == len(ANSWERS) + own.count(eos)
        assert enc.text.replace(eos, "") == own.replace(eos, "")
    else:
        assert enc.text == own


@pytest.mark.parametrize("family", KITS)
def test_truncation_inside_last_answer_keeps_labels_before_cut(family):
    full = _collator(family, label_masking={"mask_input_tokens": True}).encode_example(
        two_turn_chat(), truncate=False
    )
    last_start = _runs(full.labels != -100)[-1][0]
    cut = last_start + 2
    col = _collator(
        family,
        label_masking={"mask_input_tokens": True},
        text_processing={
            "truncation": True,
            "max_length": cut,
            "truncation_policy": "truncate_text",
        },
    )
    enc = col.encode_example(two_turn_chat())
    assert enc.drop_reason is None and enc.truncated
    assert torch.equal(enc.labels, full.labels[:cut])
    assert torch.equal(enc.input_ids, full.input_ids[:cut])

    # A cut inside the SECOND image drops the row (Llama-3.2-Vision's image is ONE token:
    # the cut then falls just before it).
    media = _image_mask(family, full.input_ids)
    s2, e2 = _runs(media)[-1]
    inside = s2 + (e2 - s2) // 2
    col2 = _collator(
        family,
        label_masking={"mask_input_tokens": True},
        text_processing={
            "truncation": True,
            "max_length": inside,
            "truncation_policy": "truncate_text",
        },
    )
    assert col2.encode_example(two_turn_chat()).drop_reason == "media_too_long"
