"""Decode one image reference into a PIL image the processor can take.

`load_image` accepts what datasets actually hold: a PIL image, a `datasets` Image-feature dict
`{"bytes": b, "path": p}` (bytes win when both are set), raw bytes, a `data:image/...;base64,`
URI, or a file path (absolute, or relative and tried against each of `base_dirs` in order).
Decoding is by content, never by file extension: a PNG or WEBP named `.jpg` loads, a text file
named `.jpg` fails with a clear message. EXIF orientation is applied. Images are decoded fully
(`img.load()`) so a truncated file fails here, with its name, not later inside a processor.

Mode conversion (`convert_to_rgb=True`, the result is always mode RGB):
- transparency (RGBA, LA, PA, RGBa, La, and P/L/RGB with a `transparency` entry) is composited
  over WHITE, so a fully transparent pixel becomes (255, 255, 255);
- 16-bit grey (I;16, I;16B, I;16L, I;16N) and 32-bit integer (I, read as 16-bit data, which is
  what Pillow gives for 16-bit files; values outside 0..65535 clip) scale as v * 255 / 65535
  rounded, so 65535 -> 255 and 32768 -> 128 (Pillow's own convert would clip everything
  above 255 to white);
- float (F): values in 0..1 scale by 255, anything else is read as 0..255 levels and clips;
- every other mode (1, L, P, CMYK, YCbCr, HSV, ...) uses Pillow's conversion.
With `convert_to_rgb=False` the decoded mode is kept (EXIF orientation and resizing still apply).

Resize semantics (`image_processing.resize_mode` with `max_size`, a limit in pixels):
- `max_size: None` -> no resize, in every mode.
- `keep_aspect`: when the longest side exceeds `max_size`, scale down so the longest side is
  exactly `max_size` and the other side is rounded (at least 1); never upscale.
  1000x500, max 448 -> 448x224; 300x200, max 448 -> unchanged.
- `crop`: centre-crop to a square whose side is the shortest side (the offset is floored:
  a 7-pixel surplus leaves 3 on the left/top and 4 on the right/bottom), then scale that square
  down to `max_size` x `max_size` when its side exceeds `max_size`; never upscale.
  1000x500, max 448 -> 448x448; 300x200, max 448 -> 200x200.
- `stretch`: resize to exactly `max_size` x `max_size`, ignoring the aspect ratio (this one
  may upscale: it exists to give a fixed size). 1000x500, max 448 -> 448x448; 300x200 -> 448x448.
Resampling is LANCZOS (BICUBIC-class quality; Pillow uses NEAREST for modes 1 and P).

Decompression bombs: an image with more pixels than `max_pixels` (default
`PIL.Image.MAX_IMAGE_PIXELS`, about 89 M) is refused with a DataError naming the file and the
pixel count; Pillow's warning is treated as an error, not printed and ignored.

All user-facing failures raise `vlmctl.errors.DataError`; the caller passes `row=` so the finding
says which dataset row referenced the file.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vlmctl.errors import ConfigError, DataError, Finding
from vlmctl.media.paths import media_error, resolve_media_path, sniff_non_media

RESIZE_MODES = ("keep_aspect", "crop", "stretch")
BYTES_NAME = "<bytes>"

_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_INT16_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}
_BOMB_RE = re.compile(r"\((\d+) pixels\)")


def _hint_for(what: str) -> str | None:
    if what.startswith("a Git LFS pointer"):
        return "run `git lfs pull` in the dataset repository"
    return None


# ---------------------------------------------------------------------------------------------
# opening


def _open_source(
    value: Any, base_dirs: Sequence[str | os.PathLike[str]], row: int | None
) -> tuple[Image.Image | bytes | Path, str]:
    """Turn any accepted value into a PIL image, bytes or a resolved path, plus a display name."""
    if isinstance(value, Image.Image):
        return value, getattr(value, "filename", "") or "<PIL image>"
    if isinstance(value, Mapping):
        data, path = value.get("bytes"), value.get("path")
        if data is not None:
            return bytes(data), str(path) if path else BYTES_NAME
        if path:
            return resolve_media_path(path, base_dirs, row=row), str(path)
        raise media_error(
            "image dict has neither 'bytes' nor 'path'",
            hint="the row has no image; check the image column",
            row=row,
            code="media-bad-value",
        )
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value), BYTES_NAME
    if isinstance(value, str) and value.startswith("data:"):
        head, _, payload = value.partition(",")
        if ";base64" not in head:
            raise media_error(
                "data: URI is not base64", name="<data URI>", row=row, code="media-bad-value"
            )
        try:
            return base64.b64decode(payload, validate=False), "<data URI>"
        except (binascii.Error, ValueError) as exc:
            raise media_error(
                f"bad base64 in data: URI ({exc})", name="<data URI>", row=row, code="media-bad"
            ) from None
    if isinstance(value, (str, os.PathLike)):
        return resolve_media_path(value, base_dirs, row=row), os.fspath(value)
    hint = "the row has no image; check the image column" if value is None else None
    raise media_error(
        "expected an image path, bytes, a PIL image or a {bytes, path} dict, "
        f"got {type(value).__name__}",
        hint=hint,
        row=row,
        code="media-bad-value",
    )


def _head(source: bytes | Path, n: int = 512, row: int | None = None) -> bytes:
    if isinstance(source, bytes):
        return source[:n]
    try:
        with open(source, "rb") as f:
            return f.read(n)
    except PermissionError:
        raise media_error(
            f"permission denied: {source}",
            name=str(source),
            hint="let this user read the file",
            row=row,
            code="media-permission",
        ) from None
    except OSError:
        return b""


def _check_bomb(img: Image.Image, name: str, limit: int | None, row: int | None) -> None:
    pixels = img.width * img.height
    if limit and pixels > limit:
        raise _bomb_error(name, pixels, limit, row)


def _bomb_error(name: str, pixels: int | None, limit: int | None, row: int | None) -> DataError:
    count = f"{pixels} pixels" if pixels is not None else "too many pixels"
    return media_error(
        f"decompression bomb: {name}: {count} > limit {limit}",
        name=name,
        hint="shrink the image, or raise PIL.Image.MAX_IMAGE_PIXELS if the file is trusted",
        row=row,
        code="media-bomb",
    )


def _decode(
    value: Any,
    base_dirs: Sequence[str | os.PathLike[str]],
    row: int | None,
    max_pixels: int | None,
) -> tuple[Image.Image, str]:
    """Open by content and decode fully; every failure becomes a DataError naming the file."""
    source, name = _open_source(value, base_dirs, row)
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    if isinstance(source, Image.Image):
        img = source
        try:
            _check_bomb(img, name, limit, row)
            img.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise _decode_error(name, exc, b"\x00", row) from None
        return img, name
    what = sniff_non_media(_head(source, row=row))
    if what is not None and what.startswith("empty file"):
        raise media_error(
            f"{name}: {what}",
            name=name,
            hint="re-download or re-export the file",
            row=row,
            code="media-empty",
        )
    try:
        with warnings.catch_warnings():
            # Pillow only warns between 1x and 2x its limit; a warning we never see is no check.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            fp = io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")
            with fp:
                img = Image.open(fp)
                _check_bomb(img, name, limit, row)
                img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        m = _BOMB_RE.search(str(exc))
        raise _bomb_error(name, int(m.group(1)) if m else None, limit, row) from None
    except UnidentifiedImageError:
        what = what or "unknown format"
        raise media_error(
            f"{name}: not an image ({what})",
            name=name,
            hint=_hint_for(what) or "check that the column points at image files",
            row=row,
            code="media-not-image",
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        raise _decode_error(name, exc, _head(source), row) from None
    return img, name


def _decode_error(name: str, exc: BaseException, head: bytes, row: int | None) -> DataError:
    text = str(exc) or type(exc).__name__
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return media_error(
            f"{name}: truncated image ({text})",
            name=name,
            hint="re-download or re-export the file",
            row=row,
            code="media-truncated",
        )
    what = sniff_non_media(head)
    detail = f"not an image ({what})" if what else f"cannot decode image ({text})"
    return media_error(f"{name}: {detail}", name=name, row=row, code="media-decode")


# ---------------------------------------------------------------------------------------------
# conversion and resizing


def _exif_transpose(img: Image.Image) -> Image.Image:
    try:
        # Pillow's exif_transpose copies even when there is nothing to rotate: skip it then.
        if img.getexif().get(0x0112, 1) == 1:
            return img
        out = ImageOps.exif_transpose(img)
    except Exception:  # malformed EXIF must not lose a training row
        return img
    return out if out is not None else img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to RGB: alpha over white, 16-bit and float scaled, not clipped."""
    mode = img.mode
    if mode == "RGB" and "transparency" not in img.info:
        return img
    if mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode in _INT16_MODES or mode == "I":
        arr = np.asarray(img).astype(np.int64)
        arr = np.clip(arr, 0, 65535)
        grey = ((arr * 255 + 32767) // 65535).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        finite = arr[np.isfinite(arr)]
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            arr = arr * 255.0
        arr = np.nan_to_num(arr, nan=0.0, posinf=255.0, neginf=0.0)
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    return img.convert("RGB")


def _check_resize_args(resize_mode: str, max_size: int | None) -> None:
    if resize_mode not in RESIZE_MODES:
        raise ConfigError(
            Finding(
                "error",
                f"unknown resize_mode {resize_mode!r}",
                hint=f"use one of {', '.join(RESIZE_MODES)}",
                key="image_processing.resize_mode",
                code="config-value",
            )
        )
    if max_size is not None and (isinstance(max_size, bool) or int(max_size) < 1):
        raise ConfigError(
            Finding(
                "error",
                f"max_size must be a positive number of pixels or null, got {max_size!r}",
                key="image_processing.max_size",
                code="config-value",
            )
        )


def resize_image(img: Image.Image, resize_mode: str = "keep_aspect", max_size: int | None = None):
    """Apply the documented resize semantics (see the module docstring)."""
    _check_resize_args(resize_mode, max_size)
    if max_size is None:
        return img
    max_size = int(max_size)
    w, h = img.size
    resample = Image.Resampling.LANCZOS
    if resize_mode == "keep_aspect":
        longest = max(w, h)
        if longest <= max_size:
            return img
        if w >= h:
            size = (max_size, max(1, round(h * max_size / w)))
        else:
            size = (max(1, round(w * max_size / h)), max_size)
        return img.resize(size, resample, reducing_gap=3.0)
    if resize_mode == "crop":
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        if (w, h) != (side, side):
            img = img.crop((left, top, left + side, top + side))
        if side > max_size:
            img = img.resize((max_size, max_size), resample, reducing_gap=3.0)
        return img
    # stretch
    if (w, h) == (max_size, max_size):
        return img
    return img.resize((max_size, max_size), resample)


# ---------------------------------------------------------------------------------------------
# public API


def load_image(
    value: Any,
    *,
    base_dirs: Sequence[str | os.PathLike[str]] = (),
    convert_to_rgb: bool = True,
    resize_mode: str = "keep_aspect",
    max_size: int | None = None,
    row: int | None = None,
    max_pixels: int | None = None,
) -> Image.Image:
    """Decode, orient, convert and resize one image; raise DataError naming the file on failure.

    The settings are the config's `image_processing` values, passed by keyword. `max_pixels`
    overrides `PIL.Image.MAX_IMAGE_PIXELS` for the decompression-bomb check.
    """
    _check_resize_args(resize_mode, max_size)
    img, name = _decode(value, base_dirs, row, max_pixels)
    img = _exif_transpose(img)
    if convert_to_rgb:
        try:
            img = to_rgb(img)
        except (ValueError, OSError) as exc:
            raise media_error(
                f"{name}: cannot convert mode {img.mode} to RGB ({exc})",
                name=name,
                row=row,
                code="media-mode",
            ) from None
    return resize_image(img, resize_mode, max_size)


def probe_image(
    value: Any,
    base_dirs: Sequence[str | os.PathLike[str]] = (),
    *,
    row: int | None = None,
    max_pixels: int | None = None,
) -> tuple[int, int, str]:
    """Check an image opens and decodes fully; return (width, height, mode) for `validate`.

    Width and height are after EXIF orientation (what `load_image` yields before resizing);
    mode is the file's own mode (before RGB conversion).
    """
    img, _ = _decode(value, base_dirs, row, max_pixels)
    w, h = img.size
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # malformed EXIF: load_image ignores it too
        orientation = 1
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return w, h, img.mode
