"""Where each adapter tensor lands in the base checkpoint: checkpoint keys mapped to the model
tree with transformers' own load-time renamings, and every adapted layer checked for fit before
any weight is loaded."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmctl.errors import Finding, VlmctlError
from vlmctl.merge.lora import LoraLayer, StreamingUnsupported, is_zero_lora, parse_adapter
from vlmctl.merge.plan import MergePlan
from vlmctl.merge.st_io import read_st_header
from vlmctl.run_folder.adapter import read_json
from vlmctl.run_folder.loading import load_config, resolve_model_class, torch_dtype


def has_safetensors(base_dir: Path) -> bool:
    return (base_dir / "model.safetensors").is_file() or (
        base_dir / "model.safetensors.index.json"
    ).is_file()


def _checkpoint_files(base_dir: Path) -> list[Path]:
    index = base_dir / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(read_json(index)["weight_map"].values()))
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

    config = load_config(plan)
    cls = resolve_model_class(plan, config)
    with torch.device("meta"):
        if hasattr(cls, "from_config"):  # an Auto class
            meta = cls.from_config(
                config, dtype=torch_dtype(plan.dtype), trust_remote_code=plan.trust_remote_code
            )
        else:
            meta = cls._from_config(config, dtype=torch_dtype(plan.dtype))
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


def _read_headers(files: list[Path]) -> dict[str, tuple[Path, dict]]:
    """checkpoint key -> (shard file, its safetensors header entry), from the headers alone."""
    headers: dict[str, tuple[Path, dict]] = {}
    for path in files:
        header, _ = read_st_header(path)
        header.pop("__metadata__", None)
        for key, info in header.items():
            headers[key] = (path, info)
    return headers


def _misfit(base: str, message: str) -> VlmctlError:
    return VlmctlError(
        Finding(
            "error",
            f"adapter does not fit base {base}: {message}",
            hint="pass --base with the model the adapter was trained on",
        )
    )


def match_adapter(plan: MergePlan, streaming: bool) -> AdapterMatch:
    """Check that every adapted layer exists in the base with the adapter's shape (one clear
    line otherwise), before any weight is loaded; the map the streaming merge follows."""
    layers, full = parse_adapter(plan.adapter_dir, plan.adapter_config)
    files = _checkpoint_files(plan.base_dir)
    headers = _read_headers(files)
    key_map, converted, model_dtypes, renamings, _meta = _key_map(plan, list(headers))
    by_model_key = {v: k for k, v in key_map.items()}

    def ckpt_key_for(model_key: str) -> str | None:
        if model_key in by_model_key:
            return by_model_key[model_key]
        # An adapter saved against an older module tree: rename it like a checkpoint key.
        from transformers.core_model_loading import apply_renamings

        return by_model_key.get(apply_renamings(model_key, renamings))

    def misfit(message: str) -> VlmctlError:
        return _misfit(plan.base, message)

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
        zero_delta=all(is_zero_lora(layer) for layer in layers) and not full,
    )
