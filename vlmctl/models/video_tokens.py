"""Video tokens from frame SHAPES, for `validate`'s row pass: no resize, normalize or patchify.

The frames are still decoded by `vlmctl.media.video.load_video_frames` (the pixel path's
own reader): a container's metadata cannot tell what decoding tells. A truncated file makes
PyAV re-sample over the frames that really decode (other indices, frame count and times, which
Qwen3-VL writes into the text as timestamps and Qwen2.5-VL turns into time positions), and a
corrupt packet is found only by decoding it. So every finding, frame count, index and timestamp
is the pixel path's own.

What is skipped is the video processor's pixel work. On the families listed here its
`_preprocess` reads only the frames' shapes to build `video_grid_thw` (the one thing the
processor's `replace_video_token` reads, with the real `video_metadata`), so it runs unchanged
on shape-only tensors on torch's "meta" device: the processor's own arithmetic (smart_resize,
the per-frame pixel cap, temporal padding), no pixels computed. `pixel_values_videos` is left
out, as the image size path leaves out `pixel_values`. Anything the meta run cannot take goes
through the real `_preprocess`, so its result or error is the real one.
"""

from __future__ import annotations

import copy
import types
from typing import Any

# processor class -> video processor classes whose `_preprocess` reads only shapes
_QWEN_VIDEO = frozenset({"Qwen2VLVideoProcessor", "Qwen3VLVideoProcessor"})
_VIDEO_FAMILIES: dict[str, frozenset] = {
    "Qwen2VLProcessor": _QWEN_VIDEO,
    "Qwen2_5_VLProcessor": _QWEN_VIDEO,
    "Qwen3VLProcessor": _QWEN_VIDEO,
}


def video_shapes_exact(processor: Any) -> bool:
    """True when this processor's video tokens depend only on the frames' shapes and its
    video processor is the listed class itself (a subclass, e.g. remote code, may differ);
    tests/test_video_tokens.py checks each listed family against its real output."""
    allowed = _VIDEO_FAMILIES.get(type(processor).__name__)
    vp = getattr(processor, "video_processor", None)
    if allowed is None or vp is None or type(vp).__name__ not in allowed:
        return False
    if "_preprocess" in vars(vp) or not getattr(processor, "video_token", None):
        return False
    import transformers

    # transformers' own classes, not look-alikes of the same name (remote code, subclasses)
    return all(getattr(transformers, type(o).__name__, None) is type(o) for o in (processor, vp))


def _shape_only_preprocess(real: Any):
    def _preprocess(self, videos, **kwargs):
        import torch

        if not all(isinstance(v, torch.Tensor) for v in videos):
            return real(videos=videos, **kwargs)
        try:
            out = real(videos=[v.to("meta") for v in videos], **kwargs)
        except Exception:  # noqa: BLE001 - the real run gives the real result or error
            return real(videos=videos, **kwargs)
        out.data.pop("pixel_values_videos", None)
        return out

    return _preprocess


def shape_only_video_processor(processor: Any) -> Any | None:
    """A shallow copy of `processor.video_processor` that builds `video_grid_thw` from the
    frames' shapes; None where that is not exact (the caller keeps the pixel path)."""
    if not video_shapes_exact(processor):
        return None
    vp = copy.copy(processor.video_processor)
    vp._preprocess = types.MethodType(_shape_only_preprocess(vp._preprocess), vp)
    return vp
