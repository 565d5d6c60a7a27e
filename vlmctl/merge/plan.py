"""Plan a merge: what `vlmctl merge` was asked, resolved before any weight is touched.

Two ways to merge, one output:
- in memory (default): load the base in the output dtype, apply the adapter with PEFT,
  `merge_and_unload`, `save_pretrained` (sharded safetensors);
- `low_memory=True`: stream the base checkpoint one tensor at a time, add each LoRA delta
  (B @ A * scaling; rsLoRA alpha/sqrt(r); DoRA magnitude * (W + dW) / ||W + dW||_row) exactly
  as PEFT computes it, and write each output shard as a stream (the safetensors header first,
  then the tensors), so at most one tensor of the model is in memory.

Both write into `.<name>.tmp-XXXX` beside the target and rename it into place at the end, so an
interrupted merge never leaves a partial output folder. The verify step compares the adapter
model with the merged model (and with the base, to catch an adapter that changes nothing) on a
few probe inputs and writes `merge-report.json` beside the weights.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from vlmctl.errors import Finding, UsageError, VlmctlError
from vlmctl.merge.output import MERGE_MARKER, REPORT_NAME, written_by_merge
from vlmctl.training.manifest import MANIFEST, RunManifest, read_manifest

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


@dataclass
class MergeOptions:
    """What `vlmctl merge` was asked to do (flags, unresolved)."""

    source: Path
    base: str | None = None
    output: Path | None = None
    dtype: str | None = None  # bf16 | fp16 | fp32 | None (the training dtype)
    verify: bool = True
    low_memory: bool = False
    force: bool = False
    trust_remote_code: bool = False
    allow_noop: bool = False
    max_shard_size: str | int = "5GB"
    num_probes: int = 3


@dataclass
class MergePlan:
    """Everything resolved before any weight is touched."""

    adapter_dir: Path
    run_dir: Path | None
    manifest: RunManifest | None
    adapter_config: dict
    base: str  # as named (hub id or folder)
    base_dir: Path  # local folder of the base checkpoint
    revision: str | None
    dtype: str  # bfloat16 | float16 | float32
    trust_remote_code: bool
    output: Path
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


def _dtype_from_manifest(manifest: RunManifest | None) -> str | None:
    from vlmctl.config.model import DTYPE_TABLE

    if not manifest:
        return None
    params = manifest.config("model").get("loading_params") or {}
    name = DTYPE_TABLE.get(str(params.get("torch_dtype", "")).strip().lower())
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


def _check_source(opts: MergeOptions) -> Path:
    """The adapter folder, refused with one line when it is not one."""
    source = Path(opts.source).expanduser()
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


def _resolve_output(opts: MergeOptions, source: Path, run_dir: Path | None, base_dir: Path) -> Path:
    """The output folder: never the adapter, the run or the base, never a folder merge did not
    write (even with --force)."""
    default_root = run_dir if run_dir and source.parent == run_dir else source
    output = Path(opts.output).expanduser() if opts.output else default_root / "merged"
    output = output.absolute()
    for protected in {source, run_dir} - {None}:
        if output == protected or protected.is_relative_to(output):
            raise UsageError(
                f"--output {output} would replace the folder being merged ({protected})"
            )
    if output == base_dir or base_dir.is_relative_to(output):
        raise UsageError(f"--output {output} would replace the base model folder")
    if output.exists() and not opts.force:
        raise VlmctlError(
            Finding(
                "error",
                f"output {output} already exists",
                hint="pass --force to replace it, or --output elsewhere",
            )
        )
    if output.exists() and not written_by_merge(output):
        # --force replaces what vlmctl merge wrote, never any folder at all.
        raise VlmctlError(
            Finding(
                "error",
                f"--force: {output} was not written by vlmctl merge (no {MERGE_MARKER} or "
                f"{REPORT_NAME}); refusing to replace it",
                hint="choose another --output, or empty or remove that folder yourself",
                code="output-not-ours",
            )
        )
    return output


def _run_notes(
    manifest: RunManifest | None, model_cfg: dict, source: Path
) -> tuple[list[str], str | None]:
    """Notes for the user (unfinished run, QLoRA base) and the bits the adapter trained on."""
    notes: list[str] = []
    if manifest is not None and manifest.finished is False:
        notes.append(
            f"the run did not finish (global_step {manifest.global_step}): merging the "
            f"adapter saved in {source.name}"
        )
    quant = model_cfg.get("quantization") or {}
    trained_quantized = "4bit" if quant.get("load_in_4bit") else None
    trained_quantized = trained_quantized or ("8bit" if quant.get("load_in_8bit") else None)
    if trained_quantized:
        notes.append(
            f"adapter trained on a {trained_quantized} base (QLoRA): merged into the "
            f"full-precision base, loaded in full precision, not {trained_quantized}"
        )
    return notes, trained_quantized


def plan_merge(opts: MergeOptions) -> MergePlan:
    """Resolve adapter, manifest, base, dtype and output; refuse early, before loading weights."""
    source = _check_source(opts)
    adapter_config = read_json(source / ADAPTER_CONFIG)
    manifest_path = _find_manifest(source)
    manifest = _load_manifest(manifest_path) if manifest_path else None
    run_dir = manifest_path.parent if manifest_path else None
    model_cfg = manifest.config("model") if manifest else {}
    trained = manifest or RunManifest()  # no manifest: nothing known of the training

    base = opts.base or trained.model_name_or_path
    base = base or adapter_config.get("base_model_name_or_path")
    if not base:
        raise VlmctlError(
            Finding(
                "error",
                "cannot tell the base model: no manifest and no base_model_name_or_path",
                file=str(source / ADAPTER_CONFIG),
                hint="pass --base MODEL",
            )
        )
    revision = None if opts.base else trained.revision
    trust = bool(opts.trust_remote_code)
    wants_remote = bool((model_cfg.get("loading_params") or {}).get("trust_remote_code"))
    base_dir = locate_base(str(base), revision)
    base_cfg = read_json(base_dir / "config.json")
    _check_base_config(str(base), base_cfg, trust, wants_remote)
    trained_class = (adapter_config.get("auto_mapping") or {}).get("base_model_class")
    _check_class_fit(str(base), base_cfg, trained.model_class or trained_class)
    notes, trained_quantized = _run_notes(manifest, model_cfg, source)

    if opts.dtype is not None and opts.dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, not {opts.dtype!r}")
    dtype = DTYPES.get(opts.dtype or "") or _dtype_from_manifest(manifest)
    dtype = dtype or _dtype_from_config(base_dir) or "float32"
    output = _resolve_output(opts, source, run_dir, base_dir)
    processor_dir = next((d for d in (source, run_dir) if d is not None and has_processor(d)), None)
    return MergePlan(
        adapter_dir=source,
        run_dir=run_dir,
        manifest=manifest,
        adapter_config=adapter_config,
        base=str(base),
        base_dir=base_dir,
        revision=revision,
        dtype=dtype,
        trust_remote_code=trust,
        output=output,
        processor_dir=processor_dir,
        # The training class applies to the training base only, not to a --base override.
        model_class=None if opts.base else trained.model_class,
        trained_quantized=trained_quantized,
        notes=notes,
    )
