"""Where the rows come from: local files, folders, saved datasets, or the hub.

`load_splits(cfg, config_dir)` turns `collator.dataset` into a train split, an optional eval split
and the folders relative media paths resolve against. Media are never decoded here: image
columns are cast to `Image(decode=False)` (rows hold `{"bytes", "path"}` dicts) so `validate`
stays cheap and every image goes through `vlmctl.media` the same way.

Sources (`dataset.format`, `auto` picks by extension / folder content):
- `csv`, `json` (a JSON list or JSON lines), `jsonl`, `parquet`: one file, or a folder of such
  files (split names from file names, like `datasets` does: train.jsonl, test.jsonl, ...);
- `imagefolder`: a folder of images with `metadata.csv`/`metadata.jsonl` (`file_name` column);
- `disk`: a folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk`;
- `hub`: a hub dataset id through `datasets.load_dataset` (cache only when the hub is
  unreachable: one DataError line, no retries).
A single file is the `train` split; `eval_path` names a separate eval file, `eval_size` holds a
seeded fraction of train out when there is no eval split.

Every failure is a `DataError` with one finding: the file (and line for bad JSON/CSV), what is
wrong, and a fix.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

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
DEFAULT_SEED = 42
_BATCH = 256


@dataclass
class LoadedData:
    """The splits to train/evaluate on and where their relative media paths resolve."""

    train: Any  # datasets.Dataset
    eval: Any | None  # datasets.Dataset | None
    media_dirs: list[Path] = field(default_factory=list)
    description: str = ""
    kind: str = ""  # csv | json | parquet | imagefolder | disk | hub
    source: Path | str | None = None  # the resolved local path, or the hub id


def _err(message: str, hint: str | None = None, *, file=None, line=None, key="dataset.path"):
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


# ---------------------------------------------------------------------------------------------
# resolving what `dataset.path` points at


def _media_roots(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


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
        raise _err(
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
        raise _err(
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
            raise _err(
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
        raise _err(
            f"{folder} holds several data formats ({', '.join(sorted(data))})",
            "point dataset.path at one file, or set dataset.format",
            file=folder,
        )
    if any(p.suffix.lower() in IMAGE_EXTS for p in names):
        return "imagefolder"
    raise _err(
        f"no data files in {folder}",
        "expected csv/json/jsonl/parquet files, images with metadata.csv, or a save_to_disk folder",
        file=folder,
    )


# ---------------------------------------------------------------------------------------------
# quiet, offline-safe calls into `datasets`


@contextlib.contextmanager
def _quiet():
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


def env_offline() -> bool:
    """True when any Hugging Face offline variable is set (hub, datasets or transformers)."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return True
    return False


def hub_reachable(timeout: float = 1.5) -> bool:
    """One TCP connect to the hub (or the HTTPS proxy): cheap, so offline never waits on retries."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname
    if not host:
        return False
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _forced_offline():
    """Make `datasets`/`huggingface_hub` use the cache only (they read the env at import)."""
    import datasets.config
    import huggingface_hub.constants as hc

    saved = (datasets.config.HF_HUB_OFFLINE, hc.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = True
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hc.HF_HUB_OFFLINE = saved


def _load_hub(hub_id: str, cfg) -> Any:
    import datasets

    offline = env_offline() or not hub_reachable()
    ctx = _forced_offline() if offline else contextlib.nullcontext()
    try:
        with ctx, _quiet():
            return datasets.load_dataset(hub_id, cfg.dataset.name)
    except DataError:
        raise
    except Exception as exc:
        if offline:
            raise _err(
                f"dataset {hub_id!r} not found locally and the hub is unreachable (offline)",
                "download it first (datasets cache) or point dataset.path at a local file",
            ) from None
        raise _err(
            f"cannot load hub dataset {hub_id!r}: {_first_line(exc)}",
            "check the id (and dataset.name for datasets with several configs), or log in "
            "for gated/private datasets",
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# local files


def _json_error(path: Path) -> DataError | None:
    """Re-read a JSON/JSONL file with `json` to say which line is broken (on failure only)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        return _err(f"not UTF-8 text ({exc.reason} at byte {exc.start})", file=path)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            json.loads(text)
        except json.JSONDecodeError as exc:
            return _err(
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
            return _err(
                f"invalid JSON line: {exc.msg} (column {exc.colno})",
                "each line of a JSON-lines file must be one complete JSON object",
                file=path,
                line=lineno,
            )
        if not isinstance(value, dict):
            return _err(
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
        raise _err("expected a JSON list of objects (one object per row)", file=path)
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
        return _err("permission denied", "let this user read the file (e.g. chmod a+r)", file=path)
    text = str(exc)
    import re

    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if m:
        return _err(
            f"bad CSV: expected {m.group(1)} fields, saw {m.group(3)}",
            "quote fields that contain the delimiter or a newline",
            file=path,
            line=int(m.group(2)),
        )
    return _err(
        f"cannot read CSV: {_first_line(exc)}",
        "check that it is a comma-separated text file with a header row",
        file=path,
    )


def _load_files(kind: str, files: list[Path] | dict[str, list[Path]]) -> tuple[Any, list[str]]:
    """Load data files with the `datasets` builder for their kind -> (DatasetDict, notes)."""
    import datasets

    data_files = files if isinstance(files, dict) else {"train": files}
    flat = [f for fs in data_files.values() for f in fs]
    kwargs: dict[str, Any] = {}
    if kind == "csv" and all(f.suffix.lower() == ".tsv" for f in flat):
        kwargs["sep"] = "\t"
    try:
        with _quiet():
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
            raise _err(
                "the file has no rows",
                "check the file (a header only?)",
                file=flat[0] if len(flat) == 1 else flat[0].parent,
            ) from None
        if kind == "csv":
            raise _csv_error(flat[0] if len(flat) == 1 else flat[0].parent, cause) from None
        if isinstance(cause, PermissionError):
            raise _err(
                "permission denied",
                "let this user read the file (e.g. chmod a+r)",
                file=flat[0] if len(flat) == 1 else flat[0].parent,
            ) from None
        raise _err(
            f"cannot read {kind} data: {_first_line(cause)}",
            f"check that the file is valid {kind} (re-export it), or set dataset.format",
            file=flat[0] if len(flat) == 1 else flat[0].parent,
        ) from None


def _folder_files(folder: Path, kind: str) -> dict[str, list[Path]]:
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


def _load_disk(folder: Path) -> Any:
    import datasets

    try:
        with _quiet():
            return datasets.load_from_disk(str(folder))
    except Exception as exc:
        raise _err(
            f"cannot read saved dataset: {_first_line(exc)}",
            "the folder must be written by Dataset.save_to_disk or DatasetDict.save_to_disk",
            file=folder,
        ) from None


def _load_imagefolder(folder: Path) -> Any:
    import datasets

    try:
        with _quiet():
            return datasets.load_dataset("imagefolder", data_dir=str(folder))
    except Exception as exc:
        raise _err(
            f"cannot read image folder: {_first_line(exc)}",
            "metadata.csv/metadata.jsonl needs a file_name column naming images in the folder",
            file=folder,
        ) from None


# ---------------------------------------------------------------------------------------------
# media features: never decode in the loader


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


# ---------------------------------------------------------------------------------------------
# public API


def _pick_split(dd: Any, split: str, what: str, source: Any) -> Any:
    if split in dd:
        return dd[split]
    hint = f"set dataset.{what}_split to one of them"
    if what == "eval" and list(dd.keys()) == ["train"]:
        hint = "a single file is one 'train' split: use dataset.eval_size or dataset.eval_path"
    raise _err(
        f"{what} split {split!r} not in the dataset (splits: {', '.join(dd.keys()) or 'none'})",
        hint,
        file=source if isinstance(source, Path) else None,
    )


def _load_dict(kind: str, location: Path | str, cfg) -> tuple[Any, list[str]]:
    """(DatasetDict-like, notes) for any source kind."""
    import datasets

    if kind == "hub":
        dd = _load_hub(str(location), cfg)
        notes: list[str] = []
    elif kind == "disk":
        dd = _load_disk(Path(location))
        if isinstance(dd, datasets.Dataset):
            dd = datasets.DatasetDict({"train": dd})
        notes = []
    elif kind == "imagefolder":
        dd, notes = _load_imagefolder(Path(location)), []
    elif kind.startswith("folder:"):
        files = _folder_files(Path(location), kind.split(":", 1)[1])
        dd, notes = _load_files(kind.split(":", 1)[1], files)
    else:
        dd, notes = _load_files(kind, [Path(location)])
    if isinstance(dd, (datasets.Dataset, datasets.IterableDataset)):
        dd = {"train": dd}
    return dd, notes


def _rows(ds: Any) -> int | None:
    try:
        return len(ds)
    except TypeError:
        return None


def load_splits(
    cfg, config_dir: Path, *, seed: int = DEFAULT_SEED, row_index_column: str | None = None
) -> LoadedData:
    """Load `cfg.dataset` -> train split, optional eval split, media folders, a description.

    Paths are relative to `config_dir`. Raises DataError (one clear line) for a missing file or
    split, an empty dataset, an unreadable file, or a hub id that cannot be loaded.
    `row_index_column` (train): each row's index in its file, added before any eval split is
    carved out, so an error during training names the row `validate` would name.
    """
    ds_cfg = cfg.dataset
    config_dir = Path(config_dir)
    kind, location = resolve_source(cfg, config_dir)
    dd, notes = _load_dict(kind, location, cfg)
    train = _pick_split(dd, ds_cfg.train_split, "train", location)

    eval_ds = None
    eval_note = ""
    eval_path = getattr(ds_cfg, "eval_path", None)
    if eval_path:
        sub = cfg.model_copy(
            update={"dataset": ds_cfg.model_copy(update={"path": eval_path, "eval_path": None})}
        )
        ekind, eloc = resolve_source(sub, config_dir, key="dataset.eval_path")
        edd, enotes = _load_dict(ekind, eloc, sub)
        notes += enotes
        split = ds_cfg.eval_split or ("train" if "train" in edd else next(iter(edd)))
        eval_ds = _pick_split(edd, split, "eval", eloc)
        eval_note = f"eval: {_rows(eval_ds)} rows from {eloc}"
    elif ds_cfg.eval_split:
        eval_ds = _pick_split(dd, ds_cfg.eval_split, "eval", location)
        eval_note = f"eval: split {ds_cfg.eval_split!r}, {_rows(eval_ds)} rows"

    n = _rows(train)
    if row_index_column and n:
        train = train.add_column(row_index_column, list(range(n)))
        if eval_ds is not None and _rows(eval_ds):
            eval_ds = eval_ds.add_column(row_index_column, list(range(_rows(eval_ds))))
    if n == 0:
        raise _err(
            f"the {ds_cfg.train_split!r} split has no rows",
            "check the file (a header only?) or the split name",
            file=location if isinstance(location, Path) else None,
        )
    if eval_ds is not None and _rows(eval_ds) == 0:
        raise _err("the eval split has no rows", "drop eval_split/eval_path or fill it")

    if eval_ds is None and ds_cfg.eval_size:
        if n is None or n < 2:
            raise _err(
                f"eval_size needs at least 2 rows to split, the train split has {n}",
                "set dataset.eval_size: null",
            )
        parts = train.train_test_split(test_size=ds_cfg.eval_size, seed=seed, shuffle=True)
        train, eval_ds = parts["train"], parts["test"]
        eval_note = (
            f"eval: {len(eval_ds)} rows held out (eval_size {ds_cfg.eval_size}, seed {seed})"
        )
    elif ds_cfg.eval_size and eval_ds is not None:
        notes.append("eval_size ignored: an eval split is given")

    train, eval_ds = undecoded(train), undecoded(eval_ds)

    media_dirs: list[Path] = []
    for root in _media_roots(ds_cfg.media_root):
        media_dirs.append((config_dir / Path(root).expanduser()).resolve())
    if isinstance(location, Path):
        media_dirs.append(location.parent if location.is_file() else location)
    if eval_path:
        eloc = (config_dir / Path(eval_path).expanduser()).resolve()
        media_dirs.append(eloc.parent if eloc.is_file() else eloc)
    media_dirs = list(dict.fromkeys(media_dirs))

    what = {"hub": "hub dataset", "disk": "saved dataset", "imagefolder": "image folder"}.get(
        kind, f"{kind.split(':')[-1]} {'folder' if kind.startswith('folder:') else 'file'}"
    )
    desc = f"{what} {location}: {_rows(train)} train rows"
    if eval_note:
        desc += f"; {eval_note}"
    if notes:
        desc += "; " + "; ".join(notes)
    return LoadedData(
        train=train,
        eval=eval_ds,
        media_dirs=media_dirs,
        description=desc,
        kind=kind.split(":")[-1],
        source=location,
    )


def iter_rows(
    dataset: Any, sample: int | None = None, seed: int = DEFAULT_SEED
) -> Iterator[tuple[int, dict]]:
    """Yield (row index, row dict), all rows or a seeded random `sample` of them, in batches.

    Rows are read `_BATCH` at a time from Arrow, never all at once, so validating a large
    dataset keeps memory flat. Indices refer to the split given.
    """
    n = _rows(dataset)
    if n is None:  # IterableDataset: no random access; sample from a shuffle buffer
        it = dataset.shuffle(seed=seed, buffer_size=1000) if sample else dataset
        for i, row in enumerate(it):
            if sample is not None and i >= sample:
                return
            yield i, row
        return
    if sample is not None and sample < n:
        indices = sorted(random.Random(seed).sample(range(n), sample))
    else:
        indices = None
    if indices is None:
        for start in range(0, n, _BATCH):
            batch = dataset[start : start + _BATCH]
            yield from _unbatch(batch, range(start, min(start + _BATCH, n)))
    else:
        for start in range(0, len(indices), _BATCH):
            chunk = indices[start : start + _BATCH]
            yield from _unbatch(dataset[chunk], chunk)


def _unbatch(batch: dict[str, list], indices) -> Iterator[tuple[int, dict]]:
    keys = list(batch)
    for j, idx in enumerate(indices):
        yield idx, {k: batch[k][j] for k in keys}
