"""Token kinds and labels for a whole padded processor output at once (numpy, no per-token
Python): MEDIA inside a media expansion or on a media marker id, ANSWER overlapping an answer
span, PROMPT the rest; labels are the ids with the kinds `label_masking` masks ignored."""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np

from vlmctl.collate.encoded import ANSWER, MEDIA, PROMPT


def labels_np(ids: np.ndarray, kinds: np.ndarray, label_masking: Any) -> np.ndarray:
    """Labels for `ids`: ignore_index on prompt and/or media tokens as `label_masking` says."""
    lm = label_masking
    labels = ids.astype(np.int64, copy=True)
    if lm.mask_input_tokens:
        labels[kinds == PROMPT] = lm.ignore_index
    if lm.mask_image_token:
        labels[kinds == MEDIA] = lm.ignore_index
    return labels


def kinds_np(is_media: np.ndarray, answer: np.ndarray) -> np.ndarray:
    """Per-token TokenKind codes: media wins over an answer span, the rest is prompt."""
    kinds = np.full(is_media.shape, PROMPT, dtype=np.uint8)
    kinds[answer & ~is_media] = ANSWER
    kinds[is_media] = MEDIA
    return kinds


def mark_offsets(
    is_media: np.ndarray, offsets: np.ndarray, repl_b: Any, spans_b: list[list[list[int]]]
) -> np.ndarray:
    """Tokens overlapping an answer span (returned) and inside a media expansion (OR-ed into
    `is_media`), from the processor's offsets and text replacement map of every row."""
    n, width = is_media.shape
    off = offsets.reshape(n, width, 2)
    ts, te = off[..., 0], off[..., 1]
    real = te > ts  # zero-width tokens (added bos, specials outside the text) match nothing
    # Every media expansion and answer span of the batch as (row, start, end) arrays,
    # so each token is tested against all of them in a few numpy calls.
    media_rows: list[tuple[int, int, int]] = []
    span_rows: list[tuple[int, int, int]] = []
    for i, spans in enumerate(spans_b):
        repl = repl_b[i] if isinstance(repl_b, list) and len(repl_b) > i else []
        media_ranges, shifted = _expanded_spans(repl, spans)
        media_rows += [(i, ms, me) for ms, me in media_ranges]
        span_rows += [(i, s, e) for s, e in shifted]
    if media_rows:
        r, lo, hi = np.array(media_rows, dtype=np.int64).T
        hit = real[r] & (ts[r] >= lo[:, None]) & (te[r] <= hi[:, None])
        _or_rows(is_media, r, hit)
    answer = np.zeros_like(is_media)
    if span_rows:
        r, lo, hi = np.array(span_rows, dtype=np.int64).T
        hit = real[r] & (ts[r] < hi[:, None]) & (te[r] > lo[:, None])
        _or_rows(answer, r, hit)
    return answer


def _or_rows(out: np.ndarray, rows: np.ndarray, hit: np.ndarray) -> None:
    """`out[rows[k]] |= hit[k]` for every k; `rows` is non-decreasing (built row by row).

    Why: one `logical_or.reduceat` per batch instead of `logical_or.at` (unbuffered,
    several times slower on these small arrays); the result is the same.
    """
    starts = np.flatnonzero(np.concatenate(([True], rows[1:] != rows[:-1])))
    out[rows[starts]] |= np.logical_or.reduceat(hit, starts, axis=0)


def isin(arr: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`np.isin(arr, values)`; for the few ids a processor marks, one `==` per id.

    Why: `np.isin` sorts and merges (~0.14 ms on a batch of 8 short rows); a VLM has 1-6
    media token ids, and comparing against each is ~10x faster with the same result.
    """
    if values.size > 16:
        # Many ids (Idefics3's <row_i_col_j> grid): a lookup table over the id range instead
        # of np.isin's sort; ids outside the table (negative, past the largest) are not in it.
        top = int(values.max())
        if values.min() < 0 or top > 1 << 22:
            return np.isin(arr, values)
        lut = np.zeros(top + 2, dtype=bool)
        lut[values] = True
        return lut[np.clip(arr, -1, top + 1)]
    out = np.zeros(arr.shape, dtype=bool)
    for v in values.tolist():
        out |= arr == v
    return out


def mm_types(ids: np.ndarray, groups: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """0 text, 1 image, 2 video, 3 audio per token (later modalities win, as upstream)."""
    out = np.zeros(ids.shape, dtype=np.int64)
    for code, wanted in groups:
        if wanted.size:
            out[isin(ids, wanted)] = code
    return out


def _expanded_spans(repl: list, spans: list) -> tuple[list, list]:
    """Media expansions' character ranges, and `spans` shifted into the expanded text."""
    repl = sorted(repl or [], key=lambda r: r["span"][0])
    ends = [r["span"][1] for r in repl]
    gained = [0]
    for r in repl:
        grow = (r["new_span"][1] - r["new_span"][0]) - (r["span"][1] - r["span"][0])
        gained.append(gained[-1] + grow)
    media_ranges = [tuple(r["new_span"]) for r in repl]
    shifted = [
        (s + gained[bisect.bisect_right(ends, s)], e + gained[bisect.bisect_right(ends, e - 1)])
        for s, e in spans
    ]
    return media_ranges, shifted


def row_runs(flags: np.ndarray) -> list[list[tuple[int, int]]]:
    """Per row of a 2-D bool array, [start, end) of each run of True."""
    n = flags.shape[0]
    padded = np.zeros((n, flags.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = flags
    rows, cols = np.nonzero(padded[:, 1:] != padded[:, :-1])  # row-major: pairs per row
    out: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for r, a, b in zip(rows[::2].tolist(), cols[::2].tolist(), cols[1::2].tolist(), strict=True):
        out[r].append((a, b))
    return out
