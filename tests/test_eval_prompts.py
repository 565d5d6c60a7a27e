"""The collator's generation-prompt path (`encode_prompts` / `collate_prompts`), on tiny twins.

What `vlmctl eval` relies on: the prompt is exactly the training sequence up to the answer (so
the model continues what it was trained to continue), and left-padded batches generate what
each row generates alone.
"""

from __future__ import annotations

import pytest
import torch
from _collate_util import cfg, chat, image, model, processor

from vlmctl.collate import TokenKind, VLMCollator
from vlmctl.data.example import Example


def _collator(tiny_model_dir, family, **sections):
    path = tiny_model_dir(family)
    return VLMCollator(processor(path), cfg(**sections), model_type=family), path


@pytest.mark.parametrize("family", ["qwen2_vl", "llava", "paligemma"])
def test_prompt_is_the_training_sequence_up_to_the_answer(tiny_model_dir, family):
    col, _ = _collator(tiny_model_dir, family)
    ex = chat(["a red square"])
    train = col.encode_example(ex, truncate=False)
    [(prompt, ref)] = col.encode_prompts([ex])
    assert ref == "a red square"
    first_trained = int((train.kinds == TokenKind.ANSWER).nonzero()[0])
    assert first_trained > 0
    assert torch.equal(prompt.input_ids, train.input_ids[:first_trained])
    # The media went through the same processor call: the same number of media tokens.
    assert prompt.num_media_tokens == train.num_media_tokens > 0


def test_multi_turn_prompt_keeps_earlier_answers_and_drops_the_last(tiny_model_dir):
    col, _ = _collator(tiny_model_dir, "qwen2_vl")
    ex = chat(["first answer", "second answer"])
    [(prompt, ref)] = col.encode_prompts([ex])
    assert ref == "second answer"
    text = col.tokenizer.decode(prompt.input_ids)
    assert "first answer" in text and "second answer" not in text
    assert text.rstrip().endswith(
        "assistant"
    )  # the generation prompt (qwen: <|im_start|>assistant)


def test_left_padded_batch_generates_what_each_row_generates_alone(tiny_model_dir):
    col, path = _collator(tiny_model_dir, "qwen2_vl")
    m = model(path)
    long_q = Example(
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "image"},
                    {"type": "text", "text": "a much longer question " * 4},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "x"}]},
        ],
        images=[image(5)],
    )
    examples = [chat(["y"]), long_q]
    encoded = [e for e, _ in col.encode_prompts(examples)]
    assert encoded[0].length != encoded[1].length
    batch = col.collate_prompts(encoded)
    width = batch["input_ids"].shape[1]
    short = min(range(2), key=lambda i: encoded[i].length)
    pad = width - encoded[short].length
    assert batch["attention_mask"][short, :pad].sum() == 0  # padding on the LEFT
    assert batch["attention_mask"][short, pad:].all()
    assert torch.equal(batch["input_ids"][short, pad:], encoded[short].input_ids)
    kw = {"max_new_tokens": 5, "do_sample": False, "pad_token_id": col.pad_token_id}
    with torch.inference_mode():
        together = m.generate(**batch, **kw)[:, width:]
        for i, ex in enumerate(examples):
            [(enc, _)] = col.encode_prompts([ex])
            alone_batch = col.collate_prompts([enc])
            alone = m.generate(**alone_batch, **kw)[0, alone_batch["input_ids"].shape[1] :]
            n = min(len(alone), together.shape[1])
            assert n > 0
            assert torch.equal(together[i, :n], alone[:n]), i


def test_generate_rows_is_greedy_with_the_kv_cache_and_the_models_generation_config(
    tiny_model_dir, monkeypatch
):
    """`vlmctl eval`'s generation: greedy, KV cache on, and the model's generation_config (here
    its eos id) applies: it is not overridden by what eval passes."""
    import copy

    from vlmctl.data import messages
    from vlmctl.generation import LoadedModel, generate_rows

    col, path = _collator(tiny_model_dir, "qwen2_vl")
    m = copy.deepcopy(model(path))  # the cached model is shared: its config is changed below
    monkeypatch.setattr(messages, "row_to_example", lambda row, _cfg, _idx: row)
    calls: list[tuple[dict, int]] = []
    real_generate = m.generate

    def spy(**kw):
        ids = real_generate(**kw)
        calls.append((kw, ids.shape[1] - kw["input_ids"].shape[1]))
        return ids

    m.generate = spy
    loaded = LoadedModel(None, m, col.processor, "qwen2_vl")
    rows = [(0, chat(["y"]))]
    first = generate_rows(loaded, col, rows, batch_size=1, max_new_tokens=5)
    kw, n_new = calls[-1]
    assert kw["use_cache"] is True and kw["do_sample"] is False and kw["num_beams"] == 1
    assert "eos_token_id" not in kw  # the model's own eos ids stay in charge
    assert n_new == 5, "precondition: the tiny twin does not stop by itself within 5 tokens"
    # The model's generation_config says: stop at the token it answers first.
    [(enc, _)] = col.encode_prompts([rows[0][1]])
    batch = col.collate_prompts([enc])
    with torch.inference_mode():
        first_token = int(real_generate(**batch, max_new_tokens=1, do_sample=False)[0, -1])
    m.generation_config.eos_token_id = first_token
    second = generate_rows(loaded, col, rows, batch_size=1, max_new_tokens=5)
    assert calls[-1][1] == 1  # stopped at the generation_config's eos
    assert len(first) == len(second) == 1
