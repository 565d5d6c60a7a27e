"""Process-level switches shared by the CLI, the training worker, eval and merge.

Light on purpose (only `os`): `vlmctl --help` imports it.
"""

from __future__ import annotations

import os

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
