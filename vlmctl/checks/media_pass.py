"""`train`'s row pass before launch: validate's row checks without the processor, on every
row (shared by `validate` and `train`, so train's pre-flight imports no verb)."""

from __future__ import annotations

from typing import Any

from vlmctl.checks.access import load_data
from vlmctl.checks.collect import Collector
from vlmctl.checks.columns import column_findings
from vlmctl.checks.row_pool import run_rows
from vlmctl.checks.rows import RowState
from vlmctl.errors import Finding
from vlmctl.runtime import private_datasets_cache


def check_media(cs: Any) -> list[Finding]:
    """`train`'s pre-flight: validate's row checks without the processor, on every row.

    Rows that cannot become an example, and media that is missing, unreadable, truncated or
    not an image/video, each named by row index (the file's own rows, as `validate` says).
    No processor is loaded (that costs the worker's start-up); errors only.
    """
    from vlmctl.data.dataset import iter_rows

    findings: list[Finding] = []
    with private_datasets_cache():
        data, _kind = load_data(cs, findings)
        if data is None:
            return [f for f in findings if f.severity == "error"]
        if any(f.severity == "error" for f in column_findings(cs, list(data.train.column_names))):
            return []  # the config checks report the mapping; nothing row-level to add
        col = Collector()
        splits = [("train", data.train)] + ([("eval", data.eval)] if data.eval is not None else [])
        for split, ds in splits:  # no processor: transformers and torch stay unimported
            state = RowState(
                cfg=cs.collator, media_dirs=data.media_dirs, collator=None, split=split
            )
            for r in run_rows(state, iter_rows(ds), 1):
                if r.fatal:
                    return [f for f in r.fatal if f.severity == "error"]
                col.add(r, stats=split == "train")
        del data
    found = col.findings + col.overflow_findings()
    return [f for f in found if f.severity == "error"]
