"""What `dataset.path` names: a local file, a folder (of which kind), or a hub id.

Also the pieces every loader shares: the one-finding DataError and quiet `datasets` calls.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from vlmctl.errors import DataError, Finding

FILE_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def data_error(message: str, hint: str | None = None, *, file=None, line=None, key="dataset.path"):
    """A DataError with one finding at `file` (and line), else at the config `key`."""
    return DataError(
        Finding(
            "error",
            message,
            hint=hint,
            file=str(file) if file is not None else None,
            line=line,
            key=None if file is not None else key,
            code="dataset",
        )
    )


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextlib.contextmanager
def quiet():
    """No progress bars or info logs from `datasets` while vlmctl loads (the CLI owns output)."""
    import datasets

    bars = datasets.utils.logging.is_progress_bar_enabled()
    level = datasets.utils.logging.get_verbosity()
    datasets.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity(logging.CRITICAL)
    try:
        yield
    finally:
        datasets.utils.logging.set_verbosity(level)
        if bars:
            datasets.utils.logging.enable_progress_bar()


def _looks_like_hub_id(path: str) -> bool:
    if path.startswith((".", "/", "~")) or "\\" in path:
        return False
    if Path(path).suffix.lower() in FILE_FORMATS:
        return False
    parts = path.split("/")
    return 1 <= len(parts) <= 2 and all(parts)


def resolve_source(cfg, config_dir: Path, key: str = "dataset.path") -> tuple[str, Path | str]:
    """(kind, local path or hub id) that `dataset.path` names; errors name `key` (eval_path)."""
    ds = cfg.dataset
    if not ds.path:
        raise data_error(
            "no dataset configured",
            "set dataset.path in vlm_collator_config.yaml (a file, a folder or a hub id) "
            "or pass --dataset",
        )
    raw = ds.path
    if ds.format == "hub":
        return "hub", raw
    local = (Path(config_dir) / Path(raw).expanduser()).resolve()
    if not local.exists():
        if ds.format == "auto" and _looks_like_hub_id(raw):
            return "hub", raw
        raise data_error(
            f"dataset not found: {local}",
            f"{key} is relative to the config folder; check the path (format: hub for a hub id)",
            key=key,
        )
    if ds.format not in ("auto", "hub"):
        kind = {"jsonl": "json"}.get(ds.format, ds.format)
        return kind, local
    if local.is_file():
        kind = FILE_FORMATS.get(local.suffix.lower())
        if kind is None:
            raise data_error(
                f"cannot tell the format of {local.name} from its extension",
                "set dataset.format to csv, json, jsonl or parquet",
                file=local,
            )
        return kind, local
    return _folder_kind(local), local


def _folder_kind(folder: Path) -> str:
    if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
        return "disk"
    names = [p for p in folder.rglob("*") if p.is_file()]
    if any(p.name in ("metadata.csv", "metadata.jsonl", "metadata.parquet") for p in names):
        return "imagefolder"
    data = {FILE_FORMATS[p.suffix.lower()] for p in names if p.suffix.lower() in FILE_FORMATS}
    if len(data) == 1:
        return "folder:" + data.pop()
    if len(data) > 1:
        raise data_error(
            f"{folder} holds several data formats ({', '.join(sorted(data))})",
            "point dataset.path at one file, or set dataset.format",
            file=folder,
        )
    if any(p.suffix.lower() in IMAGE_EXTS for p in names):
        return "imagefolder"
    raise data_error(
        f"no data files in {folder}",
        "expected csv/json/jsonl/parquet files, images with metadata.csv, or a save_to_disk folder",
        file=folder,
    )
