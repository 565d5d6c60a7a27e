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

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmctl.data.files import (
    folder_files,
    load_disk,
    load_files,
    load_imagefolder,
    undecoded,
)
from vlmctl.data.hub import load_hub
from vlmctl.data.sources import data_error, resolve_source

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


def _media_roots(value: str | list[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _pick_split(dd: Any, split: str, what: str, source: Any) -> Any:
    if split in dd:
        return dd[split]
    hint = f"set dataset.{what}_split to one of them"
    if what == "eval" and list(dd.keys()) == ["train"]:
        hint = "a single file is one 'train' split: use dataset.eval_size or dataset.eval_path"
    raise data_error(
        f"{what} split {split!r} not in the dataset (splits: {', '.join(dd.keys()) or 'none'})",
        hint,
        file=source if isinstance(source, Path) else None,
    )


def _load_dict(kind: str, location: Path | str, cfg) -> tuple[Any, list[str]]:
    """(DatasetDict-like, notes) for any source kind."""
    import datasets

    if kind == "hub":
        dd = load_hub(str(location), cfg)
        notes: list[str] = []
    elif kind == "disk":
        dd = load_disk(Path(location))
        if isinstance(dd, datasets.Dataset):
            dd = datasets.DatasetDict({"train": dd})
        notes = []
    elif kind == "imagefolder":
        dd, notes = load_imagefolder(Path(location)), []
    elif kind.startswith("folder:"):
        files = folder_files(Path(location), kind.split(":", 1)[1])
        dd, notes = load_files(kind.split(":", 1)[1], files)
    else:
        dd, notes = load_files(kind, [Path(location)])
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

    eval_path = getattr(ds_cfg, "eval_path", None)
    eval_ds, eval_note = _eval_split(cfg, config_dir, dd, location, notes)

    n = _rows(train)
    if row_index_column and n:
        train = train.add_column(row_index_column, list(range(n)))
        if eval_ds is not None and _rows(eval_ds):
            eval_ds = eval_ds.add_column(row_index_column, list(range(_rows(eval_ds))))
    if n == 0:
        raise data_error(
            f"the {ds_cfg.train_split!r} split has no rows",
            "check the file (a header only?) or the split name",
            file=location if isinstance(location, Path) else None,
        )
    if eval_ds is not None and _rows(eval_ds) == 0:
        raise data_error("the eval split has no rows", "drop eval_split/eval_path or fill it")

    if eval_ds is None and ds_cfg.eval_size:
        if n is None or n < 2:
            raise data_error(
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
        media_dirs=_media_dirs(ds_cfg, config_dir, location, eval_path),
        description=desc,
        kind=kind.split(":")[-1],
        source=location,
    )


def _eval_split(cfg, config_dir: Path, dd: Any, location: Any, notes: list[str]):
    """(eval split or None, its description) from eval_path or eval_split; adds eval_path's
    loader notes to `notes`. eval_size is carved out later, after the row index is added."""
    ds_cfg = cfg.dataset
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
        return eval_ds, f"eval: {_rows(eval_ds)} rows from {eloc}"
    if ds_cfg.eval_split:
        eval_ds = _pick_split(dd, ds_cfg.eval_split, "eval", location)
        return eval_ds, f"eval: split {ds_cfg.eval_split!r}, {_rows(eval_ds)} rows"
    return None, ""


def _media_dirs(ds_cfg, config_dir: Path, location: Any, eval_path: str | None) -> list[Path]:
    """Folders relative media paths resolve against: media roots, then the data's folders."""
    media_dirs: list[Path] = []
    for root in _media_roots(ds_cfg.media_root):
        media_dirs.append((config_dir / Path(root).expanduser()).resolve())
    if isinstance(location, Path):
        media_dirs.append(location.parent if location.is_file() else location)
    if eval_path:
        eloc = (config_dir / Path(eval_path).expanduser()).resolve()
        media_dirs.append(eloc.parent if eloc.is_file() else eloc)
    return list(dict.fromkeys(media_dirs))


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
