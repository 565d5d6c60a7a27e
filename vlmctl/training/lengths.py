"""Cheap per-row length estimates for `group_by_length` (the Trainer's length column).

Encoding every row exactly would decode every image once more before training. Grouping only
needs an order, so a row's length is estimated as its text tokens (message text, no template)
plus its media count times the media tokens of one item, measured once on the first row with
the real collator.
"""

from __future__ import annotations

from typing import Any

# Own name: a dataset may have a `length` column of its own (a template variable).
LENGTH_COLUMN = "vlmctl_length"


def _text_of(example: Any) -> str:
    parts = []
    for msg in example.messages:
        content = msg.get("content")
        if isinstance(content, str):
            parts.append(content)
            continue
        for part in content or []:
            if part.get("type") == "text":
                parts.append(part.get("text") or "")
    return "\n".join(parts)


def media_tokens_per_item(collator: Any, examples: list[Any]) -> int:
    """Media tokens one image/video expands to, measured on the first example with media."""
    for ex in examples[:8]:
        n = len(ex.images) + len(ex.videos)
        if n:
            before = collator.stats.copy()
            try:
                enc = collator.encode_example(ex, truncate=False)
            finally:
                collator.stats.clear()
                collator.stats.update(before)
            return max(1, enc.num_media_tokens // n)
    return 0


def estimate_lengths(dataset: Any, collator: Any, cfg: Any) -> list[int]:
    """One estimated token count per row of `dataset` (same order)."""
    from vlmctl.data.messages import row_to_example

    examples = [row_to_example(row, cfg, i) for i, row in enumerate(dataset)]
    per_media = media_tokens_per_item(collator, examples)
    texts = [_text_of(ex) for ex in examples]
    ids = collator.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    return [
        len(tok_ids) + per_media * (len(ex.images) + len(ex.videos))
        for tok_ids, ex in zip(ids, examples, strict=True)
    ]


def with_lengths(dataset: Any, collator: Any, cfg: Any) -> Any:
    """`dataset` with the `vlmctl_length` column (SFTConfig.length_column_name)."""
    lengths = estimate_lengths(dataset, collator, cfg)
    if LENGTH_COLUMN in dataset.column_names:
        dataset = dataset.remove_columns(LENGTH_COLUMN)
    return dataset.add_column(LENGTH_COLUMN, lengths)


def trainer_data(
    cs: Any, model: Any, collator: Any, train_ds: Any, eval_ds: Any, say: Any
) -> tuple[Any, Any, Any, bool]:
    """(data collator, train, eval, group by length) for the Trainer: bins and one padding-free
    row per batch when packing is on (vlmctl/packing.py; no length grouping, bins are all about
    max_length long), rows with their lengths for length grouping, else the rows as they are."""
    from vlmctl.packing import spec_of

    if spec_of(cs.train).on:
        from vlmctl.packing_checks import prepare_training

        return (*prepare_training(cs, model, collator, train_ds, eval_ds, say), False)
    group = bool(cs.train.group_by_length)
    if group:
        train_ds = with_lengths(train_ds, collator, cs.collator)
        if eval_ds is not None:
            eval_ds = with_lengths(eval_ds, collator, cs.collator)
    return collator, train_ds, eval_ds, group
