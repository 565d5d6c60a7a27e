"""Cross-field rules of train.yaml: precision, seed key mappings, padding against batch size."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlmctl.errors import Finding

if TYPE_CHECKING:
    from vlmctl.config.load import ConfigSet


def check_precision(cs: ConfigSet) -> list[Finding]:
    """bf16 and fp16 exclude each other."""
    if cs.train.bf16 and cs.train.fp16:
        return [
            cs.finding(
                "error",
                "train",
                "fp16",
                "bf16 and fp16 are both true; they are exclusive",
                hint="keep bf16: true (recommended) and set fp16: false",
                code="precision-both",
            )
        ]
    return []


def check_train(cs: ConfigSet) -> list[Finding]:
    """What the seed's train keys became, and train settings vlmctl overrides."""
    t = cs.train
    out: list[Finding] = []
    for seed_key, becomes in t.mappings().items():
        key = seed_key.split(":")[0]
        out.append(
            cs.finding(
                "info",
                "train",
                key,
                f"{seed_key} -> {becomes} (installed transformers/TRL name)",
                code="mapping",
            )
        )
    if t.remove_unused_columns:
        out.append(
            cs.finding(
                "warning",
                "train",
                "remove_unused_columns",
                "remove_unused_columns"
                " must be false for VLMs (the collator needs the image/video "
                "columns): vlmctl forces false",
                hint="set it to false",
                code="remove-unused",
            )
        )
    if "wandb" in t.report_to_list():
        out.append(
            cs.finding(
                "info",
                "train",
                "report_to",
                "report_to includes wandb: log in "
                "(`wandb login`) or set WANDB_MODE=offline; vlmctl never prompts",
                code="wandb",
            )
        )
    return out


def check_padding(cs: ConfigSet) -> list[Finding]:
    """padding: false holds only with batches of one row."""
    tp = cs.collator.text_processing
    if tp.padding is not False:
        return []
    sizes = [("per_device_train_batch_size", cs.train.per_device_train_batch_size)]
    ds = cs.collator.dataset
    if ds.eval_split or ds.eval_size or ds.eval_path:
        sizes.append(("per_device_eval_batch_size", cs.train.per_device_eval_batch_size))
    over = [f"{k}: {v}" for k, v in sizes if v > 1]
    if not over:
        return []
    return [
        cs.finding(
            "error",
            "collator",
            "text_processing.padding",
            f"padding: false cannot hold with {', '.join(over)}: rows of different lengths "
            "are stacked into one tensor only by padding them",
            hint="set padding: true (pad to the longest row of each batch) or "
            + " and ".join(f"{k}: 1" for k, _ in sizes),
            code="padding-false",
        )
    ]
