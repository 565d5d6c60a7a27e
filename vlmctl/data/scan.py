"""A cheap pass over every row before `train` starts: all bad rows at once, not the first.

`train` would otherwise stop at the first batch holding a bad row (an empty answer, a tag
without its image, a missing media file), one row per attempt. This pass renders every row
with `row_to_example` and checks that each media file exists (no decoding), then reports
every problem found, each with its row, as `validate` does. No heavy import beyond what the
dataset loader already needs.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vlmctl.errors import DataError, Finding

MAX_LISTED = 20


def scan_rows(
    dataset: Any, cfg: Any, media_dirs: Iterable[Path], split: str = "train"
) -> list[Finding]:
    """Every row problem `row_to_example` or a missing media file would raise, with its row."""
    from vlmctl.data.dataset import iter_rows
    from vlmctl.data.messages import row_to_example
    from vlmctl.media.images import resolve_media_path

    dirs = list(media_dirs)
    out: list[Finding] = []
    for index, row in iter_rows(dataset):
        try:
            ex = row_to_example(row, cfg, index)
            for ref in [*ex.images, *ex.videos]:
                if isinstance(ref, dict) and ref.get("bytes") is None:
                    ref = ref.get("path")
                if isinstance(ref, (str, os.PathLike)):
                    resolve_media_path(ref, dirs, row=index)
        except DataError as exc:
            for f in exc.findings:
                if f.row is None:
                    f.row = index
                if split != "train":
                    f.message = f"{split} split: {f.message}"
                out.append(f)
    return out


def raise_for_bad_rows(findings: list[Finding]) -> None:
    """One DataError listing every bad row (the first MAX_LISTED, then a count)."""
    if not findings:
        return
    shown = findings[:MAX_LISTED]
    rows = sorted({f.row for f in findings if f.row is not None})
    if len(findings) > MAX_LISTED:
        shown.append(
            Finding(
                "error",
                f"{len(findings) - MAX_LISTED} more problems; {len(rows)} bad rows in all",
                hint="`vlmctl validate` lists every one",
                code="bad-rows",
            )
        )
    raise DataError(shown)
