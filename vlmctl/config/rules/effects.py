"""Settings that have no effect in the set they are in (a warning each, at the key)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlmctl.errors import Finding

if TYPE_CHECKING:
    from vlmctl.config.load import ConfigSet


def check_no_effect(cs: ConfigSet) -> list[Finding]:
    """Settings that change nothing in this set, so the user does not rely on them."""
    c = cs.collator
    out: list[Finding] = []
    ip = c.image_processing
    if ip.resize_mode != "keep_aspect" and ip.max_size is None and c.use_images:
        out.append(
            cs.finding(
                "warning",
                "collator",
                "image_processing.resize_mode",
                f"resize_mode: {ip.resize_mode} has no effect while max_size is null "
                "(images are not resized)",
                hint="set max_size (pixels), or resize_mode: keep_aspect",
                code="no-effect",
            )
        )
    msgs = c.message_format.training_messages
    ends_with_answer = c.conversation is not None or (msgs and msgs[-1].role == "assistant")
    if c.text_processing.add_generation_prompt and ends_with_answer:
        out.append(
            cs.finding(
                "warning",
                "collator",
                "text_processing.add_generation_prompt",
                "add_generation_prompt: true has no effect here: a generation prompt is added "
                "only after a chat that does not end with the assistant's turn",
                hint="set it to false for training",
                code="no-effect",
            )
        )
    fp = c.video_processing.file_processing
    if not fp.convert_to_rgb and c.use_video:
        out.append(
            cs.finding(
                "warning",
                "collator",
                "video_processing.file_processing.convert_to_rgb",
                "convert_to_rgb: false has no effect on video: every decoder returns RGB frames",
                hint="remove the key or set it to true",
                code="no-effect",
            )
        )
    return out
