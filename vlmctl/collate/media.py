"""A row's media as the processor takes them: "video wins" for processors that take one
kind per row, and the images / video frames decoded with the collator config's settings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from vlmctl.data.example import Example


def fit_media(example: Example, takes_both: bool, processor_name: str) -> Example:
    """The example as the processor can take it: "video wins" in a row with images AND
    videos only when the processor takes one kind per row (noted in `example.notes`)."""
    if takes_both or not (example.images and example.videos):
        return example
    n = len(example.images)
    messages = []
    for msg in example.messages:
        content = msg.get("content")
        if isinstance(content, list):
            kept = [p for p in content if not (isinstance(p, dict) and p.get("type") == "image")]
            if not kept:
                continue
            msg = {**msg, "content": kept}
        messages.append(msg)
    note = (
        f"{n} image(s) dropped: {processor_name} takes images or video in a "
        "row, not both (video wins)"
    )
    return replace(example, messages=messages, images=[], notes=[*example.notes, note])


def load_media(example: Example, cfg: Any, media_dirs: Sequence[Path], stats: Counter):
    """(images, video frames, clips) of one example; which decoder read each clip is counted
    in `stats` (decord may hand a file to PyAV: said by train)."""
    from vlmctl.media.images import load_image

    ip = cfg.image_processing
    images = [
        load_image(
            ref,
            base_dirs=media_dirs,
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

        vp = cfg.video_processing
        for ref in example.videos:
            if _is_frames(ref):  # already decoded (tests, in-memory datasets)
                videos.append(ref)
                metas.append(None)
                continue
            clip = load_video_frames(
                ref,
                base_dirs=media_dirs,
                library=vp.frame_extraction.library,
                num_frames=vp.frame_extraction.num_frames,
                max_duration=vp.file_processing.max_duration,
                convert_to_rgb=vp.file_processing.convert_to_rgb,
                row=example.row,
            )
            videos.append(clip.frames)
            metas.append(clip)
            stats[f"video_decoder_{clip.backend}"] += 1
    return images, videos, metas


def _is_frames(ref: Any) -> bool:
    return hasattr(ref, "shape") and len(getattr(ref, "shape", ())) == 4
