"""Benchmark `vlmctl train` against a minimal hand-written TRL script, and group_by_length.

    python benchmarks/bench_train.py [--steps 40] [--out /tmp/bench-train]

1. Throughput: the same tiny Qwen2-VL twin, data, LoRA (r 16, all-linear), batch and steps,
   trained by `vlmctl train` (accelerate launch -> worker -> SFTTrainer + vlmctl's collator)
   and by a 40-line TRL script (SFTTrainer + TRL's own vision collator). Compared on the
   Trainer's own `train_runtime` (start-up excluded: both pay the same imports), best of
   alternating repeats, and on the CPU seconds of the training loop (steadier when other
   work shares the machine). Goal: vlmctl >= 0.95x TRL's steps/s.
2. Padding: the fraction of padded tokens per batch over one epoch, with the Trainer's
   LengthGroupedSampler fed vlmctl's estimated lengths vs random order. Padding is measured
   with the EXACT encoded lengths (the collator's), so the estimate is checked too.
   Goal: group_by_length at most half the padding of random order.
Prints a JSON summary and writes it to OUT/bench-train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORDS = (
    "please look at the picture carefully and tell me in one word which colour fills most "
    "of it because I need to sort these images for a report about paint samples"
).split()

TRL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import datasets
    from PIL import Image
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer

    model_dir, data_dir, out, steps, bs = sys.argv[1:6]
    rows = [json.loads(line) for line in open(f"{data_dir}/rows.jsonl")]

    def to_example(r):
        return {
            "images": [Image.open(f"{data_dir}/{r['image']}").convert("RGB")],
            "prompt": [{"role": "user", "content": [
                {"type": "text", "text": "Answer briefly."}, {"type": "image"},
                {"type": "text", "text": r["question"]}]}],
            "completion": [{"role": "assistant", "content": [
                {"type": "text", "text": r["answer"]}]}],
        }

    ds = datasets.Dataset.from_list([to_example(r) for r in rows])
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype="float32")
    processor = AutoProcessor.from_pretrained(model_dir)
    args = SFTConfig(output_dir=out, max_steps=int(steps), per_device_train_batch_size=int(bs),
                     gradient_accumulation_steps=1, learning_rate=2e-3,
                     lr_scheduler_type="constant", logging_steps=10, save_strategy="no",
                     report_to="none", bf16=False, use_cpu=True, max_length=None,
                     activation_checkpointing=False, seed=0, disable_tqdm=True)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=processor,
                         peft_config=lora)
    import time
    cpu0 = time.process_time()
    result = trainer.train()
    metrics = dict(result.metrics, train_cpu_seconds=time.process_time() - cpu0)
    print("METRICS " + json.dumps(metrics))
    """
)


def make_data(folder: Path, n: int, seed: int = 0) -> list[dict]:
    """Colour images with questions of varied length (so padding matters)."""
    from vlmctl.demo import write_color_dataset

    rows = write_color_dataset(folder, n, 0, seed=seed)["train"]
    rng = random.Random(seed)
    for r in rows:
        k = rng.choice([2, 4, 8, 16, 32, 64])
        r["question"] = " ".join(rng.choice(WORDS) for _ in range(k)) + "? What color is this?"
    import csv

    with (folder / "train.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["image", "question", "answer"])
        w.writeheader()
        w.writerows(rows)
    with (folder / "rows.jsonl").open("w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return rows


def run_vlmctl(config: Path, out: Path, steps: int, group: bool, env: dict) -> dict:
    cmd = [
        sys.executable, "-m", "vlmctl", "train", str(config), "--output-dir", str(out),
        "--set", f"train.max_steps={steps}", "--set", f"train.group_by_length={str(group).lower()}",
        "--set", f"train.save_steps={steps * 10}", "--set", "train.logging_steps=10",
    ]  # fmt: skip
    t = time.monotonic()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    wall = time.monotonic() - t
    if proc.returncode != 0:
        raise SystemExit(f"vlmctl train failed:\n{proc.stderr[-3000:]}")
    m = json.loads((out / "vlmctl-run.json").read_text())
    return {
        "train_runtime": m["train_seconds"],
        "train_cpu_seconds": m["train_cpu_seconds"],
        "steps": m["global_step"],
        "wall": wall,
    }


def run_trl(model: Path, data: Path, out: Path, steps: int, bs: int, env: dict) -> dict:
    script = out.parent / "trl_sft.py"
    script.write_text(TRL_SCRIPT)
    t = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script), str(model), str(data), str(out), str(steps), str(bs)],
        env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    wall = time.monotonic() - t
    if proc.returncode != 0:
        raise SystemExit(f"TRL script failed:\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("METRICS "))
    m = json.loads(line[len("METRICS ") :])
    return {
        "train_runtime": m["train_runtime"],
        "train_cpu_seconds": round(m["train_cpu_seconds"], 2),
        "steps": steps,
        "wall": wall,
    }


def padding(config: Path, bs: int, accum: int, seed: int = 0) -> dict:
    """Padded-token fraction over one epoch: LengthGroupedSampler(estimates) vs random order."""
    import torch
    from transformers import AutoProcessor
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from vlmctl.collate import VLMCollator
    from vlmctl.config.load import load_config_set
    from vlmctl.data.dataset import load_splits
    from vlmctl.training.lengths import estimate_lengths

    cs = load_config_set(config)
    processor = AutoProcessor.from_pretrained(str(cs.resolve_path(cs.model.model_name_or_path)))
    data = load_splits(cs.collator, cs.dir)
    collator = VLMCollator(processor, cs.collator, data.media_dirs, model_type="qwen2_vl")
    exact = [collator.encode_row(row, i).length for i, row in enumerate(data.train)]
    est = estimate_lengths(data.train, collator, cs.collator)

    def frac(order: list[int]) -> float:
        pad = total = 0
        for i in range(0, len(order) - bs + 1, bs):
            lens = [exact[j] for j in order[i : i + bs]]
            pad += max(lens) * len(lens) - sum(lens)
            total += max(lens) * len(lens)
        return pad / total

    g = torch.Generator().manual_seed(seed)
    random_order = torch.randperm(len(exact), generator=g).tolist()
    torch.manual_seed(seed)
    grouped = list(iter(LengthGroupedSampler(bs * accum, lengths=est)))
    corr = float(torch.corrcoef(torch.tensor([est, exact], dtype=torch.float))[0, 1])
    return {
        "padded_fraction_random": round(frac(random_order), 4),
        "padded_fraction_group_by_length": round(frac(grouped), 4),
        "estimate_vs_exact_correlation": round(corr, 4),
        "rows": len(exact),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-train"))
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each")
    args = ap.parse_args()

    from vlmctl.demo import DemoOptions, write_config_set
    from vlmctl.testing.tiny import build_tiny_model

    out = args.out.resolve()
    if out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(REPO))  # fmt: skip
    model = build_tiny_model("qwen2_vl", out / "model")
    make_data(out / "data", args.rows)
    opts = DemoOptions(out=out, steps=args.steps, batch_size=args.batch_size)
    write_config_set(out / "config", str(model), opts)

    results = {"vlmctl": [], "trl": []}
    for i in range(args.repeats):
        results["trl"].append(
            run_trl(model, out / "data", out / f"trl-{i}", args.steps, args.batch_size, env)
        )
        results["vlmctl"].append(
            run_vlmctl(out / "config", out / f"vlmctl-{i}", args.steps, False, env)
        )
    # Best of the repeats: the run least disturbed by other load on the machine. CPU seconds
    # of the training loop too: on a shared machine wall time mostly measures the neighbours.
    best = {k: min(r["train_runtime"] for r in v) for k, v in results.items()}
    cpu = {k: min(r["train_cpu_seconds"] for r in v) for k, v in results.items()}
    sps = {k: args.steps / v for k, v in best.items()}
    summary = {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "vlmctl_steps_per_s": round(sps["vlmctl"], 3),
        "trl_steps_per_s": round(sps["trl"], 3),
        "ratio_vlmctl_over_trl": round(sps["vlmctl"] / sps["trl"], 3),
        "vlmctl_cpu_seconds_per_step": round(cpu["vlmctl"] / args.steps, 4),
        "trl_cpu_seconds_per_step": round(cpu["trl"] / args.steps, 4),
        "cpu_ratio_vlmctl_over_trl": round(cpu["trl"] / cpu["vlmctl"], 3),
        "load_average": os.getloadavg(),
        "runs": results,
        "padding": padding(out / "config", args.batch_size, 1),
    }
    p = summary["padding"]
    p["ratio"] = round(p["padded_fraction_group_by_length"] / max(p["padded_fraction_random"],
                                                                   1e-9), 3)  # fmt: skip
    (out / "bench-train.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
