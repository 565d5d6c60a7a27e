"""wandb made safe to start in a training worker: never a login prompt.

Apart from worker.py so the worker reads as the steps of a run; `vlmctl.training.worker`
re-exports both functions.
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from urllib.parse import urlparse


def wandb_has_credentials(env: dict[str, str] | None = None) -> bool:
    """An API key in the environment or a ~/.netrc entry for the wandb host (what login writes)."""
    env = os.environ if env is None else env
    if env.get("WANDB_API_KEY"):
        return True
    host = urlparse(env.get("WANDB_BASE_URL") or "https://api.wandb.ai").hostname or "api.wandb.ai"
    path = env.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def prepare_wandb(report_to: list[str], output_dir: Path) -> str | None:
    """Make wandb safe to start: never a login prompt. Returns the offline folder, if offline.

    Without credentials it runs offline (files under the output folder) and says how to
    upload them later; WANDB_MODE set by the user is respected when it is not `online`.
    """
    if "wandb" not in report_to:
        return None
    os.environ.setdefault("WANDB_PROJECT", "vlmctl")
    os.environ.setdefault("WANDB_DIR", str(output_dir))
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("disabled", "offline", "dryrun"):
        return os.environ["WANDB_DIR"] if mode != "disabled" else None
    if not wandb_has_credentials():
        os.environ["WANDB_MODE"] = "offline"
        return os.environ["WANDB_DIR"]
    return None
