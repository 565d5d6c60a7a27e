"""Greedy answers through the collator's prompt path, for `vlmctl eval` and the training-time
generation eval (shared, so neither verb imports the other).

Prompts come from `VLMCollator.encode_prompts` (the training row rendering and processor call,
with the generation prompt), left-padded by `collate_prompts`; generation is greedy with the
KV cache, and the model's `generation_config` (eos ids, repetition penalty, ...) applies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class LoadedModel:
    """A model ready to generate, with its processor."""

    spec: Any  # evaluation.generate.ModelSpec, or None during training
    model: Any
    processor: Any
    model_type: str | None


def generation_kwargs(model: Any, tokenizer: Any, max_new_tokens: int) -> dict:
    """Greedy decoding on top of the model's generation_config (its eos ids etc. kept)."""
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": False}
    gc = getattr(model, "generation_config", None)
    if gc is not None:
        # Greedy: sampling knobs of the config would only raise warnings.
        kwargs.update(temperature=None, top_p=None, top_k=None, num_beams=1)
        if getattr(gc, "pad_token_id", None) is None:
            pad = getattr(tokenizer, "pad_token_id", None)
            kwargs["pad_token_id"] = pad if pad is not None else getattr(gc, "eos_token_id", None)
    return kwargs


def generate_rows(
    loaded: LoadedModel,
    collator: Any,
    rows: Sequence[tuple[int, dict]],
    *,
    batch_size: int,
    max_new_tokens: int,
    on_batch: Callable[[int], None] = lambda _n: None,
    use_cache: bool = True,
) -> list[dict]:
    """Greedy answers for `rows` ((index, raw row) pairs), in order: index, question, reference,
    prediction."""
    import torch

    from vlmctl.data.messages import row_to_example

    model = loaded.model
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    tok = collator.tokenizer
    kwargs = generation_kwargs(model, tok, max_new_tokens)
    kwargs["use_cache"] = use_cache  # training sets config.use_cache = False
    out: list[dict] = []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        examples = [row_to_example(row, collator.cfg, idx) for idx, row in chunk]
        encoded = collator.encode_prompts(examples)
        batch = collator.collate_prompts([e for e, _ in encoded])
        batch = {
            k: (v.to(device, dtype) if v.is_floating_point() else v.to(device))
            for k, v in batch.items()
        }
        with torch.inference_mode():
            ids = model.generate(**batch, **kwargs)
        new = ids[:, batch["input_ids"].shape[1] :].cpu()
        texts = tok.batch_decode(new, skip_special_tokens=True)
        for (idx, _row), ex, (_enc, ref), text in zip(chunk, examples, encoded, texts, strict=True):
            out.append(
                {
                    "row": idx,
                    "question": question_text(ex),
                    "reference": ref,
                    "prediction": text.strip(),
                }
            )
        on_batch(len(chunk))
    return out


def question_text(example: Any) -> str:
    """The last user turn's text (what the report shows as the question)."""
    from vlmctl.collate.render import message_text

    users = [m for m in example.messages if m.get("role") == "user"]
    return message_text(users[-1]) if users else ""
