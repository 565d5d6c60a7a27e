"""The run folder: one run at a time, and only what vlmctl wrote is ever deleted.

- A lock (`.vlmctl.lock`, an `fcntl.flock` held by `vlmctl train` for the whole run) refuses
  a second run, or a second `--resume auto`, into the same folder. The kernel drops the lock
  when the holder dies, so a killed run never leaves the folder locked.
- What a run wrote is recorded in `vlmctl-run.json` (`files`); `--overwrite` removes those
  names (and vlmctl's own: checkpoints, configs/, the manifest, wandb/) and nothing else.
  What it keeps (a user's notes, `merged/`) it names.
- `checkpoint-N` folders without `trainer_state.json` (a save killed by an older vlmctl) and a
  leftover `.vlmctl-staging/` are removed when a run starts or resumes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from vlmctl.errors import Finding, VlmctlError

LOCK_NAME = ".vlmctl.lock"
STAGING = ".vlmctl-staging"
MANIFEST = "vlmctl-run.json"
# Always vlmctl's, whatever the manifest says (written before or without a manifest update).
_OWN_NAMES = {MANIFEST, "configs", STAGING, "wandb", "runs", f"{MANIFEST}.tmp"}
_OWN_RE = re.compile(r"^checkpoint-\d+$")


class RunLock:
    """An exclusive, non-blocking lock on a run folder, held until `release` (or death)."""

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = output_dir
        self.path = output_dir / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock or raise a one-line error naming the run that holds it."""
        import fcntl

        self.output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
            finally:
                os.close(fd)
            raise VlmctlError(
                Finding(
                    "error",
                    f"output folder {self.output_dir} is in use by another vlmctl train "
                    f"(pid {holder})",
                    hint="wait for it to finish (or stop it), or choose another --output-dir",
                    code="output-locked",
                )
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (the file stays: removing it would race with a waiting run)."""
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def is_locked(output_dir: Path) -> bool:
    """True while a vlmctl train holds the folder's lock (changes nothing)."""
    import fcntl

    path = output_dir / LOCK_NAME
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)
    return False


def entries(output_dir: Path) -> list[str]:
    """Names in the folder, the lock file left out (it says nothing about a run)."""
    if not output_dir.is_dir():
        return []
    return sorted(p.name for p in output_dir.iterdir() if p.name != LOCK_NAME)


def recorded_files(output_dir: Path) -> set[str]:
    """Top-level names the manifest says the run wrote (empty when there is none)."""
    try:
        data = json.loads((output_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return set()
    files = data.get("files") if isinstance(data, dict) else None
    return {str(f) for f in files} if isinstance(files, list) else set()


def is_ours(name: str, recorded: set[str]) -> bool:
    """Whether vlmctl train wrote this top-level name of a run folder."""
    return name in recorded or name in _OWN_NAMES or bool(_OWN_RE.match(name))


def split_owned(output_dir: Path) -> tuple[list[str], list[str]]:
    """(names vlmctl wrote, names it did not) in a run folder."""
    recorded = recorded_files(output_dir)
    ours, theirs = [], []
    for name in entries(output_dir):
        (ours if is_ours(name, recorded) else theirs).append(name)
    return ours, theirs


def remove_owned(output_dir: Path) -> tuple[list[str], list[str]]:
    """`--overwrite`: delete what vlmctl wrote; return (removed, kept)."""
    ours, theirs = split_owned(output_dir)
    for name in ours:
        path = output_dir / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return ours, theirs


def foreign_at_start(output_dir: Path) -> list[str]:
    """Names present when a run starts that it did not write (kept out of its `files`)."""
    return split_owned(output_dir)[1]


def files_written(output_dir: Path, foreign: list[str]) -> list[str]:
    """The manifest's `files`: everything in the folder now except what was there before."""
    skip = set(foreign)
    return [n for n in entries(output_dir) if n not in skip]


def remove_partial_checkpoints(output_dir: Path) -> list[str]:
    """Remove `checkpoint-N` folders that are not whole checkpoints, and the staging folder."""
    removed = []
    if not output_dir.is_dir():
        return removed
    for child in sorted(output_dir.iterdir()):
        partial = _OWN_RE.match(child.name) and child.is_dir()
        partial = partial and not (child / "trainer_state.json").is_file()
        if partial or (child.name == STAGING and child.is_dir()):
            shutil.rmtree(child, ignore_errors=True)
            removed.append(child.name)
    return removed
