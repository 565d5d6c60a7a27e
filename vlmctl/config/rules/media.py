"""Cross-field rules of the media settings: which kinds reach the model, columns, decoder."""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from vlmctl.errors import Finding

if TYPE_CHECKING:
    from vlmctl.config.load import ConfigSet


def check_media(cs: ConfigSet) -> list[Finding]:
    """Which media kinds reach the model, their columns, and the video decoder."""
    c = cs.collator
    dp = c.data_processing
    if not dp.image_data and not dp.video_data:
        return [
            cs.finding(
                "error",
                "collator",
                "data_processing",
                "image_data and video_data are both false: "
                "no media would reach a vision-language model",
                hint="set image_data: true (images) or video_data: true (video)",
                code="no-media",
            )
        ]
    return _media_kinds(cs) + _media_columns(cs) + _video_library(cs)


def _media_kinds(cs: ConfigSet) -> list[Finding]:
    c = cs.collator
    dp = c.data_processing
    out: list[Finding] = []
    if dp.image_data and dp.video_data and c.video_processing.enabled:
        out.append(
            cs.finding(
                "info",
                "collator",
                "data_processing.video_data",
                "image_data and video_data are both true: each row keeps its images and videos "
                "when the processor takes both (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision, "
                "InternVL, ...); with a processor that takes one kind per row, video wins in "
                "rows that have both (validate lists those rows)",
                code="both-media",
            )
        )
    if dp.video_data and not c.video_processing.enabled:
        out.append(
            cs.finding(
                "warning",
                "collator",
                "video_processing.enabled",
                "video_data is true but "
                "video_processing.enabled is false: videos are not processed",
                hint="set video_processing.enabled: true",
                code="video-disabled",
            )
        )
    return out


def _media_columns(cs: ConfigSet) -> list[Finding]:
    c = cs.collator
    cols = c.dataset_columns
    out: list[Finding] = []
    # Chat rows may carry their media inline in content parts ({"type": "video", "video":
    # "clip.mp4"}): a null images_column/videos_column is fine; validate's row pass counts
    # the media the rows really carry and warns when an enabled kind never occurs.
    if c.conversation is None:
        if c.use_images and cols.image_column is None:
            out.append(
                cs.finding(
                    "error",
                    "collator",
                    "dataset_columns.image_column",
                    "image_data is true but image_column is null",
                    hint="name the dataset's image column (e.g. image)",
                    code="media-column",
                )
            )
        if c.use_video and cols.video_column is None:
            out.append(
                cs.finding(
                    "error",
                    "collator",
                    "dataset_columns.video_column",
                    "video_data is true but video_column is null",
                    hint="name the dataset's video column (e.g. video_path)",
                    code="media-column",
                )
            )
    return out


def _video_library(cs: ConfigSet) -> list[Finding]:
    c = cs.collator
    lib = c.video_processing.frame_extraction.library
    module = {"decord": "decord", "pyav": "av", "cv2": "cv2"}[lib]
    if c.use_video and importlib.util.find_spec(module) is None:
        if module != "cv2" and importlib.util.find_spec("transformers") is None:
            # The light install (no extras) reads no video: nothing to check here.
            return []
        return [
            cs.finding(
                "error",
                "collator",
                "video_processing.frame_extraction.library",
                f"library: {lib} is not installed",
                hint="use decord or pyav (both ship with vlmctl)",
                code="video-library",
            )
        ]
    return []


def media_part_findings(cs: ConfigSet, kind: str, key: tuple) -> list[Finding]:
    """A media part of a message whose kind is switched off: dropped, with a warning."""
    c = cs.collator
    if kind == "image" and not c.use_images:
        why = "image_data is false"
        return [
            cs.finding(
                "warning",
                "collator",
                key,
                f"image part dropped: {why}",
                hint="remove this part or change data_processing",
                code="part-off",
            )
        ]
    if kind == "video" and not c.use_video:
        return [
            cs.finding(
                "warning",
                "collator",
                key,
                "video part dropped: video is off "
                "(data_processing.video_data / video_processing.enabled)",
                hint="remove this part or set video_data: true",
                code="part-off",
            )
        ]
    return []
