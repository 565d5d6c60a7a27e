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
