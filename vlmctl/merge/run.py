"""The merge, start to end: plan, merge (in memory or streamed), verify, move into place."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmctl.errors import Finding
from vlmctl.merge import output
from vlmctl.merge.keymap import has_safetensors, match_adapter
from vlmctl.merge.lora import StreamingUnsupported
from vlmctl.merge.output import REPORT_NAME, atomic_folder
from vlmctl.merge.plan import MergeOptions, MergePlan, plan_merge
from vlmctl.merge.streaming import low_memory_merge
from vlmctl.merge.support_files import copy_support_files
from vlmctl.merge.verify import (
    MergeVerifyError,
    change_vs_base,
    compare,
    judge,
    make_probes,
    peft_zero_delta,
    probe_logits,
    verify_failure,
)
from vlmctl.run_folder.loading import load_adapter_model, load_base, reload_merged
from vlmctl.runtime import processor_from_folder


@dataclass
class MergeResult:
    """Where the merged model went and the figures written to merge-report.json."""

    output: Path
    report: dict


def _quiet_transformers() -> None:
    """Keep merge's output to its own lines and table: transformers' per-load progress bars and
    its own internal deprecation warning (raised from inside `save_pretrained`) say nothing a
    user can act on."""
    from vlmctl.quiet import quiet_process

    quiet_process(
        errors_only=False, warnings=((FutureWarning, ".*is_gradient_checkpointing.*", ""),)
    )


def _report_head(plan: MergePlan, opts: MergeOptions) -> dict[str, Any]:
    """What merge-report.json says of the inputs (before any weight is touched)."""
    from vlmctl import __version__

    cfg = plan.adapter_config
    return {
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


def _reference_logits(model, probes: list, logits: dict) -> None:
    """The adapter model's logits, and the base's (adapter disabled), on the probes."""
    logits["adapter"] = probe_logits(model, probes)
    with model.disable_adapter():
        logits["base"] = probe_logits(model, probes)


def _merge_weights(plan: MergePlan, opts: MergeOptions, match, tmp: Path, probes, logits) -> dict:
    """Write the merged weights into `tmp` (streamed or through PEFT); the reference logits are
    taken from the adapter model on the way when verifying."""
    import gc

    if opts.low_memory:
        stats = low_memory_merge(plan, match, tmp, opts.max_shard_size)
        if opts.verify:
            model = load_adapter_model(plan, load_base(plan))
            _reference_logits(model, probes, logits)
            del model
            gc.collect()
        return stats
    model = load_adapter_model(plan, load_base(plan))
    if opts.verify:
        _reference_logits(model, probes, logits)
    zero = peft_zero_delta(model)
    merged = model.merge_and_unload()
    del model
    merged.save_pretrained(str(tmp), max_shard_size=opts.max_shard_size)
    output.sleep_for_tests()
    del merged
    gc.collect()
    return {"zero_delta": zero}


def _verify_figures(plan: MergePlan, tmp: Path, probes, source: str, logits: dict) -> dict:
    """Reload the written model and compare it with the adapter model and the base."""
    import gc

    merged = reload_merged(plan, tmp)
    logits["merged"] = probe_logits(merged, probes)
    del merged
    gc.collect()
    return {
        "probes": len(probes),
        "probe_source": source,
        "adapter_vs_merged": compare(logits["adapter"], logits["merged"]),
        "merged_vs_base": compare(logits["merged"], logits["base"]),
        "adapter_vs_base": compare(logits["adapter"], logits["base"]),
    }


def _refuse_if_bad(report: dict, opts: MergeOptions, noop: bool) -> None:
    """Raise (with the report) when verify failed or the adapter changes nothing."""
    if opts.verify and not report["verify"]["passed"]:
        raise MergeVerifyError(report, verify_failure(report))
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


def run_merge(opts: MergeOptions, log: Callable[[str], None] = lambda _m: None) -> MergeResult:
    """Plan, merge (in memory or streamed), verify, and move the folder into place."""
    started = time.monotonic()
    plan = plan_merge(opts)
    from vlmctl.quiet import quiet_bitsandbytes

    quiet_bitsandbytes(plan.trained_quantized)
    _quiet_transformers()
    report = _report_head(plan, opts)
    match = None
    lora = str(plan.adapter_config.get("peft_type", "LORA")).upper() == "LORA"
    if opts.low_memory:
        match = match_adapter(plan, streaming=True)
    elif lora and has_safetensors(plan.base_dir):
        with contextlib.suppress(StreamingUnsupported):
            match_adapter(plan, streaming=False)  # only to refuse a misfit before loading
    for note in plan.notes:
        log(f"note: {note}")
    log(f"merging {plan.adapter_dir} into {plan.base} ({plan.dtype}, {report['mode']})")

    with atomic_folder(plan.output, opts.force) as tmp:
        copy_support_files(plan, tmp, with_config=True)
        processor = processor_from_folder(tmp, plan.trust_remote_code) if opts.verify else None
        probes, source = make_probes(plan, processor, opts.num_probes) if opts.verify else ([], "")
        logits: dict[str, list] = {}
        report["merge"] = _merge_weights(plan, opts, match, tmp, probes, logits)
        noop = bool(report["merge"].get("zero_delta"))
        if opts.verify:
            figures = _verify_figures(plan, tmp, probes, source, logits)
            passed, noop_logits = judge(figures, plan.dtype)
            noop = noop or noop_logits
            figures["passed"] = passed
            figures["change_vs_base"] = change_vs_base(figures["adapter_vs_base"])
            report["verify"] = figures
        report["noop"] = noop
        report["seconds"] = round(time.monotonic() - started, 2)
        (tmp / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
        _refuse_if_bad(report, opts, noop)
    return MergeResult(output=plan.output, report=report)
