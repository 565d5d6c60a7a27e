"""THE length policy, as one pure decision: what happens to a row of `length` tokens under
`text_processing` (truncation, max_length, truncation_policy). The collator acts on it,
validate reports it; neither writes the rule itself.

- truncation off, or the row fits: kept whole;
- `error`: the row stops training (the collator raises DataError naming it);
- `drop`: dropped ("too_long");
- `truncate_text`: cut to `max_length` when every media span ends by then, else dropped
  ("media_too_long"): a cut never falls inside or before a media span;
- a row left with no supervised token (whole or cut) is dropped ("no_labels": an
  all-ignored batch gives a NaN loss).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

KEEP, CUT, DROP, ERROR = "keep", "cut", "drop", "error"


@dataclass(frozen=True)
class LengthDecision:
    """The policy's verdict on one row."""

    action: str  # keep | cut | drop | error
    reason: str | None = None  # drop: too_long | media_too_long | no_labels
    cut_at: int | None = None  # cut (and a cut that left no labels): the new length
    supervised: int = 0  # supervised tokens train keeps (0 when dropped or an error)
    over_length: bool = False  # the row exceeds max_length with truncation on

    @property
    def fits(self) -> bool:
        """Whether the row survives the LENGTH rule (a row without labels still fits)."""
        return self.action in (KEEP, CUT) or self.reason == "no_labels"


def decide(
    length: int,
    media_spans: Sequence[tuple[int, int]],
    supervised: int,
    supervised_upto,
    *,
    truncation: bool,
    max_length: int,
    policy: str,
) -> LengthDecision:
    """The decision for one row.

    `supervised`: its supervised tokens whole; `supervised_upto(n)`: those among its first n
    tokens (called only for a cut).
    """
    if not truncation or length <= max_length:
        if supervised == 0:
            return LengthDecision(DROP, "no_labels")
        return LengthDecision(KEEP, supervised=supervised)
    if policy == "error":
        return LengthDecision(ERROR, over_length=True)
    if policy == "drop":
        return LengthDecision(DROP, "too_long", over_length=True)
    if max((e for _, e in media_spans), default=0) > max_length:
        return LengthDecision(DROP, "media_too_long", over_length=True)
    kept = supervised_upto(max_length)
    if kept == 0:
        return LengthDecision(DROP, "no_labels", cut_at=max_length, over_length=True)
    return LengthDecision(CUT, cut_at=max_length, supervised=kept, over_length=True)


def decide_for(enc: Any, cfg: Any, *, truncate: bool = True) -> LengthDecision:
    """`decide` for an EncodedExample under a CollatorConfig (`truncate=False`: no length
    limit, only the label check). The row's untruncated length is `original_length`."""
    tp = cfg.text_processing
    ignore = cfg.label_masking.ignore_index

    def upto(n: int) -> int:
        return int((enc.labels[:n] != ignore).sum())

    return decide(
        enc.original_length or enc.length,
        enc.media_spans,
        enc.num_supervised,
        upto,
        truncation=bool(tp.truncation and truncate),
        max_length=tp.max_length,
        policy=tp.truncation_policy,
    )
