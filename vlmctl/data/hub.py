"""Hub datasets, offline-safe: the cache only when the hub is unreachable, no retries."""

from __future__ import annotations

import contextlib
import os
import socket
from typing import Any
from urllib.parse import urlparse

from vlmctl.data.sources import data_error, first_line, quiet
from vlmctl.errors import DataError


def env_offline() -> bool:
    """True when any Hugging Face offline variable is set (hub, datasets or transformers)."""
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(name, "").strip().upper() in ("1", "ON", "YES", "TRUE"):
            return True
    return False


def hub_reachable(timeout: float = 1.5) -> bool:
    """One TCP connect to the hub (or the HTTPS proxy): cheap, so offline never waits on retries."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    url = urlparse(proxy or os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname
    if not host:
        return False
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _forced_offline():
    """Make `datasets`/`huggingface_hub` use the cache only (they read the env at import)."""
    import datasets.config
    import huggingface_hub.constants as hc

    saved = (datasets.config.HF_HUB_OFFLINE, hc.HF_HUB_OFFLINE)
    datasets.config.HF_HUB_OFFLINE = True
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hc.HF_HUB_OFFLINE = saved


def load_hub(hub_id: str, cfg) -> Any:
    """`datasets.load_dataset(hub_id)`, from the cache only when offline; one DataError line."""
    import datasets

    offline = env_offline() or not hub_reachable()
    ctx = _forced_offline() if offline else contextlib.nullcontext()
    try:
        with ctx, quiet():
            return datasets.load_dataset(hub_id, cfg.dataset.name)
    except DataError:
        raise
    except Exception as exc:
        if offline:
            raise data_error(
                f"dataset {hub_id!r} not found locally and the hub is unreachable (offline)",
                "download it first (datasets cache) or point dataset.path at a local file",
            ) from None
        raise data_error(
            f"cannot load hub dataset {hub_id!r}: {first_line(exc)}",
            "check the id (and dataset.name for datasets with several configs), or log in "
            "for gated/private datasets",
        ) from None
