"""Benchmark `vlmctl train` against a hand-written TRL script doing the SAME work.

    python benchmarks/bench_train.py [--steps 30] [--repeats 3] [--vision excluded|included]

Both sides train the tiny Qwen2-VL twin on the same 256 rows (32x32 colour images, questions
of 2-64 extra words) with the same work, printed in the table and checked where it can be:
- LoRA r 16, alpha 32, dropout 0 on the same modules: the language model's linear layers
  (`--vision excluded`, vlmctl's default; the TRL script gets the same regex) or every linear
  layer, vision tower included (`--vision included`: PEFT's all-linear on both). The trainable
  parameter counts of both sides are compared (the run stops if they differ);
- fp32 on the CPU, batch 8, no accumulation, lr 2e-3 constant, seed 0, the Trainer's random
  sampler (no group_by_length), no activation checkpointing;
- loss on the answer only (vlmctl `mask_input_tokens: true`; TRL prompt/completion rows, so
  `completion_only_loss`), no row dropped (vlmctl's max_length is raised above the longest
  row; the run stops if its collator dropped any), every row carrying its image;
- at the end each side saves the adapter and the processor.
Arms run alternately (the first arm rotates each repeat), each a fresh subprocess:
1. loop: the Trainer's own `train_runtime` for the steps (steps/s) and the loop's CPU seconds;
2. whole run: the subprocess's wall time from start to exit: `vlmctl train` (CLI checks,
   the worker's start, imports, model/processor/data loading, the loop, saving) against
   `python trl_sft.py` (imports, building the dataset, loading, the loop, saving);
3. peak RSS of the whole process tree (os.wait4's ru_maxrss: the largest process of it).
A separate arm, `TRL all-linear`, is TRL's out-of-the-box LoRA (vision tower included): its
loop against the TRL script with vlmctl's targets is what vlmctl's default
`exclude_vision_modules: true` saves on top -- less work, not speed.
Also: padding over one epoch with the Trainer's LengthGroupedSampler fed vlmctl's estimated
lengths vs random order (goal: at most half). Writes OUT/bench-train.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import statistics
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

# What vlmctl's `exclude_vision_modules: true` targets on Qwen2-VL (language_model_targets),
# written by hand as a TRL user would: PEFT matches a string with re.fullmatch.
LM_ONLY = r"model\.language_model\..*\.(down_proj|gate_proj|k_proj|o_proj|q_proj|up_proj|v_proj)"

TRL_SCRIPT = textwrap.dedent(
    """
    import time
    T = [("start", time.time())]
    import json, sys
    import datasets
    from PIL import Image
    from peft import LoraConfig
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from trl import SFTConfig, SFTTrainer
    T.append(("imports", time.time()))

    model_dir, data_dir, out, steps, bs, targets = sys.argv[1:7]
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
    T.append(("dataset", time.time()))
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype="float32")
    processor = AutoProcessor.from_pretrained(model_dir)
    T.append(("model+processor", time.time()))
    args = SFTConfig(output_dir=out, max_steps=int(steps), per_device_train_batch_size=int(bs),
                     gradient_accumulation_steps=1, learning_rate=2e-3,
                     lr_scheduler_type="constant", logging_steps=10, save_strategy="no",
                     report_to="none", bf16=False, use_cpu=True, max_length=None,
                     activation_checkpointing=False, seed=0, disable_tqdm=True)
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=targets,
                      task_type="CAUSAL_LM")
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=processor,
                         peft_config=lora)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    T.append(("trainer", time.time()))
    cpu0 = time.process_time()
    result = trainer.train()
    metrics = dict(result.metrics, train_cpu_seconds=time.process_time() - cpu0,
                   trainable=trainable)
    T.append(("train", time.time()))
    trainer.save_model(out)
    processor.save_pretrained(out)
    T.append(("save", time.time()))
    metrics["phases"] = {n: round(t - T[i][1], 2) for i, (n, t) in enumerate(T[1:])}
    metrics["script_start"] = T[0][1]
    print("METRICS " + json.dumps(metrics))
    """
)


def make_data(folder: Path, n: int, seed: int = 0) -> list[dict]:
    """Colour images with questions of varied length (so padding matters)."""
    from vlmctl.demo.colors import write_color_dataset

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


def _run(cmd: list[str], env: dict) -> tuple[subprocess.CompletedProcess, float, float]:
    """Run a command; (result, wall seconds, peak RSS of its process tree in MB)."""
    t = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)  # fmt: skip
    out, err = proc.communicate()
    wall = time.monotonic() - t
    # communicate() reaped it: its rusage (children included, Linux) came with the wait.
    rss_mb = _last_rusage.get(proc.pid, 0.0)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err), wall, rss_mb


_last_rusage: dict[int, float] = {}


def _popen_wait4():
    """Make Popen reap children with os.wait4 so each run's peak RSS is its own."""
    orig = subprocess.Popen._try_wait

    def _try_wait(self, wait_flags):
        try:
            pid, sts, ru = os.wait4(self.pid, wait_flags)
        except ChildProcessError:
            return orig(self, wait_flags)
        if pid == self.pid:
            _last_rusage[pid] = ru.ru_maxrss / 1024  # KB -> MB
        return (pid, sts)

    subprocess.Popen._try_wait = _try_wait


def run_vlmctl(config: Path, out: Path, steps: int, vision: str, env: dict) -> dict:
    cmd = [
        sys.executable, "-m", "vlmctl", "train", str(config), "--output-dir", str(out),
        "--set", f"train.max_steps={steps}", "--set", "train.group_by_length=false",
        "--set", f"train.save_steps={steps * 10}", "--set", "train.logging_steps=10",
        "--set", "collator.text_processing.max_length=2048",
        "--set", f"peft.exclude_vision_modules={str(vision == 'excluded').lower()}",
    ]  # fmt: skip
    load = os.getloadavg()[0]
    proc, wall, rss = _run(cmd, dict(env, VLMCTL_PROFILE_STARTUP="1"))
    if proc.returncode != 0:
        raise SystemExit(f"vlmctl train failed:\n{proc.stderr[-3000:]}")
    phases = {}
    table = proc.stderr.partition("start-up profile (wall clock)")[2].splitlines()[2:]
    for line in table:
        hit = re.match(r"^(.*?)\s+(-?\d+\.\d+)\s+(-?\d+\.\d+)$", line)
        if hit:
            phases[hit.group(1)] = float(hit.group(2))
    m = json.loads((out / "vlmctl-run.json").read_text())
    if "collator dropped" in proc.stderr:
        raise SystemExit("vlmctl's collator dropped rows: not the same work as TRL's run")
    found = re.search(r"LoRA: ([\d,]+) of", proc.stderr)
    return {
        "train_runtime": m["train_seconds"],
        "train_cpu_seconds": m["train_cpu_seconds"],
        "steps": m["global_step"],
        "wall": round(wall, 2),
        "peak_rss_mb": round(rss),
        "trainable": int(found.group(1).replace(",", "")) if found else None,
        "load_at_start": load,
        "phases": phases,  # VLMCTL_PROFILE_STARTUP's table: seconds of each phase
    }


def run_trl(model: Path, data: Path, out: Path, steps: int, bs: int, targets: str,
            env: dict) -> dict:  # fmt: skip
    script = out.parent / "trl_sft.py"
    script.write_text(TRL_SCRIPT)
    cmd = [sys.executable, str(script), str(model), str(data), str(out), str(steps), str(bs),
           targets]  # fmt: skip
    load = os.getloadavg()[0]
    proc, wall, rss = _run(cmd, env)
    if proc.returncode != 0:
        raise SystemExit(f"TRL script failed:\n{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("METRICS "))
    m = json.loads(line[len("METRICS ") :])
    return {
        "train_runtime": m["train_runtime"],
        "train_cpu_seconds": round(m["train_cpu_seconds"], 2),
        "steps": steps,
        "wall": round(wall, 2),
        "peak_rss_mb": round(rss),
        "trainable": m["trainable"],
        "load_at_start": load,
        # Seconds per phase inside the script; the rest of `wall` is the interpreter's start
        # and its exit (module teardown).
        "phases": m["phases"],
    }


def padding(config: Path, bs: int, accum: int, seed: int = 0) -> dict:
    """Padded-token fraction over one epoch: LengthGroupedSampler(estimates) vs random order."""
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    from vlmctl import runtime
    from vlmctl.config.load import load_config_set
    from vlmctl.data.messages import row_to_example
    from vlmctl.training.lengths import estimate_lengths

    cs = load_config_set(config)
    site = runtime.locate(cs)  # the runtime assembly, as the training worker builds it
    processor = runtime.load_processor(cs, site)
    data = runtime.load_data(cs)
    collator = runtime.build_collator(processor, cs.collator, data.media_dirs, site.model_type)
    exact = [
        collator.encode_example(row_to_example(row, cs.collator, i)).length
        for i, row in enumerate(data.train)
    ]
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
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--out", type=Path, default=Path("/tmp/bench-train"))
    ap.add_argument("--repeats", type=int, default=3, help="alternating runs of each arm")
    ap.add_argument(
        "--vision",
        choices=("excluded", "included"),
        default="excluded",
        help="LoRA on the vision tower too, on both sides (default: excluded)",
    )
    ap.add_argument(
        "--no-defaults-arm",
        action="store_true",
        help="skip the TRL all-linear arm (what vlmctl's defaults save)",
    )
    ap.add_argument("--no-padding", action="store_true", help="skip the padding measurement")
    ap.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of both sides")
    args = ap.parse_args()
    _popen_wait4()

    from vlmctl.demo.colors import DemoOptions, write_config_set
    from vlmctl.testing.tiny import build_tiny_model

    out = args.out.resolve()
    if out.exists():
        import shutil

        shutil.rmtree(out)
    out.mkdir(parents=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=str(REPO))  # fmt: skip
    env.pop("VLMCTL_PROFILE_STARTUP", None)
    # The same torch threads on both sides (vlmctl would otherwise pick the physical cores,
    # TRL torch's default): on a shared 2-core machine one thread is also the least noisy.
    env["OMP_NUM_THREADS"] = str(args.threads)
    model = build_tiny_model("qwen2_vl", out / "model")
    make_data(out / "data", args.rows)
    opts = DemoOptions(out=out, steps=args.steps, batch_size=args.batch_size)
    write_config_set(out / "config", str(model), opts)

    targets = LM_ONLY if args.vision == "excluded" else "all-linear"
    arms = {
        "trl": lambda i: run_trl(model, out / "data", out / f"trl-{i}", args.steps,
                                 args.batch_size, targets, env),
        "vlmctl": lambda i: run_vlmctl(out / "config", out / f"vlmctl-{i}", args.steps,
                                       args.vision, env),
    }  # fmt: skip
    if args.vision == "excluded" and not args.no_defaults_arm:
        arms["trl_all_linear"] = lambda i: run_trl(
            model, out / "data", out / f"trl-all-{i}", args.steps, args.batch_size,
            "all-linear", env,
        )  # fmt: skip
    names = list(arms)
    results: dict[str, list[dict]] = {k: [] for k in names}
    for i in range(args.repeats):
        order = names[i % len(names) :] + names[: i % len(names)]
        for name in order:
            r = arms[name](i)
            results[name].append(r)
            print(f"repeat {i} {name}: {json.dumps(r)}", file=sys.stderr, flush=True)
    if results["trl"][0]["trainable"] != results["vlmctl"][0]["trainable"]:
        raise SystemExit(
            f"not the same LoRA: TRL trains {results['trl'][0]['trainable']} parameters, "
            f"vlmctl {results['vlmctl'][0]['trainable']}"
        )

    def stat(name: str, key: str, f=min) -> float:
        return f(r[key] for r in results[name])

    sps = {k: args.steps / stat(k, "train_runtime") for k in names}
    summary = {
        "same_work": {
            "model": "tiny Qwen2-VL twin (vlmctl.testing.tiny)",
            "rows": args.rows,
            "lora": f"r 16, alpha 32, dropout 0, targets {targets}",
            "vision_tower": args.vision,
            "trainable_parameters": results["trl"][0]["trainable"],
            "precision": f"fp32, CPU, {args.threads} torch thread(s)",
            "batch": f"{args.batch_size} x 1 accumulation, {args.steps} steps",
            "sampler": "random (seed 0)",
            "masking": "loss on the answer only",
            "saving": "adapter + processor at the end",
        },
        "loop_steps_per_s_best": {k: round(v, 3) for k, v in sps.items()},
        "loop_ratio_vlmctl_over_trl_best": round(sps["vlmctl"] / sps["trl"], 3),
        "loop_ratio_vlmctl_over_trl_per_repeat": [
            round(t["train_runtime"] / v["train_runtime"], 3)
            for t, v in zip(results["trl"], results["vlmctl"], strict=True)
        ],
        "cpu_seconds_per_step_best": {
            k: round(stat(k, "train_cpu_seconds") / args.steps, 4) for k in names
        },
        "wall_best": {k: stat(k, "wall") for k in names},
        "wall_median": {k: round(stat(k, "wall", statistics.median), 2) for k in names},
        "wall_ratio_vlmctl_over_trl_best": round(stat("vlmctl", "wall") / stat("trl", "wall"), 3),
        "wall_ratio_vlmctl_over_trl_per_repeat": [
            round(v["wall"] / t["wall"], 3)
            for t, v in zip(results["trl"], results["vlmctl"], strict=True)
        ],
        "peak_rss_mb_max": {k: stat(k, "peak_rss_mb", max) for k in names},
        "load_average_end": os.getloadavg(),
        "runs": results,
    }
    if "trl_all_linear" in results:
        summary["defaults_line"] = {
            "what": "vlmctl default exclude_vision_modules vs TRL's all-linear (less work)",
            "trainable_all_linear": results["trl_all_linear"][0]["trainable"],
            "loop_speedup_from_less_work": round(sps["trl"] / sps["trl_all_linear"], 3),
        }
    if not args.no_padding:
        summary["padding"] = p = padding(out / "config", args.batch_size, 1)
        p["ratio"] = round(p["padded_fraction_group_by_length"]
                           / max(p["padded_fraction_random"], 1e-9), 3)  # fmt: skip
    (out / "bench-train.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))


if __name__ == "__main__":
    main()
