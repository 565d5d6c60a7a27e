"""Local data files and folders through `datasets`, with the broken line named on failure.

Media are never decoded here: image/video features are cast to decode=False (`undecoded`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmctl.data.sources import FILE_FORMATS, data_error, first_line, quiet
from vlmctl.errors import DataError


def _json_error(path: Path) -> DataError | None:
    """Re-read a JSON/JSONL file with `json` to say which line is broken (on failure only)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return data_error(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            return data_error(
                f"invalid JSON: {exc.msg} (column {exc.colno})",
                "fix the file (a JSON list of objects, or one object per line)",
                file=path,
                line=exc.lineno,
            )
        return None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            return data_error(
                f"invalid JSON line: {exc.msg} (column {exc.colno})",
                "each line of a JSON-lines file must be one complete JSON object",
                file=path,
                line=lineno,
            )
        if not isinstance(value, dict):
            return data_error(
                f"expected a JSON object per line, got {type(value).__name__}",
                file=path,
                line=lineno,
            )
    return None


def _read_json_records(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        records = json.loads(text)
    else:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not all(isinstance(r, dict) for r in records):
        raise data_error("expected a JSON list of objects (one object per row)", file=path)
    return records


def _json_fallback(files: list[Path]) -> tuple[Any, list[str]]:
    """Load JSON whose columns mix types (str vs list, str vs parts) that Arrow refuses.

    Columns Arrow cannot type are kept as text: strings as they are (a path stays a path, no
    JSON quotes), lists and objects as JSON text, which `data/chat.py` and `data/messages.py`
    parse back in conversation and media columns, so such rows still work.
    """
    import datasets
    import pyarrow as pa

    records: list[dict] = []
    for f in files:
        records.extend(_read_json_records(f))
    columns: dict[str, list] = {}
    for r in records:
        for k in r:
            columns.setdefault(k, [])
    for k in columns:
        columns[k] = [r.get(k) for r in records]
    as_text = []
    for k, values in columns.items():
        try:
            pa.array(values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            columns[k] = [
                v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False)
                for v in values
            ]
            as_text.append(k)
    return datasets.Dataset.from_dict(columns), as_text


def _csv_error(path: Path, exc: BaseException) -> DataError:
    if isinstance(exc, PermissionError) or isinstance(exc.__cause__, PermissionError):
        return data_error(
            "permission denied", "let this user read the file (e.g. chmod a+r)", file=path
        )
    text = str(exc)
    import re

    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if m:
        return data_error(
            f"bad CSV: expected {m.group(1)} fields, saw {m.group(3)}",
            "quote fields that contain the delimiter or a newline",
            file=path,
            line=int(m.group(2)),
        )
    return data_error(
        f"cannot read CSV: {first_line(exc)}",
        "check that it is a comma-separated text file with a header row",
        file=path,
    )


def load_files(kind: str, files: list[Path] | dict[str, list[Path]]) -> tuple[Any, list[str]]:
    """Load data files with the `datasets` builder for their kind -> (DatasetDict, notes)."""
    import datasets

    data_files = files if isinstance(files, dict) else {"train": files}
    flat = [f for fs in data_files.values() for f in fs]
    kwargs: dict[str, Any] = {}
    if kind == "csv" and all(f.suffix.lower() == ".tsv" for f in flat):
        kwargs["sep"] = "\t"
    try:
        with quiet():
            dd = datasets.load_dataset(
                kind, data_files={k: [str(f) for f in v] for k, v in data_files.items()}, **kwargs
            )
        return dd, []
    except Exception as exc:
        cause = exc
        while cause.__cause__ is not None or cause.__context__ is not None:
            nxt = cause.__cause__ or cause.__context__
            if nxt is cause:
                break
            cause = nxt
        if kind == "json":
            for f in flat:
                err = _json_error(f)
                if err is not None:
                    raise err from None
            # Valid JSON that Arrow cannot type (mixed str/list values): load it ourselves.
            out = {}
            notes: list[str] = []
            for split, fs in data_files.items():
                out[split], as_text = _json_fallback(fs)
                if as_text:
                    notes.append(f"columns kept as JSON text (mixed types): {', '.join(as_text)}")
            return datasets.DatasetDict(out), sorted(set(notes))
        if "corresponds to no data" in str(cause):
            raise data_error(
                "the file has no rows",
                "check the file (a header only?)",
                file=flat[0] if len(flat) == 1 else flat[0].parent,
            ) from None
        if kind == "csv":
            raise _csv_error(flat[0] if len(flat) == 1 else flat[0].parent, cause) from None
        if isinstance(cause, PermissionError):
            raise data_error(
                "permission denied",
                "let this user read the file (e.g. chmod a+r)",
                file=flat[0] if len(flat) == 1 else flat[0].parent,
            ) from None
        raise data_error(
            f"cannot read {kind} data: {first_line(cause)}",
            f"check that the file is valid {kind} (re-export it), or set dataset.format",
            file=flat[0] if len(flat) == 1 else flat[0].parent,
        ) from None


def folder_files(folder: Path, kind: str) -> dict[str, list[Path]]:
    """Split name -> files, from file names (train*, test*, valid*/eval*/dev*), else all train."""
    exts = {e for e, k in FILE_FORMATS.items() if k == kind}
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in exts)
    splits: dict[str, list[Path]] = {}
    aliases = {
        "train": ("train", "training"),
        "validation": ("validation", "valid", "val", "dev", "eval"),
        "test": ("test", "testing"),
    }
    for f in files:
        words = [f.stem.lower(), *(p.name.lower() for p in f.relative_to(folder).parents)]
        split = "train"
        for name, keys in aliases.items():
            if any(w.split("-")[0].split("_")[0].split(".")[0] in keys for w in words if w):
                split = name
                break
        splits.setdefault(split, []).append(f)
    return splits


def load_disk(folder: Path) -> Any:
    """A folder written by save_to_disk."""
    import datasets

    try:
        with quiet():
            return datasets.load_from_disk(str(folder))
    except Exception as exc:
        raise data_error(
            f"cannot read saved dataset: {first_line(exc)}",
            "the folder must be written by Dataset.save_to_disk or DatasetDict.save_to_disk",
            file=folder,
        ) from None


def load_imagefolder(folder: Path) -> Any:
    """A folder of images with a metadata file."""
    import datasets

    try:
        with quiet():
            return datasets.load_dataset("imagefolder", data_dir=str(folder))
    except Exception as exc:
        raise data_error(
            f"cannot read image folder: {first_line(exc)}",
            "metadata.csv/metadata.jsonl needs a file_name column naming images in the folder",
            file=folder,
        ) from None


def _no_decode(feature: Any) -> tuple[Any, bool]:
    """The feature with every Image/Video set to decode=False; True when something changed."""
    import datasets

    if isinstance(feature, datasets.Image):
        return (datasets.Image(decode=False), True) if feature.decode else (feature, False)
    if isinstance(feature, datasets.Video):
        return (datasets.Video(decode=False), True) if feature.decode else (feature, False)
    if isinstance(feature, dict):
        changed = False
        out = {}
        for k, v in feature.items():
            out[k], c = _no_decode(v)
            changed |= c
        return (type(feature)(out) if isinstance(feature, datasets.Features) else out), changed
    if isinstance(feature, (list, tuple)) and len(feature) == 1:
        inner, c = _no_decode(feature[0])
        return [inner], c
    for cls_name in ("List", "LargeList", "Sequence"):
        cls = getattr(datasets, cls_name, None)
        if cls is not None and isinstance(feature, cls):
            inner, c = _no_decode(feature.feature)
            if not c:
                return feature, False
            kwargs = {"length": feature.length} if hasattr(feature, "length") else {}
            return cls(inner, **kwargs), True
    return feature, False


def undecoded(ds: Any) -> Any:
    """Cast image/video columns (also nested in lists) to decode=False -> `{bytes, path}` dicts."""
    if ds is None or getattr(ds, "features", None) is None:
        return ds
    for name, feat in ds.features.items():
        new, changed = _no_decode(feat)
        if changed:
            ds = ds.cast_column(name, new)
    return ds
