"""Atomic output: a merge writes into a hidden temporary folder beside the target and renames
it into place at the end, so an interrupted merge never leaves a partial output folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from vlmctl.errors import Finding, VlmctlError
from vlmctl.proc import pid_alive

REPORT_NAME = "merge-report.json"
MERGE_MARKER = ".vlmctl-merged"  # in every merge output: what `--force` may replace

# Hook for tests: seconds to sleep inside the weight-writing step (to SIGKILL a merge mid-save).
_SLEEP_ENV = "VLMCTL_TEST_MERGE_SLEEP"


@contextlib.contextmanager
def atomic_folder(target: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary folder beside `target`; rename it into place only on success.

    With `force`, an existing target is renamed away, the new folder renamed in, and the old
    one deleted last, so at every instant the target is either the old or the new folder.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the output is a normal folder
    (tmp / ".vlmctl-merge.pid").write_text(str(os.getpid()))
    (tmp / MERGE_MARKER).write_text("written by vlmctl merge; --force may replace this folder\n")
    try:
        yield tmp
        (tmp / ".vlmctl-merge.pid").unlink(missing_ok=True)
        if target.exists():
            if not force:
                raise VlmctlError(
                    Finding("error", f"output {target} appeared during the merge", hint="rerun")
                )
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            old.rmdir()
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def written_by_merge(folder: Path) -> bool:
    """True for a folder `vlmctl merge` wrote (its marker or report), or an empty one."""
    if not folder.is_dir() or folder.is_symlink():
        return False
    if not any(folder.iterdir()):
        return True
    return (folder / MERGE_MARKER).is_file() or (folder / REPORT_NAME).is_file()


def _sweep_stale(target: Path) -> None:
    # A SIGKILLed merge cannot clean up: remove its hidden temp folder once its process is gone.
    for stale in target.parent.glob(f".{target.name}.tmp-*"):
        pid_file = stale / ".vlmctl-merge.pid"
        try:
            pid = int(pid_file.read_text())
        except (OSError, ValueError):
            continue
        if not pid_alive(pid):
            shutil.rmtree(stale, ignore_errors=True)


def sleep_for_tests() -> None:
    seconds = float(os.environ.get(_SLEEP_ENV, "0") or 0)
    if seconds > 0:
        time.sleep(seconds)
