"""Padding and stacking: encodings -> the batch the model takes (right-padded, labels
included), prompts -> a left-padded generation batch, and the media tensors of a batch
(concatenated per media, stacked per row with zero fillers, trailing dims zero-padded)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from vlmctl.collate.encoded import EncodedExample, TokenKind
from vlmctl.collate.introspect import ROW_KEYS_ALWAYS

MediaFn = Callable[[Sequence[EncodedExample]], dict[str, torch.Tensor]]


def pad_batch(
    encoded: list[EncodedExample], target: int, pad_token_id: int, pad_label: int, media: MediaFn
) -> dict[str, torch.Tensor]:
    """Right-pad `encoded` (no dropped rows) to `target` tokens; `media` collates their media."""
    fast = _collate_group(encoded, target, pad_token_id, pad_label, media)
    if fast is not None:
        return fast
    n = len(encoded)
    input_ids = torch.full((n, target), pad_token_id, dtype=torch.long)
    labels = torch.full((n, target), pad_label, dtype=torch.long)
    batch: dict[str, torch.Tensor] = {}
    token_keys: dict[str, torch.Tensor] = {}
    for key in dict.fromkeys(k for e in encoded for k in e.token_extras):
        sample = next(e.token_extras[key] for e in encoded if key in e.token_extras)
        token_keys[key] = torch.zeros((n, target), dtype=sample.dtype)
    for i, e in enumerate(encoded):
        L = e.length
        input_ids[i, :L] = e.input_ids
        labels[i, :L] = e.labels
        for key, t in token_keys.items():
            if key in e.token_extras:
                t[i, :L] = e.token_extras[key]
            elif key == "attention_mask":
                t[i, :L] = 1
    batch["input_ids"] = input_ids
    if "attention_mask" not in token_keys:
        token_keys["attention_mask"] = (
            torch.arange(target)[None, :] < torch.tensor([e.length for e in encoded])[:, None]
        ).long()
    batch.update(token_keys)
    batch.update(media(encoded))
    batch["labels"] = labels
    return batch


def _collate_group(
    encoded: list[EncodedExample], target: int, pad_token_id: int, pad_label: int, media: MediaFn
) -> dict[str, torch.Tensor] | None:
    """`pad_batch` of exactly the untouched rows of one processor call, in order.

    The call's padded tensors are reused (one masked fill per key instead of a copy per
    row and key); the result equals the general path's. None when it does not apply (rows
    dropped, reordered or truncated, or any per-row tensor replaced).
    """
    group = encoded[0]._group
    tok = group.tokens if group is not None else None
    if tok is None or len(encoded) != group.size or target < tok.input_ids.shape[1]:
        return None
    keys = tuple(tok.extras)
    for i, e in enumerate(encoded):
        ids, labels, extras = tok.views[i]
        if (
            e._group is not group
            or e._pos != i
            or e.input_ids is not ids
            or e.labels is not labels
            or tuple(e.token_extras) != keys
            or any(a is not b for a, b in zip(e.token_extras.values(), extras, strict=True))
        ):
            return None
    n, width = tok.input_ids.shape
    pad = tok.pad
    if target > width:
        pad = torch.cat([pad, pad.new_ones((n, target - width))], dim=1)

    def padded(t: torch.Tensor, fill: int) -> torch.Tensor:
        if target > width:
            t = torch.cat([t, t.new_zeros((n, target - width))], dim=1)
        return t.masked_fill(pad, fill)

    batch = {"input_ids": padded(tok.input_ids, pad_token_id)}
    for key, t in tok.extras.items():
        batch[key] = padded(t, 0)
    if "attention_mask" not in batch:
        batch["attention_mask"] = (~pad).long()
    batch.update(media(encoded))
    batch["labels"] = padded(tok.labels, pad_label)
    return batch


def kinds_batch(encoded: Sequence[EncodedExample], width: int | None = None) -> torch.Tensor:
    """Token kinds padded like `pad_batch` pads ids (PAD where padded), at least `width` wide."""
    longest = max([e.length for e in encoded] + [width or 0])
    out = torch.full((len(encoded), longest), int(TokenKind.PAD), dtype=torch.uint8)
    for i, e in enumerate(encoded):
        out[i, : e.length] = e.kinds
    return out


def left_pad_prompts(
    encoded: Sequence[EncodedExample], pad_token_id: int, media: MediaFn
) -> dict[str, torch.Tensor]:
    """Left-pad prompt encodings (no labels): every row's last token ends the batch."""
    n, width = len(encoded), max(e.length for e in encoded)
    batch: dict[str, torch.Tensor] = {
        "input_ids": torch.full((n, width), pad_token_id, dtype=torch.long)
    }
    keys = list(dict.fromkeys(k for e in encoded for k in e.token_extras))
    for key in keys:
        sample = next(e.token_extras[key] for e in encoded if key in e.token_extras)
        batch[key] = torch.zeros((n, width), dtype=sample.dtype)
    if "attention_mask" not in batch:
        batch["attention_mask"] = torch.zeros((n, width), dtype=torch.long)
    for i, e in enumerate(encoded):
        start = width - e.length
        batch["input_ids"][i, start:] = e.input_ids
        for key in keys:
            if key in e.token_extras:
                batch[key][i, start:] = e.token_extras[key]
        if "attention_mask" not in e.token_extras:
            batch["attention_mask"][i, start:] = 1
    batch.update(media(encoded))
    return batch


def collate_media(
    encoded: Sequence[EncodedExample], reprocess: Callable, row_batched_pixels: bool
) -> dict[str, torch.Tensor]:
    """The media tensors of `encoded`, in row order.

    Exactly the rows of one processor call: that call's tensors. A subset of a batched call
    (rows dropped): `reprocess` (the processor over the survivors' prepared rows, as one
    call). Otherwise each row's own tensors, concatenated (per-row keys stacked with zero
    fillers for rows without them).
    """
    group = encoded[0]._group
    if (
        group is not None
        and all(e._group is group for e in encoded)
        and [e._pos for e in encoded] == list(range(group.size))
    ):
        return dict(group.media)  # exactly the rows of one processor call, in order
    if any(e._group is not None and e._group.size > 1 for e in encoded):
        # A subset of a batched call (rows dropped): process the survivors together again.
        redo = reprocess([e._prepared for e in encoded])
        for old, new in zip(encoded, redo, strict=True):
            if not torch.equal(old.input_ids, new.input_ids[: old.length]):
                raise AssertionError("re-processing a row gave different token ids")
        return dict(redo[0]._group.media)
    keys = list(dict.fromkeys(k for e in encoded for k in e.media_extras))
    out: dict[str, torch.Tensor] = {}
    for key in keys:
        per_row = key in ROW_KEYS_ALWAYS or (
            row_batched_pixels and key in ("pixel_values", "pixel_attention_mask")
        )
        tensors = [e.media_extras.get(key) for e in encoded]
        present = [t for t in tensors if t is not None]
        if per_row:
            sample = present[0]
            filler = torch.zeros((1,) + tuple(sample.shape[1:]), dtype=sample.dtype)
            tensors = [t if t is not None else filler for t in tensors]
            out[key] = cat_padded(tensors)
        else:
            out[key] = cat_padded(present)
    return out


def cat_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate on dim 0, zero-padding trailing dims to the largest."""
    if len(tensors) == 1:
        return tensors[0]
    shapes = [t.shape for t in tensors]
    if all(s[1:] == shapes[0][1:] for s in shapes):
        return torch.cat(tensors, dim=0)
    dims = max(len(s) for s in shapes)
    target = [max(s[d] for s in shapes) for d in range(1, dims)]
    padded = []
    for t in tensors:
        buf = t.new_zeros((t.shape[0], *target))
        buf[(slice(None), *(slice(0, n) for n in t.shape[1:]))] = t
        padded.append(buf)
    return torch.cat(padded, dim=0)
