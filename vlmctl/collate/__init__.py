"""`vlmctl.collate`: THE collator of `preview`, `validate` and `train` (raw rows -> model batch).

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
- `render.ChatRenderer.close_turns`: whitespace around the answer is trimmed; the first special token the
  template emits after it (inside or outside the markers) is the end-of-turn marker and is
  part of the answer (ANSWER); the whitespace after that marker is not; only when the template emits no special
  token there (llava-1.5) the tokenizer's eos is inserted after the answer;
- the processor returns `offset_mapping` and `text_replacement_offsets` (where each media
  placeholder was expanded), so spans are shifted into the expanded text and every token is
  classified: MEDIA (inside an expansion, a negative id, or a media marker id such as
  <|vision_start|>, <fake_token_around_image>, <row_1_col_1>, <global-img>, <img>, </img>),
  ANSWER (overlaps an assistant span), PROMPT (the rest), PAD (added by collate). A
  processor without offsets (Phi3VProcessor) is called per row, and span boundaries are found
  exactly by processing the text up to each boundary.
- PaliGemma (and processors without a chat template whose `__call__` takes `suffix=`):
  `processor(text=prefix, images=..., suffix=answer)`; `token_type_ids` mark the suffix so the
  answer attends causally (prefix-LM), and the suffix + eos is the ANSWER. The prefix is every
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

import importlib
from typing import Any

# Where each public name lives; imported on first use, so `vlmctl.collate.length_policy`
# (pure) can be imported without torch, and the package costs nothing until used.
_HOMES = {
    "VLMCollator": "collator",
    "ROW_INDEX_KEY": "encoded",
    "EncodedExample": "encoded",
    "TokenKind": "encoded",
    "takes_images_and_videos": "introspect",
    "LengthDecision": "length_policy",
    "decide": "length_policy",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value
