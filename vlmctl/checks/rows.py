"""The row pass: each row through `row_to_example`, its videos probed, its images decoded and,
with the processor, encoded exactly as `train` encodes it, the truncation policy applied as
the collator would. Runs in this process or in forked workers (`row_pool`)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmctl.errors import ConfigError, DataError, Finding, VlmctlError


@dataclass
class RowResult:
    """What one row contributed: findings, and token counts when it was encoded."""

    row: int
    findings: list[Finding] = field(default_factory=list)
    length: int = -1  # full length (text + expanded media), -1 when not encoded
    media_tokens: int = 0
    supervised: int = 0  # supervised tokens `train` keeps for this row
    images: int = 0  # media the row carries after rendering (column and inline alike)
    videos: int = 0
    system_source: str | None = None  # chat rows: where the system turn comes from
    outcome: str = "ok"  # ok | invalid | dropped_too_long | cut_text | dropped_media_span
    #                      | dropped_no_labels | length_error | not_encoded
    fatal: list[Finding] | None = None  # a set-level problem: stop the pass


@dataclass
class RowState:
    """What every row check needs: the collator config, media folders, the collator (None
    without a processor) and the split's name (inherited by forked workers)."""

    cfg: Any
    media_dirs: list[Path]
    collator: Any | None
    split: str = "train"


def _row_finding(f: Finding, index: int, split: str) -> Finding:
    f.row = index
    if split != "train":
        f.message = f"{split} split: {f.message}"
        f.extra = {**f.extra, "split": split}
    return f


def _adder(res: RowResult, split: str):
    def add(f: Finding) -> None:
        res.findings.append(_row_finding(f, res.row, split))

    return add


def _prepare_row(state: RowState, index: int, row: dict) -> tuple[RowResult, Any | None]:
    """Checks before the processor; returns the Example when the row can be encoded."""
    from vlmctl.data.messages import row_to_example

    res = RowResult(row=index)
    add = _adder(res, state.split)
    try:
        ex = row_to_example(row, state.cfg, index)
    except DataError as exc:
        for f in exc.findings:
            add(f)
        res.outcome = "invalid"
        return res, None
    except ConfigError as exc:
        res.fatal = exc.findings
        return res, None
    if state.collator is not None:
        ex = state.collator.fit_media(ex)  # "video wins" for one-kind processors, noted
    res.images, res.videos = len(ex.images), len(ex.videos)
    res.system_source = ex.system_source
    for note in ex.notes:
        add(Finding("warning", note, code="row-note"))
    bad_media = _check_videos(state, ex, add) if ex.videos else False
    if state.collator is None:
        bad_media |= _probe_images(state, ex, add)
        res.outcome = "invalid" if bad_media else "not_encoded"
        return res, None
    if bad_media:
        res.outcome = "invalid"
        return res, None
    res.images, res.videos = len(ex.images), len(ex.videos)
    return res, ex


def _encode_one(state: RowState, res: RowResult, ex: Any) -> None:
    add = _adder(res, state.split)
    try:
        enc = state.collator.encode_example(ex, truncate=False)
    except DataError as exc:
        for f in exc.findings:
            add(f)
        res.outcome = "invalid"
        return
    except VlmctlError as exc:  # the chat template cannot be used: same for every row
        res.fatal = exc.findings
        return
    _apply_policy(state, enc, res, add)


def check_rows(state: RowState, chunk: list[tuple[int, dict]]) -> list[RowResult]:
    """Every row-level check of some rows; no exception escapes for data problems.

    Rows that pass the cheap checks are encoded with ONE processor call
    (`VLMCollator.encode_examples`, what `train`'s batches use); when that call fails, each
    row is encoded alone so the problem is pinned to its row.
    """
    results: list[RowResult] = []
    pending: list[tuple[RowResult, Any]] = []
    for index, row in chunk:
        res, ex = _prepare_row(state, index, row)
        results.append(res)
        if res.fatal:
            return results
        if ex is not None:
            pending.append((res, ex))
    if not pending:
        return results
    encoded = None
    if len(pending) > 1:
        try:
            encoded = state.collator.encode_examples([ex for _, ex in pending], truncate=False)
        except VlmctlError:
            encoded = None
    if encoded is None:
        for res, ex in pending:
            _encode_one(state, res, ex)
            if res.fatal:
                break
        return results
    for (res, _), enc in zip(pending, encoded, strict=True):
        _apply_policy(state, enc, res, _adder(res, state.split))
    return results


def _check_videos(state: RowState, ex: Any, add) -> bool:
    from vlmctl.media.video import probe_video

    want = state.cfg.video_processing.frame_extraction.num_frames
    max_duration = state.cfg.video_processing.file_processing.max_duration
    bad = False
    for ref in ex.videos:
        if not isinstance(ref, (str, os.PathLike)):
            continue  # decoded frames or bytes: the collator checks them
        try:
            total, fps, duration, _, _ = probe_video(ref, state.media_dirs, row=ex.row)
        except DataError as exc:
            for f in exc.findings:
                add(f)
            bad = True
            continue
        usable, within = total, ""
        if max_duration is not None and fps > 0:
            # Only the first max_duration seconds are sampled (the decoders' own rule).
            usable = min(total, max(1, math.ceil(max_duration * fps - 1e-6)))
            if usable < total:
                within = f" within max_duration={max_duration:g} s"
        if usable < want:
            add(
                Finding(
                    "warning",
                    f"{os.fspath(ref)}: video too short: {usable} frames{within} "
                    f"({duration:.1f} s in all) for num_frames={want}; frames are repeated",
                    hint="lower video_processing.frame_extraction.num_frames"
                    + (", raise max_duration" if within else "")
                    + " or drop the clip",
                    code="video-too-short",
                    extra={"media": os.fspath(ref)},
                )
            )
    return bad


def _probe_images(state: RowState, ex: Any, add) -> bool:
    from vlmctl.media.images import probe_image

    bad = False
    for ref in ex.images:
        try:
            probe_image(ref, state.media_dirs, row=ex.row)
        except DataError as exc:
            for f in exc.findings:
                add(f)
            bad = True
    return bad


def _too_long(decision: Any, enc: Any, res: RowResult, add, size: str, tp: Any) -> None:
    """A row over max_length with truncation on: what the collator's policy does with it."""
    where = f"> text_processing.max_length={tp.max_length}"
    key = "text_processing.max_length"
    if decision.action == "error":
        hint = "raise max_length, or use truncation_policy: drop or truncate_text"
        msg = f"{size} {where}: train stops with an error (truncation_policy: error)"
        add(Finding("error", msg, hint=hint, key=key, code="row-too-long"))
        res.outcome = "length_error"
    elif decision.reason == "too_long":
        hint = "raise max_length or use truncation_policy: truncate_text"
        msg = f"{size} {where}: dropped (truncation_policy: drop)"
        add(Finding("warning", msg, hint=hint, key=key, code="row-too-long"))
        res.outcome = "dropped_too_long"
    elif decision.reason == "media_too_long":
        spans = ", ".join(f"{s}-{e}" for s, e in enc.media_spans)
        msg = (
            f"{size} {where}: the cut would fall inside or before a media "
            f"span (tokens {spans}): dropped (truncation_policy: truncate_text)"
        )
        hint = "raise max_length, or shrink the media (image_processing.max_size, fewer frames)"
        add(Finding("warning", msg, hint=hint, key=key, code="media-span-cut"))
        res.outcome = "dropped_media_span"
    elif decision.reason == "no_labels":
        msg = f"{size} {where}: cutting the text leaves no supervised token: dropped"
        add(Finding("warning", msg, hint="raise max_length", key=key, code="no-supervised-tokens"))
        res.outcome = "dropped_no_labels"
    else:
        msg = (
            f"{size} {where}: text cut by {res.length - decision.cut_at} tokens, "
            f"{decision.supervised} supervised tokens left (truncation_policy: truncate_text)"
        )
        hint = "raise max_length to keep the whole answer"
        add(Finding("warning", msg, hint=hint, key=key, code="row-text-cut"))
        res.outcome = "cut_text"
    res.supervised = decision.supervised


def _apply_policy(state: RowState, enc: Any, res: RowResult, add) -> None:
    """What `train` does with this row: the collator's length policy (`length_policy.decide`,
    the decision the collator acts on), reported as findings."""
    from vlmctl.collate.length_policy import decide_for

    decision = decide_for(enc, state.cfg)
    res.length = length = enc.original_length or enc.length
    res.media_tokens = enc.num_media_tokens
    size = f"{length} tokens ({length - res.media_tokens} text + {res.media_tokens} media)"
    if decision.over_length:
        _too_long(decision, enc, res, add, size, state.cfg.text_processing)
        return
    if decision.reason == "no_labels":
        add(
            Finding(
                "warning",
                f"{size}: no supervised token left after label masking: dropped",
                hint="check label_masking (mask_input_tokens) and that the answer is not empty",
                key="label_masking",
                code="no-supervised-tokens",
            )
        )
        res.outcome, res.supervised = "dropped_no_labels", 0
        return
    res.supervised = decision.supervised
