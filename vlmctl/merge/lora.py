"""LoRA adapter tensors and PEFT's merge arithmetic for one layer (used by the streaming merge)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmctl.errors import Finding, VlmctlError
from vlmctl.run_folder.adapter import ADAPTER_WEIGHTS

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


def is_zero_lora(layer: LoraLayer) -> bool:
    # A DoRA magnitude can change the weight even with B = 0; only plain LoRA is judged here.
    return layer.magnitude is None and layer.bias is None and not bool(layer.B.abs().sum() > 0)
