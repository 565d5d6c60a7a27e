"""Dataset helpers only tests use: the columns of a split, read from a header or schema.

Moved out of `vlmctl.data.dataset` (no product code asked for columns without loading)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from vlmctl.data.dataset import load_splits
from vlmctl.data.sources import data_error, resolve_source


def column_names(cfg, config_dir: Path) -> list[str]:
    """Columns of the train split, reading only a header/schema when the format allows it."""
    kind, location = resolve_source(cfg, Path(config_dir))
    try:
        if kind == "csv":
            return _csv_header(Path(location))
        if kind == "parquet":
            import pyarrow.parquet as pq

            return list(pq.read_schema(str(location)).names)
        if kind == "json" and Path(location).suffix.lower() in (".jsonl", ".ndjson"):
            return _jsonl_keys(Path(location))
        if kind == "disk":
            cols = _disk_columns(Path(location), cfg.dataset.train_split)
            if cols is not None:
                return cols
        if kind == "imagefolder":
            cols = _imagefolder_columns(Path(location))
            if cols is not None:
                return cols
    except (OSError, ValueError, UnicodeDecodeError):
        pass  # the full load below gives the precise error
    return list(load_splits(cfg, config_dir).train.column_names)


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        delim = "\t" if path.suffix.lower() == ".tsv" else ","
        header = next(csv.reader(f, delimiter=delim), None)
    if not header:
        raise data_error("empty CSV file (no header)", file=path)
    return [h.strip() for h in header]


def _jsonl_keys(path: Path, max_lines: int = 100) -> list[str]:
    keys: dict[str, None] = {}
    seen = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            if isinstance(obj, dict):
                keys.update(dict.fromkeys(obj))
            seen += 1
            if seen >= max_lines:
                break
    if not keys:
        raise ValueError("no rows")
    return list(keys)


def _disk_columns(folder: Path, split: str) -> list[str] | None:
    target = folder
    if (folder / "dataset_dict.json").is_file():
        target = folder / split
    info = target / "dataset_info.json"
    if not info.is_file():
        return None
    features = json.loads(info.read_text(encoding="utf-8")).get("features")
    return list(features) if isinstance(features, dict) else None


def _imagefolder_columns(folder: Path) -> list[str] | None:
    meta = next(iter(sorted(folder.rglob("metadata.csv"))), None)
    if meta is not None:
        cols = _csv_header(meta)
    else:
        meta = next(iter(sorted(folder.rglob("metadata.jsonl"))), None)
        if meta is None:
            return None
        cols = _jsonl_keys(meta)
    return ["image" if c == "file_name" else c for c in cols]
