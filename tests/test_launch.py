"""The accelerate launch argv, per preset and flag (no GPU, no launch)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

from vlmctl.training import launch as ln

WORKER = ["/cfg", "--output-dir", "/out"]


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def _launch_part(argv: list[str]) -> list[str]:
    return argv[: argv.index("--module")]


@pytest.mark.parametrize("preset", ln.PRESETS)
def test_every_preset_is_an_accelerate_config_file(preset):
    path = ln.preset_path(preset)
    data = yaml.safe_load(path.read_text())
    assert data["compute_environment"] == "LOCAL_MACHINE"
    # Precision comes from train_config.yaml, never from the preset.
    assert data["mixed_precision"] == "no"
    expected = {
        "single_gpu": "NO",
        "cpu": "NO",
        "multi_gpu": "MULTI_GPU",
        "cpu_ddp": "MULTI_GPU",
        "fsdp2": "FSDP",
        "zero2": "DEEPSPEED",
        "zero3": "DEEPSPEED",
    }[preset]
    assert data["distributed_type"] == expected
    if preset == "cpu":
        assert data["use_cpu"] is True
    if preset.startswith("zero"):
        assert data["deepspeed_config"]["zero_stage"] == int(preset[-1])
    if preset == "fsdp2":
        assert data["fsdp_config"]["fsdp_version"] == 2


@pytest.mark.parametrize("preset", ln.PRESETS)
def test_argv_for_each_preset(preset):
    argv = ln.build_launch_argv(preset, 2, worker_args=WORKER)
    assert argv[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert _flag(argv, "--config_file") == str(ln.preset_path(preset))
    assert _flag(argv, "--num_processes") == "2"
    assert "--num_machines" not in argv and "--main_process_ip" not in argv
    # The worker runs as a module with its own args after it, untouched.
    i = argv.index("--module")
    assert argv[i + 1] == "vlmctl.training.worker"
    assert argv[i + 2 :] == WORKER
    assert "--quiet" in _launch_part(argv)


def test_single_process_argv_exact():
    argv = ln.build_launch_argv("single_gpu", 1, worker_args=["/c"], python="py")
    assert argv == [
        "py", "-m", "accelerate.commands.launch",
        "--config_file", str(ln.preset_path("single_gpu")),
        "--num_processes", "1",
        "--quiet", "--module", "vlmctl.training.worker", "/c",
    ]  # fmt: skip


def test_multi_node_flags_multiply_processes():
    argv = ln.build_launch_argv(
        "multi_gpu", 8, num_machines=2, machine_rank=1, main_process_ip="10.0.0.1",
        main_process_port=29555, worker_args=WORKER,
    )  # fmt: skip
    head = _launch_part(argv)
    # --num-processes is per machine; accelerate's flag is the total.
    assert _flag(head, "--num_processes") == "16"
    assert _flag(head, "--num_machines") == "2"
    assert _flag(head, "--machine_rank") == "1"
    assert _flag(head, "--main_process_ip") == "10.0.0.1"
    assert _flag(head, "--main_process_port") == "29555"


def test_multi_node_default_port():
    argv = ln.build_launch_argv("fsdp2", 4, num_machines=3, machine_rank=0,
                                main_process_ip="h0", worker_args=WORKER)  # fmt: skip
    assert _flag(argv, "--main_process_port") == str(ln.DEFAULT_PORT)
    assert _flag(argv, "--num_processes") == "12"


def test_single_machine_port_only_when_given():
    argv = ln.build_launch_argv("multi_gpu", 2, main_process_port=29999, worker_args=WORKER)
    assert _flag(argv, "--main_process_port") == "29999"
    assert "--machine_rank" not in argv


def test_user_config_path_and_no_process_count(tmp_path):
    cfg = tmp_path / "my_accelerate.yaml"
    cfg.write_text("distributed_type: MULTI_GPU\nnum_processes: 4\n")
    argv = ln.build_launch_argv(str(cfg), None, worker_args=WORKER)
    assert _flag(argv, "--config_file") == str(cfg)
    assert "--num_processes" not in argv  # the file's own value stands


def test_cpu_thread_count_flag():
    assert "--num_cpu_threads_per_process" not in ln.build_launch_argv("cpu", 1)
    argv = ln.build_launch_argv("cpu_ddp", 2, num_cpu_threads_per_process=3)
    assert _flag(_launch_part(argv), "--num_cpu_threads_per_process") == "3"


def test_mixed_precision_flag_only_when_asked():
    assert "--mixed_precision" not in ln.build_launch_argv("single_gpu", 1)
    argv = ln.build_launch_argv("single_gpu", 1, mixed_precision="bf16")
    assert _flag(argv, "--mixed_precision") == "bf16"


@pytest.mark.parametrize(
    ("n", "gpus", "expected"),
    [(1, 0, "cpu"), (1, 1, "single_gpu"), (1, 8, "single_gpu"), (2, 0, "cpu_ddp"),
     (4, 4, "multi_gpu")],
)  # fmt: skip
def test_default_preset(n, gpus, expected):
    assert ln.default_preset(n, gpus) == expected


def test_gpu_count_respects_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert ln.detect_gpu_count() == 0
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "-1")
    assert ln.detect_gpu_count() == 0


def test_launch_and_wait_returns_worker_exit_code_over_launcher_code(tmp_path):
    """accelerate turns every failure into 1; the worker's exit.json carries the real code."""
    seen = {}

    def fake_launcher(argv, env):
        seen["argv"] = argv
        (tmp_path / "exit.json").write_text('{"exit_code": 143, "global_step": 3}')
        return 1

    code = ln.launch_and_wait(["x"], {}, tmp_path, launcher=fake_launcher)
    assert code == 143 and seen["argv"] == ["x"]


def test_launch_and_wait_falls_back_to_launcher_code(tmp_path):
    assert ln.launch_and_wait(["x"], {}, tmp_path, launcher=lambda a, e: 7) == 7


def test_subprocess_launcher_runs_and_returns_code(tmp_path):
    argv = [sys.executable, "-c", "import sys; sys.exit(5)"]
    assert ln.launch_and_wait(argv, {"PATH": "/usr/bin"}, tmp_path) == 5


def test_presets_are_packaged_next_to_the_module():
    assert ln.PRESET_DIR == Path(ln.__file__).parent / "presets"
    assert sorted(p.stem for p in ln.PRESET_DIR.glob("*.yaml")) == sorted(ln.PRESETS)
