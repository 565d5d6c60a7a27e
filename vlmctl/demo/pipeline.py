"""The demo's steps, each verb run as a user runs it (`python -m vlmctl <verb>`): validate ->
preview -> train -> merge -> eval; the first failed step ends the demo with one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from vlmctl.demo.colors import COLORS, DemoOptions, write_color_dataset, write_config_set


def _vlmctl(*args: str, env: dict | None = None, log: Callable[[str], None]) -> int:
    """Run a verb as a user would (a subprocess of this Python), output streamed."""
    cmd = [sys.executable, "-m", "vlmctl", *args]
    log(f"$ vlmctl {' '.join(args)}")
    # The verbs' output goes to stderr: the demo's stdout is its JSON report alone.
    return subprocess.call(cmd, env=env, stdout=sys.stderr)


def score(
    config_dir: Path,
    model_dir: Path,
    data_dir: Path,
    out: Path,
    env: dict | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Held-out accuracy through `vlmctl eval` (exact match after normalisation), with its page.

    The demo scores the way a user would: the same prompts as training (the collator's
    generation path), greedy answers, eval-report.json, predictions.jsonl and report.html.
    """
    args = ["eval", str(config_dir), "--model", str(model_dir)]
    args += ["--data", str(data_dir / "eval.csv"), "--all", "--out", str(out)]
    args += ["--max-new-tokens", "4"]
    code = _vlmctl(*args, env=env, log=log)
    report_path = out / "eval-report.json"
    if code != 0 or not report_path.is_file():
        from vlmctl.errors import Finding, VlmctlError

        raise VlmctlError(Finding("error", f"eval failed (exit {code})"))
    report = json.loads(report_path.read_text(encoding="utf-8"))
    name = report["models"][0]["name"]
    preds = [
        json.loads(line)
        for line in (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    correct = sum(int(p["metrics"]["exact_match"] >= 1.0) for p in preds if p["model"] == name)
    samples = [
        {"row": p["row"], "expected": p["reference"], "answer": p["prediction"]} for p in preds[:8]
    ]
    return {
        "correct": correct,
        "total": report["n"],
        "samples": samples,
        "metrics": report["metrics"][name],
        "page": report["files"]["page"],
        "report": str(report_path),
    }


def _base_model(opts: DemoOptions, out: Path, log: Callable[[str], None]) -> str:
    """The model to fine-tune: the one asked for, or the tiny Qwen2-VL twin built here."""
    if opts.model:
        model_path = opts.model
        local = Path(opts.model).expanduser()
        if local.exists():
            model_path = str(local.resolve())
        log(f"demo: model {model_path}")
        return model_path
    from vlmctl.testing.tiny import build_tiny_model

    model_path = str(build_tiny_model("qwen2_vl", out / "base-model", seed=opts.seed))
    log(f"demo: built the tiny Qwen2-VL twin in {out / 'base-model'}")
    return model_path


def _step(steps: dict[str, str], name: str, code: int) -> None:
    """Record a verb's outcome; a failed step ends the demo with one line naming it."""
    from vlmctl.errors import Finding, VlmctlError

    steps[name] = "ok" if code == 0 else f"exit {code}"
    if code != 0:
        raise VlmctlError(Finding("error", f"{name} failed (exit {code})"))


def _train(config_dir: Path, opts: DemoOptions, env: dict, log: Callable[[str], None]) -> int:
    """`vlmctl train` as a user runs it (its workers' output on stderr too); the exit code.

    A subprocess like every other step: the demo drives the verbs through the CLI and imports
    none of them."""
    args = ["train", str(config_dir)]
    for override in opts.extra_overrides:
        args += ["--set", override]
    return _vlmctl(*args, env=env, log=log)


def _merge(run_dir: Path, config_dir: Path, env: dict, log: Callable[[str], None]) -> Path:
    """`vlmctl merge` of the run; the merged folder, or one line when merge failed."""
    from vlmctl.errors import Finding, VlmctlError

    merged = run_dir / "merged"
    code = _vlmctl("merge", str(run_dir), "--output", str(merged), env=env, log=log)
    if code != 0 or not (merged / "config.json").is_file():
        # The demo shows the merged model; scoring the adapter instead would hide the failure.
        raise VlmctlError(
            Finding(
                "error",
                f"merge failed (exit {code}); the trained adapter is in {run_dir}",
                hint=f"see merge's error above; `vlmctl eval {config_dir} --model {run_dir}` "
                "scores the adapter on its base",
            )
        )
    return merged


def run_demo(opts: DemoOptions, log: Callable[[str], None] = print) -> dict:
    """Build, train, merge, evaluate. Returns the report (also written to demo-report.json)."""
    from vlmctl.errors import Finding, VlmctlError
    from vlmctl.quiet import quiet_bitsandbytes

    quiet_bitsandbytes()  # the demo never quantizes; its scoring imports PEFT

    t0 = time.monotonic()
    out = opts.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if (out / "run").exists() or (out / "config").exists():
        raise VlmctlError(
            Finding("error", f"{out} already holds a demo", hint="use another --out or delete it")
        )
    opts.out = out
    # Offline by design: the train launch inherits this process's environment.
    for key, value in (("HF_HUB_OFFLINE", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(key, value)
    env = dict(os.environ)

    model_path = _base_model(opts, out, log)
    data_dir = out / "data"
    rows = write_color_dataset(data_dir, opts.train_images, opts.eval_images, seed=opts.seed)
    log(
        f"demo: wrote {opts.train_images} training and {opts.eval_images} held-out images "
        f"({len(COLORS)} colours) to {data_dir}"
    )
    config_dir = out / "config"
    write_config_set(config_dir, model_path, opts)
    log(f"demo: wrote the config set {config_dir}")
    steps: dict[str, str] = {}

    code = _vlmctl("validate", str(config_dir), "--sample", "32", env=env, log=log)
    _step(steps, "validate", code)
    code = _vlmctl("preview", str(config_dir), "--batch-size", "2", env=env, log=log)
    _step(steps, "preview", code)
    t_train = time.monotonic()
    code = _train(config_dir, opts, env, log)
    train_seconds = time.monotonic() - t_train
    _step(steps, "train", code)
    run_dir = out / "run"
    from vlmctl.run_folder.manifest import MANIFEST, read_manifest

    manifest = read_manifest(run_dir / MANIFEST)

    merged = _merge(run_dir, config_dir, env, log)
    steps["merge"] = "ok"

    log(f"demo: asking the merged model about {len(rows['eval'])} held-out images")
    result = score(config_dir, merged, data_dir, out / "eval", env=env, log=log)
    steps["eval"] = "ok"
    chance = 1 / len(COLORS)
    report = {
        "accuracy": result["correct"] / max(1, result["total"]),
        "correct": result["correct"],
        "total": result["total"],
        "chance": chance,
        "train_seconds": round(float(manifest.train_seconds or train_seconds), 2),
        "train_wall_seconds": round(train_seconds, 2),
        "global_step": manifest.global_step,
        "merged_model": os.path.relpath(merged, out),
        "adapter": os.path.relpath(run_dir, out),
        "model": model_path,
        "steps": steps,
        "samples": result["samples"],
        "metrics": result["metrics"],
        "eval_page": os.path.relpath(result["page"], out),
        "eval_report": os.path.relpath(result["report"], out),
        "total_seconds": round(time.monotonic() - t0, 2),
    }
    (out / "demo-report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
