"""A training run's start-up: the direct single-process start, the gate, the fast exit, and
the VLMCTL_PROFILE_STARTUP phase table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlmctl.errors import DataError
from vlmctl.training import launch as ln
from vlmctl.training import startup_profile as prof
from vlmctl.training.parent import TrainRequest, plan_run
from vlmctl.training.parent import train as run_train

REPO = Path(__file__).resolve().parents[1]

DUMP_ENV = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))\n"


@pytest.mark.slow  # accelerate's own launcher: ~10 s of imports per preset
@pytest.mark.parametrize(("preset", "threads"), [("cpu", 3), ("single_gpu", None)])
def test_direct_start_sets_what_accelerate_simple_launcher_sets(tmp_path, preset, threads):
    """The variables vlmctl sets itself equal those `accelerate launch` gives the worker."""
    (tmp_path / "dumpenv.py").write_text(DUMP_ENV)
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}",
        "LANG": "C.UTF-8",
    }
    argv = ln.build_launch_argv(
        preset, 1, worker_args=[str(tmp_path / "env.json")], num_cpu_threads_per_process=threads
    )
    argv[argv.index(ln.WORKER_MODULE)] = "dumpenv"
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    seen = json.loads((tmp_path / "env.json").read_text())
    added = {k: v for k, v in seen.items() if env.get(k) != v}
    assert added == ln.simple_launcher_env(preset, threads, env)


def test_only_one_local_process_of_a_packaged_preset_starts_directly(monkeypatch):
    monkeypatch.delenv(ln.FORCE_ACCELERATE_ENV, raising=False)
    assert ln.can_start_directly("cpu", 1, 1)
    assert ln.can_start_directly("single_gpu", None, 1)
    assert not ln.can_start_directly("cpu_ddp", 2, 1)
    assert not ln.can_start_directly("single_gpu", 1, 2)
    assert not ln.can_start_directly("/home/me/accelerate.yaml", 1, 1)
    monkeypatch.setenv(ln.FORCE_ACCELERATE_ENV, "1")
    assert not ln.can_start_directly("cpu", 1, 1)


def test_user_omp_num_threads_is_kept(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert ln.simple_launcher_env("single_gpu", None, os.environ)["OMP_NUM_THREADS"] == "5"


def _make_set(root: Path, model: str, n: int = 8) -> Path:
    from vlmctl.demo.colors import DemoOptions, write_color_dataset, write_config_set

    write_color_dataset(root / "data", n, 0, seed=1)
    write_config_set(root / "config", model, DemoOptions(out=root, steps=2, batch_size=4))
    return root / "config"


def test_dry_run_of_one_cpu_process_prints_the_direct_command(tmp_path, monkeypatch):
    monkeypatch.delenv(ln.FORCE_ACCELERATE_ENV, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    config = _make_set(tmp_path, "unused-model-id")
    plan = plan_run(TrainRequest(config_dir=config), gpu_count=0)
    try:
        assert plan.argv[1:3] == ["-m", ln.WORKER_MODULE]
        assert "accelerate.commands.launch" not in plan.argv
        assert plan.env_added["ACCELERATE_USE_CPU"] == "True"
        assert plan.env["ACCELERATE_USE_CPU"] == "True"
    finally:
        import shutil

        shutil.rmtree(plan.status_dir, ignore_errors=True)


def test_the_worker_trains_only_the_config_set_train_checked(tmp_path, monkeypatch):
    """`train` checks the set, then the worker parses it again once the pre-flight is done (on
    every machine): a file edited in between stops the worker with one line naming it, before
    anything is loaded or written."""
    from vlmctl.config.load import file_digests

    monkeypatch.delenv(ln.FORCE_ACCELERATE_ENV, raising=False)
    config = _make_set(tmp_path, "unused-model-id")
    plan = plan_run(TrainRequest(config_dir=config, output_dir=tmp_path / "run"), gpu_count=0)
    try:
        digest = plan.argv[plan.argv.index("--config-digest") + 1]
        assert json.loads(digest) == file_digests(config)
        train_yaml = config / "train_config.yaml"
        train_yaml.write_text(train_yaml.read_text() + "# edited after the check\n")
        env = {**plan.env, "PYTHONPATH": str(REPO)}
        r = subprocess.run(plan.argv, env=env, capture_output=True, text=True, timeout=300)
    finally:
        import shutil

        shutil.rmtree(plan.status_dir, ignore_errors=True)
    assert r.returncode == 1, r.stdout + r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, r.stderr
    assert "train_config.yaml changed after `vlmctl train` checked" in errors[0]
    assert str(train_yaml) in errors[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


def test_config_digests_name_every_changed_or_missing_file(tmp_path):
    from vlmctl.config.load import check_unchanged, file_digests
    from vlmctl.errors import ConfigError

    config = _make_set(tmp_path, "unused-model-id")
    before = json.dumps(file_digests(config))
    check_unchanged(config, before)  # untouched: no error
    (config / "peft_config.yaml").unlink()
    (config / "vlm_model_config.yaml").write_text(
        (config / "vlm_model_config.yaml").read_text().replace("unused-model-id", "other-id")
    )
    with pytest.raises(ConfigError) as info:
        check_unchanged(config, before)
    (finding,) = info.value.findings
    assert finding.message.startswith("vlm_model_config.yaml, peft_config.yaml changed")
    assert finding.file == str(config / "vlm_model_config.yaml")
    assert finding.code == "config-changed"


def test_a_refused_run_kills_the_early_worker_and_writes_nothing(tmp_path, monkeypatch):
    """A missing image found by the pre-flight: the worker started early is killed at its
    gate; no output folder, no status folder left."""
    monkeypatch.delenv(ln.FORCE_ACCELERATE_ENV, raising=False)
    config = _make_set(tmp_path, str(tmp_path / "model"))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    next((tmp_path / "data" / "images").iterdir()).unlink()
    started: list[subprocess.Popen] = []
    real_start = ln.start_early

    def recording_start(argv, env, status_dir):
        # A stand-in worker that only waits at the gate (the real one imports torch first).
        code = (
            "import sys; from pathlib import Path; from vlmctl.training.launch import "
            "wait_for_gate; wait_for_gate(Path(sys.argv[1])); open(sys.argv[2], 'w')"
        )
        proc = real_start(
            [sys.executable, "-c", code, str(status_dir / ln.GATE_FILE), str(tmp_path / "ran")],
            {**env, "PYTHONPATH": str(REPO)},
            status_dir,
        )
        started.append(proc)
        return proc

    monkeypatch.setattr(ln, "start_early", recording_start)
    with pytest.raises(DataError, match="row"):
        run_train(TrainRequest(config_dir=config, output_dir=tmp_path / "run"))
    assert len(started) == 1
    assert started[0].returncode == -9  # SIGKILL, before the gate opened
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "run").exists()


def test_gate_hands_over_what_was_written(tmp_path):
    ln.open_gate(tmp_path, [["a", 1.0]])
    assert ln.wait_for_gate(tmp_path / ln.GATE_FILE) == [["a", 1.0]]
    assert not (tmp_path / (ln.GATE_FILE + ".tmp")).exists()


def test_worker_fast_exit_keeps_code_atexit_and_output(tmp_path):
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: print('atexit ran', flush=False))\n"
        "print('buffered', end='')\n"
        "from vlmctl.training.startup_profile import exit_now\n"
        "exit_now(3)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 3
    assert proc.stdout == "bufferedatexit ran\n"


def test_profile_table_orders_marks_across_processes(monkeypatch):
    monkeypatch.setenv(prof.ENV, "1")
    monkeypatch.setenv(prof.MARKS_ENV, json.dumps([["cli start", 100.0], ["cli checked", 101.5]]))
    start = prof.process_start_time()
    assert start is not None and start <= time.time()
    table = prof.table(prof.inherited() + [("worker imported", 104.0)])
    lines = table.splitlines()
    assert [ln_.split()[0] for ln_ in lines[1:]] == ["cli", "cli", "worker"]
    assert lines[-1].split()[-2:] == ["2.50", "4.00"]
