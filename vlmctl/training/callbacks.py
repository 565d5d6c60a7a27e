"""Trainer callbacks: stop cleanly on SIGTERM/SIGINT, and a readable progress line per step.

Graceful stop: a preempted VM or `docker stop` sends SIGTERM, a person presses Ctrl-C. The
handler only sets a flag; at the next step boundary every rank agrees (one all-reduce of a
single int, so no rank leaves the others waiting in a collective) and the Trainer saves
`checkpoint-N` and stops. A second signal exits at once, without saving.
"""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from typing import Any

from transformers import TrainerCallback

# 128 + signal number, what a shell reports for a process killed by it: scripts can tell
# "stopped by a signal, checkpoint saved" from a crash (1).
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143
EXIT_SIGINT = 128 + signal.SIGINT  # 130
# Tests only: slow each step down so a signal reliably lands mid-run on any machine.
_TEST_STEP_SLEEP = float(os.environ.get("VLMCTL_TEST_STEP_SLEEP", "0") or 0)


class GracefulStop(TrainerCallback):
    """Turns SIGTERM/SIGINT into "save a checkpoint at the next step and stop"."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopped_at: int | None = None
        self.training = False
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Install the handlers (main thread only)."""
        for s in (signal.SIGTERM, signal.SIGINT):
            self._previous[s] = signal.signal(s, self._handle)

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signum is not None or not self.training:
            # Second signal, or nothing to save yet (loading): leave now.
            raise SystemExit(128 + signum)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + (self.signum or signal.SIGTERM)

    def on_train_begin(self, args, state, control, **kwargs):
        self.training = True

    def on_step_end(self, args, state, control, **kwargs):
        if _any_rank(self.signum is not None):
            if self.signum is None:  # another rank got the signal
                self.signum = signal.SIGTERM
            control.should_save = True
            control.should_training_stop = True
            self.stopped_at = state.global_step
        return control

    def on_train_end(self, args, state, control, **kwargs):
        self.training = False


def _any_rank(flag: bool) -> bool:
    """True when the flag is set on any rank (a no-op without torch.distributed)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    device = torch.device("cpu")
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    t = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def _fmt_time(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "--:--"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class StepLog(TrainerCallback):
    """One line per logged step (loss, lr, tokens/s, ETA) and a rich bar on a terminal.

    Replaces tqdm (set `disable_tqdm=True`): tqdm's bar with a dict printed under it is hard
    to read in logs. Only the main process prints.
    """

    def __init__(self, console: Any | None = None) -> None:
        self.console = console
        self.progress = None
        self.task = None
        self._t0 = 0.0
        self._last_t = 0.0
        self._last_tokens = 0
        self._start_step = 0
        self.tokens_per_second: float | None = None
        self.losses: list[tuple[int, float]] = []  # (step, logged training loss)

    def _print(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, highlight=False, markup=False, soft_wrap=True)
        else:
            print(text, file=sys.stderr, flush=True)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        now = time.monotonic()
        self._t0 = self._last_t = now
        self._last_tokens = state.num_input_tokens_seen or 0
        self._start_step = state.global_step
        if self.console is not None and self.console.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("train"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=self.console,
                transient=True,
            )
            self.progress.start()
            self.task = self.progress.add_task(
                "train", total=state.max_steps, completed=state.global_step
            )
        start = f" (resumed at step {state.global_step})" if state.global_step else ""
        self._print(f"training: {state.max_steps} steps{start}")

    def on_step_end(self, args, state, control, **kwargs):
        if _TEST_STEP_SLEEP:
            time.sleep(_TEST_STEP_SLEEP)
        if self.progress is not None:
            self.progress.update(self.task, completed=state.global_step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.monotonic()
        tokens = state.num_input_tokens_seen or 0
        dt = now - self._last_t
        if dt > 0 and tokens > self._last_tokens:
            self.tokens_per_second = (tokens - self._last_tokens) / dt
        self._last_t, self._last_tokens = now, tokens
        parts = [f"step {state.global_step}/{state.max_steps}"]
        if "loss" in logs:
            parts.append(f"loss {logs['loss']:.4f}")
            self.losses.append((state.global_step, float(logs["loss"])))
        if "eval_loss" in logs:
            parts.append(f"eval_loss {logs['eval_loss']:.4f}")
        if "learning_rate" in logs:
            parts.append(f"lr {logs['learning_rate']:.2e}")
        if "mean_token_accuracy" in logs:
            parts.append(f"acc {logs['mean_token_accuracy']:.3f}")
        if self.tokens_per_second is not None and "loss" in logs:
            parts.append(f"{self.tokens_per_second:,.0f} tok/s")
        if "train_loss" in logs:  # the Trainer's summary at the end
            parts = [f"done: {state.global_step} steps in {_fmt_time(logs['train_runtime'])}"]
            if "train_loss" in logs:
                parts.append(f"mean loss {logs['train_loss']:.4f}")
        elif state.global_step > self._start_step:
            elapsed = now - self._t0
            eta = (
                elapsed
                / (state.global_step - self._start_step)
                * (state.max_steps - state.global_step)
            )
            parts.append(f"eta {_fmt_time(eta)}")
        self._print("  ".join(parts))
        if "train_loss" in logs:
            trend = loss_trend(self.losses, getattr(args, "learning_rate", None))
            if trend:
                self._print(trend)

    def on_train_end(self, args, state, control, **kwargs):
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


FLAT_LOSS = 1e-3  # relative change of the logged loss below which a run "did not move"


def loss_trend(losses: list[tuple[int, float]], learning_rate: float | None = None) -> str | None:
    """One line on how the logged loss moved, first to last; says plainly when it did not
    (the adapter then has probably not measurably changed the model). None with < 2 logs."""
    if len(losses) < 2:
        return None
    (s0, first), (s1, last) = losses[0], losses[-1]
    change = (last - first) / max(abs(first), 1e-12)
    if abs(change) < FLAT_LOSS:
        lr = f" (now {learning_rate:g})" if learning_rate else ""
        return (
            f"loss trend: flat, {first:.4f} at step {s0} -> {last:.4f} at step {s1}: the "
            "adapter has probably not measurably changed the model; raise learning_rate"
            f"{lr} or train for more steps"
        )
    return f"loss trend: {first:.4f} at step {s0} -> {last:.4f} at step {s1} ({change:+.1%})"


class WandbConfig(TrainerCallback):
    """Adds vlmctl's resolved config set to the wandb run (after WandbCallback started it)."""

    def __init__(self, configs: dict[str, Any]) -> None:
        self.configs = configs

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:
            return
        try:
            import wandb
        except ImportError:  # pragma: no cover
            return
        if getattr(wandb, "run", None) is not None:
            wandb.run.config.update({"vlmctl": self.configs}, allow_val_change=True)


def rank_env() -> tuple[int, int, int]:
    """(rank, local_rank, world_size) from the launcher's environment."""
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return rank, local, world
