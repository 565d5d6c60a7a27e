"""Masking off, vlmctl's ids equal TRL's DataCollatorForVisionLanguageModeling on the same chats.

TRL 1.16 handles every family with a chat template (PaliGemma has none: it goes through
prefix/suffix, which TRL's messages path cannot express). Two documented differences, asserted
exactly rather than hidden:
- templates that do not start with bos (llava-1.5, phi-3 style): the processor adds bos, as
  transformers' `processor.apply_chat_template` does; TRL passes add_special_tokens=False;
- templates that leave the assistant turn open (llava-1.5): vlmctl inserts eos after the answer.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _collate_util import CHAT_FAMILIES, cfg, chat, processor

from vlmctl.collate import VLMCollator

pytestmark = pytest.mark.slow  # importing TRL's collator takes ~20 s cold

OFF = {"mask_pad_token": False, "mask_image_token": False, "mask_input_tokens": False}
# family -> (leading bos added by vlmctl, eos inserted after answers by vlmctl)
DELTAS = {"llava": (True, True), "remote_code": (True, False)}


def _trl_batch(proc, examples):
    from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

    trl_col = DataCollatorForVisionLanguageModeling(processor=proc)
    items = [{"messages": copy.deepcopy(ex.messages), "images": list(ex.images)} for ex in examples]
    return trl_col(items)


@pytest.mark.parametrize("family", CHAT_FAMILIES)
def test_ids_equal_trl_with_masking_off(tiny_model_dir, family):
    proc = processor(tiny_model_dir(family))
    col = VLMCollator(proc, cfg(label_masking=OFF), model_type=family)
    examples = [
        chat(["red"], n_images=1),
        chat(["a longer answer here", "and a second turn"], n_images=2),
        chat(["blue circle"], n_images=1, question="Which shape?"),
    ]
    ours = col.collate_encoded([col.encode_example(ex) for ex in examples])
    theirs = _trl_batch(proc, examples)
    add_bos, add_eos = DELTAS.get(family, (False, False))
    tok = col.tokenizer
    for i in range(len(examples)):
        mine = ours["input_ids"][i][ours["attention_mask"][i] == 1].tolist()
        trl_ids = theirs["input_ids"][i][theirs["attention_mask"][i] == 1].tolist()
        if add_bos:
            assert mine[0] == tok.bos_token_id and trl_ids[0] != tok.bos_token_id
            mine = mine[1:]
        if add_eos:
            n_turns = sum(m["role"] == "assistant" for m in examples[i].messages)
            assert mine.count(tok.eos_token_id) == n_turns + trl_ids.count(tok.eos_token_id)
            mine = [t for t in mine if t != tok.eos_token_id]
        assert mine == trl_ids, family
    # Media tensors are the processor's own, concatenated/stacked the same way.
    for key, value in theirs.items():
        if key in ("input_ids", "attention_mask", "labels") or not torch.is_tensor(value):
            continue
        if value.shape[-1] == theirs["input_ids"].shape[-1]:
            continue  # per-token extras: padding differs only where the lengths differ
        assert key in ours, (family, key)
        assert ours[key].shape == value.shape, (family, key)
        assert torch.allclose(ours[key].float(), value.float()), (family, key)
    # masking off: every real token is a label (TRL masks only padding)
    real = ours["attention_mask"] == 1
    assert torch.equal(ours["labels"][real], ours["input_ids"][real])
