"""Aggregating the row pass: a progress bar that appears after a second, per-row figures kept
as int32 arrays (flat memory), findings capped per kind with the rest counted."""

from __future__ import annotations

import statistics
import time
from array import array
from collections import Counter

from vlmctl.checks.rows import RowResult
from vlmctl.errors import Finding

MAX_PER_CODE = 20  # row findings of one kind shown one by one; the rest are counted
MAX_ROWS_LISTED = 1000  # row indices kept for the "and N more" finding (JSON)


class Progress:
    """A rich progress bar on stderr that appears only once a pass has taken more than 1 s."""

    def __init__(self, enabled: bool, total: int | None, label: str):
        self.enabled = enabled
        self.total = total
        self.label = label
        self.t0 = time.monotonic()
        self.done = 0
        self.bar = None
        self.task = None

    def advance(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is None:
            if time.monotonic() - self.t0 < 1.0:
                return
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total, completed=self.done)
            return
        self.bar.update(self.task, completed=self.done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class Collector:
    """Streams row results into capped findings and int32 length arrays."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.per_code: Counter = Counter()
        self.overflow: dict[tuple[str, str], list] = {}
        self.lengths = array("i")
        # per encoded row, aligned with `lengths` (the media budget advice reads them)
        self.enc_images = array("i")
        self.enc_videos = array("i")
        self.outcomes: Counter = Counter()
        self.supervised_total = 0
        self.rows_checked = 0  # train rows
        self.eval_rows_checked = 0
        self.rows_with_errors = 0
        self.rows_with_warnings = 0
        self.fatal: list[Finding] | None = None
        self.media: array = array("i")
        self.images = 0
        self.videos = 0
        self.rows_with_images = 0
        self.rows_with_videos = 0
        self.system_sources: Counter = Counter()
        self.system_rows: dict[str, int] = {}

    def add(self, r: RowResult, stats: bool = True) -> None:
        if stats:
            self.rows_checked += 1
        else:
            self.eval_rows_checked += 1
        severities = {f.severity for f in r.findings}
        self.rows_with_errors += "error" in severities
        self.rows_with_warnings += "warning" in severities and "error" not in severities
        for f in r.findings:
            code = f.code or "row"
            self.per_code[code] += 1
            if self.per_code[code] <= MAX_PER_CODE:
                self.findings.append(f)
            else:
                entry = self.overflow.setdefault((code, f.severity), [0, []])
                entry[0] += 1
                if len(entry[1]) < MAX_ROWS_LISTED:
                    entry[1].append(r.row)
        if not stats:
            return
        self.images += r.images
        self.videos += r.videos
        self.rows_with_images += r.images > 0
        self.rows_with_videos += r.videos > 0
        if r.system_source:
            self.system_sources[r.system_source] += 1
            self.system_rows.setdefault(r.system_source, r.row)
        self.outcomes[r.outcome] += 1
        if r.length >= 0:
            self.lengths.append(r.length)
            self.media.append(r.media_tokens)
            self.enc_images.append(r.images)
            self.enc_videos.append(r.videos)
        self.supervised_total += r.supervised

    def overflow_findings(self) -> list[Finding]:
        out = []
        for (code, severity), (n, rows) in sorted(self.overflow.items()):
            shown = ", ".join(map(str, rows[:10])) + (", ..." if n > 10 else "")
            out.append(
                Finding(
                    severity,
                    f"{n} more rows with the same problem ({code}): rows {shown}",
                    code=code,
                    extra={"rows": rows, "count": n},
                )
            )
        return out


def describe(values: array) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, int(round(0.95 * len(ordered))) - 1))]
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": p95,
        "max": ordered[-1],
        "mean": round(sum(ordered) / len(ordered), 1),
    }
