"""`VLMCollator`: THE collator of `preview`, `validate` and `train` (raw rows -> model batch).

Pipeline: `row_to_example` (messages + media references) -> decode media with `vlmctl.media`
(image_processing / video_processing settings) -> render each chat with the processor's
template -> ONE processor call for the whole batch (it expands the media placeholders; its
media tensors are kept batched) -> token kinds -> labels (label_masking) -> media-aware
truncation -> `collate_encoded` pads (right side) and stacks. When rows were dropped, the
survivors are processed again as one call so their media tensors match. Only the processor is
needed, never the model, so `validate` can measure lengths and spans with `encode_examples` /
`encode_example(..., truncate=False)`.

How labels are found (never by searching decoded text; the full rule is in docs/DESIGN.md,
"The span rule"):
- the chat is rendered in the form the template takes (content parts, or strings with the
  processor's image tags: decided from the template by a probe, not from the family name);
- the assistant turns' CHARACTER spans come from the chat template itself: `{% generation %}`
  markers when the template has them and they check out, otherwise by rendering the chat
  incrementally (prefix up to turn k with the generation prompt -> where the answer starts;
  prefix through turn k -> where it ends);
- `_close_turns`: whitespace around the answer is trimmed; the first special token the
  template emits after it (inside or outside the markers) is the end-of-turn marker and is
  TRAINED; the whitespace after that marker is not; only when the template emits no special
  token there (llava-1.5) the tokenizer's eos is inserted after the answer;
- the processor returns `offset_mapping` and `text_replacement_offsets` (where each media
  placeholder was expanded), so spans are shifted into the expanded text and every token is
  classified: MEDIA (inside an expansion, a negative id, or a media marker id such as
  <|vision_start|>, <fake_token_around_image>, <row_1_col_1>, <global-img>, <img>, </img>),
  TRAINED (overlaps an assistant span), PROMPT (the rest), PAD (added by collate). A
  processor without offsets (Phi3VProcessor) is called per row, and span boundaries are found
  exactly by processing the text up to each boundary.
- PaliGemma (and processors without a chat template whose `__call__` takes `suffix=`):
  `processor(text=prefix, images=..., suffix=answer)`; `token_type_ids` mark the suffix so the
  answer attends causally (prefix-LM), and the suffix + eos is TRAINED. The prefix is every
  non-final turn's text joined with "\\n"; the suffix is the LAST assistant turn (PaliGemma is
  not a chat model).

Special tokens: the processor adds them (e.g. llava's `<s>`) unless the rendered text already
starts with bos, the convention of transformers' `processor.apply_chat_template` (what
inference uses). TRL's collator passes `add_special_tokens=False` instead, so for templates
without bos (llava, phi-3 style) vlmctl's ids carry one more leading bos than TRL's.

Truncation (`text_processing`), AFTER media expansion, never inside a media span:
`truncation: false` -> no limit. `true` + `truncation_policy`:
- `drop` (default): the row is skipped and counted in `stats` ("too_long");
- `truncate_text`: text tokens after the last media span are cut from the end; when the media
  (and what precedes them) alone exceed `max_length` the row is dropped ("media_too_long");
- `error`: DataError naming the row.
Rows left with no supervised token are dropped too ("no_labels": an all-ignored batch gives a
NaN loss). A batch whose rows are ALL dropped raises DataError (code `all-rows-dropped`):
a Trainer cannot skip a batch from inside a collator, and silently training on nothing is
worse; `stats` says how many rows were dropped and why, and `fits()` lets a caller pre-filter.

Padding: right side. `padding: true|longest` -> longest row of the batch; `max_length` -> at
least `max_length`; `false` -> no padding when all rows have the same length, otherwise to
the longest (tensors must be rectangular; noted once in `stats["notes"]`).

Media tensors: per-media tensors (Qwen's flattened patches, LLaVA/InternVL/PaliGemma image
stacks, grids, image_sizes, second_per_grid_ts) are concatenated over the batch in row order;
per-row tensors (Idefics3/SmolVLM `pixel_values`/`pixel_attention_mask`, LLaVA-OneVision
`batch_num_images`) are stacked with zero fillers for rows without media (the models skip
all-zero images). Trailing dimensions are zero-padded to the batch maximum.

Memory: an `EncodedExample`'s ids/labels/kinds/token extras are views of its processor call's
padded arrays (row i, first `length` entries), not copies; `collate_encoded` of exactly that
call's untouched rows pads from those arrays directly.
"""

from __future__ import annotations

import bisect
import inspect
import operator
import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum
from itertools import accumulate, chain
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmctl.config.collator import CollatorConfig
from vlmctl.data.example import Example
from vlmctl.errors import DataError, Finding, VlmctlError

ROW_INDEX_KEY = "__row_index__"
"""Optional key of a raw row holding its dataset index (for error messages and stats)."""


class TokenKind(IntEnum):
    """What each token is, for masking, preview colouring and validate statistics."""

    PAD = 0
    PROMPT = 1
    MEDIA = 2
    TRAINED = 3


# Plain ints for numpy (an IntEnum member is a slow attribute lookup and a slow scalar).
_PROMPT, _MEDIA, _TRAINED = int(TokenKind.PROMPT), int(TokenKind.MEDIA), int(TokenKind.TRAINED)


# Media marker tokens that are not the image/video placeholder itself.
_MEDIA_TOKEN_NAMES = (
    "<image>",
    "<video>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image|>",
    "<|video|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<fake_token_around_image>",
    "<global-img>",
    "<image_soft_token>",
    "<start_of_image>",
    "<end_of_image>",
    "<vision>",
    "</vision>",
    "<|image_start|>",
    "<|image_end|>",
)
_MEDIA_TOKEN_ATTRS = (
    "image_token",
    "video_token",
    "boi_token",
    "eoi_token",
    "start_image_token",
    "end_image_token",
    "context_image_token",
    "fake_image_token",
    "global_image_token",
    "vision_start_token",
    "vision_end_token",
    "image_start_token",
    "image_end_token",
)
_MEDIA_TOKEN_RE = re.compile(r"^<row_\d+_col_\d+>$")
# Processors whose pixel tensors have a per-ROW first dimension (padded image slots).
_ROW_BATCHED_PIXELS = ("Idefics2Processor", "Idefics3Processor", "SmolVLMProcessor")
_ROW_KEYS_ALWAYS = ("batch_num_images",)
_GENERATION_RE = re.compile(r"\{%-?\s*generation\s*-?%\}")


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
class _Prepared:
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
class _MediaGroup:
    """Media tensors of ONE processor call over `size` rows, in row order."""

    media: dict[str, torch.Tensor]
    size: int
    # The call's padded token tensors and the per-row views handed out (see `_collate_group`).
    tokens: _GroupTokens | None = None


@dataclass
class _GroupTokens:
    """Batch-level token tensors of one processor call (rows right-padded to `width`)."""

    input_ids: torch.Tensor  # (n, width)
    labels: torch.Tensor  # (n, width)
    extras: dict[str, torch.Tensor]  # token extras (attention_mask last when present), (n, width)
    pad: torch.Tensor  # (n, width) bool: True where a row is padding
    views: list[tuple]  # per row: (input_ids, labels, token_extras values), as handed out


class VLMCollator:
    """Raw dataset rows -> a padded batch for the model; also per-row encodings for tools.

    `stats` (a Counter) counts rows seen/encoded/truncated/dropped (by reason) and batches;
    the trainer logs it.
    """

    def __init__(
        self,
        processor: Any,
        cfg: CollatorConfig,
        media_dirs: Sequence[str | Path] = (),
        *,
        model_type: str | None = None,
    ):
        self.processor = processor
        self.cfg = cfg
        self.media_dirs = [Path(d) for d in media_dirs]
        self.model_type = model_type
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.stats: Counter = Counter()
        self._notes: set[str] = set()
        tok = self.tokenizer
        self.pad_token_id = _first_id(tok, ("pad_token_id", "eos_token_id")) or 0
        self.eos_token = getattr(tok, "eos_token", None)
        self.bos_token = getattr(tok, "bos_token", None)
        self.media_token_ids = _media_token_ids(processor, tok)
        self._media_ids_np = np.array(sorted(self.media_token_ids), dtype=np.int64)
        self._special_strings = _special_strings(tok)
        self.chat_template = getattr(processor, "chat_template", None) or getattr(
            tok, "chat_template", None
        )
        if isinstance(self.chat_template, dict):
            self.chat_template = self.chat_template.get("default") or next(
                iter(self.chat_template.values())
            )
        cls_name = type(processor).__name__
        self.prefix_suffix = (model_type or "").startswith("paligemma") or (
            not self.chat_template and "suffix" in _call_params(processor)
        )
        if not self.chat_template and not self.prefix_suffix:
            raise VlmctlError(
                Finding(
                    "error",
                    f"the processor {cls_name} has no chat template",
                    hint="use a model whose processor ships a chat_template, or add one to its "
                    "processor folder (chat_template.jinja)",
                    code="no-chat-template",
                )
            )
        self._has_generation_markers = bool(
            self.chat_template and _GENERATION_RE.search(self.chat_template)
        )
        mro = {c.__name__ for c in type(processor).__mro__}
        self._row_batched_pixels = bool(mro & set(_ROW_BATCHED_PIXELS))
        self._special_tokens_map = dict(getattr(tok, "special_tokens_map", {}) or {})
        self._mm_type_ids = _own_mm_type_ids(processor) if not self.prefix_suffix else None
        # A processor whose __call__ takes no **kwargs (remote code such as Phi3VProcessor)
        # gets one text per call, no offsets: spans are found by prefix calls.
        self._narrow = not self.prefix_suffix and not _takes_any_kwargs(processor)
        self._offsets_unmappable = False  # set when the processor returns no replacement map
        self.takes_both_media = takes_images_and_videos(processor)

    # ------------------------------------------------------------------ public API

    def __call__(self, rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Raw rows -> batch (input_ids, attention_mask, labels, media tensors, ...)."""
        from vlmctl.data.messages import row_to_example

        examples = [
            row_to_example(
                row, self.cfg, row.get(ROW_INDEX_KEY) if isinstance(row, Mapping) else None
            )
            for row in rows
        ]
        encoded = [e for e in self.encode_examples(examples) if not e.drop_reason]
        self.stats["batches"] += 1
        if not encoded:
            self.stats["all_dropped_batches"] += 1
            raise DataError(
                Finding(
                    "error",
                    f"every row of this batch ({len(rows)}) was dropped "
                    f"(dropped so far: {self.drop_summary()})",
                    hint="raise text_processing.max_length, use truncation_policy: "
                    "truncate_text, or filter long rows (vlmctl validate lists them)",
                    key="text_processing.max_length",
                    code="all-rows-dropped",
                )
            )
        return self.collate_encoded(encoded)

    def encode_row(self, row: Mapping[str, Any], row_index: int | None = None) -> EncodedExample:
        """One raw row -> EncodedExample (row_to_example + encode_example)."""
        from vlmctl.data.messages import row_to_example

        example = row_to_example(row, self.cfg, row_index)
        return self.encode_example(example)

    def encode_example(self, example: Example, *, truncate: bool = True) -> EncodedExample:
        """Render, process, classify tokens, mask and (when `truncate`) apply the length policy.

        `truncate=False` measures only (validate/preview): nothing is cut or dropped for length,
        `stats` is not touched, `original_length` is the full length. Dropped rows come back
        with `drop_reason` set and are counted in `stats`; the policy `error` raises DataError.
        """
        return self.encode_examples([example], truncate=truncate)[0]

    def encode_examples(
        self, examples: Sequence[Example], *, truncate: bool = True
    ) -> list[EncodedExample]:
        """`encode_example` for several rows with ONE processor call (what `__call__` uses).

        Media tensors then stay batched (`collate_encoded` of exactly these encodings, in this
        order, reuses them); a subset is re-processed as one call when collated.
        """
        prepared = self._prepare_many([self.fit_media(ex) for ex in examples])
        encoded = self._process_prepared(prepared)
        for enc in encoded:
            enc.original_length = enc.length
            if truncate:
                self._apply_length_policy(enc)
            if enc.drop_reason is None and enc.num_supervised == 0:
                enc.drop_reason = "no_labels"
            if truncate:  # measuring (validate, length estimates) leaves training stats alone
                self.stats["rows"] += 1
                if enc.drop_reason:
                    self.stats[f"dropped_{enc.drop_reason}"] += 1
                    self.stats["dropped"] += 1
        return encoded

    def fits(self, enc: EncodedExample) -> bool:
        """Whether an (untruncated) encoding survives the length policy without being dropped."""
        tp = self.cfg.text_processing
        if not tp.truncation or enc.original_length <= tp.max_length:
            return True
        if tp.truncation_policy == "truncate_text":
            last_media = max((e for _, e in enc.media_spans), default=0)
            return last_media <= tp.max_length
        return False

    def drop_summary(self) -> str:
        """Dropped rows by reason (`no_labels=1, too_long=3` or `none`): says why rows went missing."""
        parts = [
            f"{k[len('dropped_') :]}={v}"
            for k, v in sorted(self.stats.items())
            if k.startswith("dropped_")
        ]
        return ", ".join(parts) or "none"

    def collate_encoded(self, encoded: Sequence[EncodedExample]) -> dict[str, torch.Tensor]:
        """Pad and stack encodings into the batch the model takes (labels included)."""
        encoded = [e for e in encoded if not e.drop_reason]
        if not encoded:
            raise DataError(
                Finding("error", "no rows to collate", code="all-rows-dropped"),
            )
        tp = self.cfg.text_processing
        lm = self.cfg.label_masking
        longest = max(e.length for e in encoded)
        if tp.padding == "max_length":
            target = max(longest, tp.max_length)
        elif tp.padding is False and any(e.length != longest for e in encoded):
            self._note("padding: false with rows of different lengths: padded to the longest")
            target = longest
        else:
            target = longest
        n = len(encoded)
        pad_label = lm.ignore_index if lm.mask_pad_token else self.pad_token_id
        fast = self._collate_group(encoded, target, pad_label)
        if fast is not None:
            return fast
        input_ids = torch.full((n, target), self.pad_token_id, dtype=torch.long)
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
        batch.update(self._collate_media(encoded))
        batch["labels"] = labels
        return batch

    def _collate_group(
        self, encoded: list[EncodedExample], target: int, pad_label: int
    ) -> dict[str, torch.Tensor] | None:
        """`collate_encoded` of exactly the untouched rows of one processor call, in order.

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

        batch = {"input_ids": padded(tok.input_ids, self.pad_token_id)}
        for key, t in tok.extras.items():
            batch[key] = padded(t, 0)
        if "attention_mask" not in batch:
            batch["attention_mask"] = (~pad).long()
        batch.update(self._collate_media(encoded))
        batch["labels"] = padded(tok.labels, pad_label)
        return batch

    def kinds_batch(
        self, encoded: Sequence[EncodedExample], width: int | None = None
    ) -> torch.Tensor:
        """Token kinds padded like `collate_encoded` pads ids (PAD where padded).

        `width`: the batch's width (`padding: max_length` pads past the longest row).
        """
        longest = max([e.length for e in encoded] + [width or 0])
        out = torch.full((len(encoded), longest), int(TokenKind.PAD), dtype=torch.uint8)
        for i, e in enumerate(encoded):
            out[i, : e.length] = e.kinds
        return out

    # ------------------------------------------------------------------ generation prompts

    def encode_prompts(self, examples: Sequence[Example]) -> list[tuple[EncodedExample, str]]:
        """Each example up to its LAST assistant turn, as the model sees it before answering.

        Why here: `vlmctl eval` (and the training-time eval) must feed the model exactly what
        training taught it to continue: the same row rendering, media decoding, chat template
        and processor call, with the template's generation prompt in place of the answer
        (PaliGemma: the prefix without a suffix). Returns (encoding, reference answer) per
        example; the reference is the removed turn's text ("" when there is none). No length
        policy applies: a prompt is never cut.
        """
        prepared, refs = [], []
        for ex in examples:
            msgs = list(ex.messages)
            last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
            ref = _message_text(msgs[last]) if last is not None else ""
            kept = msgs[:last] if last is not None else msgs
            n_img = sum(_count_parts(m, "image") for m in kept)
            n_vid = sum(_count_parts(m, "video") for m in kept)
            prompt_ex = Example(
                messages=kept, images=ex.images[:n_img], videos=ex.videos[:n_vid], row=ex.row
            )
            p = self._prepare(prompt_ex)
            if not self.prefix_suffix:
                p.text = self._render_many([kept], True)[0]
            prepared.append(p)
            refs.append(ref)
        encoded = self._process_prepared(prepared) if prepared else []
        return list(zip(encoded, refs, strict=True))

    def collate_prompts(self, encoded: Sequence[EncodedExample]) -> dict[str, torch.Tensor]:
        """Left-pad prompt encodings into a batch for `model.generate` (no labels).

        Left padding keeps every row's last prompt token at the end, where generation appends.
        """
        if not encoded:
            raise DataError(Finding("error", "no prompts to collate", code="all-rows-dropped"))
        n, width = len(encoded), max(e.length for e in encoded)
        batch: dict[str, torch.Tensor] = {
            "input_ids": torch.full((n, width), self.pad_token_id, dtype=torch.long)
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
        batch.update(self._collate_media(encoded))
        return batch

    # ------------------------------------------------------------------ media

    def fit_media(self, example: Example) -> Example:
        """The example as this processor can take it: "video wins" in a row with images AND
        videos only when the processor takes one kind per row (noted in `example.notes`).

        Rows keep both kinds for processors that take both (Qwen2-VL, LLaVA-OneVision, ...).
        """
        if self.takes_both_media or not (example.images and example.videos):
            return example
        n = len(example.images)
        messages = []
        for msg in example.messages:
            content = msg.get("content")
            if isinstance(content, list):
                kept = [
                    p for p in content if not (isinstance(p, dict) and p.get("type") == "image")
                ]
                if not kept:
                    continue
                msg = {**msg, "content": kept}
            messages.append(msg)
        note = (
            f"{n} image(s) dropped: {type(self.processor).__name__} takes images or video in a "
            "row, not both (video wins)"
        )
        return replace(example, messages=messages, images=[], notes=[*example.notes, note])

    def _load_media(self, example: Example):
        from vlmctl.media.images import load_image

        ip = self.cfg.image_processing
        images = [
            load_image(
                ref,
                base_dirs=self.media_dirs,
                convert_to_rgb=ip.convert_to_rgb,
                resize_mode=ip.resize_mode,
                max_size=ip.max_size,
                row=example.row,
            )
            for ref in example.images
        ]
        videos, metas = [], []
        if example.videos:
            from vlmctl.media.video import load_video_frames

            vp = self.cfg.video_processing
            for ref in example.videos:
                if _is_frames(ref):  # already decoded (tests, in-memory datasets)
                    videos.append(ref)
                    metas.append(None)
                    continue
                clip = load_video_frames(
                    ref,
                    base_dirs=self.media_dirs,
                    library=vp.frame_extraction.library,
                    num_frames=vp.frame_extraction.num_frames,
                    max_duration=vp.file_processing.max_duration,
                    convert_to_rgb=vp.file_processing.convert_to_rgb,
                    row=example.row,
                )
                videos.append(clip.frames)
                metas.append(clip)
                # Which decoder read the clips (decord may hand a file to PyAV): said by train.
                self.stats[f"video_decoder_{clip.backend}"] += 1
        return images, videos, metas

    # ------------------------------------------------------------------ chat path

    def _render_many(
        self, convs: list[list[dict]], add_generation_prompt: bool, plain: bool | None = None
    ) -> list[str]:
        """Render several chats in one call (the template is compiled once and cached).

        `plain`: whether every chat is `_is_plain` when the caller already knows it.
        """
        if not convs:
            return []
        compiled = self._compiled_template()
        if plain is None:
            plain = all(_is_plain(c) for c in convs)
        if compiled is not None and plain:
            # Plain str/dict/list chats (what row_to_example builds) need none of HF's
            # per-call sanitising copies; the template runs in jinja's immutable sandbox.
            # What `compiled.render(messages=c, tools=None, documents=None,
            # add_generation_prompt=..., **special_tokens)` does, with the template globals
            # copied once instead of per call (jinja's `new_context(shared=True)` takes
            # the dict as is; the default path rebuilds it from a ChainMap every time).
            env = compiled.environment
            base = self._render_vars
            out = []
            for c in convs:
                ctx = compiled.new_context(
                    {**base, "messages": c, "add_generation_prompt": add_generation_prompt},
                    shared=True,
                )
                try:
                    out.append(env.concat(compiled.root_render_func(ctx)))
                except Exception:  # noqa: BLE001 - what Template.render does with errors
                    env.handle_exception()
            return out
        from transformers.utils.chat_template_utils import render_jinja_template

        prompts, _ = render_jinja_template(
            conversations=convs,
            chat_template=self.chat_template,
            add_generation_prompt=add_generation_prompt,
            **self._special_tokens_map,
        )
        return list(prompts)

    def _compiled_template(self):
        if not hasattr(self, "_compiled"):
            try:  # private helper (cached compile); the public path below is the fallback
                from transformers.utils.chat_template_utils import _compile_jinja_template

                self._compiled = _compile_jinja_template(self.chat_template)
                if self._compiled.environment.is_async:
                    raise TypeError("async environment")
                # Template globals, then the call's variables (they win, as in `render`).
                self._render_vars = {
                    **dict(self._compiled.globals),
                    "tools": None,
                    "documents": None,
                    **self._special_tokens_map,
                }
            except Exception:  # noqa: BLE001 - any failure: use render_jinja_template
                self._compiled = None
        return self._compiled

    def _assistant_char_spans_many(
        self, chats: list[list[dict]]
    ) -> list[tuple[str, list[list[int]]]]:
        """Rendered chat and the [start, end) character span of each assistant turn, per chat.

        Without `{% generation %}` markers: the chat through turn k must render as a prefix of
        the whole chat; the answer starts where the chat before turn k, rendered WITH the
        generation prompt, ends (without it when that is not a prefix), and ends at the end of
        turn k minus trailing whitespace. All renders of a batch go in two template calls.
        """
        tp = self.cfg.text_processing
        gen = [tp.add_generation_prompt and bool(m) and m[-1]["role"] != "assistant" for m in chats]
        marked: dict[int, tuple[str, list[list[int]]]] = {}
        if self._has_generation_markers:
            from transformers.utils.chat_template_utils import render_jinja_template

            for i, (messages, flag) in enumerate(zip(chats, gen, strict=True)):
                prompts, indices = render_jinja_template(
                    conversations=[messages],
                    chat_template=self.chat_template,
                    add_generation_prompt=flag,
                    return_assistant_tokens_mask=True,
                    **self._special_tokens_map,
                )
                spans = _checked_marker_spans(messages, prompts[0], indices[0])
                if spans is not None:  # markers not trusted blindly: else render incrementally
                    marked[i] = (prompts[0], spans)
            if len(marked) == len(chats):
                return [marked[i] for i in range(len(chats))]
        wanted: dict[bool, dict[tuple[int, int], list[dict]]] = {True: {}, False: {}}
        for i, (messages, flag) in enumerate(zip(chats, gen, strict=True)):
            if i in marked:
                continue
            wanted[flag][(i, len(messages))] = messages
            for k, msg in enumerate(messages):
                if msg["role"] == "assistant":
                    wanted[False][(i, k + 1)] = messages[: k + 1]
                    if k:
                        wanted[True][(i, k)] = messages[:k]
        # Each message is checked once: a request (chat i through message n) is plain when
        # chat i is a list and its first n messages are plain (what `_is_plain` of it says).
        msg_plain = [
            list(accumulate((_is_plain(m) for m in msgs), operator.and_))
            if type(msgs) is list
            else None
            for msgs in chats
        ]
        rendered: dict[bool, dict[tuple[int, int], str]] = {}
        for flag, reqs in wanted.items():
            plain = all(
                msg_plain[i] is not None and (upto == 0 or msg_plain[i][upto - 1])
                for i, upto in reqs
            )
            rendered[flag] = dict(
                zip(reqs, self._render_many(list(reqs.values()), flag, plain), strict=True)
            )
            # (an empty request set renders nothing)
        out = []
        for i, (messages, flag) in enumerate(zip(chats, gen, strict=True)):
            if i in marked:
                out.append(marked[i])
                continue
            full = rendered[flag][(i, len(messages))]
            spans: list[list[int]] = []
            for k, msg in enumerate(messages):
                if msg["role"] != "assistant":
                    continue
                through = rendered[False][(i, k + 1)]
                if not full.startswith(through):
                    raise self._template_error("a chat prefix does not render as a prefix")
                start = 0
                if k:
                    head = rendered[True][(i, k)]
                    start = len(head)
                    if not through.startswith(head):
                        # The generation prompt differs from what the template renders for
                        # a past answer: the answer starts where the two diverge, never
                        # before the end of the chat without the prompt.
                        bare = self._render_many([messages[:k]], False)[0]
                        if not through.startswith(bare):
                            raise self._template_error("a chat prefix does not render as a prefix")
                        start = max(len(bare), len(os.path.commonprefix([head, through])))
                end = len(through.rstrip())
                if end > start:
                    spans.append([start, end])
            out.append((full, spans))
        return out

    def _template_error(self, what: str) -> VlmctlError:
        return VlmctlError(
            Finding(
                "error",
                f"cannot find the assistant turns in this chat template: {what}",
                hint="add {% generation %} markers around assistant content in the template",
                code="template-spans",
            )
        )

    def _close_turns(self, text: str, spans: list[list[int]]) -> tuple[str, list[list[int]]]:
        """Trim each answer span and end it at the turn's end-of-turn marker (THE span rule).

        - whitespace the template puts around an answer (llava-1.5's `text + ' '`,
          OneVision's `'\\n' + text` inside its markers) is not part of the answer;
        - the end-of-turn marker is the first special token the template emits after the
          answer, inside or outside the markers, whitespace allowed in between (`<|im_end|>`,
          `<|end|>`, `<end_of_turn>`, `<|eot_id|>`, `</s>`): it is trained, once;
        - only when the template emits NO special token there (llava-1.5) the tokenizer's eos
          is inserted right after the answer, so the model learns to stop; nothing the
          template emits is ever added a second time;
        - what follows the marker (the newline of ChatML, Gemma, Phi-3) is not trained: the
          model stops at the marker and never generates it.
        """
        closers = self._closers
        eos = self.eos_token
        out, new_spans, shift, prev = [], [], 0, 0
        for start, end in spans:
            while start < end and text[start].isspace():
                start += 1
            while end > start and text[end - 1].isspace():
                end -= 1
            if end <= start:
                continue
            if not text[start:end].endswith(closers):
                j = end
                while j < len(text) and text[j].isspace():
                    j += 1
                closer = next((c for c in closers if text.startswith(c, j)), None)
                if closer is not None:
                    end = j + len(closer)
                elif eos:
                    out.append(text[prev:end])
                    out.append(eos)
                    prev = end
                    new_spans.append([start + shift, end + shift + len(eos)])
                    shift += len(eos)
                    continue
            new_spans.append([start + shift, end + shift])
        out.append(text[prev:])
        return "".join(out), new_spans

    @property
    def _closers(self) -> tuple[str, ...]:
        """Special tokens that can end a turn, longest first (bos/unk and media never do)."""
        if not hasattr(self, "_closers_cache"):
            skip = {
                getattr(self.tokenizer, "bos_token", None),
                getattr(self.tokenizer, "unk_token", None),
            }
            self._closers_cache = tuple(
                sorted((c for c in self._special_strings if c not in skip), key=len, reverse=True)
            )
        return self._closers_cache

    # -- the form the template takes messages in

    def _content_form(self) -> str:
        """`parts` (typed content lists) or `string` (text with the processor's image tags).

        Decided from the template itself: a probe chat rendered with content parts must show
        its text; a template that concatenates `message['content']` as a string raises
        (Phi-3-vision) or prints the list's repr, and then takes strings instead.
        """
        if hasattr(self, "_form"):
            return self._form
        probe_u, probe_a = "vlmctl-probe-question", "vlmctl-probe-answer"

        def shows(messages) -> bool:
            try:
                text = self._render_many([messages], False, plain=True)[0]
            except Exception:  # noqa: BLE001 - the template refuses this form
                return False
            return probe_u in text and probe_a in text and "'type'" not in text

        parts = [
            {"role": "user", "content": [{"type": "text", "text": probe_u}]},
            {"role": "assistant", "content": [{"type": "text", "text": probe_a}]},
        ]
        strings = [{"role": "user", "content": probe_u}, {"role": "assistant", "content": probe_a}]
        self._form = "parts" if shows(parts) or not shows(strings) else "string"
        return self._form

    def _media_tag(self, kind: str, n: int) -> str:
        """The text a processor expands into the n-th (1-based) image/video of a row."""
        proc = self.processor
        token = getattr(proc, f"{kind}_token", None)
        if isinstance(token, str) and token:
            return token
        numbered = getattr(proc, "img_tokens", None) if kind == "image" else None
        if isinstance(numbered, Sequence) and len(numbered) >= n:  # Phi-3-vision's <|image_N|>
            return str(numbered[n - 1])
        token = getattr(self.tokenizer, f"{kind}_token", None)
        if isinstance(token, str) and token:
            return token
        raise VlmctlError(
            Finding(
                "error",
                f"the chat template takes text content, and the processor "
                f"{type(proc).__name__} names no {kind} tag to put in it",
                hint="use a processor with an image_token, or a template that takes content parts",
                code="template-media-tag",
            )
        )

    def _template_messages(self, messages: list[dict]) -> tuple[list[dict], list[str]]:
        """Messages in the template's form, and the media tags put in the text (in order)."""
        if self._content_form() == "parts":
            return messages, []
        out, tags, counts = [], [], {"image": 0, "video": 0}
        for m in messages:
            content = m.get("content")
            if isinstance(content, str):
                out.append(m)
                continue
            pieces = []
            for part in content or []:
                kind = part.get("type")
                if kind in counts:
                    counts[kind] += 1
                    tag = self._media_tag(kind, counts[kind])
                    tags.append(tag)
                    pieces.append(tag)
                elif part.get("text"):
                    pieces.append(str(part["text"]))
            out.append({**m, "content": "\n".join(pieces)})
        return out, tags

    def _prepare(self, example: Example) -> _Prepared:
        """Decode one example's media (and build PaliGemma's prefix/suffix); no processor yet."""
        images, videos, metas = self._load_media(example)
        if self.prefix_suffix:
            if not images:
                raise DataError(
                    Finding(
                        "error",
                        f"{type(self.processor).__name__} needs an image in every row",
                        row=example.row,
                        hint="filter out rows without images",
                        code="row-needs-image",
                    )
                )
            msgs = example.messages
            last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
            if last is None:
                prefix_msgs, suffix = msgs, None
            else:
                prefix_msgs, suffix = msgs[:last], _message_text(msgs[last])
            prefix = "\n".join(t for t in (_message_text(m) for m in prefix_msgs) if t)
            image_token = getattr(self.processor, "image_token", "<image>")
            text = image_token * len(images) + prefix
            return _Prepared(example, text, [], images, videos, metas, suffix)
        return _Prepared(example, "", [], images, videos, metas)

    def _prepare_many(self, examples: Sequence[Example]) -> list[_Prepared]:
        prepared = [self._prepare(ex) for ex in examples]
        if not self.prefix_suffix:
            forms = [self._template_messages(ex.messages) for ex in examples]
            rendered = self._render_spans([m for m, _ in forms], examples)
            for p, (text, spans), (_, tags) in zip(prepared, rendered, forms, strict=True):
                p.text, p.spans = self._close_turns(text, spans)
                p.media_tags = tags
        return prepared

    def _render_spans(self, chats: list[list[dict]], examples: Sequence[Example]):
        """`_assistant_char_spans_many`, with any template failure as a one-line finding."""
        try:
            return self._assistant_char_spans_many(chats)
        except VlmctlError:
            raise
        except Exception as exc:  # noqa: BLE001 - a user's template can raise anything
            if len(chats) > 1:  # name the row
                for chat, ex in zip(chats, examples, strict=True):
                    self._render_spans([chat], [ex])
            raise DataError(
                Finding(
                    "error",
                    f"the chat template failed on this row: {type(exc).__name__}: {exc}",
                    row=examples[0].row if len(examples) == 1 else None,
                    hint="check the row's turns (roles, order, content) against what the "
                    "model's chat template accepts",
                    code="template-error",
                )
            ) from None

    def _process_prepared(self, prepared: list[_Prepared]) -> list[EncodedExample]:
        """One processor call over `prepared` -> one EncodedExample each (media batched)."""
        if (self.prefix_suffix and len({p.suffix is None for p in prepared}) > 1) or (
            (self._narrow or self._offsets_unmappable) and len(prepared) > 1
        ):
            return [enc for p in prepared for enc in self._process_prepared([p])]
        if self._narrow or self._offsets_unmappable:
            return self._process_narrow(prepared[0])
        # Token outputs come back as lists (numpy converts them much faster than the
        # processor's own tensor conversion); media outputs go through BatchFeature below.
        kwargs: dict[str, Any] = {"text": [p.text for p in prepared]}
        if len(prepared) > 1:
            kwargs.update(padding=True, padding_side="right")
        if any(p.images for p in prepared):
            kwargs["images"] = [p.images for p in prepared]
        if self.prefix_suffix:
            if prepared[0].suffix is not None:
                kwargs["suffix"] = [p.suffix for p in prepared]
        else:
            kwargs.update(return_offsets_mapping=True, return_text_replacement_offsets=True)
            if self._mm_type_ids is not None:  # built below for the whole batch at once
                kwargs["return_mm_token_type_ids"] = False
            if self.bos_token and prepared[0].text.startswith(self.bos_token):
                kwargs["add_special_tokens"] = False
            if any(p.videos for p in prepared):
                kwargs["videos"] = [p.videos for p in prepared]
                metas = [_video_metadata(p.metas, p.videos) for p in prepared if p.videos]
                if all(m is not None for m in metas):
                    kwargs["video_metadata"] = [m for group in metas for m in group]
        out = dict(self._process(kwargs, prepared))
        if (
            not self.prefix_suffix
            and out.get("text_replacement_offsets") is None
            and any(p.images for p in prepared)
        ):
            # Offsets of the EXPANDED text with no map back to the template's text
            # (Idefics2Processor): find the spans exactly by prefix calls instead.
            self._offsets_unmappable = True
            return [enc for p in prepared for enc in self._process_narrow(p)]
        return self._encode_output(prepared, out, None)

    def _encode_output(
        self,
        prepared: list[_Prepared],
        out: dict,
        narrow_trained: np.ndarray | None,
    ) -> list[EncodedExample]:
        """The processor's output -> EncodedExamples (kinds, labels, per-row views)."""
        ids_np = _int_array(out.pop("input_ids"))
        if ids_np.ndim == 1:  # some processors return a flat list for one text
            ids_np = ids_np[None, :]
        out.pop("labels", None)
        mask = out.pop("attention_mask", None)
        offsets_b = out.pop("offset_mapping", None)
        repl_b = out.pop("text_replacement_offsets", None)
        n, width = ids_np.shape
        token_arrays: dict[str, np.ndarray] = {}  # per-token outputs, attention_mask last
        if self._mm_type_ids is not None:  # None for prefix/suffix processors
            token_arrays["mm_token_type_ids"] = _mm_types(ids_np, self._mm_type_ids)
        media_raw: dict[str, Any] = {}
        for key, value in out.items():
            arr = _token_array(value, n, width)
            if arr is not None:
                token_arrays[key] = arr
            else:
                media_raw[key] = value
        if mask is not None:
            token_arrays["attention_mask"] = mask = _int_array(mask).reshape(n, width)
        lengths = mask.sum(1).tolist() if mask is not None and n > 1 else [width] * n
        media = _media_tensors(media_raw)
        group = _MediaGroup(media, n)
        # Kinds and labels for the whole padded batch at once (numpy: no per-token Python).
        is_media = _isin(ids_np, self._media_ids_np) | (ids_np < 0)  # < 0: Phi-3-vision's images
        if narrow_trained is not None:
            trained = narrow_trained
        elif self.prefix_suffix:
            tt = token_arrays.get("token_type_ids")
            trained = tt == 1 if tt is not None else np.zeros_like(is_media)
        else:
            off = _int_array(offsets_b).reshape(n, width, 2)
            ts, te = off[..., 0], off[..., 1]
            real = te > ts  # zero-width tokens (added bos, specials outside the text) match nothing
            # Every media expansion and answer span of the batch as (row, start, end) arrays,
            # so each token is tested against all of them in a few numpy calls.
            media_rows: list[tuple[int, int, int]] = []
            span_rows: list[tuple[int, int, int]] = []
            for i, p in enumerate(prepared):
                repl = repl_b[i] if isinstance(repl_b, list) and len(repl_b) > i else []
                media_ranges, spans = _expanded_spans(repl, p.spans)
                media_rows += [(i, ms, me) for ms, me in media_ranges]
                span_rows += [(i, s, e) for s, e in spans]
            if media_rows:
                r, lo, hi = np.array(media_rows, dtype=np.int64).T
                hit = real[r] & (ts[r] >= lo[:, None]) & (te[r] <= hi[:, None])
                np.logical_or.at(is_media, r, hit)
            trained = np.zeros_like(is_media)
            if span_rows:
                r, lo, hi = np.array(span_rows, dtype=np.int64).T
                hit = real[r] & (ts[r] < hi[:, None]) & (te[r] > lo[:, None])
                np.logical_or.at(trained, r, hit)
        kinds_np = np.full(ids_np.shape, _PROMPT, dtype=np.uint8)
        kinds_np[trained & ~is_media] = _TRAINED
        kinds_np[is_media] = _MEDIA
        labels_np = self._labels_np(ids_np, kinds_np)
        valid = np.arange(width)[None, :] < np.asarray(lengths, dtype=np.int64)[:, None]
        num_supervised = ((labels_np != self.cfg.label_masking.ignore_index) & valid).sum(1)
        media_spans = _row_runs(is_media & valid)
        # Per-row tensors share the batch arrays' memory (rows [:L] are contiguous).
        from_np = torch.from_numpy
        encoded = []
        views = []
        for i, p in enumerate(prepared):
            L = int(lengths[i])
            text = p.text
            if self.prefix_suffix and p.suffix is not None:
                text += "\n" + p.suffix
            token_extras = {k: from_np(v[i, :L]) for k, v in token_arrays.items()}
            enc = EncodedExample(
                input_ids=from_np(ids_np[i, :L]),
                labels=from_np(labels_np[i, :L]),
                kinds=from_np(kinds_np[i, :L]),
                token_extras=token_extras,
                media_extras=media if n == 1 else {},
                row=p.example.row,
                media_spans=media_spans[i],
                text=text,
            )
            enc.num_supervised = int(num_supervised[i])
            enc._prepared, enc._group, enc._pos = p, group, i
            encoded.append(enc)
            views.append((enc.input_ids, enc.labels, tuple(token_extras.values())))
        group.tokens = _GroupTokens(
            from_np(ids_np),
            from_np(labels_np),
            {k: from_np(v) for k, v in token_arrays.items()},
            from_np(~valid),
            views,
        )
        return encoded

    def _narrow_call(self, p: _Prepared, text: str, n_images: int):
        """The processor with only what its narrow signature takes (one text, flat images)."""
        kwargs: dict[str, Any] = {"text": text}
        if n_images:
            kwargs["images"] = list(p.images[:n_images])
        if not self._narrow and self.bos_token and p.text.startswith(self.bos_token):
            kwargs["add_special_tokens"] = False
        out = dict(self._process(kwargs, [p]))
        ids = _int_array(out["input_ids"])
        return out, ids.reshape(-1)

    def _process_narrow(self, p: _Prepared) -> list[EncodedExample]:
        """A processor that takes no offsets (Phi3VProcessor): exact spans by prefix calls.

        The token index of a character boundary b is found by processing `text[:b]` (with the
        images whose tags it holds) and comparing its ids with the full row's: when they are
        a prefix of the full ids, b falls between tokens; otherwise the first differing token
        straddles b and counts as overlapping the answer (the rule the offset path uses).
        """
        if p.videos:
            raise DataError(
                Finding(
                    "error",
                    f"the processor {type(self.processor).__name__} takes no videos",
                    row=p.example.row,
                    hint="set data_processing.use_video: false for this model",
                    code="processor-no-video",
                )
            )
        out, full = self._narrow_call(p, p.text, len(p.images))
        tags = p.media_tags
        if not tags and p.images:  # content parts: the template wrote the processor's tag
            tags = [self._media_tag("image", 1)] * len(p.images)

        def images_in(prefix: str) -> int:
            if not tags:
                return 0
            if len(set(tags)) == len(tags):  # numbered tags
                return sum(1 for t in tags if t in prefix)
            return min(prefix.count(tags[0]), len(tags))

        def boundary(b: int, is_end: bool) -> int:
            prefix = p.text[:b]
            _, ids = self._narrow_call(p, prefix, images_in(prefix))
            m = min(len(ids), len(full))
            diff = np.nonzero(ids[:m] != full[:m])[0]
            if not diff.size and len(ids) <= len(full):
                return len(ids)
            c = int(diff[0]) if diff.size else m
            return min(c + 1, len(full)) if is_end else c

        trained = np.zeros((1, len(full)), dtype=bool)
        for start, end in p.spans:
            a, b = boundary(start, False), boundary(end, True)
            trained[0, a:b] = True
        return self._encode_output([p], out, trained)

    def _labels_np(self, ids: np.ndarray, kinds: np.ndarray) -> np.ndarray:
        lm = self.cfg.label_masking
        labels = ids.astype(np.int64, copy=True)
        if lm.mask_input_tokens:
            labels[kinds == _PROMPT] = lm.ignore_index
        if lm.mask_image_token:
            labels[kinds == _MEDIA] = lm.ignore_index
        return labels

    # ------------------------------------------------------------------ shared

    def _process(self, kwargs: dict, prepared: list[_Prepared]):
        try:
            return self.processor(**kwargs)
        except VlmctlError:
            raise
        except Exception as exc:  # noqa: BLE001 - remote code raises anything (AssertionError)
            if len(prepared) > 1:  # find the row the processor refuses, to name it
                for p in prepared:
                    self._process_prepared([p])
            raise DataError(
                Finding(
                    "error",
                    f"the processor refused this row: {type(exc).__name__}: {exc}",
                    row=prepared[0].example.row if len(prepared) == 1 else None,
                    hint="check the row's media and the message template",
                    code="processor-error",
                )
            ) from exc

    def _apply_length_policy(self, enc: EncodedExample) -> None:
        tp = self.cfg.text_processing
        if not tp.truncation or enc.length <= tp.max_length:
            return
        policy = tp.truncation_policy
        n_media = enc.num_media_tokens
        if policy == "error":
            raise DataError(
                Finding(
                    "error",
                    f"row is {enc.length} tokens ({n_media} media), longer than "
                    f"text_processing.max_length={tp.max_length}",
                    row=enc.row,
                    key="text_processing.max_length",
                    hint="raise max_length, or set truncation_policy: drop or truncate_text",
                    code="row-too-long",
                )
            )
        if policy == "drop":
            enc.drop_reason = "too_long"
            return
        cut = tp.max_length
        if any(s < cut < e for s, e in enc.media_spans) or any(
            s >= cut for s, _ in enc.media_spans
        ):
            enc.drop_reason = "media_too_long"
            return
        media_before = enc.num_media_tokens
        enc.input_ids = enc.input_ids[:cut]
        enc.labels = enc.labels[:cut]
        enc.kinds = enc.kinds[:cut]
        enc.token_extras = {k: v[:cut] for k, v in enc.token_extras.items()}
        enc.truncated = True
        if enc.num_media_tokens != media_before:  # cannot happen: spans end before `cut`
            raise AssertionError("truncation cut a media span")
        enc.num_supervised = int((enc.labels != self.cfg.label_masking.ignore_index).sum())
        self.stats["truncated"] += 1

    def _collate_media(self, encoded: Sequence[EncodedExample]) -> dict[str, torch.Tensor]:
        group = encoded[0]._group
        if (
            group is not None
            and all(e._group is group for e in encoded)
            and [e._pos for e in encoded] == list(range(group.size))
        ):
            return dict(group.media)  # exactly the rows of one processor call, in order
        if any(e._group is not None and e._group.size > 1 for e in encoded):
            # A subset of a batched call (rows dropped): process the survivors together again.
            redo = self._process_prepared([e._prepared for e in encoded])
            for old, new in zip(encoded, redo, strict=True):
                if not torch.equal(old.input_ids, new.input_ids[: old.length]):
                    raise AssertionError("re-processing a row gave different token ids")
            return dict(redo[0]._group.media)
        keys = list(dict.fromkeys(k for e in encoded for k in e.media_extras))
        out: dict[str, torch.Tensor] = {}
        for key in keys:
            per_row = key in _ROW_KEYS_ALWAYS or (
                self._row_batched_pixels and key in ("pixel_values", "pixel_attention_mask")
            )
            tensors = [e.media_extras.get(key) for e in encoded]
            present = [t for t in tensors if t is not None]
            if per_row:
                sample = present[0]
                filler = torch.zeros((1,) + tuple(sample.shape[1:]), dtype=sample.dtype)
                tensors = [t if t is not None else filler for t in tensors]
                out[key] = _cat_padded(tensors)
            else:
                out[key] = _cat_padded(present)
        return out

    def _note(self, text: str) -> None:
        if text not in self._notes:
            self._notes.add(text)
            self.stats[f"note: {text}"] += 1


# ---------------------------------------------------------------------- helpers


# Processors with an image AND a video processor that still refuse both in one call.
_ONE_MEDIA_KIND_PER_CALL = ("SmolVLMProcessor",)


def takes_images_and_videos(processor: Any) -> bool:
    """Whether the processor takes images and videos in the same row (Qwen2-VL: yes; LLaVA,
    Idefics3, PaliGemma: no video processor; SmolVLM: one kind per call)."""
    names = {c.__name__ for c in type(processor).__mro__}
    if names & set(_ONE_MEDIA_KIND_PER_CALL):
        return False
    return (
        getattr(processor, "image_processor", None) is not None
        and getattr(processor, "video_processor", None) is not None
    )


def _own_mm_type_ids(processor: Any) -> list[tuple[int, np.ndarray]] | None:
    """(code, token ids) per modality when vlmctl may build `mm_token_type_ids` itself.

    Why: transformers' `create_mm_token_type_ids` runs three `np.isin` per row on Python
    lists (~12% of a Qwen2-VL batch); the same rule on the padded batch array is one pass.
    Only for processors that use ProcessorMixin's own `__call__` and
    `create_mm_token_type_ids` and return the ids by default, so the values and dtype are
    exactly what the processor gives.
    """
    try:
        from transformers.processing_utils import ProcessorMixin
    except ImportError:  # pragma: no cover - transformers is a dependency
        return None
    cls = type(processor)
    if (
        cls.__call__ is not ProcessorMixin.__call__
        # GLM-4V & co. override it: their video frames use the image token, and only the
        # surrounding video markers make them type 2.
        or getattr(cls, "create_mm_token_type_ids", None)
        is not ProcessorMixin.create_mm_token_type_ids
    ):
        return None
    if getattr(processor, "return_mm_token_type_ids", False) is not True:
        return None
    try:
        groups = (
            (1, processor.image_token_ids),
            (2, processor.video_token_ids),
            (3, processor.audio_token_ids),
        )
        return [
            (code, np.array([i for i in ids if i is not None], dtype=np.int64))
            for code, ids in groups
        ]
    except (AttributeError, TypeError, ValueError):
        return None


def _isin(arr: np.ndarray, values: np.ndarray) -> np.ndarray:
    """`np.isin(arr, values)`; for the few ids a processor marks, one `==` per id.

    Why: `np.isin` sorts and merges (~0.14 ms on a batch of 8 short rows); a VLM has 1-6
    media token ids, and comparing against each is ~10x faster with the same result.
    """
    if values.size > 16:
        return np.isin(arr, values)
    out = np.zeros(arr.shape, dtype=bool)
    for v in values.tolist():
        out |= arr == v
    return out


def _mm_types(ids: np.ndarray, groups: list[tuple[int, np.ndarray]]) -> np.ndarray:
    """0 text, 1 image, 2 video, 3 audio per token (later modalities win, as upstream)."""
    out = np.zeros(ids.shape, dtype=np.int64)
    for code, wanted in groups:
        if wanted.size:
            out[_isin(ids, wanted)] = code
    return out


def _first_id(tok: Any, names: Sequence[str]) -> int | None:
    for name in names:
        value = getattr(tok, name, None)
        if isinstance(value, int):
            return value
    return None


def _takes_any_kwargs(processor: Any) -> bool:
    try:
        params = inspect.signature(processor.__call__).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def _call_params(processor: Any) -> set[str]:
    try:
        return set(inspect.signature(processor.__call__).parameters)
    except (TypeError, ValueError):
        return set()


def _media_token_ids(processor: Any, tok: Any) -> set[int]:
    """Ids of every media placeholder/marker token the tokenizer knows."""
    names = set(_MEDIA_TOKEN_NAMES)
    for obj in (processor, tok):
        for attr in _MEDIA_TOKEN_ATTRS:
            value = getattr(obj, attr, None)
            if isinstance(value, str) and value:
                names.add(value)
    vocab = {}
    try:
        vocab = tok.get_added_vocab()
    except Exception:  # noqa: BLE001 - slow tokenizers without added vocab
        vocab = {}
    ids: set[int] = set()
    for name, idx in vocab.items():
        if name in names or _MEDIA_TOKEN_RE.match(name):
            ids.add(int(idx))
    unk = getattr(tok, "unk_token_id", None)
    for name in names:
        try:
            idx = tok.convert_tokens_to_ids(name)
        except Exception:  # noqa: BLE001
            continue
        if isinstance(idx, int) and idx != unk and idx >= 0:
            # Only tokens that encode as ONE id (a real special token, not byte pieces).
            if tok.convert_ids_to_tokens(idx) == name:
                ids.add(idx)
    return ids


def _special_strings(tok: Any) -> tuple[str, ...]:
    """Special tokens that close a turn when an assistant segment ends with one."""
    out = set()
    for value in getattr(tok, "all_special_tokens", []) or []:
        out.add(str(value))
    try:
        for added in tok.added_tokens_decoder.values():
            if getattr(added, "special", False):
                out.add(str(added.content))
    except AttributeError:
        pass
    # A media placeholder at the end of an answer does not close the turn.
    media = set(_MEDIA_TOKEN_NAMES)
    return tuple(s for s in out if s and s not in media)


def _text_parts(msg: dict) -> list[str]:
    content = msg.get("content")
    if isinstance(content, str):
        return [content.strip()] if content.strip() else []
    return [
        str(p["text"]).strip()
        for p in content or []
        if isinstance(p, Mapping) and p.get("type") == "text" and str(p.get("text") or "").strip()
    ]


def _checked_marker_spans(messages: list[dict], text: str, indices) -> list[list[int]] | None:
    """`{% generation %}` spans merged per assistant turn, or None when they do not hold.

    Checked, not trusted: one span (after merging blocks separated only by whitespace) per
    assistant turn with text, each containing every text part of its message.
    """
    merged: list[list[int]] = []
    for start, end in sorted((int(a), int(b)) for a, b in indices or []):
        if merged and not text[merged[-1][1] : start].strip():
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    answers = [m for m in messages if m.get("role") == "assistant" and _text_parts(m)]
    if len(merged) != len(answers):
        return None
    for (start, end), msg in zip(merged, answers, strict=True):
        if any(part not in text[start:end] for part in _text_parts(msg)):
            return None
    return merged


def _message_text(msg: dict) -> str:
    content = msg.get("content")
    if isinstance(content, str):
        return content.strip()
    return " ".join(
        p["text"].strip() for p in content or [] if p.get("type") == "text" and p.get("text")
    ).strip()


def _count_parts(msg: dict, kind: str) -> int:
    content = msg.get("content")
    if isinstance(content, str):
        return 0
    return sum(1 for p in content or [] if isinstance(p, Mapping) and p.get("type") == kind)


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


def _row_runs(flags: np.ndarray) -> list[list[tuple[int, int]]]:
    """Per row of a 2-D bool array, [start, end) of each run of True."""
    n = flags.shape[0]
    padded = np.zeros((n, flags.shape[1] + 2), dtype=np.int8)
    padded[:, 1:-1] = flags
    rows, cols = np.nonzero(padded[:, 1:] != padded[:, :-1])  # row-major: pairs per row
    out: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for r, a, b in zip(rows[::2].tolist(), cols[::2].tolist(), cols[1::2].tolist(), strict=True):
        out[r].append((a, b))
    return out


def _int_array(value: Any) -> np.ndarray:
    """The tokenizer's nested int lists (ids, mask, offsets) as an int64 array.

    Rectangular lists go through `np.fromiter` (several times faster than `np.asarray` on
    lists of tuples); anything else (ragged, tensors, arrays) through `np.asarray`.
    """
    if type(value) is list and value and type(value[0]) is list:
        width = len(value[0])
        if all(type(v) is list and len(v) == width for v in value):
            first = value[0][0] if width else None
            flat = chain.from_iterable(value)
            shape: tuple[int, ...] = (len(value), width)
            if type(first) in (list, tuple):  # offsets: (start, end) pairs
                if set(map(len, chain.from_iterable(value))) != {len(first)}:
                    return np.asarray(value, dtype=np.int64)
                flat = chain.from_iterable(chain.from_iterable(value))
                shape = (len(value), width, len(first))
            elif first is not None and type(first) is not int:
                return np.asarray(value, dtype=np.int64)
            try:
                return np.fromiter(flat, dtype=np.int64, count=int(np.prod(shape))).reshape(shape)
            except (TypeError, ValueError):
                return np.asarray(value, dtype=np.int64)
    return np.asarray(value, dtype=np.int64)


def _cat_padded(tensors: list[torch.Tensor]) -> torch.Tensor:
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


_PLAIN_SCALARS = frozenset((str, int, float, bool, type(None)))


def _is_plain(value: Any) -> bool:
    """Only exact str/int/float/bool/None, lists and str-keyed dicts of them."""
    # Iterative (no generator or call per node): this runs on every chat of every batch.
    scalars = _PLAIN_SCALARS
    stack = [value]
    pop, push = stack.pop, stack.append
    seen = 0
    while stack:
        v = pop()
        t = type(v)
        if t in scalars:
            continue
        seen += 1
        if seen > 100_000:  # a cycle (or absurd nesting): let HF's path deal with it
            return False
        if t is dict:
            for k, x in v.items():
                if type(k) is not str:
                    return False
                if type(x) not in scalars:
                    push(x)
        elif t is list:
            stack.extend(v)
        else:
            return False
    return True


def _token_array(value: Any, n: int, width: int) -> np.ndarray | None:
    """A per-token output (n rows of `width` numbers) as an int64 array, else None."""
    if torch.is_tensor(value) or isinstance(value, np.ndarray):
        arr = np.asarray(value)
    elif (
        isinstance(value, list)
        and len(value) == n
        and all(isinstance(v, list) and len(v) == width for v in value)
    ):
        arr = np.asarray(value)
    else:
        return None
    if arr.shape != (n, width) or not np.issubdtype(arr.dtype, np.integer):
        return None
    return arr.astype(np.int64, copy=False)


def _media_tensors(raw: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Media outputs as tensors, converted the way the processor's `return_tensors="pt"` does."""
    if not raw:
        return {}
    from transformers import BatchFeature

    out: dict[str, torch.Tensor] = {}
    try:
        converted = BatchFeature(data=raw, tensor_type="pt")
    except (ValueError, TypeError, RuntimeError):
        converted = raw
    for key, value in converted.items():
        tensor = _as_tensor(value)
        if tensor is not None:
            out[key] = tensor
    return out


def _as_tensor(value: Any) -> torch.Tensor | None:
    if torch.is_tensor(value):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (int, float)):
        return torch.tensor(value)
    return None


def _is_frames(ref: Any) -> bool:
    return hasattr(ref, "shape") and len(getattr(ref, "shape", ())) == 4


def _video_metadata(clips: list, videos: list):
    """VideoMetadata for the processor (Qwen2.5-VL derives time positions from the fps)."""
    if not clips or any(c is None for c in clips):
        return None
    try:
        from transformers.video_utils import VideoMetadata
    except ImportError:  # pragma: no cover
        return None
    metas = []
    for clip, frames in zip(clips, videos, strict=True):
        metas.append(
            VideoMetadata(
                total_num_frames=int(clip.total_frames or len(frames)),
                fps=float(clip.fps) if clip.fps else None,
                duration=float(clip.duration) if clip.duration else None,
                frames_indices=list(clip.indices) if clip.indices else None,
                video_backend=clip.backend,
                width=int(frames.shape[2]),
                height=int(frames.shape[1]),
            )
        )
    return metas
