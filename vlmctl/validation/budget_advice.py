"""`validate`'s advice when rows do not fit `max_length`: which one change makes them fit.

Why: with a real processor's default image settings a row of two images can cost several
thousand tokens (InternVL2 ~6,700, Idefics3 ~4,700), and every such row is dropped under
`max_length: 2048`. Saying "row too long" is not enough: this module turns the measured row
lengths into concrete settings, with numbers: a `max_length` that fits every checked row, a
processor setting (`processor_params.max_pixels`, `size.longest_edge`, `do_image_splitting`,
`max_patches`, `num_crops`) under which each image costs few enough tokens, or a frame count.
The per-image and per-frame costs are measured from the encoded rows; the processor setting
comes from the family's arithmetic in `vlmctl.models.budgets`.
"""

from __future__ import annotations

import math
from typing import Any

from vlmctl.models.budgets import budget_for


def _round_up(n: int, step: int = 64) -> int:
    return int(math.ceil(n / step) * step)


def fit_advice(cs: Any, col: Any, max_length: int) -> dict[str, Any] | None:
    """The changes that make the over-long checked rows fit, as a finding plus a list."""
    from vlmctl.runtime import model_type_of

    rows = list(zip(col.lengths, col.media, col.enc_images, col.enc_videos, strict=True))
    over = [r for r in rows if r[0] > max_length]
    if not over:
        return None
    changes: list[dict[str, Any]] = []
    longest = max(r[0] for r in rows)
    changes.append(
        {
            "file": "collator",
            "key": "text_processing.max_length",
            "value": _round_up(longest),
            "why": f"fits every checked row (the longest is {longest} tokens)",
        }
    )
    text_only = [r for r in over if r[0] - r[1] > max_length]
    fixable = [r for r in over if r[0] - r[1] <= max_length]
    model_type = model_type_of(cs.model_location(), cs.model.revision)
    budget = budget_for(cs.model_location(), model_type)
    image_rows = [r for r in fixable if r[2] > 0 and r[3] == 0]
    measured = ""
    if image_rows:
        per_image = min((max_length - (L - m)) // i for L, m, i, _ in image_rows)
        heaviest = max(m // i for _, m, i, _ in image_rows)
        measured = f"images cost up to {heaviest} tokens each here"
        knob = budget.knob(per_image) if budget is not None and per_image > 0 else None
        if knob is not None:
            params, why = knob
            for key, value in params.items():
                changes.append(
                    {
                        "file": "model",
                        "key": f"processor_params.{key}",
                        "value": value,
                        "why": f"{why}; the rows need at most {per_image} tokens an image",
                    }
                )
    video_rows = [r for r in fixable if r[3] > 0 and r[2] == 0]
    if video_rows:
        frames = int(cs.collator.video_processing.frame_extraction.num_frames)
        fits = []
        for L, m, _, v in video_rows:
            per_frame = m / (v * frames)
            fits.append(int((max_length - (L - m)) // (v * per_frame)) if per_frame else frames)
        new_frames = min(fits)
        if model_type in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "glm4v"):
            new_frames -= new_frames % 2  # two frames make one temporal patch
        if 1 <= new_frames < frames:
            changes.append(
                {
                    "file": "collator",
                    "key": "video_processing.frame_extraction.num_frames",
                    "value": new_frames,
                    "why": f"{frames} -> {new_frames} frames a video",
                }
            )
    listed = "; ".join(f"{c['key']}: {_show(c['value'])} ({c['why']})" for c in changes)
    detail = f" ({measured})" if measured else ""
    msg = (
        f"{len(over)} of {len(rows)} checked rows exceed max_length={max_length}{detail}. "
        f"Any one of these makes them fit: {listed}"
    )
    if text_only:
        msg += f". {len(text_only)} rows are too long in their text alone: only max_length helps"
    hint = (
        "max_length is in vlm_collator_config.yaml; processor_params in vlm_model_config.yaml "
        "(passed to the processor's from_pretrained)"
    )
    finding = cs.finding(
        "info", "collator", "text_processing.max_length", msg, hint=hint, code="budget-fit"
    )
    return {"finding": finding, "changes": changes}


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {v}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
