"""What the collator hands out and keeps per processor call: token kinds, one encoded row,
one prepared row, and the batch-level tensors of one call (their rows are views of them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import torch

from vlmctl.data.example import Example

ROW_INDEX_KEY = "__row_index__"
"""Optional key of a raw row holding its dataset index (for error messages and stats)."""


class TokenKind(IntEnum):
    """What each token is, for masking, preview colouring and validate statistics.

    ANSWER: inside an assistant answer span (end-of-turn marker included). Whether a token is
    trained is its LABEL's business (label_masking can keep prompt or media labels too).
    """

    PAD = 0
    PROMPT = 1
    MEDIA = 2
    ANSWER = 3


# Plain ints for numpy (an IntEnum member is a slow attribute lookup and a slow scalar).
PROMPT, MEDIA, ANSWER = int(TokenKind.PROMPT), int(TokenKind.MEDIA), int(TokenKind.ANSWER)


@dataclass
class EncodedExample:
    """One row after the processor: ids, labels, token kinds and the processor's extras."""

    input_ids: torch.Tensor  # (L,) long
    labels: torch.Tensor  # (L,) long; ignore_index where masked
    kinds: torch.Tensor  # (L,) uint8 TokenKind
    token_extras: dict[str, torch.Tensor]  # per-token: attention_mask, token_type_ids, ...
    media_extras: dict[str, torch.Tensor]  # pixel_values, image_grid_thw, ...
    row: int | None = None
    media_spans: list[tuple[int, int]] = field(default_factory=list)
    original_length: int = 0
    truncated: bool = False
    drop_reason: str | None = None  # too_long | media_too_long | no_labels
    text: str = ""  # the rendered chat (before media expansion)

    @property
    def length(self) -> int:
        """Tokens in the row as it will be trained (after any truncation)."""
        return int(self.input_ids.shape[0])

    num_supervised: int = 0  # labels that are not ignore_index
    # Where the media tensors live when several rows went through one processor call.
    _prepared: Any = field(default=None, repr=False, compare=False)
    _group: Any = field(default=None, repr=False, compare=False)
    _pos: int = field(default=0, repr=False, compare=False)

    @property
    def num_media_tokens(self) -> int:
        """Tokens that stand for image/video content: validate reports them apart from text."""
        return int((self.kinds == TokenKind.MEDIA).sum())

    def spans(self) -> list[tuple[str, int, int]]:
        """Runs of equal kinds as (kind name, start, end): what preview/validate display."""
        out: list[tuple[str, int, int]] = []
        k = self.kinds.tolist()
        start = 0
        for i in range(1, len(k) + 1):
            if i == len(k) or k[i] != k[start]:
                out.append((TokenKind(k[start]).name.lower(), start, i))
                start = i
        return out


@dataclass
class Prepared:
    """One example ready for the processor: decoded media, rendered text, answer spans."""

    example: Example
    text: str
    spans: list[list[int]]
    images: list
    videos: list
    metas: list
    suffix: str | None = None
    media_tags: list[str] = field(default_factory=list)  # tags put in string-form content


@dataclass
class MediaGroup:
    """Media tensors of ONE processor call over `size` rows, in row order."""

    media: dict[str, torch.Tensor]
    size: int
    # The call's padded token tensors and the per-row views handed out (see `batching`).
    tokens: GroupTokens | None = None


@dataclass
class GroupTokens:
    """Batch-level token tensors of one processor call (rows right-padded to `width`)."""

    input_ids: torch.Tensor  # (n, width)
    labels: torch.Tensor  # (n, width)
    extras: dict[str, torch.Tensor]  # token extras (attention_mask last when present), (n, width)
    pad: torch.Tensor  # (n, width) bool: True where a row is padding
    views: list[tuple]  # per row: (input_ids, labels, token_extras values), as handed out
