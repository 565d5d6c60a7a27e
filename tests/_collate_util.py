"""Shared helpers of the collator tests: configs, images, chats, tiny processors/models."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from vlmctl.config.collator import CollatorConfig
from vlmctl.data.example import Example
from vlmctl.testing.tiny import FAMILY_INFO

# Media marker strings, listed independently of vlmctl.collate (the code under test).
MEDIA_STRINGS = (
    "<image>",
    "<video>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<fake_token_around_image>",
    "<global-img>",
)

VIDEO_FAMILIES = tuple(f for f, info in FAMILY_INFO.items() if info["supports_video"])
CHAT_FAMILIES = tuple(f for f, info in FAMILY_INFO.items() if info["has_chat_template"])


def cfg(**sections) -> CollatorConfig:
    """A CollatorConfig from nested dicts, e.g. cfg(label_masking={"mask_input_tokens": True})."""
    return CollatorConfig.model_validate(sections)


def image(seed: int, size: tuple[int, int] = (32, 32)) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(arr)


def frames(seed: int, n: int = 8) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)


def chat(answers: list[str], n_images: int = 1, question: str = "What colour is it?", video=False):
    """Example with len(answers) user/assistant turns; media in the first user turn."""
    messages = []
    for k, answer in enumerate(answers):
        content = []
        if k == 0:
            content += [{"type": "video" if video else "image"} for _ in range(n_images)]
        content.append({"type": "text", "text": f"{question} ({k})"})
        messages.append({"role": "user", "content": content})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    media = [frames(i) if video else image(i) for i in range(n_images)]
    return Example(
        messages=messages,
        images=[] if video else media,
        videos=media if video else [],
        row=7,
    )


@functools.cache
def processor(path: Path):
    from transformers import AutoProcessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoProcessor.from_pretrained(str(path), trust_remote_code=True)


@functools.cache
def model(path: Path):
    from transformers import AutoModelForImageTextToText

    m = AutoModelForImageTextToText.from_pretrained(str(path), trust_remote_code=True)
    return m.eval()


def media_ids(tok) -> set[int]:
    """Token ids of the media markers this tokenizer has (row/col grid tokens included)."""
    out = set()
    for name, idx in tok.get_added_vocab().items():
        if name in MEDIA_STRINGS or name.startswith("<row_"):
            out.add(idx)
    return out


def encode_row(col, row, row_index=None):
    """One raw row through the collator's real path (row_to_example + encode_example)."""
    from vlmctl.data.messages import row_to_example

    return col.encode_example(row_to_example(row, col.cfg, row_index))
