"""Test-wide settings: nothing may reach the network or prompt for credentials."""

import os

import pytest

_OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "WANDB_MODE": "offline",
    "TOKENIZERS_PARALLELISM": "false",
}

# Set at import time too, so modules imported during collection already see offline mode.
os.environ.update(_OFFLINE_ENV)


@pytest.fixture(autouse=True, scope="session")
def _offline_env():
    """Keep the offline settings for the whole session (a test may not switch them off)."""
    os.environ.update(_OFFLINE_ENV)
    yield


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Factory `tiny_model_dir(family) -> Path`: each tiny twin is built once per session."""
    from vlmctl.testing.tiny import build_tiny_model

    cache: dict[str, object] = {}

    def get(family: str):
        if family not in cache:
            cache[family] = build_tiny_model(family, tmp_path_factory.mktemp(f"tiny-{family}"))
        return cache[family]

    return get
