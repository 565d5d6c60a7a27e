"""The `vlmctl train` side of a run: check everything cheap, then launch the worker.

Order matters for the user: config errors come before any launch (seconds, not minutes of
model loading), a used output folder is refused before anything is written, and the exit code
is the worker's own (0, 1, or 143/130 after a signal with a checkpoint saved).
No heavy imports here: the CLI stays fast and accelerate/torch load only in the workers.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmctl.errors import Finding, UsageError, VlmctlError
from vlmctl.training import launch as ln
from vlmctl.training.preflight import check_ready_to_train, preflight

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class TrainRequest:
    """Everything `vlmctl train` was asked to do (flags, parsed)."""

    config_dir: Path
    output_dir: Path | None = None
    resume: str | None = None  # "auto" | a checkpoint path | None
    overwrite: bool = False
    overrides: list[str] = field(default_factory=list)
    num_processes: int | None = None
    num_machines: int = 1
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int | None = None
    accelerate_config: str | None = None
    model: str | None = None
    dataset: str | None = None
    dry_run: bool = False


@dataclass
class Plan:
    """What will be launched."""

    argv: list[str]
    env: dict[str, str]
    output_dir: Path
    resume_from: Path | None
    preset: str
    notes: list[str]
    status_dir: Path
    config_set: Any = None
    # Variables set for the worker on top of the caller's environment (direct start).
    env_added: dict[str, str] = field(default_factory=dict)


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` folder (highest N with a trainer_state.json)."""
    if not output_dir.is_dir():
        return None
    found = []
    for child in output_dir.iterdir():
        m = CHECKPOINT_RE.match(child.name)
        if m and child.is_dir() and (child / "trainer_state.json").is_file():
            found.append((int(m.group(1)), child))
    return max(found)[1] if found else None


def is_used(output_dir: Path) -> bool:
    """A folder with anything in it (its lock file aside) is a used output folder."""
    from vlmctl.training.rundir import entries

    return bool(entries(output_dir))


def _inputs(cs) -> list[tuple[str, Path]]:
    """(what, local path) of everything a run reads: configs, dataset, media roots, model."""
    out = [("the config folder", Path(cs.dir))]
    path = cs.collator.dataset.path
    if path and not str(path).startswith(("hf://", "http://", "https://")):
        p = Path(str(path)).expanduser()
        p = p if p.is_absolute() else Path(cs.dir) / p
        if p.exists():
            out.append(("the dataset", p))
    roots = cs.collator.dataset.media_root
    for root in [roots] if isinstance(roots, str) else list(roots or []):
        p = Path(str(root)).expanduser()
        out.append(("a media_root", p if p.is_absolute() else Path(cs.dir) / p))
    model = Path(cs.model_location())
    if model.exists():
        out.append(("the model", model))
    return out


def _check_inputs_outside(cs, output_dir: Path) -> None:
    """--overwrite must not delete what the run is about to read."""
    for what, path in _inputs(cs):
        p = path.resolve()
        if p == output_dir or p.is_relative_to(output_dir):
            raise UsageError(
                Finding(
                    "error",
                    f"--overwrite: {what} ({p}) is inside the output folder {output_dir}; "
                    "refusing to delete it",
                    hint="copy the configs (or data) out of the run folder first, or choose "
                    "another --output-dir",
                    code="input-in-output",
                )
            )


def _cli_overrides(req: TrainRequest) -> list[str]:
    """`--model` / `--dataset` as overrides; local paths made absolute (they are cwd-relative
    on the command line, config-relative in the files)."""
    out = list(req.overrides)
    if req.model:
        p = Path(req.model).expanduser()
        value = str(p.resolve()) if p.exists() else req.model
        out.append(f"model.model_name_or_path={value}")
    if req.dataset:
        p = Path(req.dataset).expanduser()
        value = str(p.resolve()) if p.exists() else req.dataset
        out.append(f"collator.dataset.path={value}")
    return out


def _resume_hint(req: TrainRequest, output_dir: Path) -> str:
    """The command that resumes this run; credentials are named, never written out."""
    from vlmctl.credentials import is_secret_override

    parts = ["vlmctl", "train", str(req.config_dir)]
    if req.output_dir is not None:
        parts += ["--output-dir", str(output_dir)]
    secret_keys = []
    for o in req.overrides:
        if is_secret_override(o):
            secret_keys.append(o.partition("=")[0].strip())
            continue
        parts += ["--set", o]
    if req.model:
        parts += ["--model", req.model]
    if req.dataset:
        parts += ["--dataset", req.dataset]
    if req.num_processes:
        parts += ["--num-processes", str(req.num_processes)]
    if req.accelerate_config:
        parts += ["--accelerate-config", req.accelerate_config]
    parts += ["--resume", "auto"]
    hint = shlex.join(parts)
    if secret_keys:
        hint += (
            " (and your credentials again: "
            + ", ".join(f"--set {k}=..." for k in secret_keys)
            + ")"
        )
    return hint


SECRETS_FILE = "secret-overrides.json"


def write_private_overrides(status_dir: Path, overrides: list[str]) -> Path:
    """Credentials for the worker in a file only this user can read (0600, in a 0700 folder).

    Why not the command line: every user of the machine sees a process's arguments (`ps`),
    and wandb records them. The status folder is removed when `vlmctl train` ends.
    """
    import json

    path = status_dir / SECRETS_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(overrides, f)
    return path


def _physical_cores() -> int:
    """Physical cores (accelerate's own default for CPU threads), logical ones as fallback."""
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


def _cpu_threads(preset: str, nproc: int | None) -> int | None:
    """CPU runs: the thread count accelerate would pick (else it prints a warning). A user's
    OMP_NUM_THREADS is accelerate's own choice then (it was overridden before)."""
    if preset in ("cpu", "cpu_ddp") and not os.environ.get("OMP_NUM_THREADS", "").strip():
        return max(1, _physical_cores() // (nproc or 1))
    return None


def pick_preset(req: TrainRequest, gpu_count: int) -> tuple[str, int | None, list[str]]:
    """(preset name or config path, processes per machine or None, notes)."""
    notes: list[str] = []
    n = req.num_processes
    if n is not None and n < 1:
        raise UsageError(Finding("error", f"--num-processes {n}: must be at least 1"))
    name = req.accelerate_config
    if name is None:
        return ln.default_preset(n or 1, gpu_count), n or 1, notes
    if name in ln.PRESETS:
        if name == "cpu" and (n or 1) > 1:
            notes.append("--accelerate-config cpu runs one process; using cpu_ddp (gloo)")
            name = "cpu_ddp"
        if name in ("multi_gpu", "cpu_ddp", "fsdp2", "zero2", "zero3") and n is None:
            n = max(gpu_count, 1) if name != "cpu_ddp" else 2
        return name, n or 1, notes
    path = Path(name).expanduser()
    if not path.is_file():
        raise UsageError(
            Finding(
                "error",
                f"--accelerate-config {name}: no such preset or file",
                hint=f"use one of {', '.join(ln.PRESETS)} or a path to an accelerate config "
                "(accelerate config --config_file FILE)",
            )
        )
    return str(path.resolve()), n, notes


def check_output_dir(req: TrainRequest, output_dir: Path) -> tuple[Path | None, list[str]]:
    """(checkpoint to resume from, notes) or a one-line error: the output folder's rules.

    Run once when planning and again once the folder is locked (another run may have
    written it in between).
    """
    resume_from: Path | None = None
    notes: list[str] = []
    if req.resume == "auto":
        resume_from = latest_checkpoint(output_dir)
        if resume_from is None:
            notes.append(f"--resume auto: no checkpoint in {output_dir}; starting from step 0")
    elif req.resume:
        resume_from = Path(req.resume).expanduser().resolve()
        if not (resume_from / "trainer_state.json").is_file():
            raise UsageError(
                Finding(
                    "error",
                    f"--resume {req.resume}: not a checkpoint folder (no trainer_state.json)",
                    hint=f"use --resume auto, or a checkpoint-N folder of {output_dir}",
                )
            )
    elif is_used(output_dir) and not req.overwrite:
        raise VlmctlError(
            Finding(
                "error",
                f"output folder {output_dir} is already used",
                hint="add --resume auto to continue it, --overwrite to replace it, or choose "
                "another --output-dir",
                code="output-used",
            )
        )
    if req.overwrite and is_used(output_dir) and not (output_dir / "vlmctl-run.json").exists():
        raise UsageError(
            Finding(
                "error",
                f"--overwrite: {output_dir} is not a vlmctl run folder (no vlmctl-run.json); "
                "refusing to delete it",
                hint="empty it yourself or choose another --output-dir",
            )
        )
    return resume_from, notes


def plan_run(req: TrainRequest, gpu_count: int | None = None) -> Plan:
    """Check the config set and the output folder; build the launch. Changes nothing on disk.

    Raises ConfigError (every config problem) or UsageError (flags, used output folder).
    """
    from vlmctl.config.load import file_digests, load_config_set

    overrides = _cli_overrides(req)
    digests = file_digests(req.config_dir)  # read first: a later edit then shows as a change
    cs = load_config_set(req.config_dir, overrides)
    output_dir = (req.output_dir or cs.output_dir).expanduser().resolve()
    if req.resume and req.overwrite:
        raise UsageError(
            Finding("error", "--resume and --overwrite contradict each other", hint="pick one")
        )
    from vlmctl.training.rundir import is_locked

    if is_locked(output_dir):
        raise VlmctlError(
            Finding(
                "error",
                f"output folder {output_dir} is in use by another vlmctl train",
                hint="wait for it to finish (or stop it), or choose another --output-dir",
                code="output-locked",
            )
        )
    resume_from, notes = check_output_dir(req, output_dir)
    if req.overwrite:
        _check_inputs_outside(cs, output_dir)

    gpus = ln.detect_gpu_count() if gpu_count is None else gpu_count
    preset, nproc, pnotes = pick_preset(req, gpus)
    notes += pnotes
    from vlmctl.proc import new_status_dir

    status_dir = new_status_dir()  # mode 0700; removes what a killed earlier run left
    worker_args = _worker_args(req, cs.dir, output_dir, overrides, status_dir, resume_from, digests)
    threads = _cpu_threads(preset, nproc)
    env = dict(os.environ)
    env_added: dict[str, str] = {}
    if ln.can_start_directly(preset, nproc, req.num_machines):
        # One process: accelerate's launcher would only set these and start the worker.
        argv = ln.build_direct_argv(worker_args)
        env_added = ln.simple_launcher_env(preset, threads, env)
        env.update(env_added)
    else:
        argv = ln.build_launch_argv(
            preset,
            nproc,
            num_machines=req.num_machines,
            machine_rank=req.machine_rank,
            main_process_ip=req.main_process_ip,
            main_process_port=req.main_process_port,
            worker_args=worker_args,
            num_cpu_threads_per_process=threads,
        )
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return Plan(
        argv=argv,
        env=env,
        output_dir=output_dir,
        resume_from=resume_from,
        preset=Path(preset).stem if os.sep in preset else preset,
        notes=notes,
        status_dir=status_dir,
        config_set=cs,
        env_added=env_added,
    )


def _worker_args(
    req: TrainRequest,
    config_dir: Path,
    output_dir: Path,
    overrides: list[str],
    status_dir: Path,
    resume_from: Path | None,
    digests: dict[str, str],
) -> list[str]:
    """The worker's command line: credentials go in a private file, never in argv; `digests`
    (`file_digests` of the set `train` checked) let the worker refuse a set edited since."""
    from vlmctl.credentials import is_secret_override

    args = [str(config_dir.resolve()), "--output-dir", str(output_dir)]
    secret = [o for o in overrides if is_secret_override(o)]
    for o in overrides:
        if o not in secret:
            args += ["--set", o]
    if secret:
        args += ["--secret-overrides", str(write_private_overrides(status_dir, secret))]
    if resume_from is not None:
        args += ["--resume", str(resume_from)]
    args += ["--status-dir", str(status_dir)]
    args += ["--resume-hint", _resume_hint(req, output_dir)]
    args += ["--config-digest", json.dumps(digests, sort_keys=True)]
    return args


def _clear_for_run(req: TrainRequest, plan: Plan) -> None:
    """--overwrite's removal (only what vlmctl wrote) and interrupted saves, each said."""
    from vlmctl.training import rundir

    if req.overwrite and is_used(plan.output_dir):
        removed, kept = rundir.remove_owned(plan.output_dir)
        print(
            f"vlmctl: --overwrite: removed from {plan.output_dir}: {', '.join(removed)}",
            file=sys.stderr,
        )
        if kept:
            print(
                f"vlmctl: --overwrite: kept (not written by vlmctl train): {', '.join(kept)}",
                file=sys.stderr,
            )
    partial = rundir.remove_partial_checkpoints(plan.output_dir)
    if partial:
        print(
            f"vlmctl: removed incomplete checkpoints (a save was interrupted): "
            f"{', '.join(partial)}",
            file=sys.stderr,
        )


def train(req: TrainRequest, launcher: ln.Launcher | None = None) -> int:
    """Plan, then launch (or print the argv with --dry-run). Returns the exit code."""
    from vlmctl.training import startup_profile as prof

    prof.mark_process_start("vlmctl train: process started")
    plan = plan_run(req)
    prof.mark("vlmctl train: CLI imports, config set loaded, run planned")
    for note in plan.notes:
        print(f"vlmctl: {note}", file=sys.stderr)
    if req.dry_run:
        shutil.rmtree(plan.status_dir, ignore_errors=True)
        print(shlex.join([*(f"{k}={v}" for k, v in plan.env_added.items()), *plan.argv]))
        return 0
    from vlmctl.training import rundir

    lock = None
    early = None
    try:
        # Before --overwrite removes anything: a run that cannot start must lose nothing,
        # and leaves no folder behind (a plain rerun then works).
        check_ready_to_train(plan.config_set)
        if launcher is None and plan.env_added:
            # One local process: it imports its libraries while the checks below run, and
            # waits for them at a gate (it reads and writes nothing of the run before).
            prof.export(plan.env)
            early = ln.start_early(plan.argv, plan.env, plan.status_dir)
            prof.mark("vlmctl train: worker started early (waits at the gate)")
        preflight(plan.config_set)
        created = not plan.output_dir.exists()
        try:
            lock = rundir.RunLock(plan.output_dir).acquire()
            # Another run may have used the folder since it was planned.
            resume_from, _ = check_output_dir(req, plan.output_dir)
        except VlmctlError:
            if lock is not None and created and not rundir.entries(plan.output_dir):
                shutil.rmtree(plan.output_dir, ignore_errors=True)
            raise
        if resume_from != plan.resume_from:
            raise VlmctlError(
                Finding(
                    "error",
                    f"output folder {plan.output_dir} changed while this run started "
                    f"(another run?): newest checkpoint now {resume_from}",
                    hint="rerun the command",
                )
            )
    except BaseException:  # a refused run, or Ctrl-C during the checks
        if early is not None:
            ln.abort_early(early)
        if lock is not None:
            lock.release()
        shutil.rmtree(plan.status_dir, ignore_errors=True)
        raise
    try:
        _clear_for_run(req, plan)
        if plan.resume_from is not None:
            print(f"vlmctl: resuming from {plan.resume_from}", file=sys.stderr)
        print(
            f"vlmctl: launching ({plan.preset}) -> {plan.output_dir}", file=sys.stderr, flush=True
        )
        prof.mark("vlmctl train: dataset, model and media checked (preflight)")
        prof.export(plan.env)
        return ln.launch_and_wait(
            plan.argv, plan.env, plan.status_dir, launcher, started=early, gate_payload=prof.marks()
        )
    finally:
        if early is not None and early.returncode is None:
            ln.abort_early(early)  # something failed before the gate opened
        lock.release()
        shutil.rmtree(plan.status_dir, ignore_errors=True)
