"""Cross-field rules of the dataset section: a path to read, media roots that exist."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlmctl.errors import Finding

if TYPE_CHECKING:
    from vlmctl.config.load import ConfigSet


def _media_roots(cs: ConfigSet) -> list[Finding]:
    """Each `media_root` must exist: an error when the dataset itself is here (then the folder
    should be too), a warning when the data is not on this machine (configs checked alone)."""
    ds = cs.collator.dataset
    roots = ds.media_root
    if roots is None:
        return []
    items = (
        [(("dataset", "media_root"), roots)]
        if isinstance(roots, str)
        else [(("dataset", "media_root", i), r) for i, r in enumerate(roots)]
    )
    data_here = bool(ds.path) and cs.resolve_path(ds.path).exists()
    out = []
    for key, root in items:
        folder = cs.resolve_path(root)
        if folder.is_dir():
            continue
        what = "not a folder" if folder.exists() else "folder not found"
        out.append(
            cs.finding(
                "error" if data_here else "warning",
                "collator",
                key,
                f"media_root {what}: {folder.resolve()}",
                hint="media_root is relative to the config folder; fix the path or set it to null",
                code="media-root-missing",
            )
        )
    return out


def check_dataset(cs: ConfigSet) -> list[Finding]:
    """A dataset to read, and media roots that exist."""
    roots = _media_roots(cs)
    if roots:
        return roots
    if cs.collator.dataset.path is None:
        return [
            cs.finding(
                "warning",
                "collator",
                "dataset.path",
                "dataset.path is not set: train and the dataset-level checks need it",
                hint="set dataset.path to a csv/json/jsonl/parquet file, a folder or a hub id",
                code="no-dataset",
            )
        ]
    return []
