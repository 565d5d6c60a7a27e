"""The four YAML files of a config set, as strict pydantic models (no heavy imports here)."""

import os
from contextlib import contextmanager


@contextmanager
def _pydantic_plugins_off():
    """Build vlmctl's own config models without pydantic plugins.

    Why: the first validator pydantic builds scans every installed distribution's entry
    points for plugins (observability hooks meant for an application's data models), ~8 ms
    of every command's start-up in a typical venv, more in a big image. These models are
    vlmctl's internals; typer builds its parameter adapters the same way.
    """
    before = os.environ.get("PYDANTIC_DISABLE_PLUGINS")
    os.environ["PYDANTIC_DISABLE_PLUGINS"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["PYDANTIC_DISABLE_PLUGINS"]
        else:
            os.environ["PYDANTIC_DISABLE_PLUGINS"] = before


with _pydantic_plugins_off():
    from vlmctl.config.collator import CollatorConfig
    from vlmctl.config.model import ModelConfig
    from vlmctl.config.peft import PeftSettings
    from vlmctl.config.train import TrainConfig

FILES = {
    "model": "vlm_model_config.yaml",
    "collator": "vlm_collator_config.yaml",
    "train": "train_config.yaml",
    "peft": "peft_config.yaml",
}
MODELS = {
    "model": ModelConfig,
    "collator": CollatorConfig,
    "train": TrainConfig,
    "peft": PeftSettings,
}

__all__ = ["FILES", "MODELS", "CollatorConfig", "ModelConfig", "PeftSettings", "TrainConfig"]
