"""`vlmctl train` on preemptible VMs and shared folders: nothing lost, nothing half-written.

One run per folder (a lock), workers that die with vlmctl, `--overwrite` that deletes only what
vlmctl wrote, checkpoints that are whole or absent, and data problems found before launch.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
from test_train import (
    _env,
    _last_loss,
    _mean_losses_match,
    _never,
    _same_adapter,
    _start_train,
    make_set,
    vlmctl,
)

from vlmctl.errors import ConfigError, DataError, UsageError, VlmctlError
from vlmctl.training import rundir
from vlmctl.training.parent import TrainRequest, latest_checkpoint
from vlmctl.training.parent import train as run_train


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory) -> Path:
    from vlmctl.testing.tiny import build_tiny_model

    return build_tiny_model("qwen2_vl", tmp_path_factory.mktemp("tiny") / "qwen2_vl")


def _local_set(tmp_path: Path) -> Path:
    """A config set whose model is an existing folder (passes the pre-launch model check)."""
    return make_set(tmp_path, tmp_path / "data")


class _Recorder:
    """A launcher that records its argv and what the run folder looked like at launch."""

    def __init__(self, run: Path):
        self.run = run
        self.calls: list[dict] = []

    def __call__(self, argv, env):
        self.calls.append(
            {"locked": rundir.is_locked(self.run), "entries": rundir.entries(self.run)}
        )
        return 0


# --- 5. exact resume with the template's defaults ---------------------------------------------

# What the tiny CPU run has to change: its size, its steps, and no wandb login. Everything that
# decides the data order, the randomness and the update stays the template's: group_by_length,
# gradient accumulation 2, gradient checkpointing, bf16 (autocast on the CPU) over bf16
# weights, the default linear schedule, LoRA dropout 0.05 on r=64, prompt tokens trained.
_TEMPLATE_BACK = [
    "train.gradient_accumulation_steps=2",
    "train.gradient_checkpointing=true",
    "train.bf16=true",
    "train.group_by_length=true",
    "train.lr_scheduler_type=linear",
    "train.save_total_limit=2",
    "peft.r=64",
    "peft.lora_alpha=16",
    "peft.lora_dropout=0.05",
    "model.loading_params.torch_dtype=torch.bfloat16",
    "collator.label_masking.mask_input_tokens=false",
]


@pytest.mark.slow
@pytest.mark.parametrize("procs", [1, 2])
def test_sigterm_resume_is_bit_identical_with_the_template_defaults(tmp_path, tiny_qwen, procs):
    """SIGTERM in the middle of the third epoch, `--resume auto`: the adapter and the run's mean
    loss equal an uninterrupted run's, on 1 and on 2 processes, with the template's settings."""
    from vlmctl.config.templates import render_templates

    templ = render_templates()
    for line in ("gradient_accumulation_steps: 2", "group_by_length: true", "bf16: true",
                 "gradient_checkpointing: true"):  # fmt: skip
        assert line in templ["train_config.yaml"], f"the template changed: {line}"
    assert "lora_dropout: 0.05" in templ["peft_config.yaml"]
    steps = 10
    changes = ["--num-processes", str(procs)]
    for item in [*_TEMPLATE_BACK, f"train.max_steps={steps}", "train.logging_steps=1",
                 "train.save_steps=5", "train.learning_rate=1e-3"]:  # fmt: skip
        changes += ["--set", item]
    # 4 rows a batch x 2 accumulated x procs: 3 optimizer steps per epoch
    config = make_set(tmp_path, tiny_qwen, n_train=24 * procs, steps=steps)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    ref = tmp_path / "ref"
    proc = vlmctl(["train", str(config), "--output-dir", str(ref), *changes], _env(tmp))
    assert proc.returncode == 0, proc.stderr[-3000:]

    run = tmp_path / "run"
    p = _start_train(config, changes, _env(tmp, VLMCTL_TEST_STEP_SLEEP="0.5"))
    try:
        seen = _wait_for(p.stderr, "step 7/", 600)
        p.send_signal(signal.SIGTERM)
        code = p.wait(timeout=300)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=60)
    text = "".join(seen) + p.stderr.read()
    assert code == 143, text[-3000:]
    stopped = int(latest_checkpoint(run).name.split("-")[1])
    assert 7 <= stopped < 9, (stopped, text[-3000:])  # mid third epoch, not at a boundary
    assert "--resume auto" in text and "checkpoint saved" in text
    manifest = json.loads((run / "vlmctl-run.json").read_text())
    assert manifest["finished"] is False and manifest["global_step"] == stopped

    proc = vlmctl(["train", str(config), *changes, "--resume", "auto"], _env(tmp))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed at step {stopped}" in proc.stderr
    assert json.loads((run / "vlmctl-run.json").read_text())["finished"] is True
    assert _last_loss(run, steps) == _last_loss(ref, steps)
    _same_adapter(run, ref)
    _mean_losses_match(run, ref)


# --- 6. one run per folder ----------------------------------------------------------------------


def test_a_second_run_into_a_locked_folder_is_refused_in_one_line(tmp_path):
    config = _local_set(tmp_path)
    run = tmp_path / "run"
    held = rundir.RunLock(run).acquire()  # another vlmctl train, running
    try:
        for resume in (None, "auto"):
            with pytest.raises(VlmctlError) as exc:
                run_train(TrainRequest(config_dir=config, resume=resume), launcher=_never)
            assert "in use by another vlmctl train" in str(exc.value), resume
        proc = vlmctl(["train", str(config), "--resume", "auto"], _env(tmp_path), timeout=120)
        assert proc.returncode == 1, proc.stderr
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and "in use by another vlmctl train" in lines[0], lines
        assert str(run) in lines[0]
    finally:
        held.release()
    # Free again: the run goes ahead and holds the lock for the whole launch.
    rec = _Recorder(run)
    assert run_train(TrainRequest(config_dir=config), launcher=rec) == 0
    assert rec.calls == [{"locked": True, "entries": []}]
    assert not rundir.is_locked(run)


# --- 8. deleting what is not ours ---------------------------------------------------------------


def _finished_run(run: Path, config: Path) -> None:
    run.mkdir()
    shutil.copytree(config, run / "configs")
    for name in ("adapter_model.safetensors", "adapter_config.json", "training_args.bin"):
        (run / name).write_text("x")
    (run / "checkpoint-2").mkdir()
    (run / "checkpoint-2" / "trainer_state.json").write_text("{}")
    files = ["adapter_config.json", "adapter_model.safetensors", "configs", "training_args.bin"]
    (run / "vlmctl-run.json").write_text(json.dumps({"finished": True, "files": files}))


def test_overwrite_refuses_when_the_configs_live_in_the_run_folder(tmp_path):
    config = _local_set(tmp_path)
    run = tmp_path / "run"
    _finished_run(run, config)
    dataset = str(tmp_path / "data" / "train.csv")  # reachable: only the folder is at stake
    with pytest.raises(UsageError) as exc:
        run_train(
            TrainRequest(
                config_dir=run / "configs", output_dir=run, overwrite=True, dataset=dataset
            ),
            launcher=_never,
        )
    assert "inside the output folder" in str(exc.value) and "config folder" in str(exc.value)
    assert sorted(p.name for p in (run / "configs").iterdir()) == sorted(
        p.name for p in config.iterdir()
    )
    assert (run / "adapter_model.safetensors").exists()


def test_overwrite_removes_only_what_vlmctl_wrote_and_says_what_it_keeps(tmp_path, capsys):
    config = _local_set(tmp_path)
    run = tmp_path / "run"
    _finished_run(run, config)
    (run / "notes.txt").write_text("my notes")
    (run / "merged").mkdir()
    (run / "merged" / "model.safetensors").write_text("merged weights")
    rec = _Recorder(run)
    assert run_train(TrainRequest(config_dir=config, overwrite=True), launcher=rec) == 0
    assert rec.calls[0]["entries"] == ["merged", "notes.txt"]  # what the new run starts with
    assert (run / "notes.txt").read_text() == "my notes"
    assert (run / "merged" / "model.safetensors").read_text() == "merged weights"
    err = capsys.readouterr().err
    assert "removed" in err and "adapter_model.safetensors" in err and "checkpoint-2" in err
    assert "kept (not written by vlmctl train): merged, notes.txt" in err


# --- 9. half-written checkpoints ---------------------------------------------------------------


def test_partial_checkpoints_of_an_interrupted_save_are_removed_on_resume(tmp_path, capsys):
    config = _local_set(tmp_path)
    run = tmp_path / "run"
    _finished_run(run, config)
    (run / "checkpoint-4").mkdir()  # a save killed by an older vlmctl: no trainer_state.json
    (run / "checkpoint-4" / "optimizer.pt").write_text("trunc")
    (run / rundir.STAGING / "checkpoint-6").mkdir(parents=True)
    rec = _Recorder(run)
    assert run_train(TrainRequest(config_dir=config, resume="auto"), launcher=rec) == 0
    assert not (run / "checkpoint-4").exists() and not (run / rundir.STAGING).exists()
    assert (run / "checkpoint-2" / "trainer_state.json").is_file()
    assert "removed incomplete checkpoints" in capsys.readouterr().err


@pytest.mark.slow
def test_a_kill_during_a_checkpoint_save_leaves_no_checkpoint_folder(tmp_path, tiny_qwen):
    """kill -9 half-way through saving checkpoint-2 (weights and optimizer written, no
    trainer state): no `checkpoint-2` appears; the staged files are removed at the next start."""
    config = make_set(tmp_path, tiny_qwen, n_train=16, steps=4)
    env = _env(tmp_path, VLMCTL_TEST_KILL_IN_SAVE="1")
    changes = ["--set", "train.save_steps=2", "--set", "train.max_steps=4"]
    proc = vlmctl(["train", str(config), *changes], env)
    assert proc.returncode not in (0, 143), proc.stderr[-3000:]
    run = tmp_path / "run"
    names = sorted(p.name for p in run.iterdir())
    assert not [n for n in names if n.startswith("checkpoint-")], names
    assert (run / rundir.STAGING / "checkpoint-2" / "optimizer.pt").is_file(), names


# --- 7. workers die with vlmctl; SIGTERM to the group ---------------------------------------------


def _ours(marker: str) -> list[int]:
    """Pids of processes whose command line mentions `marker` (a test's own folder)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmd:
            pids.append(int(d.name))
    return pids


def _wait_for(stream, prefix: str, timeout: float) -> list[str]:
    seen, deadline = [], time.monotonic() + timeout
    for line in stream:
        seen.append(line)
        if line.startswith(prefix):
            return seen
        assert time.monotonic() < deadline, "".join(seen)
    pytest.fail("".join(seen))


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="parent-death signal is Linux-only")
@pytest.mark.parametrize("launch,least", [("1", 2), ("0", 1)], ids=["accelerate", "direct"])
def test_kill_9_of_vlmctl_takes_the_launcher_and_workers_with_it(
    tmp_path, tiny_qwen, launch, least
):
    """Both start paths: `accelerate launch` (launcher + worker) and the direct single-process
    start (the worker alone) leave nothing running once vlmctl is killed."""
    config = make_set(tmp_path, tiny_qwen, n_train=16, steps=200)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = _env(tmp, VLMCTL_TEST_STEP_SLEEP="0.5", VLMCTL_ACCELERATE_LAUNCH=launch)
    p = _start_train(config, [], env)
    try:
        _wait_for(p.stderr, "vlmctl: launching", 300)
        deadline = time.monotonic() + 300  # generous: the test machine may be loaded
        while not list(tmp.glob("vlmctl-run-*/rank0.json")):  # the worker is up
            assert p.poll() is None, f"vlmctl ended first ({p.returncode})"
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.2)
        assert len(_ours(str(tmp))) >= least, _ours(str(tmp))  # (the launcher and) the worker
        p.kill()
        p.wait(timeout=30)
        deadline = time.monotonic() + 60
        while _ours(str(tmp)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _ours(str(tmp)) == [], "orphaned workers still running"
    finally:
        for pid in _ours(str(tmp)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if p.poll() is None:
            p.kill()


def test_sigterm_to_the_whole_group_before_the_worker_runs_exits_143(tmp_path, tiny_qwen):
    """Slurm / `kill -- -PGID` while the worker still starts: 143 as documented, not 241."""
    config = make_set(tmp_path, tiny_qwen, n_train=16, steps=4)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    p = _start_train(config, [], _env(tmp))
    try:
        _wait_for(p.stderr, "vlmctl: launching", 300)
        time.sleep(1.0)  # the launcher has started; its worker is still importing
        assert not list(tmp.glob("vlmctl-run-*/rank*.json"))
        os.killpg(p.pid, signal.SIGTERM)
        code = p.wait(timeout=60)
        assert code == 143, p.stderr.read()[-3000:]
    finally:
        for pid in _ours(str(tmp)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if p.poll() is None:
            p.kill()


# --- 10. data problems before launch -------------------------------------------------------------


def test_a_missing_image_is_refused_before_launch_naming_its_row(tmp_path):
    config = _local_set(tmp_path)
    (tmp_path / "data" / "images" / "train_0005.png").unlink()
    with pytest.raises(DataError) as exc:
        run_train(TrainRequest(config_dir=config), launcher=_never)
    (finding,) = exc.value.findings
    assert finding.row == 5 and "train_0005.png" in finding.message
    assert not (tmp_path / "run").exists()  # no started run folder: a plain rerun works

    proc = vlmctl(["train", str(config)], _env(tmp_path), timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "row 5" in lines[0] and "train_0005.png" in lines[0], lines
    assert not (tmp_path / "run").exists()


def test_a_truncated_image_is_refused_before_launch(tmp_path):
    config = _local_set(tmp_path)
    img = tmp_path / "data" / "images" / "train_0003.png"
    img.write_bytes(img.read_bytes()[:60])
    with pytest.raises(DataError) as exc:
        run_train(TrainRequest(config_dir=config), launcher=_never)
    assert [f.row for f in exc.value.findings] == [3]


def test_a_remote_code_model_without_trust_is_refused_before_launch(tmp_path):
    model = tmp_path / "custom-model"
    model.mkdir()
    (model / "config.json").write_text(
        json.dumps(
            {
                "model_type": "my_custom_vlm",
                "auto_map": {"AutoModelForImageTextToText": "modeling_custom.CustomVLM"},
            }
        )
    )
    config = make_set(tmp_path, model)
    with pytest.raises(ConfigError) as exc:
        run_train(TrainRequest(config_dir=config), launcher=_never)
    (finding,) = exc.value.findings
    assert finding.code == "remote-code-off" and "trust_remote_code" in finding.message
    assert finding.file.endswith("vlm_model_config.yaml")
    assert not (tmp_path / "run").exists()


def test_training_rows_carry_their_file_index_for_runtime_errors(tmp_path):
    """What the worker trains on: each row knows its index in the file (also after eval_size
    carved out a held-out split), so a row that fails mid-run is named like validate names it."""
    from vlmctl.collate import ROW_INDEX_KEY
    from vlmctl.config.load import load_config_set
    from vlmctl.data.dataset import load_splits

    config = _local_set(tmp_path)
    cs = load_config_set(config, ["collator.dataset.eval_size=0.25"])
    data = load_splits(cs.collator, cs.dir, seed=1, row_index_column=ROW_INDEX_KEY)
    rows = list(data.train) + list(data.eval)
    import csv

    with (tmp_path / "data" / "train.csv").open() as f:
        file_rows = list(csv.DictReader(f))
    assert sorted(r[ROW_INDEX_KEY] for r in rows) == list(range(len(file_rows)))
    for r in rows:
        assert r["image"] == file_rows[r[ROW_INDEX_KEY]]["image"]
