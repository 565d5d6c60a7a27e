"""`vlmctl train`: checks before launch, the worker's decisions, and real runs on a tiny twin.

Real runs go through the same path a user's does: `vlmctl train` -> accelerate launch ->
`vlmctl.training.worker` (subprocesses), on the tiny Qwen2-VL twin and a generated colour
dataset, for a handful of steps.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from vlmctl import credentials
from vlmctl.demo.colors import DemoOptions, write_color_dataset, write_config_set
from vlmctl.errors import ConfigError, UsageError, VlmctlError
from vlmctl.training.parent import TrainRequest, latest_checkpoint, plan_run
from vlmctl.training.parent import train as run_train
from vlmctl.training.worker import prepare_wandb, wandb_has_credentials

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory) -> Path:
    from vlmctl.testing.tiny import build_tiny_model

    return build_tiny_model("qwen2_vl", tmp_path_factory.mktemp("tiny") / "qwen2_vl")


def make_set(root: Path, model: Path | str, n_train: int = 32, steps: int = 4) -> Path:
    """A config set over a generated colour dataset; output_dir = root/run."""
    write_color_dataset(root / "data", n_train, 0, seed=1)
    opts = DemoOptions(out=root, steps=steps, batch_size=4, lr=1e-3)
    write_config_set(root / "config", str(model), opts)
    return root / "config"


def _never(argv, env):  # a launcher that must not be reached
    raise AssertionError(f"launched: {argv}")


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "TMPDIR": str(tmp),  # torchelastic leaves folders there
            "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO),
            "NETRC": str(tmp / "no-netrc"),
        }
    )
    env.pop("WANDB_API_KEY", None)
    env.update(extra)
    return env


def vlmctl(args: list[str], env: dict, timeout: int = 400) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vlmctl", *args],
        env=env,
        stdin=subprocess.DEVNULL,  # a prompt would fail, not hang
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# --- before any launch ---------------------------------------------------------------------


def test_used_output_dir_refused_and_untouched(tmp_path):
    config = make_set(tmp_path, "unused-model-id")
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("keep me")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir())
    with pytest.raises(VlmctlError) as exc:
        run_train(TrainRequest(config_dir=config), launcher=_never)
    assert "already used" in str(exc.value) and "--resume auto" in str(exc.value)
    assert sorted((p.name, p.stat().st_mtime_ns) for p in run.iterdir()) == before

    # Through the CLI: exit 1 and one line on stderr.
    proc = vlmctl(["train", str(config)], _env(tmp_path), timeout=60)
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(run) in lines[0]
    assert (run / "notes.txt").read_text() == "keep me"


def test_config_error_comes_before_any_launch(tmp_path):
    config = make_set(tmp_path, "unused-model-id")
    with pytest.raises(ConfigError) as exc:
        run_train(
            TrainRequest(config_dir=config, overrides=["train.learning_rate=fast"]),
            launcher=_never,
        )
    assert "learning_rate" in str(exc.value)
    assert not (tmp_path / "run").exists()


def test_dry_run_prints_the_launch_and_writes_nothing(tmp_path):
    config = make_set(tmp_path, "unused-model-id")
    proc = vlmctl(
        ["train", str(config), "--dry-run", "--num-processes", "2", "--set", "peft.r=8"],
        _env(tmp_path),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip()
    assert "accelerate.commands.launch" in out and "--module vlmctl.training.worker" in out
    assert "cpu_ddp.yaml" in out or "multi_gpu.yaml" in out
    assert "--num_processes 2" in out and "peft.r=8" in out
    assert not (tmp_path / "run").exists()


def test_resume_and_overwrite_rules(tmp_path):
    config = make_set(tmp_path, "unused-model-id")
    with pytest.raises(UsageError, match="not a checkpoint"):
        plan_run(TrainRequest(config_dir=config, resume=str(tmp_path)))
    with pytest.raises(UsageError, match="contradict"):
        plan_run(TrainRequest(config_dir=config, resume="auto", overwrite=True))
    run = tmp_path / "run"
    run.mkdir()
    (run / "precious.txt").write_text("x")
    with pytest.raises(UsageError, match="not a vlmctl run folder"):
        plan_run(TrainRequest(config_dir=config, overwrite=True))
    # --resume auto without a checkpoint starts fresh (say so), in the same folder.
    plan = plan_run(TrainRequest(config_dir=config, resume="auto"), gpu_count=0)
    assert plan.resume_from is None and any("no checkpoint" in n for n in plan.notes)
    assert plan.preset == "cpu"
    shutil.rmtree(plan.status_dir)


def test_latest_checkpoint_is_the_highest_complete_one(tmp_path):
    for n, complete in ((5, True), (40, True), (100, False), (7, True)):
        d = tmp_path / f"checkpoint-{n}"
        d.mkdir()
        if complete:
            (d / "trainer_state.json").write_text("{}")
    (tmp_path / "checkpoint-x").mkdir()
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-40"
    assert latest_checkpoint(tmp_path / "absent") is None


def test_model_and_dataset_flags_become_absolute_overrides(tmp_path, monkeypatch):
    config = make_set(tmp_path, "unused-model-id")
    monkeypatch.chdir(tmp_path)
    plan = plan_run(
        TrainRequest(config_dir=config, model="data", dataset="data/train.csv"), gpu_count=0
    )
    argv = " ".join(plan.argv)
    assert f"model.model_name_or_path={tmp_path / 'data'}" in argv
    assert f"collator.dataset.path={tmp_path / 'data' / 'train.csv'}" in argv
    shutil.rmtree(plan.status_dir)


# --- the worker's decisions (no training) ---------------------------------------------------


def test_secrets_never_reach_the_manifest():
    data = {
        "train": {"hub_token": "hf_x", "learning_rate": 1e-4, "push_to_hub_token": "y"},
        "model": {"processor_params": {"token": "hf_y", "use_fast": True}},
        "collator": {"conversation": {"role_key": "from", "content_key": "value"}},
        "env": {"WANDB_API_KEY": "k", "db_password": "p", "client_secret": "s"},
    }
    clean = credentials.strip_secrets(data)
    assert clean["train"] == {"learning_rate": 1e-4}
    assert clean["model"]["processor_params"] == {"use_fast": True}
    assert clean["collator"]["conversation"] == {"role_key": "from", "content_key": "value"}
    assert clean["env"] == {}
    assert credentials.strip_secret_overrides(["train.hub_token=abc", "peft.r=8"]) == ["peft.r=8"]


def test_wandb_credentials_and_offline_fallback(tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    assert not wandb_has_credentials({"NETRC": str(netrc)})
    netrc.write_text("machine api.wandb.ai\n  login user\n  password abc\n")
    netrc.chmod(0o600)
    assert wandb_has_credentials({"NETRC": str(netrc)})
    assert wandb_has_credentials({"NETRC": str(tmp_path / "none"), "WANDB_API_KEY": "x"})

    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    assert prepare_wandb(["wandb"], tmp_path / "run") == str(tmp_path / "run")
    assert os.environ["WANDB_MODE"] == "offline"
    assert prepare_wandb(["tensorboard"], tmp_path / "run") is None


def test_precision_rules():
    from types import SimpleNamespace

    from vlmctl.training.model_prep import choose_precision

    def cs(bf16, fp16, dtype="bfloat16"):
        def finding(sev, file_key, key, message, hint=None, code=""):
            from vlmctl.errors import Finding

            return Finding(sev, message, hint=hint, key=f"{file_key}.{key}")

        return SimpleNamespace(
            train=SimpleNamespace(bf16=bf16, fp16=fp16),
            model=SimpleNamespace(dtype_name=dtype),
            finding=finding,
        )

    p = choose_precision(cs(True, False), cuda=False, bf16_supported=False)
    assert (p.bf16, p.fp16, p.use_cpu) == (True, False, True)
    with pytest.raises(ConfigError, match="fp16 mixed precision needs a CUDA GPU"):
        choose_precision(cs(False, True), cuda=False, bf16_supported=False)
    with pytest.raises(ConfigError, match="float16 weights"):
        choose_precision(cs(False, False, "float16"), cuda=False, bf16_supported=False)
    with pytest.raises(ConfigError, match="does not support bfloat16"):
        choose_precision(cs(True, False), cuda=True, bf16_supported=False)
    p = choose_precision(cs(False, True, "float16"), cuda=True, bf16_supported=False)
    assert (p.fp16, p.use_cpu) == (True, False)


def test_device_map_under_several_processes():
    from vlmctl.training.model_prep import device_map_for

    assert device_map_for("auto", 2, 1, cuda=True, quantized=False)[0] is None
    assert device_map_for("auto", 2, 1, cuda=True, quantized=True)[0] == {"": "cuda:1"}
    assert device_map_for("auto", 1, 0, cuda=True, quantized=False) == ("auto", None)
    assert device_map_for("auto", 1, 0, cuda=False, quantized=False) == (None, None)


def test_lora_targets_only_the_language_model(tiny_qwen):
    import re

    from transformers import AutoModelForImageTextToText

    from vlmctl.training.model_prep import language_model_targets

    model = AutoModelForImageTextToText.from_pretrained(str(tiny_qwen))
    regex, suffixes = language_model_targets(model, "all-linear")
    hit = [n for n, _ in model.named_modules() if re.fullmatch(regex, n)]
    assert hit and all(n.startswith("model.language_model.") for n in hit)
    assert {"q_proj", "v_proj", "down_proj"} <= set(suffixes)
    linear = [
        n
        for n, m in model.named_modules()
        if type(m).__name__ == "Linear" and n.startswith("model.language_model.")
    ]
    assert sorted(hit) == sorted(linear)  # every LM linear layer, nothing else
    regex, suffixes = language_model_targets(model, ["q_proj", "v_proj"])
    assert suffixes == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match="matches no linear layer"):
        language_model_targets(model, ["no_such_proj"])


# --- real runs -------------------------------------------------------------------------------


@pytest.mark.slow
def test_train_end_to_end_wandb_offline_no_secrets(tmp_path, tiny_qwen):
    """One process, wandb without credentials (no prompt: stdin closed), group_by_length."""
    config = make_set(tmp_path, tiny_qwen, n_train=24, steps=3)
    env = _env(tmp_path)
    env.pop("WANDB_MODE", None)
    env.pop("WANDB_DIR", None)
    proc = vlmctl(
        [
            "train", str(config),
            "--set", "train.report_to=[wandb]",
            "--set", "train.group_by_length=true",
            "--set", "train.hub_token=sekrit-123",
            "--set", "peft.exclude_vision_modules=true",
        ],
        env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    assert "logging offline" in proc.stderr and "wandb sync" in proc.stderr
    assert list((run / "wandb").glob("offline-run-*")), sorted(p.name for p in run.iterdir())
    assert "done: 3 steps" in proc.stderr  # the readable summary line
    # third-party noise (issue #13): wandb's offline URL warning, bitsandbytes' kernels hint
    assert "URL not available in offline run" not in proc.stderr
    assert "gemm_4bit_forward" not in proc.stderr

    manifest = json.loads((run / "vlmctl-run.json").read_text())
    assert manifest["finished"] is True and manifest["global_step"] == 3
    assert set(manifest["configs"]) == {"model", "collator", "train", "peft"}
    assert manifest["model_name_or_path"] == str(tiny_qwen)
    assert manifest["model_type"] == "qwen2_vl"  # what merge's verify builds its collator with
    assert manifest["dataset_fingerprint"]["train_rows"] == 24
    assert "torch" in manifest["versions"] and "trl" in manifest["versions"]
    everything = (run / "vlmctl-run.json").read_text() + "".join(
        p.read_text() for p in (run / "configs").iterdir()
    )
    assert "sekrit" not in everything and "hub_token" not in everything
    assert sorted(p.name for p in (run / "configs").iterdir()) == sorted(
        ["vlm_model_config.yaml", "vlm_collator_config.yaml", "train_config.yaml",
         "peft_config.yaml"]
    )  # fmt: skip

    # The result loads, and LoRA touched the language model only.
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForImageTextToText, AutoProcessor

    with safe_open(str(run / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and all(".language_model." in k for k in keys), keys[:5]
    AutoProcessor.from_pretrained(str(run))
    base = AutoModelForImageTextToText.from_pretrained(str(tiny_qwen))
    model = PeftModel.from_pretrained(base, str(run))
    assert model.peft_config["default"].r == 16


class _KeepStatus:
    """A launcher that runs the launch and keeps a copy of the status folder (rank markers)."""

    def __init__(self, dest: Path):
        self.dest = dest

    def __call__(self, argv, env):
        from vlmctl.training.launch import subprocess_launcher

        status = Path(argv[argv.index("--status-dir") + 1])
        code = subprocess_launcher(argv, env, status)
        shutil.copytree(status, self.dest)
        return code


@pytest.mark.slow
def test_ddp_two_cpu_processes(tmp_path, tiny_qwen, monkeypatch):
    """2 gloo processes through accelerate: both train on half the data, rank 0 writes."""
    config = make_set(tmp_path, tiny_qwen, n_train=32, steps=4)
    for key, value in _env(tmp_path).items():
        monkeypatch.setenv(key, value)
    keep = _KeepStatus(tmp_path / "status")
    code = run_train(
        TrainRequest(
            config_dir=config,
            num_processes=2,
            overrides=["train.max_steps=-1", "train.num_train_epochs=1", "train.save_steps=100"],
        ),
        launcher=keep,
    )
    assert code == 0
    ranks = sorted(json.loads(p.read_text())["rank"] for p in keep.dest.glob("rank*.json"))
    assert ranks == [0, 1]
    assert {json.loads(p.read_text())["world_size"] for p in keep.dest.glob("rank*.json")} == {2}
    run = tmp_path / "run"
    manifest = json.loads((run / "vlmctl-run.json").read_text())
    # 32 rows / (batch 4 x 2 processes) = 4 steps: the data was split between the ranks.
    assert manifest["world_size"] == 2 and manifest["global_step"] == 4
    assert manifest["finished"] is True
    state = json.loads((run / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    names = sorted(p.name for p in run.iterdir())
    assert names.count("adapter_model.safetensors") == 1 and "vlmctl-run.json" in names
    from peft import PeftConfig

    assert PeftConfig.from_pretrained(str(run)).r == 16


def _start_train(config: Path, changes: list[str], env: dict) -> subprocess.Popen:
    """`vlmctl train` in the background, stderr piped, in a session of its own (a hung run
    can be killed whole)."""
    return subprocess.Popen(
        [sys.executable, "-m", "vlmctl", "train", str(config), *changes],
        env=env,
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def _last_loss(run: Path, step: int) -> float:
    ckpt = latest_checkpoint(run)
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["global_step"] == step
    losses = [h["loss"] for h in state["log_history"] if "loss" in h and h["step"] == step]
    assert losses, state["log_history"]
    return losses[-1]


def _same_adapter(a: Path, b: Path) -> None:
    """The two runs' adapters are bit-identical (same keys, equal tensors)."""
    import torch
    from safetensors.torch import load_file

    x = load_file(str(a / "adapter_model.safetensors"))
    y = load_file(str(b / "adapter_model.safetensors"))
    assert sorted(x) == sorted(y)
    differ = {k: float((x[k] - y[k]).abs().max()) for k in x if not torch.equal(x[k], y[k])}
    assert not differ, f"{len(differ)} of {len(x)} tensors differ, max {max(differ.values())}"


def _mean_losses_match(run: Path, ref: Path) -> None:
    """The manifest's train_loss covers every step, resumed or not (logging_steps=1 here, so
    the mean of the logged per-step losses is the run's mean loss)."""
    got = json.loads((run / "vlmctl-run.json").read_text())["train_loss"]
    want = json.loads((ref / "vlmctl-run.json").read_text())["train_loss"]
    state = json.loads((latest_checkpoint(ref) / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert want == pytest.approx(sum(losses) / len(losses), rel=1e-6)
    assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.slow
def test_ddp_sigterm_to_one_rank_stops_every_rank_at_the_same_step(tmp_path, tiny_qwen):
    """A preempted node may signal one worker only. The stop flag is all-reduced each step,
    so both gloo ranks stop at the same step (no rank left waiting in a collective), rank 0
    saves one checkpoint, the run exits 143, and `--resume auto` on 2 processes finishes with
    an adapter bit-identical to an uninterrupted 2-process run's (the template's defaults:
    group_by_length and dropout; stopped in the middle of the second epoch)."""
    steps = 10
    changes = [
        "--num-processes", "2",
        "--set", f"train.max_steps={steps}",
        "--set", "train.logging_steps=1",
        "--set", f"train.save_steps={steps}",
        "--set", "train.group_by_length=true",
        "--set", "peft.lora_dropout=0.1",
    ]  # fmt: skip
    config = make_set(tmp_path, tiny_qwen, n_train=48, steps=steps)  # 6 steps per epoch
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = _env(tmp, VLMCTL_TEST_STEP_SLEEP="0.4")
    ref = tmp_path / "ref"
    proc = vlmctl(["train", str(config), "--output-dir", str(ref), *changes], _env(tmp))
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "run"
    p = _start_train(config, changes, env)
    lines: queue.Queue = queue.Queue()
    threading.Thread(
        target=lambda: [*map(lines.put, p.stderr), lines.put(None)], daemon=True
    ).start()
    seen: list[str] = []
    signalled = None
    try:
        deadline = time.monotonic() + 300
        while signalled is None:
            line = lines.get(timeout=max(1.0, deadline - time.monotonic()))
            if line is None:
                break  # the run ended before step 2: the asserts below say how
            seen.append(line)
            if line.startswith("step 7/"):
                (rank1,) = tmp.glob("vlmctl-run-*/rank1.json")
                signalled = json.loads(rank1.read_text())
                os.kill(signalled["pid"], signal.SIGTERM)  # rank 1 only, not the launcher
        code = p.wait(timeout=180)
    except (queue.Empty, subprocess.TimeoutExpired):  # e.g. a rank left in a collective
        pytest.fail("the run hung:\n" + "".join(seen)[-3000:])
    finally:
        if p.poll() is None:  # workers and the launcher run in sessions of their own
            for info in tmp.glob("vlmctl-run-*/rank*.json"):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(json.loads(info.read_text())["pid"], signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=60)
    while (line := lines.get(timeout=60)) is not None:
        seen.append(line)
    text = "".join(seen)
    assert signalled is not None and signalled["rank"] == 1, text[-3000:]
    assert code == 143, text[-3000:]
    assert "--resume auto" in text and "checkpoint saved" in text
    ckpt = latest_checkpoint(run)
    stopped = int(ckpt.name.split("-")[1])
    assert 7 <= stopped < steps
    state = json.loads((ckpt / "trainer_state.json").read_text())
    assert state["global_step"] == stopped
    manifest = json.loads((run / "vlmctl-run.json").read_text())
    assert manifest["finished"] is False and manifest["global_step"] == stopped
    assert manifest["world_size"] == 2

    env.pop("VLMCTL_TEST_STEP_SLEEP")
    proc = vlmctl(["train", str(config), *changes, "--resume", "auto"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed at step {stopped}" in proc.stderr
    manifest = json.loads((run / "vlmctl-run.json").read_text())
    assert manifest["finished"] is True and manifest["global_step"] == steps
    _same_adapter(run, ref)
    _mean_losses_match(run, ref)


def test_sft_kwargs_for_a_vlm_run(tmp_path):
    from types import SimpleNamespace

    from vlmctl.config.load import load_config_set
    from vlmctl.training.lengths import LENGTH_COLUMN
    from vlmctl.training.worker_steps import sft_kwargs

    config = make_set(tmp_path, "unused-model-id")
    cpu = SimpleNamespace(bf16=True, fp16=False, use_cpu=True)
    cs = load_config_set(config, ["train.eval_steps=5", "train.group_by_length=true"])
    kw = sft_kwargs(cs, tmp_path / "out", cpu, has_eval=True, group_by_length=True)
    assert kw["remove_unused_columns"] is False
    assert kw["dataset_kwargs"] == {"skip_prepare_dataset": True}
    assert (kw["bf16"], kw["use_cpu"]) == (True, True)
    assert kw["eval_strategy"] == "steps" and kw["eval_steps"] == 5
    assert kw["train_sampling_strategy"] == "group_by_length"
    assert kw["length_column_name"] == LENGTH_COLUMN
    assert kw["output_dir"] == str(tmp_path / "out") and kw["disable_tqdm"] is True
    # No eval split: no evaluation, whatever eval_steps says.
    kw = sft_kwargs(cs, tmp_path / "out", cpu, has_eval=False, group_by_length=True)
    assert kw["eval_strategy"] == "no" and "eval_steps" not in kw
    # Fractions stay fractions (the Trainer reads <1 as a share of the run).
    cs = load_config_set(config, ["train.save_steps=0.25", "train.gradient_checkpointing=true"])
    kw = sft_kwargs(cs, tmp_path / "out", cpu, has_eval=False, group_by_length=False)
    assert kw["save_steps"] == 0.25 and kw["activation_checkpointing"] is True
    assert kw["activation_checkpointing_kwargs"] == {"use_reentrant": False}
    from trl import SFTConfig

    SFTConfig(**kw)  # accepted by the installed TRL


def test_graceful_stop_saves_at_the_next_step_then_exits_130_or_143():
    from types import SimpleNamespace

    from vlmctl.training.callbacks import GracefulStop

    stop = GracefulStop()
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        stop.install()
        # Before training starts there is nothing to save: leave at once.
        with pytest.raises(SystemExit) as exc:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
        assert exc.value.code == 130
        stop.on_train_begin(None, None, None)
        os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C mid-run: only a flag
        time.sleep(0.1)
        control = SimpleNamespace(should_save=False, should_training_stop=False)
        stop.on_step_end(None, SimpleNamespace(global_step=7), control)
        assert control.should_save and control.should_training_stop
        assert stop.stopped_at == 7 and stop.exit_code == 130
        with pytest.raises(SystemExit):  # a second signal does not wait
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)
    finally:
        for s, h in old.items():
            signal.signal(s, h)


# --- ready to train: a dataset and a reachable model, checked before the launch ----------------


def test_no_dataset_is_refused_before_launch_with_its_location(tmp_path):
    config = make_set(tmp_path, tmp_path / "data")  # any existing folder passes the model check
    collator = config / "vlm_collator_config.yaml"
    text = collator.read_text()
    assert "  path: ../data/train.csv" in text
    collator.write_text(text.replace("  path: ../data/train.csv", "  path: null", 1))
    with pytest.raises(ConfigError) as exc:
        run_train(TrainRequest(config_dir=config), launcher=_never)
    (finding,) = exc.value.findings
    assert finding.key == "dataset.path" and "nothing to train on" in finding.message
    assert finding.file.endswith("vlm_collator_config.yaml") and finding.line is not None
    assert not (tmp_path / "run").exists()


def test_unreachable_model_is_refused_before_launch_and_overwrite_keeps_the_old_run(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    config = make_set(tmp_path, "some-org/not-cached-model")
    run = tmp_path / "run"
    run.mkdir()
    (run / "vlmctl-run.json").write_text("{}")  # a previous run --overwrite would replace
    with pytest.raises(ConfigError) as exc:
        run_train(TrainRequest(config_dir=config, overwrite=True), launcher=_never)
    (finding,) = exc.value.findings
    assert finding.key == "model_name_or_path" and "hub is unreachable" in finding.message
    assert finding.file.endswith("vlm_model_config.yaml") and finding.line is not None
    assert (run / "vlmctl-run.json").exists()  # nothing lost

    # Through the CLI: one line, exit 1, no traceback, before any worker starts.
    proc = vlmctl(["train", str(config), "--overwrite"], _env(tmp_path, HF_HOME=str(tmp_path)))
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "not-cached-model" in lines[0], proc.stderr
    assert "launching" not in proc.stderr and "Traceback" not in proc.stderr


def test_local_model_and_dataset_reach_the_launcher(tmp_path):
    config = make_set(tmp_path, tmp_path / "data")
    launched = []
    code = run_train(TrainRequest(config_dir=config), launcher=lambda a, e: launched.append(a) or 0)
    assert code == 0 and len(launched) == 1
