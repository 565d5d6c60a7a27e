"""`train_config.yaml`: the seed's training keys, typed, plus any other `SFTConfig` field.

The seed's keys keep their meaning even where the installed libraries renamed them:
`group_by_length` (gone from transformers 5.x) becomes `train_sampling_strategy:
group_by_length`, and `gradient_checkpointing` (a deprecated alias) becomes
`activation_checkpointing`. `mappings()` says what each key became, so `validate` can show it.
Keys beyond the seed's must be fields of the installed TRL `SFTConfig` (checked by the loader).
vlmctl's own keys (`generation_eval`) are typed here and never passed to `SFTConfig`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    field_validator,
)


class GenerationEvalConfig(BaseModel):
    """`generation_eval:` (vlmctl's own key): answer a fixed eval sample at every evaluation."""

    model_config = ConfigDict(extra="forbid")

    rows: PositiveInt = Field(default=16, description="The first N eval rows (a fixed sample).")
    max_new_tokens: PositiveInt = 32
    batch_size: PositiveInt = 8


VLMCTL_KEYS = frozenset({"generation_eval", "packing", "padding_free", "packing_strategy"})
"""Keys of `train_config.yaml` that vlmctl handles itself and never passes to SFTConfig.

`packing` / `padding_free` / `packing_strategy` are SFTConfig's names, but TRL refuses them for
vision data: vlmctl packs in its own collator (vlmctl/packing.py)."""


class TrainConfig(BaseModel):
    """The whole `train_config.yaml` (extra keys are SFTConfig fields, checked by the loader)."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

    output_dir: str | None = Field(
        default=None,
        description="Where the run writes (relative to the current directory). Default: "
        "outputs/<config folder name>. CLI: --output-dir.",
    )
    per_device_train_batch_size: PositiveInt = 8
    per_device_eval_batch_size: PositiveInt = 8
    gradient_accumulation_steps: PositiveInt = 2
    learning_rate: PositiveFloat = 1.0e-05
    num_train_epochs: PositiveFloat = 1.0
    logging_steps: PositiveFloat = Field(
        default=0.1, description="An integer number of steps, or a fraction (<1) of total steps."
    )
    eval_steps: PositiveFloat | None = Field(default=0.1, description="Steps or a fraction.")
    save_steps: PositiveFloat = Field(default=0.1, description="Steps or a fraction.")
    save_total_limit: NonNegativeInt | None = 2
    gradient_checkpointing: bool = True
    bf16: bool = True
    fp16: bool = False
    group_by_length: bool = True
    remove_unused_columns: bool = False
    dataloader_pin_memory: bool = False
    report_to: list[str] | str = Field(default_factory=lambda: ["wandb"])
    run_name: str | None = None
    seed: int = 42
    packing: bool = Field(
        default=False,
        description="vlmctl: pack rows into bins of collator text_processing.max_length tokens "
        "(true lengths, media included; rows never split); each batch of bins becomes one "
        "padding-free row whose attention never crosses rows. per_device_train_batch_size "
        "then counts bins. Refused for families where it cannot be exact.",
    )
    padding_free: bool = Field(
        default=False,
        description="vlmctl: without packing, each batch of rows becomes one padding-free row "
        "(no bins). packing: true implies it.",
    )
    packing_strategy: Literal["bfd"] = Field(
        default="bfd",
        description="How rows are placed into bins: bfd (best-fit decreasing). TRL's "
        "bfd_split and wrapped split rows, which media spans forbid.",
    )
    generation_eval: GenerationEvalConfig | None = Field(
        default=None,
        description="vlmctl: exact match, token F1, ROUGE-L and ANLS of generated answers on "
        "the first `rows` eval rows at every evaluation (eval_steps), logged to wandb and to "
        "<output_dir>/generation-eval.jsonl. Needs an eval split. Default: off.",
    )

    @field_validator("logging_steps", "eval_steps", "save_steps")
    @classmethod
    def _steps_or_fraction(cls, v: float | None) -> float | None:
        # transformers refuses 1.5 after launch ("must be an integer if bigger than 1").
        if v is not None and v > 1 and not float(v).is_integer():
            raise ValueError(
                f"{v} is neither a whole number of steps nor a fraction of training below 1; "
                f"use {int(v)} or {int(v) + 1} (steps), or a fraction such as 0.1"
            )
        return v

    def extra_keys(self) -> dict[str, Any]:
        """Keys beyond the typed ones (each must be an SFTConfig field)."""
        return dict(self.model_extra or {})

    def mappings(self) -> dict[str, str]:
        """Seed key -> what it becomes in the installed SFTConfig (only renamed keys)."""
        out = {}
        if self.group_by_length:
            out["group_by_length: true"] = "train_sampling_strategy: group_by_length"
        else:
            out["group_by_length: false"] = "train_sampling_strategy: random"
        out[f"gradient_checkpointing: {str(self.gradient_checkpointing).lower()}"] = (
            f"activation_checkpointing: {str(self.gradient_checkpointing).lower()}"
        )
        return out

    def report_to_list(self) -> list[str]:
        """`report_to` as a list (`"none"` -> [])."""
        items = [self.report_to] if isinstance(self.report_to, str) else list(self.report_to)
        return [x for x in items if x and x != "none"]

    def to_sft_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for `trl.SFTConfig`, with the seed's renamed keys mapped."""
        data = self.model_dump(exclude={"group_by_length", "gradient_checkpointing", *VLMCTL_KEYS})
        data.update(self.extra_keys())
        for key in ("logging_steps", "eval_steps", "save_steps"):
            value = data.get(key)
            if value is not None and value >= 1 and float(value).is_integer():
                data[key] = int(value)
        data["report_to"] = self.report_to_list() or "none"
        data.setdefault(
            "train_sampling_strategy", "group_by_length" if self.group_by_length else "random"
        )
        data.setdefault("activation_checkpointing", self.gradient_checkpointing)
        return {k: v for k, v in data.items() if v is not None or k in self.extra_keys()}
