"""What the collator reads off a processor and its tokenizer, once, at construction: media
token ids, special strings that close a turn, the call's signature, which media kinds a row
may mix, and whether vlmctl may build `mm_token_type_ids` itself."""

from __future__ import annotations

import inspect
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

# Media marker tokens that are not the image/video placeholder itself.
MEDIA_TOKEN_NAMES = (
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
MEDIA_TOKEN_ATTRS = (
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
MEDIA_TOKEN_RE = re.compile(r"^<row_\d+_col_\d+>$")
# Processors whose pixel tensors have a per-ROW first dimension (padded image slots).
ROW_BATCHED_PIXELS = ("Idefics2Processor", "Idefics3Processor", "SmolVLMProcessor")
ROW_KEYS_ALWAYS = ("batch_num_images",)
GENERATION_RE = re.compile(r"\{%-?\s*generation\s*-?%\}")


# Processors with an image AND a video processor that still refuse both in one call.
ONE_MEDIA_KIND_PER_CALL = ("SmolVLMProcessor",)


def takes_images_and_videos(processor: Any) -> bool:
    """Whether the processor takes images and videos in the same row (Qwen2-VL: yes; LLaVA,
    Idefics3, PaliGemma: no video processor; SmolVLM: one kind per call)."""
    names = {c.__name__ for c in type(processor).__mro__}
    if names & set(ONE_MEDIA_KIND_PER_CALL):
        return False
    return (
        getattr(processor, "image_processor", None) is not None
        and getattr(processor, "video_processor", None) is not None
    )


def own_mm_type_ids(processor: Any) -> list[tuple[int, np.ndarray]] | None:
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


def first_id(tok: Any, names: Sequence[str]) -> int | None:
    for name in names:
        value = getattr(tok, name, None)
        if isinstance(value, int):
            return value
    return None


def takes_any_kwargs(processor: Any) -> bool:
    try:
        params = inspect.signature(processor.__call__).parameters.values()
    except (TypeError, ValueError):
        return True
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)


def call_params(processor: Any) -> set[str]:
    try:
        return set(inspect.signature(processor.__call__).parameters)
    except (TypeError, ValueError):
        return set()


def media_token_ids(processor: Any, tok: Any) -> set[int]:
    """Ids of every media placeholder/marker token the tokenizer knows."""
    names = set(MEDIA_TOKEN_NAMES)
    for obj in (processor, tok):
        for attr in MEDIA_TOKEN_ATTRS:
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
        if name in names or MEDIA_TOKEN_RE.match(name):
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


def special_strings(tok: Any) -> tuple[str, ...]:
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
    media = set(MEDIA_TOKEN_NAMES)
    return tuple(s for s in out if s and s not in media)
