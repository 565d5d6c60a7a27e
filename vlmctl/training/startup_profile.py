"""Where a run's seconds go (`VLMCTL_PROFILE_STARTUP=1 vlmctl train ...`), and the fast exit.

Each process of a run (the `vlmctl train` CLI, then the worker) records wall-clock marks; the
CLI hands its marks to the worker in the environment, and the worker prints one phase table on
stderr at the end (rank 0): each phase's seconds and the time since the `vlmctl train` process
started. Wall-clock (`time.time`) so marks of different processes line up; process start
times come from /proc (Linux), so interpreter start-up and imports before the first mark
show too. Off by default: no cost beyond one environment lookup per mark.
"""

from __future__ import annotations

import json
import os
import sys
import time

ENV = "VLMCTL_PROFILE_STARTUP"
MARKS_ENV = "VLMCTL_PROFILE_MARKS"

_marks: list[tuple[str, float]] = []


def enabled() -> bool:
    """True when the user asked for the phase table."""
    return os.environ.get(ENV, "") not in ("", "0")


def process_start_time(pid: int | str = "self") -> float | None:
    """Wall-clock start of a process (Linux /proc; None elsewhere): shows interpreter
    start-up and the imports that ran before any mark."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = int(fields[19])  # field 22 (starttime), counted after the ")" of comm
        with open("/proc/uptime", encoding="ascii") as f:
            boot = time.time() - float(f.read().split()[0])  # /proc/stat's btime is whole s
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def mark(name: str, at: float | None = None) -> None:
    """Record that a phase ended now (or at `at`, a wall-clock time)."""
    if enabled():
        _marks.append((name, time.time() if at is None else at))


def mark_process_start(name: str) -> None:
    """Record this process's start (from /proc) as a mark."""
    if enabled():
        start = process_start_time()
        if start is not None:
            mark(name, start)


def marks() -> list[tuple[str, float]]:
    """This process's marks so far (for a child that started before they were made)."""
    return list(_marks)


def add(more: object) -> None:
    """Take marks handed over later (the gate file of an early-started worker)."""
    if enabled() and isinstance(more, list):
        known = set(_marks) | set(inherited())
        for item in more:
            if isinstance(item, list | tuple) and len(item) == 2 and tuple(item) not in known:
                _marks.append((str(item[0]), float(item[1])))


def export(env: dict[str, str]) -> None:
    """Hand this process's marks to a child process through its environment."""
    if enabled():
        env[MARKS_ENV] = json.dumps(_marks)


def inherited() -> list[tuple[str, float]]:
    """The marks of the processes that started this one."""
    try:
        return [(str(n), float(t)) for n, t in json.loads(os.environ.get(MARKS_ENV, "[]"))]
    except (ValueError, TypeError):
        return []


def table(marks: list[tuple[str, float]] | None = None) -> str:
    """The phase table: each mark, the seconds since the previous one, the total so far."""
    marks = sorted(inherited() + _marks if marks is None else marks, key=lambda m: m[1])
    if not marks:
        return ""
    t0 = marks[0][1]
    width = max(len(n) for n, _ in marks)
    lines = [f"{'phase (ends at)':<{width}}  {'seconds':>8}  {'total':>8}"]
    prev = t0
    for name, t in marks:
        lines.append(f"{name:<{width}}  {t - prev:8.2f}  {t - t0:8.2f}")
        prev = t
    return "\n".join(lines)


def report() -> None:
    """Print the phase table on stderr (when profiling is on)."""
    if enabled():
        print("vlmctl: start-up profile (wall clock)\n" + table(), file=sys.stderr, flush=True)


def callbacks() -> list:
    """[a Trainer callback marking train()'s set-up, the first step, the loop's end] when on."""
    return [callback()] if enabled() else []


def wait_at_gate() -> None:
    """Worker started early (`launch.start_early`): wait for `vlmctl train`'s checks."""
    from vlmctl.training.launch import GATE_ENV, wait_for_gate

    if os.environ.get(GATE_ENV):
        from pathlib import Path

        add(wait_for_gate(Path(os.environ[GATE_ENV])))
        mark("worker: gate opened (vlmctl train's checks done)")


def callback():
    """A Trainer callback marking the train() set-up, the first step and the loop's end."""
    from transformers import TrainerCallback

    class StartupMarks(TrainerCallback):
        first = True

        def on_train_begin(self, args, state, control, **kwargs):
            mark("worker: trainer.train() entered (before resume/optimizer set-up)")

        def on_step_begin(self, args, state, control, **kwargs):
            if self.first:
                self.first = False
                mark("worker: dataloader + optimizer ready, first step begins")

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 1:
                mark("worker: first step done")

        def on_train_end(self, args, state, control, **kwargs):
            mark("worker: training loop ended")

    return StartupMarks()


def exit_now(code: int) -> None:
    """End the worker without the interpreter's module-by-module teardown.

    Why: after a run, tearing down torch, transformers, TRL and the model's objects took
    ~7 s of a loaded 2-core machine (measured between the last atexit handler and the process
    end), time a user waits for nothing. Everything a normal exit guarantees is done first:
    non-daemon threads (a hub upload) are joined, atexit handlers run (wandb, logging,
    multiprocessing's children), stdout/stderr are flushed. VLMCTL_DEBUG keeps the normal exit.
    """
    from vlmctl.proc import debug_enabled

    if debug_enabled():
        sys.exit(code)
    import atexit
    import threading

    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: BLE001 - e.g. a closed pipe: let Python report it
        sys.exit(code)
    os._exit(code)
