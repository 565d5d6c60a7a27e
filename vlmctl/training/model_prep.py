"""Model-side decisions of a training run: precision, device placement, what LoRA adapts.

Kept apart from the worker so each rule is a small function with a test, and so the worker
reads as the sequence of steps it runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from vlmctl.errors import ConfigError, Finding

# Where VLMs keep their language model, most specific first (transformers 5.x layouts).
LM_CANDIDATES: tuple[str, ...] = (
    "model.language_model",
    "language_model",
    "model.text_model",
    "text_model",
    "model.llm",
    "llm",
)
# Names of vision towers and projectors across families (for messages and the full-FT freeze).
VISION_NAMES: tuple[str, ...] = (
    "visual",
    "vision_tower",
    "vision_model",
    "multi_modal_projector",
    "connector",
    "mlp1",
    "vision_embed_tokens",
    "image_newline",
)


@dataclass
class Precision:
    """What the run computes in: SFTConfig's bf16/fp16/use_cpu and the loading dtype."""

    bf16: bool
    fp16: bool
    use_cpu: bool
    load_dtype: str  # bfloat16 | float16 | float32 | auto
    notes: list[str]


def choose_precision(cs: Any, cuda: bool, bf16_supported: bool) -> Precision:
    """bf16/fp16 by what the hardware supports; a clear ConfigError when it cannot.

    On the CPU bf16 autocast works (`use_cpu=True`); fp16 does not. A GPU without bf16
    (V100, T4) gets an error naming the switch rather than a silent change of precision.
    """
    train, model = cs.train, cs.model
    bf16, fp16 = bool(train.bf16), bool(train.fp16)
    dtype = model.dtype_name
    notes: list[str] = []
    if bf16 and fp16:
        raise ConfigError(
            cs.finding(
                "error",
                "train",
                "fp16",
                "bf16 and fp16 are both true",
                hint="set only one (bf16 on GPUs since Ampere, fp16 on older ones)",
            )
        )
    if not cuda:
        if fp16:
            raise ConfigError(
                cs.finding(
                    "error",
                    "train",
                    "fp16",
                    "fp16 mixed precision needs a CUDA GPU; none is available here",
                    hint="set fp16: false (bf16: true works on the CPU)",
                )
            )
        if dtype == "float16":
            raise ConfigError(
                cs.finding(
                    "error",
                    "model",
                    "loading_params.torch_dtype",
                    "torch.float16 weights cannot be trained on the CPU",
                    hint="use torch.bfloat16 or torch.float32 on a machine without a GPU",
                )
            )
        if bf16:
            notes.append("no CUDA GPU: training on the CPU with bf16 autocast")
        return Precision(bf16=bf16, fp16=False, use_cpu=True, load_dtype=dtype, notes=notes)
    if not bf16_supported and (bf16 or dtype == "bfloat16"):
        key = ("train", "bf16") if bf16 else ("model", "loading_params.torch_dtype")
        raise ConfigError(
            cs.finding(
                "error",
                key[0],
                key[1],
                "this GPU does not support bfloat16",
                hint="set bf16: false, fp16: true and torch_dtype: torch.float16",
            )
        )
    return Precision(bf16=bf16, fp16=fp16, use_cpu=False, load_dtype=dtype, notes=notes)


def device_map_for(
    configured: Any, world_size: int, local_rank: int, cuda: bool, quantized: bool
) -> tuple[Any, str | None]:
    """The device_map to load with, and a note when the configured one is replaced.

    Under several processes each holds its own replica: "auto" would spread one model over
    every GPU in each process. Quantized models need a map; others are placed by the Trainer.
    """
    if world_size > 1:
        if quantized and cuda:
            target: Any = {"": f"cuda:{local_rank}"}
        else:
            target = None
        note = None
        if configured not in (None, target):
            note = (
                f"device_map {configured!r} replaced by {target!r}: each of the "
                f"{world_size} processes holds its own copy of the model"
            )
        return target, note
    if not cuda and configured not in (None, "cpu"):
        # No GPU: "auto" adds nothing but dispatch hooks, "cuda" cannot load; the Trainer
        # places the model on the CPU.
        note = None if configured == "auto" else f"device_map {configured!r} ignored: no CUDA GPU"
        return None, note
    return configured, None


def find_language_model(model: Any) -> tuple[str, Any]:
    """(dotted prefix, module) of the language model inside a VLM."""
    modules = dict(model.named_modules())
    for name in LM_CANDIDATES:
        if name in modules:
            return name, modules[name]
    getter = getattr(model, "get_decoder", None)
    if callable(getter):
        try:
            decoder = getter()
        except Exception:  # noqa: BLE001 - some remote-code models raise here
            decoder = None
        if decoder is not None:
            for name, module in modules.items():
                if module is decoder and name:
                    return name, module
    raise ConfigError(
        Finding(
            "error",
            f"cannot tell the language model from the vision tower in {type(model).__name__}",
            hint="set peft.exclude_vision_modules: false, or list target_modules explicitly",
            key="peft.exclude_vision_modules",
        )
    )


def _is_linear(module: Any) -> bool:
    import torch

    # bitsandbytes Linear4bit / Linear8bitLt subclass nn.Linear.
    return isinstance(module, torch.nn.Linear)


def language_model_targets(model: Any, target_modules: str | list[str]) -> tuple[str, list[str]]:
    """A PEFT `target_modules` regex matching only the language model's linear layers.

    Returns (regex, the module suffixes it covers). `all-linear` means every linear layer of
    the language model (the output head stays out, as PEFT's own all-linear does); a list keeps
    the named suffixes. A regex keeps adapter_config.json short (not one entry per layer) and
    PEFT matches it with `re.fullmatch` against the same names computed here.
    """
    prefix, _ = find_language_model(model)
    wanted = (
        None
        if target_modules == "all-linear"
        else ([target_modules] if isinstance(target_modules, str) else list(target_modules))
    )
    suffixes: set[str] = set()
    for name, module in model.named_modules():
        if not name.startswith(prefix + ".") or not _is_linear(module):
            continue
        rel = name[len(prefix) + 1 :]
        if wanted is None:
            suffixes.add(rel.split(".")[-1])
        else:
            for w in wanted:
                if rel == w or rel.endswith("." + w):
                    suffixes.add(w)
    if not suffixes:
        raise ConfigError(
            Finding(
                "error",
                f"target_modules {target_modules!r} matches no linear layer of the language "
                f"model ({prefix})",
                hint="use 'all-linear' or suffixes such as q_proj, v_proj",
                key="peft.target_modules",
            )
        )
    alternatives = "|".join(re.escape(s) for s in sorted(suffixes))
    return rf"{re.escape(prefix)}\..*\.({alternatives})", sorted(suffixes)


def freeze_outside_language_model(model: Any) -> int:
    """Full fine-tuning with exclude_vision_modules: freeze vision tower and projector.

    Everything outside the language model and the output head stops training. Returns the
    number of parameters frozen.
    """
    prefix, _ = find_language_model(model)
    frozen = 0
    for name, param in model.named_parameters():
        if name.startswith(prefix + ".") or name.startswith("lm_head."):
            continue
        if param.requires_grad:
            param.requires_grad_(False)
            frozen += param.numel()
    return frozen


def lora_config(cs: Any, model: Any):
    """The `peft.LoraConfig` for the run (vision exclusion applied)."""
    from peft import LoraConfig

    kwargs = cs.peft.lora_kwargs()
    if cs.peft.exclude_vision_modules:
        kwargs["target_modules"], _ = language_model_targets(model, cs.peft.target_modules)
    return LoraConfig(**kwargs)


def trainable_summary(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total
