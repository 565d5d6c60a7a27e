"""Process-level switches shared by the CLI, the training worker, eval and merge.

Light on purpose (only `os` and `pathlib`): `vlmctl --help` imports it.
"""

from __future__ import annotations

import os
from pathlib import Path

DEBUG_ENV = "VLMCTL_DEBUG"


def debug_enabled() -> bool:
    """VLMCTL_DEBUG set to anything but "", 0, false or no: full tracebacks and library logs.

    One reading for every process (the CLI, each training rank, eval), so `VLMCTL_DEBUG=0`
    means off everywhere."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


STATUS_PREFIX = "vlmctl-run-"


def new_status_dir() -> Path:
    """A private (0700) folder for one `vlmctl train`, named after this process, after removing
    the folders of earlier runs whose process is gone.

    Why: the folder holds the run's credentials file (0600) and is removed when train ends; a
    `kill -9` of vlmctl cannot run that clean-up, so the next train removes what it left."""
    import re
    import shutil
    import tempfile

    root = Path(tempfile.gettempdir())
    pattern = re.compile(rf"{re.escape(STATUS_PREFIX)}(\d+)-")
    try:
        entries = list(root.iterdir())
    except OSError:
        entries = []
    for entry in entries:
        m = pattern.match(entry.name)
        if m is None or pid_alive(int(m.group(1))):
            continue
        try:
            mine = entry.is_dir() and entry.stat().st_uid == os.getuid()
        except OSError:
            continue
        if mine:
            shutil.rmtree(entry, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f"{STATUS_PREFIX}{os.getpid()}-"))
