"""The four YAML files of a config set, as strict pydantic models (no heavy imports here)."""

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
