"""What `accelerate launch` runs in every process: the process around a training run.

    python -m vlmctl.training.worker CONFIG_DIR --output-dir D [--set k=v ...]
        [--resume CHECKPOINT] [--status-dir S]

`vlmctl train` builds this command line (it has already checked the config set and the output
folder). This module is the process: its arguments, the status folder shared with `vlmctl
train`, signals and exit codes; the run's steps are `vlmctl.training.worker_steps`.

Exit codes: 0 done; 1 a user error (one line per finding) or a crash; 143 / 130 stopped by
SIGTERM / SIGINT after saving a checkpoint (resume with `vlmctl train DIR --resume auto`).
The code is also written to `<status-dir>/exit.json`, because accelerate's launchers replace
every non-zero code with 1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

from vlmctl.errors import VlmctlError
from vlmctl.proc import debug_enabled
from vlmctl.training.wandb_setup import prepare_wandb, wandb_has_credentials  # noqa: F401
from vlmctl.training.worker_steps import IS_MAIN, say

# --- arguments and status ----------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The worker's own flags, as `vlmctl train` builds them into the accelerate argv."""
    p = argparse.ArgumentParser(prog="vlmctl.training.worker")
    p.add_argument("config_dir")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--resume", default=None, help="checkpoint folder to resume from")
    p.add_argument("--status-dir", default=None)
    p.add_argument("--resume-hint", default=None, help="command that resumes this run")
    p.add_argument(
        "--secret-overrides", default=None, help="private JSON file of credential overrides"
    )
    p.add_argument(
        "--config-digest", default=None, help="the set's file digests `vlmctl train` checked"
    )
    return p.parse_args(argv)


def worker_overrides(args: argparse.Namespace) -> list[str]:
    """The `--set` overrides of the run: the command line's, then the private file's."""
    out = list(args.overrides)
    if args.secret_overrides:
        out += json.loads(Path(args.secret_overrides).read_text(encoding="utf-8"))
    return out


class Status:
    """The status folder shared with `vlmctl train`: worker pids, and the exit code."""

    def __init__(self, folder: str | None) -> None:
        self.folder = Path(folder) if folder else None
        self.info: dict[str, Any] = {}

    def write_rank(self, rank: int, local_rank: int, world: int) -> None:
        """Record this process (pid, host, rank) so `vlmctl train` can signal every worker."""
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        info = {
            "pid": os.getpid(),
            "rank": rank,
            "local_rank": local_rank,
            "world_size": world,
            "host": socket.gethostname(),
        }
        (self.folder / f"rank{rank}.json").write_text(json.dumps(info))

    def write_exit(self, code: int, **extra: Any) -> None:
        """Main process only: the exit code and details, written atomically for `vlmctl train`."""
        if self.folder is None or not IS_MAIN:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "exit.json.tmp"
        tmp.write_text(json.dumps({"exit_code": code, **extra}, default=str))
        tmp.replace(self.folder / "exit.json")


def main(argv: list[str] | None = None) -> int:
    """Entry point of each launched process."""
    from vlmctl.training.callbacks import GracefulStop, rank_env

    _die_with_vlmctl()
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rank, local_rank, world = rank_env()
    status = Status(args.status_dir)
    status.write_rank(rank, local_rank, world)
    stop = GracefulStop()
    stop.install()
    try:
        from vlmctl.training.worker_steps import train_in_this_process

        code = train_in_this_process(args, worker_overrides(args), stop, status)
    except VlmctlError as exc:
        if IS_MAIN:
            for f in exc.findings:
                print(f"{f.severity}: {f.one_line()}", file=sys.stderr, flush=True)
        code = 1
    except SystemExit as exc:  # a signal before training started, or a second signal
        code = exc.code if isinstance(exc.code, int) else 1
        say(f"stopped (exit {code}) before a checkpoint could be saved")
    except Exception as exc:  # noqa: BLE001 - the boundary of the process
        if debug_enabled() or not IS_MAIN:
            traceback.print_exc()
        else:
            first = (str(exc).strip().splitlines() or [""])[0]
            print(f"error: {type(exc).__name__}: {first}", file=sys.stderr)
            print("set VLMCTL_DEBUG=1 for the traceback", file=sys.stderr, flush=True)
        code = 1
    status.write_exit(code, **status.info)
    if stop.stopped_at is not None:
        _leave_together()
    return code


def _die_with_vlmctl() -> None:
    """Stop with the launcher (kernel parent-death signal), and at once if `vlmctl train`
    is already gone (killed while this process started)."""
    from vlmctl.training.launch import PARENT_ENV, die_with_parent

    die_with_parent()
    vlmctl_pid = os.environ.get(PARENT_ENV, "")
    if vlmctl_pid.isdigit():
        from vlmctl.proc import pid_alive

        if not pid_alive(int(vlmctl_pid)):
            os._exit(137)


def _leave_together() -> None:
    """Wait for every rank after a graceful stop (no-op in a single process).

    Why: a non-zero exit makes the launcher's agent kill the other ranks at once. Every rank
    stopped at the same step (the stop flag is all-reduced), so each reaches this barrier;
    without it, a rank that leaves first can kill rank 0 before it has written the manifest
    and said where the checkpoint is.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


if __name__ == "__main__":
    from vlmctl.training.startup_profile import exit_now

    exit_now(main())
