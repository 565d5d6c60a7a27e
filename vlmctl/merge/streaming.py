"""The low-memory merge: stream the base checkpoint one tensor at a time through the LoRA deltas
into sharded safetensors, each shard written header first."""

from __future__ import annotations

import json
import math
from pathlib import Path

from vlmctl.merge import output
from vlmctl.merge.keymap import AdapterMatch
from vlmctl.merge.lora import merge_lora_tensor
from vlmctl.merge.plan import MergePlan
from vlmctl.merge.st_io import _ST_DTYPES, ShardReader, ShardWriter, itemsize, parse_size, st_code
from vlmctl.run_folder.loading import torch_dtype


def _out_dtype_for(match: AdapterMatch, key: str, code: str, out_dtype):
    """The dtype a tensor is written in: integer tensors as they are, float ones in the dtype
    the model keeps them in (`_keep_in_fp32_modules` stay fp32), else the output dtype."""
    import torch

    src = getattr(torch, _ST_DTYPES[code])
    if not src.is_floating_point:
        return src
    model_dtype = match.model_dtypes.get(match.key_map.get(key, ""))
    if model_dtype is not None and model_dtype.is_floating_point:
        return model_dtype
    return out_dtype


def _plan_shards(readers: dict, where: dict, match: AdapterMatch, out_dtype, limit: int):
    """The output shards from the headers alone, in checkpoint order: (key, code, shape) each."""
    ordered = [k for r in readers.values() for k in r.header]
    shards: list[list[tuple[str, str, list[int]]]] = [[]]
    size = 0
    for key in ordered:
        info = where[key].header[key]
        code = st_code(_out_dtype_for(match, key, info["dtype"], out_dtype))
        nbytes = math.prod(info["shape"]) * itemsize(code)
        if shards[-1] and size + nbytes > limit:
            shards.append([])
            size = 0
        shards[-1].append((key, code, info["shape"]))
        size += nbytes
    return shards


def _merged_tensor(match: AdapterMatch, where: dict, key: str, dtype):
    """(the output tensor for `key`, whether a LoRA delta was merged into it)."""
    if key in match.replace_at:
        return match.replace_at[key].to(dtype), False
    tensor = where[key].get(key)
    if key in match.lora_at:
        return merge_lora_tensor(tensor, match.lora_at[key], dtype), True
    if key in match.bias_add:
        layer = match.bias_add[key]
        return (tensor.to(dtype) + layer.bias * layer.scaling).to(dtype), False
    return tensor.to(dtype), False


def low_memory_merge(
    plan: MergePlan, match: AdapterMatch, dest: Path, max_shard_size: str | int
) -> dict:
    """Stream the base checkpoint through the LoRA deltas into sharded safetensors in `dest`."""
    import torch

    out_dtype = torch_dtype(plan.dtype)
    readers = {f: ShardReader(f) for f in match.files}
    where = {key: readers[path] for key, (path, _info) in match.headers.items()}
    try:
        shards = _plan_shards(readers, where, match, out_dtype, parse_size(max_shard_size))
        n = len(shards)
        names = (
            ["model.safetensors"]
            if n == 1
            else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
        )
        weight_map: dict[str, str] = {}
        total = 0
        merged_count = 0
        for name, entries in zip(names, shards, strict=True):
            writer = ShardWriter(dest / name, entries, {"format": "pt"})
            for key, code, _shape in entries:
                tensor, merged = _merged_tensor(match, where, key, getattr(torch, _ST_DTYPES[code]))
                merged_count += merged
                writer.write(key, tensor)
                weight_map[key] = name
                del tensor
                output.sleep_for_tests()
            writer.close()
            total += writer.total
        if n > 1:
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (dest / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    finally:
        for reader in readers.values():
            reader.close()
    return {
        "merged_layers": merged_count,
        "replaced_tensors": len(match.replace_at),
        "shards": n,
        "zero_delta": match.zero_delta,
    }
