"""The one runtime assembly: config set -> model location -> model_type -> processor -> splits
-> collator, the same way for every verb that builds batches.

validate's dataset pass, preview, the training worker, merge's verify, `vlmctl eval`, the demo
and the benchmarks all go through here, so "where is the model", "which family is it", "how is
its processor loaded", "is the hub reachable" and "which rows" have one answer each:

- `locate(cs)` -> `ModelSite`: the resolution (entry | Auto | remote code), the location
  (a local folder made absolute, else the hub id) and `model_type` read from config.json
  (the folder or the hub cache; never downloaded);
- `load_processor(cs, site)` raises; `try_processor(cs, site)` returns one finding instead (a
  hub id that is not reachable is a warning, a broken local folder an error) and never imports
  a config's `import_path` (validate and preview run on untrusted config sets);
- `processor_from_folder(folder, trust)`: the processor a run or merged folder holds;
- `file_rows(cs)`: the dataset config with `eval_size` off (validate and preview show the
  file's own rows); `load_data(cs, ...)` the splits;
- `build_collator(...)`: the ONE collator over them;
- `assemble(cs, ...)`: all of it at once (preview, benchmarks).

Nothing heavy is imported at module level (`vlmctl --help` stays light).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmctl.errors import DataError, Finding, VlmctlError


def config_file(path: str | Path, revision: str | None = None) -> Path | None:
    """The model's config.json: in the folder, else in the hub cache; never downloads."""
    cfg_file: Path | None = Path(path) / "config.json"
    if Path(path).is_dir():
        return cfg_file if cfg_file.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(str(path), "config.json", revision=revision)
        cfg_file = Path(cached) if isinstance(cached, str) else None
    except Exception:  # noqa: BLE001 - not a repo id: no config
        cfg_file = None
    return cfg_file if cfg_file is not None and cfg_file.is_file() else None


def read_config(path: str | Path, revision: str | None = None) -> dict | None:
    """config.json as a dict (None when absent, unreadable or not an object)."""
    cfg_file = config_file(path, revision)
    if cfg_file is None:
        return None
    try:
        data = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def model_type_of(path: str | Path, revision: str | None = None) -> str | None:
    """`model_type` from config.json (local folder or the hub cache); never downloads."""
    return (read_config(path, revision) or {}).get("model_type")


# --- offline / cached / reachable: answered here ----------------------------------------------


def offline() -> bool:
    """The user asked for offline (any Hugging Face offline variable)."""
    from vlmctl.data.hub import env_offline

    return env_offline()


def hub_usable() -> bool:
    """Not offline, and one cheap TCP probe reaches the hub (or the HTTPS proxy)."""
    from vlmctl.data.hub import hub_reachable

    return not offline() and hub_reachable()


def in_hub_cache(model_id: str, revision: str | None) -> bool:
    """True when the hub cache holds the model's config (no network, no transformers import);
    also True for a malformed id (the loader's error to report)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return True
    for name in ("config.json", "preprocessor_config.json", "processor_config.json"):
        try:
            if isinstance(try_to_load_from_cache(model_id, name, revision=revision), str):
                return True
        except Exception:  # noqa: BLE001 - a malformed id is the loader's error to report
            return True
    return False


@contextlib.contextmanager
def hub_cache_only_if_unreachable(local: bool) -> Iterator[None]:
    """For hub ids: use the cache only when the hub cannot be reached (no retry storms)."""
    if local or offline() or hub_usable():
        yield
        return
    import huggingface_hub.constants as hc

    saved = hc.HF_HUB_OFFLINE
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = saved


# --- model and processor -----------------------------------------------------------------------


@dataclass
class ModelSite:
    """Where the model is and what it is, without loading it."""

    resolution: Any  # models.resolve.Resolution
    path: str  # local folder (absolute) or hub id
    model_type: str | None  # config.json's model_type: the collator's family switch

    @property
    def local(self) -> bool:
        """The model is a folder on this machine (no hub access needed)."""
        return Path(self.path).exists()


def locate(cs: Any, resolution: Any = None) -> ModelSite:
    """The config set's model: resolution, location and family (ConfigError when it does not
    resolve)."""
    from vlmctl.models.resolve import resolve_model

    res = resolution if resolution is not None else resolve_model(cs.model)
    path = cs.model_location()
    return ModelSite(res, path, model_type_of(path, cs.model.revision))


def load_processor(cs: Any, site: ModelSite, *, import_modules: bool = True) -> Any:
    """The processor `train` uses (`processor_params`, the entry's class); raises on failure."""
    from vlmctl.models.resolve import load_processor as load

    return load(site.resolution, cs.model, site.path, import_modules=import_modules)


def try_processor(cs: Any, site: ModelSite) -> tuple[Any | None, Finding | None]:
    """(processor, None), or (None, one finding saying why it cannot be loaded).

    A hub id that is not cached while offline (or needs credentials) is a warning: every check
    that does not need the processor still runs. A local folder that fails to load is an error.
    A config's own `import_path` is never imported here (AutoProcessor reads the checkpoint).
    """
    from vlmctl.quiet import quiet_transformers

    try:
        with quiet_transformers(), hub_cache_only_if_unreachable(site.local):
            return load_processor(cs, site, import_modules=False), None
    except VlmctlError as exc:
        return None, exc.findings[0]
    except Exception as exc:  # noqa: BLE001 - any load failure becomes one line
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if site.local:
            return None, cs.finding(
                "error",
                "model",
                "model_name_or_path",
                f"cannot load the processor from {site.path}: {text}",
                hint="the folder needs the processor files (save_pretrained of the processor)",
                code="processor-load",
            )
        return None, cs.finding(
            "warning",
            "model",
            "model_name_or_path",
            f"processor for {site.path!r} not reachable (offline, not cached, or needs "
            "credentials): token lengths, media decoding by the processor and masking are "
            "not checked",
            hint="run once with network access (or `hf auth login` for gated models), or point "
            "model_name_or_path at a local folder",
            code="processor-unreachable",
        )


def processor_or_error(cs: Any, site: ModelSite) -> Any:
    """`try_processor`, with its finding raised as a DataError (preview, benchmarks)."""
    processor, problem = try_processor(cs, site)
    if processor is None:
        assert problem is not None
        problem.severity = "error"
        raise DataError(problem)
    return processor


def processor_from_folder(folder: str | Path, trust_remote_code: bool) -> Any:
    """The processor a run folder, a merged model or a base folder holds (vlmctl's adapter
    for InternVL2, which ships none)."""
    from transformers import AutoProcessor

    from vlmctl.models.internvl_chat import wrap_processor

    return wrap_processor(
        AutoProcessor.from_pretrained(str(folder), trust_remote_code=trust_remote_code),
        str(folder),
    )


# --- rows ----------------------------------------------------------------------------------------


def file_rows(collator_cfg: Any) -> Any:
    """The collator config with `eval_size` off: the dataset file's own rows, numbered as in
    the file (validate and preview say "row N" the way a user finds it)."""
    ds = collator_cfg.dataset.model_copy(update={"eval_size": None})
    return collator_cfg.model_copy(update={"dataset": ds})


@contextlib.contextmanager
def private_datasets_cache() -> Iterator[Path]:
    """Point `datasets` at a temporary cache folder, removed on exit (validate writes nothing).

    `datasets` builds Arrow files for csv/json/parquet even with keep_in_memory; building them
    in a private folder keeps them memory-mapped (flat RSS for big files) and the user's cache
    untouched. Caching of transforms is off too.
    """
    import datasets
    import datasets.config as dc

    tmp = Path(tempfile.mkdtemp(prefix="vlmctl-validate-"))
    names = ("HF_DATASETS_CACHE", "DOWNLOADED_DATASETS_PATH", "EXTRACTED_DATASETS_PATH")
    saved = {n: getattr(dc, n) for n in names}
    was_caching = datasets.is_caching_enabled()
    dc.HF_DATASETS_CACHE = tmp
    dc.DOWNLOADED_DATASETS_PATH = tmp / "downloads"
    dc.EXTRACTED_DATASETS_PATH = tmp / "downloads" / "extracted"
    datasets.disable_caching()
    try:
        yield tmp
    finally:
        for n, v in saved.items():
            setattr(dc, n, v)
        if was_caching:
            datasets.enable_caching()
        shutil.rmtree(tmp, ignore_errors=True)


def load_data(
    cs: Any,
    *,
    whole_file: bool = False,
    seed: int | None = None,
    row_index_column: str | None = None,
) -> Any:
    """The config set's splits (`LoadedData`); `whole_file`: the file's own rows only."""
    from vlmctl.data.dataset import DEFAULT_SEED, load_splits

    cfg = file_rows(cs.collator) if whole_file else cs.collator
    seed = DEFAULT_SEED if seed is None else seed
    return load_splits(cfg, cs.dir, seed=seed, row_index_column=row_index_column)


def build_collator(
    processor: Any, collator_cfg: Any, media_dirs: Any, model_type: str | None
) -> Any:
    """The ONE collator (`VLMCollator`) over this processor and these media folders."""
    from vlmctl.collate import VLMCollator

    return VLMCollator(processor, collator_cfg, media_dirs, model_type=model_type)


# --- all at once -------------------------------------------------------------------------------


@dataclass
class Assembly:
    """Everything a batch is built from."""

    cs: Any
    site: ModelSite
    processor: Any
    data: Any  # LoadedData
    collator: Any  # VLMCollator


def assemble(cs: Any, *, whole_file: bool = True, seed: int | None = None) -> Assembly:
    """Model site, processor (a failure is one DataError line), splits and collator, in that
    order. Call inside `private_datasets_cache()` to write nothing."""
    site = locate(cs)
    processor = processor_or_error(cs, site)
    data = load_data(cs, whole_file=whole_file, seed=seed)
    from vlmctl.quiet import quiet_transformers

    with quiet_transformers():
        collator = build_collator(processor, cs.collator, data.media_dirs, site.model_type)
    return Assembly(cs, site, processor, data, collator)
