"""An adapter folder (a run folder of `vlmctl train`, a `checkpoint-N`, or any PEFT adapter)
resolved without loading weights: its manifest, its base (local folder or the hub cache), the
dtype and class training used, and what to tell the user. `merge` plans on it; `eval` applies
the adapter on the same base.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmctl.errors import Finding, VlmctlError
from vlmctl.run_folder.manifest import MANIFEST, RunManifest, read_manifest

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


@dataclass
class AdapterRun:
    """An adapter and the base it applies to, everything resolved before any weight loads."""

    adapter_dir: Path
    run_dir: Path | None
    manifest: RunManifest | None
    adapter_config: dict
    base: str  # as named (hub id or folder)
    base_dir: Path  # local folder of the base checkpoint
    revision: str | None
    dtype: str  # bfloat16 | float16 | float32
    trust_remote_code: bool
    processor_dir: Path | None  # where the training processor files are (run dir), if any
    model_class: str | None
    trained_quantized: str | None  # "4bit" | "8bit" | None
    notes: list[str] = field(default_factory=list)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise VlmctlError(
            Finding("error", f"cannot read {path.name}: {exc}", file=str(path))
        ) from None


def _find_manifest(adapter_dir: Path) -> Path | None:
    # A `checkpoint-N/` folder holds an adapter; its manifest lies in the run folder above.
    for folder in (adapter_dir, adapter_dir.parent):
        if (folder / MANIFEST).is_file():
            return folder / MANIFEST
    return None


def has_processor(folder: Path) -> bool:
    return (folder / "processor_config.json").is_file() or (
        folder / "tokenizer_config.json"
    ).is_file()


def _load_manifest(path: Path) -> RunManifest:
    try:
        return read_manifest(path)
    except (OSError, ValueError) as exc:
        raise VlmctlError(
            Finding("error", f"cannot read {path.name}: {exc}", file=str(path))
        ) from None


def _dtype_from_manifest(model_cfg: Any) -> str | None:
    """The dtype training loaded the base in (`auto` says nothing)."""
    name = model_cfg.dtype_name if model_cfg is not None else None
    return name if name in ("bfloat16", "float16", "float32") else None


def _dtype_from_config(base_dir: Path) -> str | None:
    cfg_path = base_dir / "config.json"
    if not cfg_path.is_file():
        return None
    cfg = read_json(cfg_path)
    for key in ("dtype", "torch_dtype"):
        value = cfg.get(key) or (cfg.get("text_config") or {}).get(key)
        if value in ("bfloat16", "float16", "float32"):
            return value
    return None


def locate_base(base: str, revision: str | None) -> Path:
    """A local folder holding the base checkpoint (hub ids come from the local cache/hub)."""
    path = Path(base).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise VlmctlError(
                Finding(
                    "error",
                    f"base model folder {path} has no config.json",
                    hint="pass --base with the folder the adapter was trained on",
                )
            )
        return path.resolve()
    if path.is_absolute() or base.startswith((".", "~")) or base.count("/") > 1:
        raise VlmctlError(
            Finding(
                "error",
                f"base model {base} not found (no such folder)",
                hint="pass --base with the model folder or hub id the adapter was trained on",
            )
        )
    from vlmctl.runtime import offline as env_offline

    offline = env_offline()
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                base,
                revision=revision,
                local_files_only=offline,
                allow_patterns=[
                    "*.json",
                    "*.safetensors",
                    "*.py",
                    "*.jinja",
                    "*.txt",
                    "*.model",
                    "additional_chat_templates/*",
                ],
            )
        )
    except Exception as exc:  # noqa: BLE001 - any hub failure is one line for the user
        why = "not in the local cache and the hub is offline" if offline else str(exc)
        raise VlmctlError(
            Finding(
                "error",
                f"base model {base} not found: {why.splitlines()[0] if why else exc}",
                hint="download it first, or pass --base with a local folder",
            )
        ) from None


def _check_source(source: Path) -> Path:
    """The adapter folder, refused with one line when it is not one."""
    source = Path(source).expanduser()
    if not source.exists():
        raise VlmctlError(
            Finding("error", f"{source} does not exist", hint="pass a run folder or adapter folder")
        )
    if not source.is_dir():
        raise VlmctlError(Finding("error", f"{source} is not a folder", file=str(source)))
    source = source.resolve()
    if not (source / ADAPTER_CONFIG).is_file():
        has_weights = any(source.glob("model*.safetensors"))
        hint = (
            "this looks like a full fine-tune: the folder already holds the whole model"
            if has_weights
            else "pass the run folder that `vlmctl train` wrote (it holds adapter_config.json)"
        )
        raise VlmctlError(
            Finding("error", f"no {ADAPTER_CONFIG} in {source}", file=str(source), hint=hint)
        )
    if not any((source / name).is_file() for name in ADAPTER_WEIGHTS):
        raise VlmctlError(
            Finding(
                "error",
                f"adapter weights missing: no {ADAPTER_WEIGHTS[0]} in {source}",
                file=str(source),
                hint="the run may not have finished saving; point at a checkpoint-N folder",
            )
        )
    return source


def _check_base_config(base: str, base_cfg: dict, trust: bool, wants_remote: bool) -> None:
    """Refuse a base that ships code (without --trust-remote-code) or is itself quantized."""
    if "auto_map" in base_cfg and not trust:
        hint = (
            "pass --trust-remote-code (training set trust_remote_code)"
            if wants_remote
            else ("pass --trust-remote-code if you trust the code in that folder")
        )
        raise VlmctlError(
            Finding("error", f"base model {base} ships its own code (auto_map)", hint=hint)
        )
    if base_cfg.get("quantization_config"):
        raise VlmctlError(
            Finding(
                "error",
                f"base checkpoint {base} is itself quantized "
                f"({base_cfg['quantization_config'].get('quant_method', '?')}); "
                "merging into quantized weights is lossy",
                hint="pass --base with the full-precision model",
            )
        )


def _check_class_fit(base: str, base_cfg: dict, trained_class: str | None) -> None:
    """Refuse a base of another architecture than the one the adapter was trained on."""
    base_classes = base_cfg.get("architectures") or []
    if trained_class and base_classes and trained_class not in base_classes:
        raise VlmctlError(
            Finding(
                "error",
                f"adapter does not fit base {base}: trained on a {trained_class}, "
                f"the base is a {base_classes[0]}",
                hint="pass --base with the model the adapter was trained on",
            )
        )


def _run_notes(
    manifest: RunManifest | None, model_cfg: Any, source: Path
) -> tuple[list[str], str | None]:
    """Notes for the user (unfinished run, QLoRA base) and the bits the adapter trained on."""
    notes: list[str] = []
    if manifest is not None and manifest.finished is False:
        notes.append(
            f"the run did not finish (global_step {manifest.global_step}): merging the "
            f"adapter saved in {source.name}"
        )
    quant = model_cfg.quantization if model_cfg is not None else None
    trained_quantized = "4bit" if quant is not None and quant.load_in_4bit else None
    trained_quantized = trained_quantized or ("8bit" if quant and quant.load_in_8bit else None)
    if trained_quantized:
        notes.append(
            f"adapter trained on a {trained_quantized} base (QLoRA): merged into the "
            f"full-precision base, loaded in full precision, not {trained_quantized}"
        )
    return notes, trained_quantized


def resolve_adapter(
    source: Path,
    *,
    base: str | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
) -> AdapterRun:
    """Resolve adapter, manifest, base and dtype; refuse early (one line), before any weight.

    `base` replaces the run's base (then the training class no longer applies); `dtype` is
    one of DTYPES' keys, else the training dtype, else the base's, else float32.
    """
    source = _check_source(source)
    adapter_config = read_json(source / ADAPTER_CONFIG)
    manifest_path = _find_manifest(source)
    manifest = _load_manifest(manifest_path) if manifest_path else None
    run_dir = manifest_path.parent if manifest_path else None
    trained = manifest or RunManifest()  # no manifest: nothing known of the training
    model_cfg = trained.model_config()

    name = base or trained.model_name_or_path or adapter_config.get("base_model_name_or_path")
    if not name:
        raise VlmctlError(
            Finding(
                "error",
                "cannot tell the base model: no manifest and no base_model_name_or_path",
                file=str(source / ADAPTER_CONFIG),
                hint="pass --base MODEL",
            )
        )
    revision = None if base else trained.revision
    wants_remote = bool(model_cfg is not None and model_cfg.loading_params.trust_remote_code)
    base_dir = locate_base(str(name), revision)
    base_cfg = read_json(base_dir / "config.json")
    _check_base_config(str(name), base_cfg, trust_remote_code, wants_remote)
    trained_class = (adapter_config.get("auto_mapping") or {}).get("base_model_class")
    _check_class_fit(str(name), base_cfg, trained.model_class or trained_class)
    notes, trained_quantized = _run_notes(manifest, model_cfg, source)
    if dtype is not None and dtype not in DTYPES:
        from vlmctl.errors import UsageError

        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    chosen = DTYPES.get(dtype or "") or _dtype_from_manifest(model_cfg)
    chosen = chosen or _dtype_from_config(base_dir) or "float32"
    processor_dir = next((d for d in (source, run_dir) if d is not None and has_processor(d)), None)
    return AdapterRun(
        adapter_dir=source,
        run_dir=run_dir,
        manifest=manifest,
        adapter_config=adapter_config,
        base=str(name),
        base_dir=base_dir,
        revision=revision,
        dtype=chosen,
        trust_remote_code=trust_remote_code,
        processor_dir=processor_dir,
        # The training class applies to the training base only, not to a --base override.
        model_class=None if base else trained.model_class,
        trained_quantized=trained_quantized,
        notes=notes,
    )
