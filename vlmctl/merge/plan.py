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

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from vlmctl.errors import Finding, UsageError, VlmctlError
from vlmctl.merge.output import MERGE_MARKER, REPORT_NAME, written_by_merge
from vlmctl.run_folder.adapter import AdapterRun, resolve_adapter


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
class MergePlan(AdapterRun):
    """Everything resolved before any weight is touched: the adapter run and the output."""

    output: Path = Path()


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


def plan_merge(opts: MergeOptions) -> MergePlan:
    """Resolve adapter, manifest, base, dtype and output; refuse early, before loading weights."""
    run = resolve_adapter(
        opts.source, base=opts.base, dtype=opts.dtype, trust_remote_code=opts.trust_remote_code
    )
    output = _resolve_output(opts, run.adapter_dir, run.run_dir, run.base_dir)
    fields = {f.name: getattr(run, f.name) for f in dataclasses.fields(AdapterRun)}
    return MergePlan(**fields, output=output)
