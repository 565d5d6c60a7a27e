"""`peft_config.yaml`: LoRA settings (the seed's keys) and what to adapt.

The seed's keys map one to one onto `peft.LoraConfig`. vlmctl adds `enabled` (false = full
fine-tuning), `exclude_vision_modules` (keep the vision tower and projector frozen and out of
LoRA; PEFT's `all-linear` would otherwise wrap them too) and `modules_to_save`.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, PositiveInt, field_validator

from vlmctl.config.model import Strict


class PeftSettings(Strict):
    """The whole `peft_config.yaml`."""

    enabled: bool = Field(default=True, description="false = full fine-tuning, no adapter.")
    task_type: Literal["CAUSAL_LM"] = Field(default="CAUSAL_LM", description="PEFT task type.")
    r: PositiveInt = Field(default=64, description="LoRA rank (higher: more parameters).")
    target_modules: str | list[str] = Field(
        default="all-linear", description="'all-linear' or a list of module-name suffixes."
    )
    lora_alpha: float = Field(default=16, gt=0, description="LoRA scaling numerator.")
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    bias: Literal["none", "all", "lora_only"] = "none"
    use_rslora: bool = Field(default=False, description="Rank-stabilised scaling alpha/sqrt(r).")
    use_dora: bool = Field(default=False, description="Weight-decomposed LoRA (DoRA).")
    exclude_vision_modules: bool = Field(
        default=True,
        description="Keep the vision tower and the projector frozen and out of LoRA; only the "
        "language model is adapted.",
    )
    modules_to_save: list[str] | None = Field(
        default=None, description="Modules trained in full and saved with the adapter."
    )

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v: str | list[str]) -> str | list[str]:
        if isinstance(v, list) and not v:
            raise ValueError("target_modules is empty; use 'all-linear' or name modules")
        if isinstance(v, str) and v != "all-linear":
            squashed = re.sub(r"[\s_\-]+", "", v.lower())
            if squashed in ("alllinear", "all", "linear", "alllinears"):
                raise ValueError(f"{v!r} is not a PEFT setting; did you mean 'all-linear'?")
        return v

    def lora_kwargs(self) -> dict:
        """Keyword arguments for `peft.LoraConfig` (vision exclusion is applied by the worker)."""
        return {
            "task_type": self.task_type,
            "r": self.r,
            "target_modules": self.target_modules,
            "lora_alpha": self.lora_alpha,
            "lora_dropout": self.lora_dropout,
            "bias": self.bias,
            "use_rslora": self.use_rslora,
            "use_dora": self.use_dora,
            "modules_to_save": self.modules_to_save,
        }
