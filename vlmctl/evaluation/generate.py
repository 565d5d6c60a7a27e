"""Which model `--model M` names, loading it, and batched greedy generation through the collator.

`M` may be
- a model folder (a base model, or `vlmctl merge`'s output): config.json + processor files;
- a training run folder or any PEFT adapter folder (adapter_config.json): the adapter is
  applied on its base (found the way `vlmctl merge` finds it: run manifest, else
  adapter_config.json), unmerged;
- a hub id already in the local cache.
Every `--model` is checked (cheaply, no weights) before any is loaded, so a typo costs nothing.

Prompts come from `VLMCollator.encode_prompts` (the training row rendering and processor call,
with the generation prompt), left-padded by `collate_prompts`; generation is greedy with the
KV cache, and the model's `generation_config` (eos ids, repetition penalty, ...) applies.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmctl.errors import Finding, VlmctlError
from vlmctl.generation import LoadedModel

ADAPTER_CONFIG = "adapter_config.json"


@dataclass
class ModelSpec:
    """A `--model` value, resolved without loading weights."""

    name: str  # as shown in reports (the value given, shortened)
    path: Path  # the folder (the adapter folder for kind == "adapter")
    kind: str  # model | adapter
    plan: Any = None  # run_folder.adapter.AdapterRun for adapters
    processor_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


def _bad(spec: str, what: str, hint: str) -> VlmctlError:
    return VlmctlError(Finding("error", f"--model {spec}: {what}", hint=hint, code="bad-model"))


def resolve_spec(value: str, name: str | None = None) -> ModelSpec:
    """`--model` -> ModelSpec, or a one-line error (not a model, missing base, no processor)."""
    from vlmctl.run_folder.adapter import has_processor, locate_base, resolve_adapter

    path = Path(value).expanduser()
    if not path.exists():
        if value.count("/") == 1 and not value.startswith((".", "/", "~")):
            try:  # a hub id in the local cache
                path = locate_base(value, None)
            except VlmctlError:
                raise _bad(
                    value,
                    "no such folder, and not a model in the local hub cache",
                    "pass a model folder, a merged model, or a run folder of `vlmctl train`",
                ) from None
        else:
            raise _bad(
                value,
                "no such folder",
                "pass a model folder, a merged model, or a run folder of `vlmctl train`",
            )
    if not path.is_dir():
        raise _bad(value, "not a folder", "pass a model folder or a run folder")
    path = path.resolve()
    label = name or value
    if (path / ADAPTER_CONFIG).is_file():
        from vlmctl.extras import require

        # An adapter is applied with peft (the train extra), unmerged.
        require("eval", "train", also=", or evaluate the merged model (vlmctl merge)")
        try:
            # Base, manifest, dtype and class resolved as merge resolves them (and refused
            # where merge refuses); nothing is written.
            plan = resolve_adapter(path)
        except VlmctlError as exc:
            first = exc.findings[0]
            hint = first.hint or "check the run folder"
            if "--base" in hint:  # merge's flag; eval uses the base the run was trained on
                hint = (
                    "a run folder is evaluated on the base it was trained on: put that model "
                    "back where vlmctl-run.json / adapter_config.json say, or evaluate a "
                    "merged model"
                )
            raise _bad(value, first.message, hint) from None
        proc = plan.processor_dir or (plan.base_dir if has_processor(plan.base_dir) else None)
        if proc is None:
            raise _bad(
                value,
                f"processor missing: no processor files in {path} nor in the base {plan.base_dir}",
                "copy the training processor (processor_config.json, tokenizer files) there",
            )
        return ModelSpec(label, path, "adapter", plan=plan, processor_dir=proc, notes=plan.notes)
    if not (path / "config.json").is_file():
        hint = "pass a model folder (config.json + weights) or a run folder (adapter_config.json)"
        raise _bad(value, f"not a model: no config.json or {ADAPTER_CONFIG} in {path}", hint)
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise _bad(value, f"not a model: no weights (*.safetensors) in {path}", "finish the save")
    if not has_processor(path):
        raise _bad(
            value,
            f"processor missing: no processor_config.json/tokenizer_config.json in {path}",
            "save the processor beside the model (vlmctl merge does), or pass the base folder",
        )
    return ModelSpec(label, path, "model", processor_dir=path)


def unique_names(values: Sequence[str]) -> list[str]:
    """Short distinct labels for the `--model` values (the last path parts that differ)."""
    parts = [Path(v).expanduser().parts or (v,) for v in values]
    for depth in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [f"{v}#{i}" for i, v in enumerate(values)]


def pick_device():
    """This process's device: its GPU under a launcher, else cuda:0, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def load(spec: ModelSpec, cs: Any, device: Any) -> LoadedModel:
    """Load the weights (adapter on its base for run folders), eval mode, on `device`."""
    from vlmctl import runtime
    from vlmctl.run_folder.loading import load_adapter_model, load_base

    if spec.kind == "adapter":
        model = load_adapter_model(spec.plan, load_base(spec.plan))
        processor = runtime.processor_from_folder(spec.processor_dir, spec.plan.trust_remote_code)
        model_type = runtime.model_type_of(spec.plan.base_dir)
    else:
        from vlmctl.models.resolve import load_model, resolve_model

        site = runtime.ModelSite(
            resolve_model(cs.model), str(spec.path), runtime.model_type_of(spec.path)
        )
        processor = runtime.load_processor(cs, site)
        model_type = site.model_type
        res = site.resolution
        # The config's class and dtype; never quantized, no device_map (placed below).
        cfg = cs.model.model_copy(update={"quantization": type(cs.model.quantization)()})
        try:
            model = load_model(res, cfg, spec.path, device_map=None)
        except (OSError, ValueError) as exc:
            raise _bad(
                str(spec.path),
                f"cannot load the model: {str(exc).splitlines()[0][:200]}",
                "check the folder holds a complete model of the config's family",
            ) from None
    model.eval()
    model.to(device)
    return LoadedModel(spec, model, processor, model_type)


# --------------------------------------------------------------------------- several processes


def dist_info() -> tuple[int, int]:
    """(rank, world size) under accelerate/torchrun, (0, 1) otherwise."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def init_dist(world: int) -> None:
    """Join the launcher's process group (gloo on CPU, nccl on GPU) when there are several."""
    if world <= 1:
        return
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")


def shard(rows: Sequence[Any], rank: int, world: int) -> list[Any]:
    """This process's rows: every `world`-th from `rank` (gathered back in row order)."""
    return list(rows[rank::world])


def gather(items: list[dict], world: int) -> list[dict]:
    """Every process's results, on every process, sorted by row (one list per model)."""
    if world <= 1:
        return items
    import torch.distributed as dist

    parts: list[Any] = [None] * world
    dist.all_gather_object(parts, items)
    merged = [x for part in parts for x in part]
    return sorted(merged, key=lambda r: r["row"])


def barrier_and_close(world: int) -> None:
    """Wait for every process, then leave the process group."""
    if world <= 1:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def read_json(path: Path) -> dict:
    """A small JSON file, {} when missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
