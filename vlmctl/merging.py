"""Merge a LoRA adapter into its base model, so serving behaves like training.

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

import contextlib
import json
import math
import os
import re
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmctl.errors import Finding, UsageError, VlmctlError
from vlmctl.training.manifest import MANIFEST

REPORT_NAME = "merge-report.json"
MERGE_MARKER = ".vlmctl-merged"  # in every merge output: what `--force` may replace
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}

# Files that make up a processor (tokenizer, image/video processor, chat template).
PROCESSOR_FILES = (
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
PROCESSOR_DIRS = ("additional_chat_templates",)

# Probe questions and colours for generated verify inputs.
_PROBES = (
    ((200, 30, 30), "What colour is the image?"),
    ((30, 160, 60), "Describe the picture in one word."),
    ((40, 60, 210), "Is this image bright or dark?"),
    ((230, 200, 40), "What do you see?"),
)

# Hook for tests: seconds to sleep inside the weight-writing step (to SIGKILL a merge mid-save).
_SLEEP_ENV = "VLMCTL_TEST_MERGE_SLEEP"


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
    manifest: dict | None
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


@dataclass
class MergeResult:
    """Where the merged model went and the figures written to merge-report.json."""

    output: Path
    report: dict


# --------------------------------------------------------------------------- resolving inputs


def _read_json(path: Path) -> dict:
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


def _has_processor(folder: Path) -> bool:
    return (folder / "processor_config.json").is_file() or (
        folder / "tokenizer_config.json"
    ).is_file()


def _dtype_from_manifest(manifest: dict | None) -> str | None:
    from vlmctl.config.model import DTYPE_TABLE

    if not manifest:
        return None
    params = ((manifest.get("configs") or {}).get("model") or {}).get("loading_params") or {}
    name = DTYPE_TABLE.get(str(params.get("torch_dtype", "")).strip().lower())
    return name if name in ("bfloat16", "float16", "float32") else None


def _dtype_from_config(base_dir: Path) -> str | None:
    cfg_path = base_dir / "config.json"
    if not cfg_path.is_file():
        return None
    cfg = _read_json(cfg_path)
    for key in ("dtype", "torch_dtype"):
        value = cfg.get(key) or (cfg.get("text_config") or {}).get(key)
        if value in ("bfloat16", "float16", "float32"):
            return value
    return None


def _locate_base(base: str, revision: str | None) -> Path:
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
    from vlmctl.data.dataset import env_offline

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


def plan_merge(opts: MergeOptions) -> MergePlan:
    """Resolve adapter, manifest, base, dtype and output; refuse early, before loading weights."""
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
    adapter_config = _read_json(source / ADAPTER_CONFIG)
    manifest_path = _find_manifest(source)
    manifest = _read_json(manifest_path) if manifest_path else None
    run_dir = manifest_path.parent if manifest_path else None
    model_cfg = ((manifest or {}).get("configs") or {}).get("model") or {}

    base = opts.base or (manifest or {}).get("model_name_or_path")
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
    revision = None if opts.base else (manifest or {}).get("revision")
    trust = bool(opts.trust_remote_code)
    wants_remote = bool((model_cfg.get("loading_params") or {}).get("trust_remote_code"))
    notes: list[str] = []
    base_dir = _locate_base(str(base), revision)
    base_cfg = _read_json(base_dir / "config.json")
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

    trained_class = (adapter_config.get("auto_mapping") or {}).get("base_model_class")
    trained_class = (manifest or {}).get("model_class") or trained_class
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

    if manifest is not None and manifest.get("finished") is False:
        notes.append(
            f"the run did not finish (global_step {manifest.get('global_step')}): merging the "
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

    if opts.dtype is not None and opts.dtype not in DTYPES:
        raise UsageError(f"--dtype must be one of {', '.join(DTYPES)}, not {opts.dtype!r}")
    dtype = DTYPES.get(opts.dtype or "") or _dtype_from_manifest(manifest)
    dtype = dtype or _dtype_from_config(base_dir) or "float32"

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

    processor_dir = next(
        (d for d in (source, run_dir) if d is not None and _has_processor(d)), None
    )
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
        model_class=None if opts.base else (manifest or {}).get("model_class"),
        trained_quantized=trained_quantized,
        notes=notes,
    )


# --------------------------------------------------------------------------- atomic output


@contextlib.contextmanager
def atomic_folder(target: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; rename it into place only on success.

    With `force`, an existing target is renamed away, the new folder renamed in, and the old
    one deleted last, so at every instant the target is either the old or the new folder.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the output is a normal folder
    (tmp / ".vlmctl-merge.pid").write_text(str(os.getpid()))
    (tmp / MERGE_MARKER).write_text("written by vlmctl merge; --force may replace this folder\n")
    try:
        yield tmp
        (tmp / ".vlmctl-merge.pid").unlink(missing_ok=True)
        if target.exists():
            if not force:
                raise VlmctlError(
                    Finding("error", f"output {target} appeared during the merge", hint="rerun")
                )
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            old.rmdir()
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def written_by_merge(folder: Path) -> bool:
    """True for a folder `vlmctl merge` wrote (its marker or report), or an empty one."""
    if not folder.is_dir() or folder.is_symlink():
        return False
    if not any(folder.iterdir()):
        return True
    return (folder / MERGE_MARKER).is_file() or (folder / REPORT_NAME).is_file()


def _sweep_stale(target: Path) -> None:
    # A SIGKILLed merge cannot clean up: remove its hidden temp folder once its process is gone.
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        pid_file = stale / ".vlmctl-merge.pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            continue
        if not _alive(pid):
            shutil.rmtree(stale, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _test_sleep() -> None:
    seconds = float(os.environ.get(_SLEEP_ENV, "0") or 0)
    if seconds > 0:
        time.sleep(seconds)


# --------------------------------------------------------------------------- non-weight files


def copy_support_files(plan: MergePlan, dest: Path, *, with_config: bool) -> None:
    """Processor (the training one when the run saved it), chat template, generation config,
    remote code; with `with_config`, also the base's config.json with the output dtype."""
    base = plan.base_dir
    for src in sorted(base.glob("*.py")):
        shutil.copy2(src, dest / src.name)
    if (base / "generation_config.json").is_file():
        shutil.copy2(base / "generation_config.json", dest / "generation_config.json")
    if with_config:
        cfg = _read_json(base / "config.json")
        cfg.pop("torch_dtype", None)
        cfg["dtype"] = plan.dtype
        if isinstance(cfg.get("text_config"), dict) and "dtype" in cfg["text_config"]:
            cfg["text_config"]["dtype"] = plan.dtype
        (dest / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    if plan.processor_dir is not None:
        _copy_processor_files(plan.processor_dir, dest)
        return
    params = ((plan.manifest or {}).get("configs") or {}).get("model") or {}
    params = dict(params.get("processor_params") or {})
    params.pop("trust_remote_code", None)
    if params:
        # No processor saved in the run, but training set processor options: rebuild it so.
        from transformers import AutoProcessor

        proc = AutoProcessor.from_pretrained(
            str(base), trust_remote_code=plan.trust_remote_code, **params
        )
        proc.save_pretrained(str(dest))
        plan.notes.append("processor rebuilt from the base with the run's processor_params")
    else:
        _copy_processor_files(base, dest)
        plan.notes.append("run folder has no processor files: copied the base's processor")


def _copy_processor_files(src: Path, dest: Path) -> None:
    for name in PROCESSOR_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    for name in PROCESSOR_DIRS:
        if (src / name).is_dir():
            shutil.copytree(src / name, dest / name, dirs_exist_ok=True)
    for src_py in sorted(src.glob("processing_*.py")):
        shutil.copy2(src_py, dest / src_py.name)


# --------------------------------------------------------------------------- model loading


def _torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def _model_class(plan: MergePlan, config=None):
    """The class training used (manifest), else the Auto class that resolves the config."""
    import transformers

    if plan.model_class and not plan.trust_remote_code:
        cls = getattr(transformers, plan.model_class, None)
        if cls is not None:
            return cls
    cfg = config if config is not None else _load_config(plan)
    auto_map = getattr(cfg, "auto_map", None) or {}
    if "AutoModelForImageTextToText" not in auto_map and "AutoModelForCausalLM" in auto_map:
        return transformers.AutoModelForCausalLM
    return transformers.AutoModelForImageTextToText


def _load_config(plan: MergePlan):
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(str(plan.base_dir), trust_remote_code=plan.trust_remote_code)


def load_base(plan: MergePlan):
    """The base model in full precision (never 4/8-bit), in the output dtype."""
    cls = _model_class(plan)
    return cls.from_pretrained(
        str(plan.base_dir),
        dtype=_torch_dtype(plan.dtype),
        trust_remote_code=plan.trust_remote_code,
    )


def load_adapter_model(plan: MergePlan, base_model):
    """The base with the adapter attached (unmerged): the reference the merge is verified on."""
    from peft import PeftModel

    try:
        model = PeftModel.from_pretrained(base_model, str(plan.adapter_dir), is_trainable=False)
    except (ValueError, RuntimeError, KeyError) as exc:
        raise VlmctlError(
            Finding(
                "error",
                f"adapter does not fit base {plan.base}: {str(exc).splitlines()[0][:300]}",
                hint="pass --base with the model the adapter was trained on",
            )
        ) from None
    return model.eval()


# --------------------------------------------------------------------------- adapter tensors


_LORA_SUFFIXES = (
    ".lora_A.weight",
    ".lora_B.weight",
    ".lora_B.bias",
    ".lora_magnitude_vector",
    ".lora_embedding_A",
    ".lora_embedding_B",
)


def _adapter_state(adapter_dir: Path) -> dict:
    path = adapter_dir / ADAPTER_WEIGHTS[0]
    if path.is_file():
        from safetensors.torch import load_file

        return load_file(str(path))
    import torch

    return torch.load(str(adapter_dir / ADAPTER_WEIGHTS[1]), map_location="cpu", weights_only=True)


def _strip_peft_prefix(key: str) -> str:
    return key[len("base_model.model.") :] if key.startswith("base_model.model.") else key


class StreamingUnsupported(VlmctlError):
    """The adapter or checkpoint needs the in-memory merge (PEFT handles it)."""


@dataclass
class LoraLayer:
    """One adapted module's LoRA factors and scaling, all the streaming merge needs of it."""

    module: str  # module path in the model tree, e.g. model.language_model.layers.0.mlp.up_proj
    A: Any
    B: Any
    scaling: float
    magnitude: Any = None  # DoRA
    bias: Any = None  # lora_bias
    fan_in_fan_out: bool = False


def parse_adapter(adapter_dir: Path, adapter_config: dict) -> tuple[list[LoraLayer], dict]:
    """LoRA layers (with PEFT's scaling rule per layer) and modules_to_save tensors."""
    peft_type = str(adapter_config.get("peft_type", "LORA")).upper()
    if peft_type != "LORA":
        raise StreamingUnsupported(
            Finding(
                "error",
                f"--low-memory merges LoRA adapters only, not {peft_type}",
                hint="run without --low-memory",
            )
        )
    if adapter_config.get("target_parameters"):
        raise StreamingUnsupported(
            Finding(
                "error",
                "--low-memory does not merge target_parameters (LoRA on raw parameters)",
                hint="run without --low-memory",
            )
        )
    state = _adapter_state(adapter_dir)
    groups: dict[str, dict] = {}
    full: dict[str, Any] = {}
    for key, tensor in state.items():
        key = _strip_peft_prefix(key)
        suffix = next((s for s in _LORA_SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            full[key] = tensor  # modules_to_save / trainable tokens: replaces the base tensor
            continue
        if suffix.startswith(".lora_embedding"):
            raise StreamingUnsupported(
                Finding(
                    "error",
                    f"--low-memory does not merge LoRA on embeddings ({key})",
                    hint="run without --low-memory",
                )
            )
        groups.setdefault(key[: -len(suffix)], {})[suffix] = tensor

    rank_pattern = adapter_config.get("rank_pattern") or {}
    alpha_pattern = adapter_config.get("alpha_pattern") or {}
    if rank_pattern or alpha_pattern:
        from peft.utils.other import get_pattern_key  # PEFT's own matching (peft costs ~190 MB)
    layers = []
    for module, parts in sorted(groups.items()):
        if ".lora_A.weight" not in parts or ".lora_B.weight" not in parts:
            raise VlmctlError(
                Finding("error", f"adapter is missing lora_A/lora_B for {module}", key=module)
            )
        r = int(adapter_config.get("r", 8))
        if rank_pattern:
            r = int(rank_pattern.get(get_pattern_key(rank_pattern.keys(), module), r))
        alpha = adapter_config.get("lora_alpha", 8)
        if alpha_pattern:
            alpha = alpha_pattern.get(get_pattern_key(alpha_pattern.keys(), module), alpha)
        if parts[".lora_A.weight"].shape[0] != r:
            r = parts[".lora_A.weight"].shape[0]
        scaling = alpha / math.sqrt(r) if adapter_config.get("use_rslora") else alpha / r
        layers.append(
            LoraLayer(
                module=module,
                A=parts[".lora_A.weight"],
                B=parts[".lora_B.weight"],
                scaling=scaling,
                magnitude=parts.get(".lora_magnitude_vector"),
                bias=parts.get(".lora_B.bias"),
                fan_in_fan_out=bool(adapter_config.get("fan_in_fan_out")),
            )
        )
    return layers, full


def merge_lora_tensor(weight, layer: LoraLayer, out_dtype):
    """W' for one layer, with PEFT's arithmetic: the base in the output dtype, adapter weights
    upcast to fp32 (autocast_adapter_dtype), delta = (B @ A)^T? * scaling in fp32, added to W
    and rounded once to the output dtype. DoRA: m / ||W + dW|| (norm over the input axis of the
    (out, in) weight, i.e. per output row, `torch.linalg.norm(dim=1)`) times (W + dW)."""
    import torch

    w = weight.to(out_dtype)
    a = layer.A.float() if layer.A.dtype in (torch.float16, torch.bfloat16) else layer.A
    b = layer.B.float() if layer.B.dtype in (torch.float16, torch.bfloat16) else layer.B
    delta = b @ a
    if layer.fan_in_fan_out:
        delta = delta.T
    delta = delta * layer.scaling
    if layer.magnitude is None:
        merged = w + delta  # computed in fp32 (type promotion), rounded once below
        return merged.to(out_dtype)
    mag = layer.magnitude
    mag = mag.float() if mag.dtype in (torch.float16, torch.bfloat16) else mag
    w_t = w.T if layer.fan_in_fan_out else w
    d_t = delta.T if layer.fan_in_fan_out else delta
    combined = w_t + 1 * d_t
    norm = torch.linalg.norm(combined, dim=1).to(combined.dtype)
    factor = (mag / norm).view(-1, 1)
    if layer.fan_in_fan_out:
        factor = factor.T
    return (factor * (w + delta)).to(out_dtype)


# --------------------------------------------------------------------------- safetensors streaming

_ST_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def _st_code(dtype) -> str:
    name = str(dtype).replace("torch.", "")
    for code, torch_name in _ST_DTYPES.items():
        if torch_name == name:
            return code
    raise VlmctlError(f"unsupported tensor dtype {dtype} in the base checkpoint")


def read_st_header(path: Path) -> tuple[dict, int]:
    """The safetensors header (name -> dtype/shape/offsets) and where the data begins."""
    with open(path, "rb") as fh:
        (length,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(length))
    return header, 8 + length


class ShardReader:
    """Reads one tensor at a time with plain file reads (no mmap: what is read is all that is
    resident, so peak memory stays one tensor)."""

    def __init__(self, path: Path):
        self.path = path
        self.header, self.start = read_st_header(path)
        self.header.pop("__metadata__", None)
        self._fh = open(path, "rb")  # noqa: SIM115 - closed in close()

    def get(self, name: str):
        """One tensor, read into fresh memory (nothing else of the file stays resident)."""
        import torch

        info = self.header[name]
        begin, end = info["data_offsets"]
        buf = torch.empty(end - begin, dtype=torch.uint8)
        self._fh.seek(self.start + begin)
        view = memoryview(buf.numpy())
        got = 0
        while got < end - begin:
            n = self._fh.readinto(view[got:])
            if not n:
                raise VlmctlError(f"{self.path} is truncated (tensor {name})")
            got += n
        dtype = getattr(torch, _ST_DTYPES[info["dtype"]])
        return buf.view(dtype).reshape(info["shape"])

    def close(self) -> None:
        """Release the file handle."""
        self._fh.close()


class ShardWriter:
    """Writes a safetensors file as a stream: the header (all names, dtypes, shapes) first,
    then each tensor's bytes in order, so no more than one tensor is held at a time."""

    def __init__(self, path: Path, entries: list[tuple[str, str, list[int]]], metadata: dict):
        self.path = path
        header: dict[str, Any] = {"__metadata__": metadata}
        offset = 0
        self._expected = []
        for name, code, shape in entries:
            size = math.prod(shape) * _itemsize(code)
            header[name] = {
                "dtype": code,
                "shape": list(shape),
                "data_offsets": [offset, offset + size],
            }
            self._expected.append((name, size))
            offset += size
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._fh = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._fh.write(struct.pack("<Q", len(raw)) + raw)
        self._next = 0
        self.total = offset

    def write(self, name: str, tensor) -> None:
        """Append the next tensor's bytes; the order and sizes must match the header."""
        import torch

        want, size = self._expected[self._next]
        if name != want:
            raise RuntimeError(f"shard writer expected {want}, got {name}")
        data = tensor.contiguous().reshape(-1).view(torch.uint8)
        if data.numel() != size:
            raise RuntimeError(f"{name}: {data.numel()} bytes, header says {size}")
        self._fh.write(memoryview(data.numpy()))
        self._next += 1

    def close(self) -> None:
        """Close the file, refusing a shard whose header promises tensors never written."""
        if self._next != len(self._expected):
            raise RuntimeError(f"{self.path}: {len(self._expected) - self._next} tensors unwritten")
        self._fh.close()


def _itemsize(code: str) -> int:
    return {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1}.get(
        code, 1
    )


def _parse_size(size: str | int) -> int:
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMG]i?B|B)?\s*", str(size), flags=re.I)
    if not match:
        raise UsageError(f"--max-shard-size {size!r}: use e.g. 5GB, 500MB")
    unit = (match.group(2) or "B").upper()
    scale = {"B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20}
    scale |= {"GIB": 2**30}
    return int(float(match.group(1)) * scale[unit])


def _has_safetensors(base_dir: Path) -> bool:
    return (base_dir / "model.safetensors").is_file() or (
        base_dir / "model.safetensors.index.json"
    ).is_file()


def _checkpoint_files(base_dir: Path) -> list[Path]:
    index = base_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(_read_json(index)["weight_map"].values()))
        return [base_dir / n for n in names]
    single = base_dir / "model.safetensors"
    if single.is_file():
        return [single]
    raise StreamingUnsupported(
        Finding(
            "error",
            f"--low-memory needs safetensors weights; none in {base_dir}",
            hint="run without --low-memory",
        )
    )


def _key_map(plan: MergePlan, ckpt_keys: list[str]):
    """checkpoint key -> model-tree key, with transformers' own load-time renamings (VLM
    checkpoints are often saved as `model.layers.*` while the module is
    `model.language_model.layers.*`); plus the meta model's parameter dtypes."""
    import torch
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter, WeightRenaming, rename_source_key

    config = _load_config(plan)
    cls = _model_class(plan, config)
    with torch.device("meta"):
        if hasattr(cls, "from_config"):  # an Auto class
            meta = cls.from_config(
                config, dtype=_torch_dtype(plan.dtype), trust_remote_code=plan.trust_remote_code
            )
        else:
            meta = cls._from_config(config, dtype=_torch_dtype(plan.dtype))
    meta_sd = meta.state_dict()
    mapping = get_model_conversion_mapping(meta)
    renamings = [m for m in mapping if isinstance(m, WeightRenaming)]
    converters = [m for m in mapping if isinstance(m, WeightConverter)]
    out: dict[str, str] = {}
    converted: set[str] = set()
    for key in ckpt_keys:
        renamed, pattern = rename_source_key(
            key, renamings, converters, meta.base_model_prefix, meta_sd
        )
        if renamed not in meta_sd and key in meta_sd:
            renamed, pattern = key, None
        if pattern is not None:
            converted.add(key)
        out[key] = renamed
    dtypes = {k: v.dtype for k, v in meta_sd.items()}
    return out, converted, dtypes, renamings, meta


@dataclass
class AdapterMatch:
    """Where each adapter tensor lands in the base checkpoint (checkpoint key names)."""

    headers: dict  # checkpoint key -> (file, safetensors header entry)
    files: list
    key_map: dict  # checkpoint key -> model-tree key
    model_dtypes: dict
    lora_at: dict  # checkpoint key -> LoraLayer
    replace_at: dict  # checkpoint key -> tensor (modules_to_save)
    bias_add: dict  # checkpoint key -> LoraLayer (lora_bias)
    zero_delta: bool


def match_adapter(plan: MergePlan, streaming: bool) -> AdapterMatch:
    """Check that every adapted layer exists in the base with the adapter's shape (one clear
    line otherwise), before any weight is loaded; the map the streaming merge follows."""
    layers, full = parse_adapter(plan.adapter_dir, plan.adapter_config)
    files = _checkpoint_files(plan.base_dir)
    headers: dict[str, tuple[Path, dict]] = {}
    for path in files:
        header, _ = read_st_header(path)
        header.pop("__metadata__", None)
        for key, info in header.items():
            headers[key] = (path, info)
    key_map, converted, model_dtypes, renamings, _meta = _key_map(plan, list(headers))
    by_model_key = {v: k for k, v in key_map.items()}

    def ckpt_key_for(model_key: str) -> str | None:
        if model_key in by_model_key:
            return by_model_key[model_key]
        # An adapter saved against an older module tree: rename it like a checkpoint key.
        from transformers.core_model_loading import apply_renamings

        return by_model_key.get(apply_renamings(model_key, renamings))

    def misfit(message: str) -> VlmctlError:
        return VlmctlError(
            Finding(
                "error",
                f"adapter does not fit base {plan.base}: {message}",
                hint="pass --base with the model the adapter was trained on",
            )
        )

    lora_at: dict[str, LoraLayer] = {}
    missing = []
    for layer in layers:
        ck = ckpt_key_for(layer.module + ".weight")
        if ck is None:
            missing.append(layer.module)
            continue
        shape = list(headers[ck][1]["shape"])
        rows, cols = layer.B.shape[0], layer.A.shape[1]
        want = [cols, rows] if layer.fan_in_fan_out else [rows, cols]
        if shape != want:
            raise misfit(f"{layer.module} is {shape} in the base, {want} in the adapter")
        if streaming and ck in converted:
            raise StreamingUnsupported(
                Finding(
                    "error",
                    f"{ck} is converted on load (fused/split), --low-memory cannot merge it",
                    hint="run without --low-memory",
                )
            )
        lora_at[ck] = layer
    replace_at: dict[str, Any] = {}
    for key, tensor in full.items():
        ck = ckpt_key_for(key)
        if ck is None:
            missing.append(key)
        elif list(headers[ck][1]["shape"]) != list(tensor.shape):
            raise misfit(f"{key} is {headers[ck][1]['shape']} in the base, {list(tensor.shape)}")
        else:
            replace_at[ck] = tensor
    if missing:
        raise misfit(
            f"{len(missing)} adapted layer(s) not in the base checkpoint (first: {missing[0]})"
        )
    bias_add = {}
    for layer in layers:
        if layer.bias is not None:
            bias_ck = ckpt_key_for(layer.module + ".bias")
            if bias_ck is None:
                raise misfit(f"lora_bias on {layer.module}, whose base layer has no bias")
            bias_add[bias_ck] = layer
    return AdapterMatch(
        headers=headers,
        files=files,
        key_map=key_map,
        model_dtypes=model_dtypes,
        lora_at=lora_at,
        replace_at=replace_at,
        bias_add=bias_add,
        zero_delta=all(_is_zero_lora(layer) for layer in layers) and not full,
    )


def low_memory_merge(
    plan: MergePlan, match: AdapterMatch, dest: Path, max_shard_size: str | int
) -> dict:
    """Stream the base checkpoint through the LoRA deltas into sharded safetensors in `dest`."""
    import torch

    out_dtype = _torch_dtype(plan.dtype)
    readers = {f: ShardReader(f) for f in match.files}
    key_map, model_dtypes = match.key_map, match.model_dtypes
    lora_at, replace_at, bias_add = match.lora_at, match.replace_at, match.bias_add
    where = {key: readers[path] for key, (path, _info) in match.headers.items()}
    try:

        def out_dtype_for(key: str, code: str):
            src = getattr(torch, _ST_DTYPES[code])
            if not src.is_floating_point:
                return src
            model_dtype = model_dtypes.get(key_map.get(key, ""))
            # `_keep_in_fp32_modules` parameters stay fp32 in the meta model: keep that.
            if model_dtype is not None and model_dtype.is_floating_point:
                return model_dtype
            return out_dtype

        # Plan the output shards from the headers alone, in checkpoint order.
        limit = _parse_size(max_shard_size)
        ordered = [k for r in readers.values() for k in r.header]
        shards: list[list[tuple[str, str, list[int]]]] = [[]]
        size = 0
        for key in ordered:
            info = where[key].header[key]
            code = _st_code(out_dtype_for(key, info["dtype"]))
            nbytes = math.prod(info["shape"]) * _itemsize(code)
            if shards[-1] and size + nbytes > limit:
                shards.append([])
                size = 0
            shards[-1].append((key, code, info["shape"]))
            size += nbytes

        n = len(shards)
        names = (
            ["model.safetensors"]
            if n == 1
            else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        )
        weight_map: dict[str, str] = {}
        total = 0
        merged_count = 0
        for name, entries in zip(names, shards, strict=True):
            writer = ShardWriter(dest / name, entries, {"format": "pt"})
            for key, code, _shape in entries:
                dtype = getattr(torch, _ST_DTYPES[code])
                if key in replace_at:
                    tensor = replace_at[key].to(dtype)
                else:
                    tensor = where[key].get(key)
                    if key in lora_at:
                        tensor = merge_lora_tensor(tensor, lora_at[key], dtype)
                        merged_count += 1
                    elif key in bias_add:
                        layer = bias_add[key]
                        tensor = (tensor.to(dtype) + layer.bias * layer.scaling).to(dtype)
                    else:
                        tensor = tensor.to(dtype)
                writer.write(key, tensor)
                weight_map[key] = name
                del tensor
                _test_sleep()
            writer.close()
            total += writer.total
        if n > 1:
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (dest / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    finally:
        for reader in readers.values():
            reader.close()
    return {
        "merged_layers": merged_count,
        "replaced_tensors": len(replace_at),
        "shards": n,
        "zero_delta": match.zero_delta,
    }


def _is_zero_lora(layer: LoraLayer) -> bool:
    # A DoRA magnitude can change the weight even with B = 0; only plain LoRA is judged here.
    return layer.magnitude is None and layer.bias is None and not bool(layer.B.abs().sum() > 0)


# --------------------------------------------------------------------------- verify


def generated_probes(processor, n: int) -> list[dict]:
    """A coloured 32x32 image and a short question, rendered through the chat template."""
    from PIL import Image

    probes = []
    template = getattr(processor, "chat_template", None)
    for rgb, question in _PROBES[: max(1, n)]:
        image = Image.new("RGB", (32, 32), rgb)
        if template:
            messages = [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "image": image},
                        {"type": "text", "text": question},
                    ],
                }
            ]
            batch = processor.apply_chat_template(
                messages,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
            )
        else:
            # No template (PaliGemma): the prompt starts with the image token, as in training.
            token = getattr(processor, "image_token", None) or ""
            batch = processor(text=[token + question], images=[image], return_tensors="pt")
        probes.append(dict(batch))
    return probes


def training_probes(plan: MergePlan, processor, n: int) -> list[dict]:
    """The first rows of the training set, through the training collator (same rendering)."""
    manifest = plan.manifest or {}
    configs = manifest.get("configs") or {}
    if not configs.get("collator"):
        raise LookupError("manifest has no collator config")
    from vlmctl.collate import VLMCollator
    from vlmctl.config.collator import CollatorConfig
    from vlmctl.data.dataset import load_splits

    cfg = CollatorConfig.model_validate(configs["collator"])
    config_dir = Path(manifest.get("config_dir") or (plan.run_dir / "configs"))
    data = load_splits(cfg, config_dir)
    rows = [data.train[i] for i in range(min(n, len(data.train)))]
    if not rows:
        raise LookupError("training set is empty")
    model_type = (plan.manifest or {}).get("model_type") or _read_json(
        plan.base_dir / "config.json"
    ).get("model_type")
    collator = VLMCollator(processor, cfg, data.media_dirs, model_type=model_type)
    probes = []
    for row in rows:
        batch = dict(collator([row]))
        batch.pop("labels", None)
        probes.append(batch)
    return probes


def make_probes(plan: MergePlan, processor, n: int) -> tuple[list[dict], str]:
    """Verify inputs and where they came from: training rows when the run's data still loads
    (they exercise the adapted paths), else generated ones."""
    if plan.manifest and plan.run_dir is not None:
        try:
            return training_probes(plan, processor, n), "training data (first rows)"
        except Exception as exc:  # noqa: BLE001 - fall back to generated probes, say why
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            return generated_probes(processor, n), f"generated (training data unusable: {reason})"
    return generated_probes(processor, n), "generated (no run manifest)"


def probe_logits(model, probes: list[dict]) -> list:
    """Last-layer logits (fp32, real tokens only) for each probe."""
    import torch

    dtype = next(model.parameters()).dtype
    outs = []
    with torch.inference_mode():
        for batch in probes:
            inputs = {
                k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v)
                for k, v in batch.items()
            }
            logits = model(**inputs).logits.float()
            mask = batch.get("attention_mask")
            if mask is not None:
                logits = logits[mask.bool()]
            outs.append(logits.reshape(-1, logits.shape[-1]))
    return outs


def compare(a: list, b: list) -> dict:
    """Max |dlogit|, top-1 agreement, tokens and logit scale: two models on the same probes."""
    diffs = [float((x - y).abs().max()) for x, y in zip(a, b, strict=True)]
    agree = sum(int((x.argmax(-1) == y.argmax(-1)).sum()) for x, y in zip(a, b, strict=True))
    total = sum(x.shape[0] for x in a)
    scale = max(float(x.abs().max()) for x in a)
    return {
        "max_abs_dlogit": max(diffs),
        "top1_agreement": agree / total if total else 1.0,
        "tokens": total,
        "max_abs_logit": scale,
    }


def judge(report: dict, dtype: str) -> tuple[bool, bool]:
    """(verify passed, adapter is a no-op) from the figures.

    Pass: fp32 needs max |dlogit| <= 1e-3 * max(1, max |logit|) and 100% top-1 agreement;
    bf16/fp16 (the merged weights are rounded once, the adapter model is not) need >= 90%
    top-1 agreement. No-op: the merged model's logits equal the base's exactly."""
    am = report["adapter_vs_merged"]
    if dtype == "float32":
        ok = am["max_abs_dlogit"] <= 1e-3 * max(1.0, am["max_abs_logit"])
        ok = ok and am["top1_agreement"] == 1.0
    else:
        ok = am["top1_agreement"] >= 0.9
    noop = report["merged_vs_base"]["max_abs_dlogit"] == 0.0
    return ok, noop


BF16_ROUNDING = 2.0**-8  # bf16 keeps 8 significant bits: half a unit in the last place


def change_vs_base(fig: dict) -> dict:
    """How much the adapter moves the logits against the base, and whether that is within
    bf16 rounding of the logits (max |logit| x 2^-8): then the adapter has not measurably
    changed the model (too few steps, a tiny learning rate), though verify may pass."""
    bound = BF16_ROUNDING * max(1.0, fig["max_abs_logit"])
    return {
        "max_abs_dlogit": fig["max_abs_dlogit"],
        "bf16_rounding": bound,
        "within_bf16_rounding": fig["max_abs_dlogit"] <= bound,
    }


# --------------------------------------------------------------------------- the merge


def _load_processor(folder: Path, trust: bool):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(folder), trust_remote_code=trust)


def _reload_merged(plan: MergePlan, folder: Path):
    cls = _model_class(plan)
    return cls.from_pretrained(
        str(folder), dtype=_torch_dtype(plan.dtype), trust_remote_code=plan.trust_remote_code
    ).eval()


def _quiet_transformers() -> None:
    """Keep merge's output to its own lines and table: transformers' per-load progress bars and
    its own internal deprecation warning (raised from inside `save_pretrained`) say nothing a
    user can act on."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings(
        "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
    )


def run_merge(opts: MergeOptions, log: Callable[[str], None] = lambda _m: None) -> MergeResult:
    """Plan, merge (in memory or streamed), verify, and move the folder into place."""
    import gc

    started = time.monotonic()
    plan = plan_merge(opts)
    from vlmctl.quiet import quiet_bitsandbytes

    quiet_bitsandbytes(plan.trained_quantized)
    _quiet_transformers()
    from vlmctl import __version__

    cfg = plan.adapter_config
    report: dict[str, Any] = {
        "vlmctl_version": __version__,
        "source": str(plan.adapter_dir),
        "run_dir": str(plan.run_dir) if plan.run_dir else None,
        "base": plan.base,
        "base_path": str(plan.base_dir),
        "output": str(plan.output),
        "mode": "low-memory" if opts.low_memory else "in-memory",
        "dtype": plan.dtype,
        "adapter": {
            "peft_type": cfg.get("peft_type", "LORA"),
            "r": cfg.get("r"),
            "lora_alpha": cfg.get("lora_alpha"),
            "use_rslora": bool(cfg.get("use_rslora")),
            "use_dora": bool(cfg.get("use_dora")),
            "modules_to_save": cfg.get("modules_to_save"),
        },
        "trained_on_quantized_base": plan.trained_quantized,
        "notes": plan.notes,
    }
    match = None
    lora = str(cfg.get("peft_type", "LORA")).upper() == "LORA"
    if opts.low_memory:
        match = match_adapter(plan, streaming=True)
    elif lora and _has_safetensors(plan.base_dir):
        with contextlib.suppress(StreamingUnsupported):
            match_adapter(plan, streaming=False)  # only to refuse a misfit before loading
    for note in plan.notes:
        log(f"note: {note}")
    log(f"merging {plan.adapter_dir} into {plan.base} ({plan.dtype}, {report['mode']})")

    with atomic_folder(plan.output, opts.force) as tmp:
        copy_support_files(plan, tmp, with_config=True)
        processor = _load_processor(tmp, plan.trust_remote_code) if opts.verify else None
        probes, source = make_probes(plan, processor, opts.num_probes) if opts.verify else ([], "")
        logits: dict[str, list] = {}
        if opts.low_memory:
            stats = low_memory_merge(plan, match, tmp, opts.max_shard_size)
            report["merge"] = stats
            if opts.verify:
                model = load_adapter_model(plan, load_base(plan))
                logits["adapter"] = probe_logits(model, probes)
                with model.disable_adapter():
                    logits["base"] = probe_logits(model, probes)
                del model
                gc.collect()
        else:
            model = load_adapter_model(plan, load_base(plan))
            if opts.verify:
                logits["adapter"] = probe_logits(model, probes)
                with model.disable_adapter():
                    logits["base"] = probe_logits(model, probes)
            zero = _peft_zero_delta(model)
            merged = model.merge_and_unload()
            del model
            merged.save_pretrained(str(tmp), max_shard_size=opts.max_shard_size)
            _test_sleep()
            del merged
            gc.collect()
            report["merge"] = {"zero_delta": zero}
        noop = bool(report["merge"].get("zero_delta"))
        if opts.verify:
            merged = _reload_merged(plan, tmp)
            logits["merged"] = probe_logits(merged, probes)
            del merged
            gc.collect()
            figures = {
                "probes": len(probes),
                "probe_source": source,
                "adapter_vs_merged": compare(logits["adapter"], logits["merged"]),
                "merged_vs_base": compare(logits["merged"], logits["base"]),
                "adapter_vs_base": compare(logits["adapter"], logits["base"]),
            }
            passed, noop_logits = judge(figures, plan.dtype)
            noop = noop or noop_logits
            figures["passed"] = passed
            figures["change_vs_base"] = change_vs_base(figures["adapter_vs_base"])
            report["verify"] = figures
        report["noop"] = noop
        report["seconds"] = round(time.monotonic() - started, 2)
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
        if opts.verify and not report["verify"]["passed"]:
            raise MergeVerifyError(report, _verify_failure(report))
        if noop and not opts.allow_noop:
            raise MergeVerifyError(
                report,
                Finding(
                    "error",
                    "the adapter changes nothing: the merged model equals the base "
                    "(all LoRA deltas are zero; was the run trained at all?); nothing written",
                    hint="check the run (global_step, learning rate); --allow-noop writes it anyway",
                ),
            )
    return MergeResult(output=plan.output, report=report)


def _verify_failure(report: dict) -> Finding:
    am = report["verify"]["adapter_vs_merged"]
    return Finding(
        "error",
        f"verify failed: merged model differs from the adapter model (max |dlogit| "
        f"{am['max_abs_dlogit']:.3g}, top-1 agreement {am['top1_agreement']:.1%}); nothing written",
        hint="rerun with VLMCTL_DEBUG=1 and report it; --no-verify skips the check",
    )


def _peft_zero_delta(model) -> bool:
    """True when every LoRA B is zero and there is nothing else (DoRA, bias, modules_to_save)."""
    import torch

    any_lora = False
    for name, param in model.named_parameters():
        if "lora_B" in name:
            any_lora = True
            if bool(torch.count_nonzero(param)):
                return False
        elif "lora_magnitude_vector" in name or "modules_to_save" in name:
            return False
    return any_lora


class MergeVerifyError(VlmctlError):
    """Verify refused the merge; carries the report so the figures can still be printed."""

    def __init__(self, report: dict, finding: Finding):
        super().__init__(finding)
        self.report = report
