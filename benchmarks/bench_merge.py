"""Benchmark `vlmctl merge --low-memory` against PEFT's `merge_and_unload` on a ~1B model.

Builds (once, in a temporary folder) a random Qwen2-VL scaled up to about 1B parameters in
bf16, saved sharded, and a LoRA adapter (r=16 on every attention and MLP projection of the
language model, B perturbed so it is non-zero). Then runs, each in its own subprocess:

- `peft`: `from_pretrained` (bf16) + `PeftModel.from_pretrained` + `merge_and_unload` +
  `save_pretrained` (what most merge scripts do);
- `vlmctl`: `vlmctl merge --no-verify` (the same thing through vlmctl, in memory);
- `vlmctl --low-memory`: `vlmctl merge --low-memory --no-verify` (streamed).

Peak RSS is measured two ways: psutil polling of the process tree every 20 ms, and
`resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` read by a tiny wrapper process around each run.
Also checks that the streamed output equals PEFT's, tensor by tensor.

    python benchmarks/bench_merge.py [--keep DIR] [--append BENCHMARKS.md]

Goal: low-memory peak RSS <= 0.5x PEFT's, wall time <= 1.5x.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BUILD = r"""
import sys, torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
from peft import LoraConfig, get_peft_model
base, adapter = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
cfg = Qwen2VLConfig(
    text_config=dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=18,
                     num_attention_heads=16, num_key_value_heads=4, vocab_size=32000,
                     max_position_embeddings=4096, tie_word_embeddings=False,
                     rope_parameters={"rope_type": "default", "mrope_section": [16, 24, 24],
                                      "rope_theta": 1e6}),
    vision_config=dict(depth=4, embed_dim=512, num_heads=8, hidden_size=2048, patch_size=14,
                       spatial_merge_size=2, temporal_patch_size=2),
    image_token_id=31990, video_token_id=31991, vision_start_token_id=31992,
    tie_word_embeddings=False,
)
torch.set_default_dtype(torch.bfloat16)
model = Qwen2VLForConditionalGeneration(cfg).to(torch.bfloat16)
n = sum(p.numel() for p in model.parameters())
model.save_pretrained(base, max_shard_size="500MB")
lora = LoraConfig(r=16, lora_alpha=32, target_modules=r".*language_model.*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")
pm = get_peft_model(model, lora)
for name, p in pm.named_parameters():
    if "lora_B" in name:
        p.data.normal_(std=0.01)
pm.save_pretrained(adapter)
print(n)
"""

PEFT_MERGE = r"""
import sys, torch
from transformers import AutoModelForImageTextToText
from peft import PeftModel
base, adapter, out = sys.argv[1:4]
model = AutoModelForImageTextToText.from_pretrained(base, dtype=torch.bfloat16)
model = PeftModel.from_pretrained(model, adapter).merge_and_unload()
model.save_pretrained(out)
"""

# Runs a command and prints its own children's peak RSS (KiB on Linux) as the last line.
WRAP = r"""
import resource, subprocess, sys
rc = subprocess.call(sys.argv[1:])
print("MAXRSS_KIB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(rc)
"""


def measure(cmd: list[str], env: dict) -> dict:
    """Wall time and peak RSS (psutil tree polling and getrusage) of one command."""
    import psutil

    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-c", WRAP, *cmd],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    peak = 0
    ps = psutil.Process(proc.pid)
    while proc.poll() is None:
        try:
            tree = [ps, *ps.children(recursive=True)]
            rss = 0
            for p in tree:
                try:
                    rss += p.memory_info().rss
                except psutil.Error:
                    pass
            # The wrapper itself is a small python; count only the measured command.
            peak = max(peak, rss - _rss(ps))
        except psutil.Error:
            pass
        time.sleep(0.02)
    wall = time.monotonic() - started
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err[-3000:]}")
    maxrss = int(out.strip().splitlines()[-1].split()[-1]) * 1024
    return {"wall_s": wall, "peak_rss_poll": peak, "peak_rss_rusage": maxrss}


def _rss(p) -> int:
    try:
        return p.memory_info().rss
    except Exception:  # noqa: BLE001 - the wrapper may have exited
        return 0


def compare_outputs(a: Path, b: Path) -> tuple[int, int, float]:
    """(tensors, bit-equal tensors, max abs difference) between two safetensors folders."""
    from safetensors import safe_open

    def index(folder: Path) -> dict[str, Path]:
        out = {}
        for shard in folder.glob("*.safetensors"):
            with safe_open(str(shard), "pt") as fh:
                out.update({k: shard for k in fh.keys()})  # noqa: SIM118 - not a dict
        return out

    ia, ib = index(a), index(b)
    if set(ia) != set(ib):
        raise SystemExit(f"key sets differ: {sorted(set(ia) ^ set(ib))[:5]}")
    equal, worst = 0, 0.0
    for key in sorted(ia):
        with safe_open(str(ia[key]), "pt") as fa, safe_open(str(ib[key]), "pt") as fb:
            ta, tb = fa.get_tensor(key), fb.get_tensor(key)
        if ta.dtype == tb.dtype and ta.equal(tb):
            equal += 1
        else:
            worst = max(worst, float((ta.float() - tb.float()).abs().max()))
    return len(ia), equal, worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temp folder)")
    ap.add_argument("--append", type=Path, help="append the results to this markdown file")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="vlmctl-bench-merge-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    base, adapter = work / "base", work / "adapter"
    try:
        if not (base / "config.json").is_file():
            t = time.monotonic()
            res = subprocess.run(
                [sys.executable, "-c", BUILD, str(base), str(adapter)],
                env=env,
                capture_output=True,
                text=True,
            )
            if res.returncode:
                raise SystemExit(res.stderr[-3000:])
            params = int(res.stdout.strip().splitlines()[-1])
            print(f"built {params / 1e9:.2f}B-parameter base in {time.monotonic() - t:.0f}s")
        else:
            params = 0
        base_bytes = sum(f.stat().st_size for f in base.glob("*.safetensors"))
        shards = len(list(base.glob("*.safetensors")))
        vlmctl = [
            sys.executable,
            "-m",
            "vlmctl",
            "merge",
            str(adapter),
            "--base",
            str(base),
            "--dtype",
            "bf16",
            "--no-verify",
            "--force",
        ]
        runs = {
            "peft merge_and_unload": [
                sys.executable,
                "-c",
                PEFT_MERGE,
                str(base),
                str(adapter),
                str(work / "out-peft"),
            ],
            "vlmctl merge (in memory)": [*vlmctl, "-o", str(work / "out-vlmctl")],
            "vlmctl merge --low-memory": [*vlmctl, "--low-memory", "-o", str(work / "out-low")],
        }
        results = {}
        for name, cmd in runs.items():
            shutil.rmtree(work / "out-peft", ignore_errors=True) if "peft" in name else None
            results[name] = measure(cmd, env)
            r = results[name]
            print(
                f"{name}: {r['wall_s']:.1f}s, peak RSS {r['peak_rss_poll'] / 2**30:.2f} GiB "
                f"(poll) / {r['peak_rss_rusage'] / 2**30:.2f} GiB (rusage)"
            )
        n, equal, worst = compare_outputs(work / "out-peft", work / "out-low")
        print(f"--low-memory vs PEFT output: {equal}/{n} tensors bit-equal, max |diff| {worst:g}")
        report(results, params, base_bytes, shards, (n, equal, worst), args.append)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def report(results, params, base_bytes, shards, equality, append: Path | None) -> None:
    ref = results["peft merge_and_unload"]
    lines = [
        "| run | wall (s) | peak RSS poll (GiB) | peak RSS rusage (GiB) | time ratio | RSS ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['wall_s']:.1f} | {r['peak_rss_poll'] / 2**30:.2f} | "
            f"{r['peak_rss_rusage'] / 2**30:.2f} | {r['wall_s'] / ref['wall_s']:.2f}x | "
            f"{r['peak_rss_rusage'] / ref['peak_rss_rusage']:.2f}x |"
        )
    table = "\n".join(lines)
    print(table)
    if append is None:
        return
    import psutil

    n, equal, worst = equality
    low = results["vlmctl merge --low-memory"]
    ok_rss = low["peak_rss_rusage"] <= 0.5 * ref["peak_rss_rusage"]
    ok_time = low["wall_s"] <= 1.5 * ref["wall_s"]
    text = f"""
## merge: `--low-memory` vs PEFT `merge_and_unload` ({time.strftime("%Y-%m-%d")})

Command: `python benchmarks/bench_merge.py --append BENCHMARKS.md`

Machine: {platform.machine()}, {psutil.cpu_count()} CPUs, {psutil.virtual_memory().total / 2**30:.0f} GiB RAM, no GPU;
Python {platform.python_version()}. Model: random Qwen2-VL scaled to
{params / 1e9:.2f}B parameters, bf16, {base_bytes / 2**30:.2f} GiB in {shards} safetensors shards;
LoRA r=16 on all 7 projections of the 18 language-model layers. Each run is a fresh
subprocess (imports included: torch + transformers + peft are a few hundred MB and several
seconds of each figure). Ratios are against PEFT; RSS ratio uses getrusage.

{table}

Goal (low-memory vs PEFT): peak RSS <= 0.5x: {"met" if ok_rss else "NOT met"};
wall time <= 1.5x: {"met" if ok_time else "NOT met"}.
Output check: the streamed output equals PEFT's in {equal}/{n} tensors bit for bit
(max |diff| {worst:g}).
"""
    with open(append, "a", encoding="utf-8") as fh:
        fh.write(text)
    print(f"appended to {append}")


if __name__ == "__main__":
    main()
