"""How `vlmctl train` starts the worker: an `accelerate launch` argv, and a launcher to run it.

`build_launch_argv` is pure, so every preset and flag combination is tested without a GPU.
The launcher is a plain callable `(argv, env) -> exit code`, passed in by the caller, so tests
(and TRL-style wrappers) can swap it.

Why a subprocess and not accelerate's `launch_command` in-process: accelerate takes ~6 s to
import, and its launchers turn every non-zero worker exit into exit code 1 (simple launcher)
or a `ChildFailedError` (torchrun). The worker therefore writes its real exit code to a status
folder, which `launch_and_wait` reads back.

Presets (`vlmctl/training/presets/*.yaml`) are accelerate config files. Their
`mixed_precision` is 'no': precision comes from `train_config.yaml` (bf16/fp16), which the
Trainer turns into accelerate's setting, so one switch decides it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vlmctl.proc import pid_alive

PRESET_DIR = Path(__file__).parent / "presets"
PRESETS: tuple[str, ...] = (
    "single_gpu",
    "multi_gpu",
    "fsdp2",
    "zero2",
    "zero3",
    "cpu",
    "cpu_ddp",
)
WORKER_MODULE = "vlmctl.training.worker"
DEFAULT_PORT = 29500
# The pid of `vlmctl train`, in the launcher's and workers' environment: they exit if it died.
PARENT_ENV = "VLMCTL_TRAIN_PID"

Launcher = Callable[[list[str], Mapping[str, str]], int]


def preset_path(name: str) -> Path:
    """The packaged accelerate config file of a preset name."""
    return PRESET_DIR / f"{name}.yaml"


def default_preset(num_processes: int, gpu_count: int) -> str:
    """The preset used when the user names none.

    One process: `single_gpu`, or `cpu` without CUDA. More processes: `multi_gpu` (DDP), or
    `cpu_ddp` (gloo) without CUDA.
    """
    if num_processes > 1:
        return "multi_gpu" if gpu_count > 0 else "cpu_ddp"
    return "single_gpu" if gpu_count > 0 else "cpu"


def build_launch_argv(
    preset_or_path: str | Path,
    num_processes: int | None,
    num_machines: int = 1,
    machine_rank: int = 0,
    main_process_ip: str | None = None,
    main_process_port: int | None = None,
    worker_args: Sequence[str] = (),
    mixed_precision: str | None = None,
    python: str | None = None,
    num_cpu_threads_per_process: int | None = None,
) -> list[str]:
    """The full `python -m accelerate.commands.launch ... -m vlmctl.training.worker ...` argv.

    `num_processes` is per machine (what people mean: GPUs per machine); accelerate's flag is
    the total across machines, so it is multiplied by `num_machines`. None leaves the config
    file's value (a user's own accelerate config). A preset name maps to the packaged file;
    anything else is taken as a path to the user's accelerate config.
    """
    name = str(preset_or_path)
    config_file = str(preset_path(name)) if name in PRESETS else os.path.abspath(name)
    argv = [python or sys.executable, "-m", "accelerate.commands.launch"]
    argv += ["--config_file", config_file]
    if num_processes is not None:
        argv += ["--num_processes", str(num_processes * num_machines)]
    if num_machines > 1:
        argv += ["--num_machines", str(num_machines), "--machine_rank", str(machine_rank)]
        if main_process_ip:
            argv += ["--main_process_ip", main_process_ip]
        argv += ["--main_process_port", str(main_process_port or DEFAULT_PORT)]
    elif main_process_port is not None:
        argv += ["--main_process_port", str(main_process_port)]
    if mixed_precision is not None:
        argv += ["--mixed_precision", mixed_precision]
    if num_cpu_threads_per_process is not None:
        argv += ["--num_cpu_threads_per_process", str(num_cpu_threads_per_process)]
    # Single-process and DeepSpeed launchers print a second traceback on failure without it.
    argv += ["--quiet", "--module", WORKER_MODULE, *worker_args]
    return argv


# One process on one machine: what accelerate's simple launcher would start, started directly.
DIRECT_PRESETS: tuple[str, ...] = ("cpu", "single_gpu")
# Set to 1 to go through `accelerate launch` even for a single process (comparisons, debugging).
FORCE_ACCELERATE_ENV = "VLMCTL_ACCELERATE_LAUNCH"


def can_start_directly(preset: str, num_processes: int | None, num_machines: int) -> bool:
    """True when the worker can be started as a plain subprocess instead of via accelerate.

    For one process, `accelerate launch` only sets environment variables and starts
    `python -m WORKER` (its simple launcher), after importing accelerate and torch (~2-7 s
    here). vlmctl sets the same variables itself (`simple_launcher_env`, tested equal to
    accelerate's) for its packaged single-process presets; a user's accelerate config file,
    several processes or machines still go through accelerate.
    """
    if os.environ.get(FORCE_ACCELERATE_ENV, "") not in ("", "0"):
        return False
    return preset in DIRECT_PRESETS and (num_processes or 1) == 1 and num_machines == 1


def simple_launcher_env(
    preset: str, num_cpu_threads_per_process: int | None, env: Mapping[str, str]
) -> dict[str, str]:
    """The variables accelerate's simple launcher adds for a packaged single-process preset.

    Mirrors `accelerate.utils.launch.prepare_simple_launcher_cmd_env` for the preset files'
    values (mixed_precision 'no', no dynamo, no debug, gpu_ids all); the test compares it with
    what `accelerate launch` itself passes to the worker.
    """
    use_cpu = preset == "cpu"
    out = {"ACCELERATE_USE_CPU": str(use_cpu)}
    if use_cpu:
        out["KMP_AFFINITY"] = "granularity=fine,compact,1,0"
        out["KMP_BLOCKTIME"] = "1"
    out["ACCELERATE_MIXED_PRECISION"] = "no"
    out["ACCELERATE_DYNAMO_BACKEND"] = "NO"
    out["ACCELERATE_DYNAMO_MODE"] = "default"
    out["ACCELERATE_DYNAMO_USE_FULLGRAPH"] = "False"
    out["ACCELERATE_DYNAMO_USE_DYNAMIC"] = "False"
    out["ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION"] = "False"
    if num_cpu_threads_per_process is None:
        # accelerate's default: the user's OMP_NUM_THREADS, else 1 (a CPU run gets a count).
        raw = env.get("OMP_NUM_THREADS", "")
        num_cpu_threads_per_process = int(raw) if raw.strip().isdigit() else 1
    out["OMP_NUM_THREADS"] = str(num_cpu_threads_per_process)
    return out


def build_direct_argv(worker_args: Sequence[str] = (), python: str | None = None) -> list[str]:
    """`python -m vlmctl.training.worker ...`: the command accelerate's simple launcher runs."""
    return [python or sys.executable, "-m", WORKER_MODULE, *worker_args]


def detect_gpu_count() -> int:
    """Visible CUDA GPUs, without importing torch (the CLI must stay light).

    Reads the NVIDIA driver's /proc entries (present in containers run with --gpus too), then
    honours CUDA_VISIBLE_DEVICES.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1", "none", "NoDevFiles"):
        return 0
    gpus_dir = Path("/proc/driver/nvidia/gpus")
    try:
        count = len(list(gpus_dir.iterdir())) if gpus_dir.is_dir() else 0
    except OSError:
        count = 0
    if count and visible:
        count = min(count, len([v for v in visible.split(",") if v.strip()]))
    return count


# --- running it ------------------------------------------------------------------------------

# The worker started early waits for this file (in the status folder) before it loads anything.
GATE_ENV = "VLMCTL_START_GATE"
GATE_FILE = "go"


def start_early(argv: list[str], env: Mapping[str, str], status_dir: Path) -> subprocess.Popen:
    """Start the worker now; it imports its libraries, then waits at the gate.

    Why: the worker's imports (torch, transformers, TRL, PEFT: most of a small run's
    start-up) need nothing from `vlmctl train`'s last checks (the dataset's rows and media,
    the output folder's lock, --overwrite), so they run while those checks do. The worker
    reads, loads and writes nothing of the run before `open_gate`; when a check fails,
    `abort_early` kills it and the run is refused exactly as before.
    """
    parent = os.getpid()
    return subprocess.Popen(
        argv,
        env={**env, PARENT_ENV: str(parent), GATE_ENV: str(status_dir / GATE_FILE)},
        start_new_session=True,
        preexec_fn=(lambda: die_with_parent(parent)) if sys.platform == "linux" else None,
    )


def open_gate(status_dir: Path, payload: Any = None) -> None:
    """Let the early worker go on (atomically: it never reads a half-written file)."""
    tmp = status_dir / (GATE_FILE + ".tmp")
    tmp.write_text(json.dumps(payload if payload is not None else []))
    tmp.replace(status_dir / GATE_FILE)


def abort_early(proc: subprocess.Popen) -> None:
    """Kill an early worker that must not run (a check failed); it has written nothing."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def wait_for_gate(gate: Path, poll_s: float = 0.01) -> Any:
    """Worker side: block until `vlmctl train` opens the gate; returns what it wrote.

    A signal meanwhile stops the worker (GracefulStop: nothing to save yet), and it dies
    with `vlmctl train` (parent-death signal), so it never waits forever.
    """
    import time

    while not gate.is_file():
        time.sleep(poll_s)
    try:
        return json.loads(gate.read_text())
    except (OSError, ValueError):
        return None


def subprocess_launcher(
    argv: list[str],
    env: Mapping[str, str],
    status_dir: Path | None = None,
    stdout: Any = None,
    started: subprocess.Popen | None = None,
    gate_payload: Any = None,
) -> int:
    """Run the launch argv; forward SIGINT/SIGTERM to the workers so they checkpoint.

    The launcher runs in its own session, so a terminal Ctrl-C reaches vlmctl only; vlmctl then
    signals the worker processes (their pids are in the status folder) and leaves accelerate /
    torchrun alone, so it does not kill the workers while they save. Before any worker has
    started, the whole launch group gets the signal (there is nothing to save yet). A second
    signal is forwarded again (the worker then stops without saving). `started`: a worker
    from `start_early`, waiting at its gate; it is let go once the handlers are in place.
    """
    parent = os.getpid()
    launched: list[subprocess.Popen] = []
    pending: list[int] = []

    def forward(signum, _frame):
        if not launched:  # the signal came while the launcher was being started
            pending.append(signum)
            return
        pids = _worker_pids(status_dir)
        if pids:
            for pid in pids:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass
        else:
            try:
                os.killpg(launched[0].pid, signum)
            except ProcessLookupError:
                pass

    # Installed before the launcher starts: a SIGTERM in between must not kill vlmctl alone.
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if started is not None:
            launched.append(started)
            assert status_dir is not None
            open_gate(status_dir, gate_payload)
            return _wait(started)
        proc = subprocess.Popen(
            argv,
            env={**env, PARENT_ENV: str(parent)},
            start_new_session=True,
            stdout=stdout,
            preexec_fn=(lambda: die_with_parent(parent)) if sys.platform == "linux" else None,
        )
        launched.append(proc)
        for signum in pending:
            forward(signum, None)
        return _wait(proc)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _wait(proc: subprocess.Popen) -> int:
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # pragma: no cover - handler replaces the default
            continue


def die_with_parent(parent: int | None = None, signum: int = signal.SIGKILL) -> None:
    """Ask the kernel to kill this process when its parent dies (Linux; else a no-op).

    Why: the launcher runs in a session of its own (so a terminal Ctrl-C reaches vlmctl
    only), which also means nothing stops it, or the workers it starts, when `vlmctl train`
    is killed with SIGKILL: they kept training into a folder a new run could then use.
    The launcher gets this before exec (vlmctl passes its pid), each worker at its start.
    `parent` is the pid that must still be alive (the one that died before this call).
    """
    if sys.platform != "linux":
        return
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signum), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return
    if parent is not None and not pid_alive(parent):
        os._exit(128 + int(signum))


def exit_code_of(code: int) -> int:
    """A process exit status as a shell reports it: a signal N (negative) becomes 128 + N."""
    return 128 - code if code < 0 else code


def _worker_pids(status_dir: Path | None) -> list[int]:
    if status_dir is None or not status_dir.is_dir():
        return []
    pids = []
    for f in sorted(status_dir.glob("rank*.json")):
        try:
            pids.append(int(json.loads(f.read_text())["pid"]))
        except (OSError, ValueError, KeyError):
            continue
    return pids


def read_exit_status(status_dir: Path) -> dict | None:
    """The worker's `exit.json` ({exit_code, message, ...}) or None when it never wrote one."""
    path = status_dir / "exit.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def launch_and_wait(
    argv: list[str],
    env: Mapping[str, str],
    status_dir: Path,
    launcher: Launcher | None = None,
    started: subprocess.Popen | None = None,
    gate_payload: Any = None,
) -> int:
    """Launch (or let an early-started worker go) and return the worker's own exit code
    (accelerate's when the worker wrote none)."""
    if launcher is None:
        code = subprocess_launcher(
            argv, env, status_dir, started=started, gate_payload=gate_payload
        )
    else:
        code = launcher(argv, env)
    status = read_exit_status(status_dir)
    if status is not None and "exit_code" in status:
        return int(status["exit_code"])
    # The launcher itself stopped by a signal (SIGTERM to the whole group before a worker
    # ran): 143 as documented, not Python's -15 wrapped to 241.
    return exit_code_of(int(code))
