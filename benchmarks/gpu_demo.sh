#!/usr/bin/env bash
# The demo on a CUDA GPU in bf16: records train tokens/s, peak GPU memory, accuracy, time.
#   bash benchmarks/gpu_demo.sh [OUT_DIR]      (from the repo root, venv active)
# Writes OUT_DIR/gpu-demo.json and prints it. Needs no network (tiny twin built locally).
set -euo pipefail
OUT="${1:-${OUT:-/tmp/vlmctl-gpu-demo}}"
rm -rf "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false WANDB_MODE=disabled
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python - "$OUT" <<'PY'
import json, sys, time
from pathlib import Path

import torch

from vlmctl.demo.colors import DemoOptions
from vlmctl.demo.pipeline import run_demo

assert torch.cuda.is_available(), "no CUDA GPU visible"
out = Path(sys.argv[1])
t0 = time.monotonic()
report = run_demo(
    DemoOptions(
        out=out,
        steps=120,
        extra_overrides=(
            "train.bf16=true",
            "model.loading_params.torch_dtype=torch.bfloat16",
            "model.loading_params.device_map=cuda",
        ),
    ),
    log=lambda m: print(m, file=sys.stderr, flush=True),
)
manifest = json.loads((out / "run" / "vlmctl-run.json").read_text())
result = {
    "gpu": torch.cuda.get_device_name(0),
    "accuracy": report["accuracy"],
    "chance": report["chance"],
    "train_seconds": report["train_seconds"],
    "train_tokens_per_second": manifest.get("train_tokens_per_second"),
    "peak_gpu_memory_gb": manifest.get("peak_gpu_memory_gb"),
    "global_step": manifest.get("global_step"),
    "demo_total_seconds": round(time.monotonic() - t0, 1),
    "steps": report["steps"],
}
(out / "gpu-demo.json").write_text(json.dumps(result, indent=2))
print(json.dumps(result, indent=2))
PY

# Packing (issue #15): a random Qwen2-VL-2B-shaped model in bf16 on the same generated rows
# (abo_vqa_csv-like, 1-3 images per row): padded-token fractions, tokens/s and peak GPU memory,
# packed vs padded vs a plain TRL script (SFTTrainer + TRL's own vision collator, padded).
# About 2-4 minutes on one H200; set SKIP_PACKING=1 to skip. Writes OUT/packing/bench-packing.json.
if [ -z "${SKIP_PACKING:-}" ]; then
  timeout "${PACKING_TIMEOUT:-420}" python benchmarks/bench_packing.py \
    --device cuda --shape qwen2-vl-2b --rows "${PACKING_ROWS:-256}" --batch 8 \
    --capacity 4096 --repeats 1 --trl --out "$OUT/packing" \
    || echo "bench_packing.py failed or timed out (exit $?)" >&2
fi
