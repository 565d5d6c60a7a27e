"""`vlm_model_config.yaml`: which model to train, how its classes resolve, how it loads.

The seed's keys (`model_classes`, `loading_params`, `processor_params`) keep their meaning;
`model_name_or_path`, `revision` and `quantization` are vlmctl's additions (the seed never says
which model to train, nor how to load it in 4/8 bit).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Fixed table: the spellings people write -> canonical dtype name. Never evaluated.
DTYPE_TABLE: dict[str, str] = {
    "torch.bfloat16": "bfloat16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "torch.float16": "float16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "torch.half": "float16",
    "torch.float32": "float32",
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "torch.float": "float32",
    "auto": "auto",
}


# String device_map values transformers accepts: a strategy, or a torch device.
DEVICE_MAP_RE = re.compile(
    r"auto|balanced|balanced_low_0|sequential|(cpu|cuda|mps|xpu|npu|hpu|meta)(:\d+)?"
)


class Strict(BaseModel):
    """Base for every config section: unknown keys are errors, assignment re-validates."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelClassEntry(Strict):
    """One `model_classes` entry: the classes to use for a model id."""

    model_class: str = Field(description="Model class name, e.g. Qwen2VLForConditionalGeneration.")
    processor_class: str | None = Field(
        default=None, description="Processor class name; null = AutoProcessor."
    )
    import_path: str = Field(
        default="transformers",
        description="Module to import the classes from. Remote-code classes (InternVL2, "
        "Phi-3-vision) are not attributes of it and resolve through trust_remote_code.",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Run this checkpoint's own Python code (remote-code models such as "
        "InternVL2 and Phi-3-vision). Applies to this model only; loading_params."
        "trust_remote_code applies to every model.",
    )


class LoadingParams(Strict):
    """Keyword arguments for the model's `from_pretrained`."""

    torch_dtype: str = Field(
        default="torch.bfloat16",
        description="torch.bfloat16 | torch.float16 | torch.float32 | auto (parsed from a fixed "
        "table, never evaluated).",
    )
    device_map: str | dict[str, Any] | None = Field(
        default="auto",
        description="auto | cuda | cpu | null. Forced off under multi-process training "
        "(each process holds its own replica).",
    )
    trust_remote_code: bool = Field(
        default=False,
        description="Run the checkpoint's own Python code. Only for models that need it.",
    )
    attn_implementation: str | None = Field(
        default=None, description="eager | sdpa | flash_attention_2 | null (library default)."
    )

    @field_validator("device_map")
    @classmethod
    def _known_device_map(cls, v: Any) -> Any:
        # What transformers' from_pretrained takes as a string; "gpu" fails only after launch.
        if isinstance(v, str) and not DEVICE_MAP_RE.fullmatch(v):
            raise ValueError(
                f"{v!r} is not a device_map; use auto, balanced, balanced_low_0, sequential, "
                "cpu, cuda, cuda:N, mps, xpu, a mapping {module: device}, or null"
            )
        return v

    @field_validator("torch_dtype")
    @classmethod
    def _known_dtype(cls, v: str) -> str:
        if str(v).strip().lower() not in DTYPE_TABLE:
            raise ValueError(
                f"unknown dtype {v!r}; use one of torch.bfloat16, torch.float16, torch.float32, auto"
            )
        return v

    @property
    def dtype_name(self) -> str:
        """Canonical dtype name: bfloat16 | float16 | float32 | auto."""
        return DTYPE_TABLE[self.torch_dtype.strip().lower()]


class ProcessorParams(BaseModel):
    """Keyword arguments for the processor's `from_pretrained` (extra keys pass through)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    trust_remote_code: bool = Field(
        default=False, description="Same as loading_params, for the processor."
    )


class Quantization(Strict):
    """bitsandbytes loading for QLoRA (4-bit NF4) or 8-bit training."""

    load_in_4bit: bool = False
    load_in_8bit: bool = False
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = "nf4"
    bnb_4bit_compute_dtype: str = "bfloat16"
    bnb_4bit_use_double_quant: bool = True

    @field_validator("bnb_4bit_compute_dtype")
    @classmethod
    def _known_dtype(cls, v: str) -> str:
        if str(v).strip().lower() not in DTYPE_TABLE or DTYPE_TABLE[v.strip().lower()] == "auto":
            raise ValueError(f"unknown dtype {v!r}; use bfloat16, float16 or float32")
        return v

    @model_validator(mode="after")
    def _one_mode(self) -> Quantization:
        if self.load_in_4bit and self.load_in_8bit:
            raise ValueError("load_in_4bit and load_in_8bit are exclusive; set only one")
        return self

    @property
    def enabled(self) -> bool:
        """True when the model is loaded quantized."""
        return self.load_in_4bit or self.load_in_8bit


class ModelConfig(Strict):
    """The whole `vlm_model_config.yaml`."""

    model_name_or_path: str | None = Field(
        default=None,
        description="Hub id or local folder (relative to the config folder) of the model to "
        "train. CLI: --model.",
    )
    revision: str | None = Field(default=None, description="Hub revision (branch, tag, commit).")
    model_classes: dict[str, ModelClassEntry] = Field(
        default_factory=dict,
        description="Model id -> classes. Ids without an entry use AutoModelForImageTextToText "
        "and AutoProcessor.",
    )
    loading_params: LoadingParams = Field(default_factory=LoadingParams)
    processor_params: ProcessorParams = Field(default_factory=ProcessorParams)
    quantization: Quantization = Field(default_factory=Quantization)

    @property
    def dtype_name(self) -> str:
        """Canonical dtype name of `loading_params.torch_dtype`."""
        return self.loading_params.dtype_name
