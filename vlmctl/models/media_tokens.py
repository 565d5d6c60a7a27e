"""Media tokens from image SIZES, for `validate`'s row pass: no pixel pipeline.

`validate` needs each row's token ids (lengths, media spans, labels), not its pixels. For the
processor families whose token count is plain arithmetic on the image size, this module gives
validate's collator:

- a `_load_media` that reads each image's size from its file header (PIL's lazy open; JPEGs
  are decoded at 1/8 scale, other formats fully, so a truncated or corrupt file is still
  found) and applies vlmctl's own resize (`image_processing.resize_mode` / `max_size`) and
  EXIF orientation to that size; anything unusual (an in-memory PIL image, a mode RGB
  conversion might refuse, a bomb, any error) goes through the real `load_image`, so every
  finding about a bad file is the one the pixel path gives;
- a processor copy whose `_process_images` builds, from those sizes, the very inputs the
  processor's own `replace_image_token` reads (`image_grid_thw` for Qwen2/2.5/3-VL, the
  output pixel shape for LLaVA) instead of running the image processor; the text expansion,
  tokenizer and every later step are the processor's own, so the ids are the same.

Families (or settings) without such exact arithmetic keep the pixel path: `media_counter`
returns None for them. Video frames are still decoded (every finding is the decoder's own);
on Qwen2/2.5/3-VL the video processor then counts from their shapes (`models.video_tokens`).
`VLMCTL_PIXEL_COUNT=1` forces the pixel path (the tests compare both).
"""

from __future__ import annotations

import copy
import io
import os
import types
import warnings
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from PIL import Image

PIXEL_ENV = "VLMCTL_PIXEL_COUNT"

# Modes `to_rgb` converts without a possible error; anything else takes the real path.
_SAFE_MODES = frozenset({"RGB", "RGBA", "L", "LA", "P", "PA", "1", "CMYK", "YCbCr", "I;16", "I"})
# processor class -> (image processor classes it is exact with, fake-input builder)
_QWEN_IMAGE = frozenset({"Qwen2VLImageProcessor", "Qwen2VLImageProcessorPil"})
_CLIP_IMAGE = frozenset({"CLIPImageProcessor", "CLIPImageProcessorPil"})
_TILE_IMAGE = frozenset(
    {"Idefics3ImageProcessor", "Idefics3ImageProcessorPil"}
    | {"SmolVLMImageProcessor", "SmolVLMImageProcessorPil"}
)
_GEMMA3_IMAGE = frozenset({"Gemma3ImageProcessor", "Gemma3ImageProcessorPil"})
# `_process_images` keyword arguments that change no count (others must equal the image
# processor's own attribute, or the family keeps the pixel path)
_HARMLESS_KWARGS = frozenset({"return_row_col_info", "do_convert_rgb"})
_PAN_AND_SCAN = frozenset(
    {"pan_and_scan_min_crop_size", "pan_and_scan_max_num_crops"}
    | {"pan_and_scan_min_ratio_to_activate", "do_pan_and_scan"}
)


class SizedImage(Image.Image):
    """A PIL image that carries only its size: what the arithmetic reads, no pixels."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self._size = (int(size[0]), int(size[1]))
        self._mode = "RGB"


# ------------------------------------------------------------------------------ arithmetic


def _qwen_inputs(processor: Any) -> Callable[[list[tuple[int, int]]], dict] | None:
    """`image_grid_thw` from sizes: the image processor's own `smart_resize` and patch size."""
    import sys

    ip = processor.image_processor
    smart_resize = getattr(sys.modules.get(type(ip).__module__), "smart_resize", None)
    size = getattr(ip, "size", None) or {}
    if smart_resize is None or not getattr(ip, "do_resize", True):
        return None
    min_px, max_px = size.get("shortest_edge"), size.get("longest_edge")
    patch, merge = getattr(ip, "patch_size", None), getattr(ip, "merge_size", None)
    if not (min_px and max_px and patch and merge):
        return None

    def build(sizes: list[tuple[int, int]]) -> dict:
        grids = []
        for w, h in sizes:
            rh, rw = smart_resize(h, w, factor=patch * merge, min_pixels=min_px, max_pixels=max_px)
            grids.append([1, rh // patch, rw // patch])
        return {"image_grid_thw": np.array(grids, dtype=np.int64).reshape(-1, 3)}

    return build


def _llava_inputs(processor: Any) -> Callable[[list[tuple[int, int]]], dict] | None:
    """LLaVA counts tokens from the output pixel shape: fixed by the center crop."""
    ip = processor.image_processor
    crop = getattr(ip, "crop_size", None) or {}
    if not getattr(ip, "do_center_crop", False) or not crop.get("height") or not crop.get("width"):
        return None
    shape = (3, int(crop["height"]), int(crop["width"]))
    zero = np.zeros(1, dtype=np.uint8)

    def build(sizes: list[tuple[int, int]]) -> dict:
        # Broadcast views: the shape without the memory.
        return {"pixel_values": [np.broadcast_to(zero, shape) for _ in sizes]}

    return build


def _tile_inputs(processor: Any) -> Callable[[list[tuple[int, int]]], dict] | None:
    """Idefics3 / SmolVLM: the tile grid (rows, cols) from the image processor's own
    `get_number_of_image_patches` (0 x 0 when it does not split)."""
    ip = processor.image_processor
    if not getattr(ip, "do_resize", True) or not hasattr(ip, "get_number_of_image_patches"):
        return None

    def build(sizes: list[tuple[int, int]]) -> dict:
        grid = [ip.get_number_of_image_patches(h, w, {})[1:] for w, h in sizes]
        return {"rows": [[r] for r, _ in grid], "cols": [[c] for _, c in grid]}

    return build


def _gemma3_inputs(processor: Any) -> Callable[[list[tuple[int, int]]], dict] | None:
    """Gemma3: one fixed image sequence per image unless pan-and-scan adds crops."""
    if processor._probed.get("do_pan_and_scan", processor.image_processor.do_pan_and_scan):
        return None
    return lambda sizes: {"num_crops": [0] * len(sizes)}


_FAMILIES: dict[str, tuple[frozenset, Callable]] = {
    "Qwen2VLProcessor": (_QWEN_IMAGE, _qwen_inputs),
    "Qwen2_5_VLProcessor": (_QWEN_IMAGE, _qwen_inputs),
    "Qwen3VLProcessor": (_QWEN_IMAGE, _qwen_inputs),
    "LlavaProcessor": (_CLIP_IMAGE, _llava_inputs),
    "Idefics3Processor": (_TILE_IMAGE, _tile_inputs),
    "SmolVLMProcessor": (_TILE_IMAGE, _tile_inputs),
    "Gemma3Processor": (_GEMMA3_IMAGE, _gemma3_inputs),
}


def media_counter(processor: Any) -> Callable[[list[tuple[int, int]]], dict] | None:
    """The fake image inputs builder for this processor, or None: no exact arithmetic here.

    Exact class names only (a subclass, e.g. remote code, may count differently), and only
    when the processor uses transformers' standard `_process_images` (its `__call__` may wrap
    it); tests/test_media_tokens.py checks each listed family against its real output.
    """
    from transformers.processing_utils import ProcessorMixin

    entry = _FAMILIES.get(type(processor).__name__)
    ip = getattr(processor, "image_processor", None)
    if entry is None or ip is None or type(ip).__name__ not in entry[0]:
        return None
    if type(processor)._process_images is not ProcessorMixin._process_images:
        return None
    if not getattr(processor, "image_token", None):
        return None
    kwargs = _probe_kwargs(processor)
    if kwargs is None:
        return None
    ok = _HARMLESS_KWARGS | (_PAN_AND_SCAN if entry[1] is _gemma3_inputs else frozenset())
    if any(k not in ok and getattr(ip, k, object()) != v for k, v in kwargs.items()):
        return None  # a call-time image setting the arithmetic does not read
    probe = copy.copy(processor)
    probe._probed = kwargs
    build = entry[1](probe)
    if build is not None:
        build.kwargs = kwargs
    return build


def _probe_kwargs(processor: Any) -> dict | None:
    """The image settings the processor hands `_process_images` (one real call, 32x32)."""
    seen: list[dict] = []
    real = processor._process_images

    def spy(images, **kwargs):
        seen.append(kwargs)
        return real(images, **kwargs)

    probe = copy.copy(processor)
    probe._process_images = spy
    try:
        probe(text=[processor.image_token], images=[[Image.new("RGB", (32, 32))]])
    except Exception:  # noqa: BLE001 - a processor that cannot take this keeps the pixel path
        return None
    return seen[0] if len(seen) == 1 else None


def count_image_tokens(processor: Any, sizes: Sequence[tuple[int, int]]) -> list[int] | None:
    """The processor's image tokens per image (width, height) by the arithmetic (the whole
    expansion may add markers around them); None where there is none. For tests and tools."""
    build = media_counter(processor)
    if build is None:
        return None
    inputs = build(list(sizes))
    tok = processor.tokenizer
    image_id = tok.convert_tokens_to_ids(processor.image_token)
    out = []
    for i in range(len(sizes)):
        text = processor.replace_image_token(inputs, image_idx=i)
        out.append(tok(text, add_special_tokens=False)["input_ids"].count(image_id))
    return out


# ------------------------------------------------------------------------------ sizes


def resized_size(w: int, h: int, resize_mode: str, max_size: int | None) -> tuple[int, int]:
    """The size `media.images.resize_image` gives a (w, h) image: the same arithmetic."""
    if max_size is None:
        return w, h
    m = int(max_size)
    if resize_mode == "keep_aspect":
        if max(w, h) <= m:
            return w, h
        return (m, max(1, round(h * m / w))) if w >= h else (max(1, round(w * m / h)), m)
    if resize_mode == "crop":
        side = min(w, h)
        return (m, m) if side > m else (side, side)
    return m, m  # stretch


def header_size(ref: Any, media_dirs: Sequence[Any], row: int | None) -> tuple[int, int] | None:
    """(width, height) after EXIF orientation, read without a full-size decode; None when the
    real `load_image` must look at it (in-memory image, bomb, odd mode, any error)."""
    from vlmctl.media.images import _open_source

    source, _ = _open_source(ref, media_dirs, row)  # its findings are the real path's own
    if isinstance(source, Image.Image):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            fp = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
            with fp:
                img = Image.open(fp)
                w, h = img.size
                limit = Image.MAX_IMAGE_PIXELS
                if (limit and w * h > limit) or img.mode not in _SAFE_MODES:
                    return None
                orientation = img.getexif().get(0x0112, 1)
                if img.format == "JPEG":  # DCT scaling: every byte still entropy-decoded
                    img.draft(img.mode, (max(1, w // 8), max(1, h // 8)))
                img.load()
    except Exception:  # noqa: BLE001 - the real path names whatever is wrong
        return None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


# ------------------------------------------------------------------------------ install


def _fast_load_media(collator: Any, example: Any):
    """The collator's `_load_media`, with images as `SizedImage`s (videos unchanged)."""
    from vlmctl.media.images import load_image

    ip = collator.cfg.image_processing
    images = []
    for ref in example.images:
        size = header_size(ref, collator.media_dirs, example.row)
        if size is None:
            size = load_image(
                ref,
                base_dirs=collator.media_dirs,
                convert_to_rgb=ip.convert_to_rgb,
                resize_mode=ip.resize_mode,
                max_size=ip.max_size,
                row=example.row,
            ).size
        else:
            size = resized_size(*size, ip.resize_mode, ip.max_size)
        images.append(SizedImage(size))
    if not example.videos:
        return images, [], []
    _, videos, metas = type(collator)._load_media(collator, replace(example, images=[]))
    return images, videos, metas


def _fast_process_images(build: Callable, real: Callable):
    def _process_images(self, images, **kwargs):
        from transformers.image_utils import make_flat_list_of_images

        flat = make_flat_list_of_images(images)
        if not all(isinstance(im, SizedImage) for im in flat):
            return real(images, **kwargs)
        if kwargs != build.kwargs:  # not what was probed: the counts could differ
            raise RuntimeError(f"image settings {kwargs} differ from the probed {build.kwargs}")
        inputs = build([im.size for im in flat])
        return inputs, [self.replace_image_token(inputs, image_idx=i) for i in range(len(flat))]

    return _process_images


def fast_processor(processor: Any) -> Any | None:
    """A shallow copy of `processor` whose images are counted from `SizedImage` sizes (other
    images still take the real pipeline), and whose videos from their frames' shapes where
    that is exact; None where the image arithmetic is not exact."""
    build = media_counter(processor)
    if build is None:
        return None
    from vlmctl.models.video_tokens import shape_only_video_processor

    fast = copy.copy(processor)
    fast._process_images = types.MethodType(
        _fast_process_images(build, processor._process_images), fast
    )
    video_processor = shape_only_video_processor(processor)
    if video_processor is not None:
        fast.video_processor = video_processor
    return fast


def count_media_from_sizes(collator: Any) -> bool:
    """Switch validate's collator to size arithmetic where it is exact; True when switched.

    The processor is copied (shallow) first, so nothing else sees the change.
    """
    if collator is None or os.environ.get(PIXEL_ENV, "") not in ("", "0"):
        return False
    if collator.prefix_suffix or collator._narrow:
        return False
    if not collator.cfg.image_processing.convert_to_rgb:  # the processor sees the file's mode
        return False
    fast = fast_processor(collator.processor)
    if fast is None:
        return False
    collator.processor = fast
    collator._load_media = types.MethodType(_fast_load_media, collator)
    return True
