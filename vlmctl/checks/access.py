"""What the dataset checks (and preview) need before any row: the model's type, the processor
(or one line saying why it cannot load), and the dataset loaded into a private cache that is
removed afterwards (validate writes nothing)."""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from vlmctl.errors import ConfigError, DataError, Finding, VlmctlError


def model_type_of(path: str, revision: str | None = None) -> str | None:
    """`model_type` from config.json (local folder or the hub cache); never downloads."""
    cfg_file: Path | None = Path(path) / "config.json"
    if not cfg_file.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(path, "config.json", revision=revision)
            cfg_file = Path(cached) if isinstance(cached, str) else None
        except Exception:  # noqa: BLE001 - not a repo id: no model_type, the collator copes
            cfg_file = None
    if cfg_file is None or not cfg_file.is_file():
        return None
    try:
        return json.loads(cfg_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No info/warning chatter from transformers while vlmctl owns the output."""
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)


def load_processor_for(cs: Any, res: Any) -> tuple[Any | None, Finding | None]:
    """(processor, None), or (None, one finding saying why it cannot be loaded).

    A hub id that is not cached while offline (or needs credentials) is a warning: every check
    that does not need the processor still runs. A local folder that fails to load is an error.
    """
    from vlmctl.models.resolve import load_processor

    path = cs.model_location()
    local = Path(path).exists()
    try:
        with quiet_transformers(), _hf_offline_if_unreachable(local):
            return load_processor(res, cs.model, path, import_modules=False), None
    except VlmctlError as exc:
        return None, exc.findings[0]
    except Exception as exc:  # noqa: BLE001 - any load failure becomes one line
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if local:
            return None, cs.finding(
                "error",
                "model",
                "model_name_or_path",
                f"cannot load the processor from {path}: {text}",
                hint="the folder needs the processor files (save_pretrained of the processor)",
                code="processor-load",
            )
        return None, cs.finding(
            "warning",
            "model",
            "model_name_or_path",
            f"processor for {path!r} not reachable (offline, not cached, or needs credentials): "
            "token lengths, media decoding by the processor and masking are not checked",
            hint="run once with network access (or `hf auth login` for gated models), or point "
            "model_name_or_path at a local folder",
            code="processor-unreachable",
        )


@contextlib.contextmanager
def _hf_offline_if_unreachable(local: bool) -> Iterator[None]:
    """For hub ids: use the cache only when the hub cannot be reached (no retry storms)."""
    if local:
        yield
        return
    from vlmctl.data.hub import env_offline, hub_reachable

    if env_offline() or hub_reachable():
        yield
        return
    import huggingface_hub.constants as hc

    saved = hc.HF_HUB_OFFLINE
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = saved


def model_section(cs: Any, findings: list[Finding]) -> tuple[dict, Any]:
    from vlmctl.models.resolve import resolve_model

    try:
        res = resolve_model(cs.model)
    except ConfigError as exc:  # also a config-level finding; say why the processor is skipped
        return {"resolved": False, "reason": exc.findings[0].message}, None
    section = {
        "resolved": True,
        "model_id": res.model_id,
        "model_class": res.model_class,
        "processor_class": res.processor_class,
        "import_path": res.import_path,
        "source": res.source,
        "reason": res.reason,
        "remote_code": res.source == "remote_code" or res.trust_remote_code,
        "processor_loaded": False,
    }
    if res.import_path != "transformers":
        findings.append(
            cs.finding(
                "info",
                "model",
                ("model_classes", res.model_id, "import_path"),
                f"{res.import_path} is not imported by validate (importing runs its code): "
                "token lengths are measured with AutoProcessor",
                code="import-not-run",
            )
        )
    # The config checks already say how the model resolves; remote code is worth a line here
    # because the processor below runs the checkpoint's code.
    if res.source == "remote_code":
        findings.append(
            cs.finding(
                "info",
                "model",
                "model_name_or_path",
                f"remote code in use: {res.model_id} runs its own Python code (trust_remote_code)",
                code="remote-code",
            )
        )
    return section, res


# ---------------------------------------------------------------------------------------------
# dataset, without writing anything


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


def load_data(cs: Any, findings: list[Finding]) -> tuple[Any | None, str | None]:
    """(LoadedData with eval_size ignored, source kind) or (None, kind) with a finding."""
    from vlmctl.data.dataset import load_splits
    from vlmctl.data.sources import resolve_source

    c = cs.collator
    cfg = c.model_copy(update={"dataset": c.dataset.model_copy(update={"eval_size": None})})
    kind = None
    try:
        kind, _ = resolve_source(cfg, cs.dir)
        return load_splits(cfg, cs.dir), kind
    except DataError as exc:
        for f in exc.findings:
            if kind == "hub" and ("offline" in f.message or "unreachable" in f.message):
                f = Finding(
                    "warning",
                    f"dataset not reachable: {f.message}; row checks skipped",
                    hint=f.hint,
                    key="dataset.path",
                    code="dataset-unreachable",
                )
            elif f.file is None and f.key:
                file, line, col = cs.location("collator", f.key)
                f.file, f.line, f.col = file, line, col
            findings.append(f)
        return None, kind
