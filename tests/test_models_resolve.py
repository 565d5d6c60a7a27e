"""Model resolution: entry, Auto fallback, remote code (pure, no heavy import)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vlmctl.config.model import ModelConfig
from vlmctl.errors import ConfigError
from vlmctl.models.resolve import AUTO_MODEL, AUTO_PROCESSOR, is_transformers_class, resolve_model

SEED_ENTRIES = {
    "Qwen/Qwen2-VL-2B-Instruct": {
        "model_class": "Qwen2VLForConditionalGeneration",
        "processor_class": "Qwen2VLProcessor",
    },
    "OpenGVLab/InternVL2-2B": {
        "model_class": "InternVLChatModel",
        "processor_class": "InternVLChatProcessor",
    },
    "microsoft/Phi-3-vision-128k-instruct": {
        "model_class": "Phi3VForCausalLM",
        "processor_class": "Phi3VProcessor",
        "trust_remote_code": True,
    },
}


def _cfg(model_id, **extra):
    return ModelConfig.model_validate(
        {"model_name_or_path": model_id, "model_classes": SEED_ENTRIES, **extra}
    )


def test_entry_wins():
    res = resolve_model(_cfg("Qwen/Qwen2-VL-2B-Instruct"))
    assert (res.source, res.model_class, res.processor_class) == (
        "entry",
        "Qwen2VLForConditionalGeneration",
        "Qwen2VLProcessor",
    )
    assert res.trust_remote_code is False


def test_id_without_entry_uses_auto_classes():
    res = resolve_model(_cfg("HuggingFaceTB/SmolVLM-256M-Instruct"))
    assert (res.source, res.model_class, res.processor_class) == (
        "auto",
        AUTO_MODEL,
        AUTO_PROCESSOR,
    )
    assert "no model_classes entry" in res.reason


def test_remote_code_entry_needs_trust():
    with pytest.raises(ConfigError) as info:
        resolve_model(_cfg("OpenGVLab/InternVL2-2B"))
    f = info.value.findings[0]
    assert f.code == "remote-code-off"
    assert "InternVLChatModel is not a transformers class" in f.message
    assert "trust_remote_code: true" in f.hint


def test_remote_code_entry_with_per_entry_trust():
    res = resolve_model(_cfg("microsoft/Phi-3-vision-128k-instruct"))
    assert res.source == "remote_code" and res.trust_remote_code
    assert res.model_class == "Phi3VForCausalLM"


def test_global_trust_also_allows_remote_code_and_only_affects_that_model():
    cfg = _cfg("OpenGVLab/InternVL2-2B", loading_params={"trust_remote_code": True})
    assert resolve_model(cfg).source == "remote_code"
    # The per-entry flag of Phi-3 does not leak onto other models.
    assert resolve_model(_cfg("Qwen/Qwen2-VL-2B-Instruct")).trust_remote_code is False


def test_custom_import_path_must_be_installed(monkeypatch):
    cfg = ModelConfig.model_validate(
        {
            "model_name_or_path": "org/m",
            "model_classes": {
                "org/m": {"model_class": "M", "import_path": "no_such_pkg_xyz.models"}
            },
        }
    )
    with pytest.raises(ConfigError) as info:
        resolve_model(cfg)
    assert info.value.findings[0].code == "import-not-allowed"  # a config cannot allow it
    monkeypatch.setenv("VLMCTL_ALLOW_IMPORTS", "no_such_pkg_xyz")
    with pytest.raises(ConfigError) as info:
        resolve_model(cfg)
    assert info.value.findings[0].code == "import-path"


def test_class_name_must_be_an_identifier():
    cfg = ModelConfig.model_validate(
        {
            "model_name_or_path": "org/m",
            "model_classes": {"org/m": {"model_class": "os.system('id')"}},
        }
    )
    with pytest.raises(ConfigError) as info:
        resolve_model(cfg)
    assert info.value.findings[0].code == "class-name"


def test_no_model_set():
    with pytest.raises(ConfigError):
        resolve_model(ModelConfig())


@pytest.mark.parametrize(
    ("name", "known"),
    [
        ("Qwen2VLForConditionalGeneration", True),
        ("LlavaForConditionalGeneration", True),
        ("PaliGemmaForConditionalGeneration", True),
        ("PaliGemmaProcessor", True),
        ("InternVLChatModel", False),
        ("Phi3VForCausalLM", False),
        ("Phi3VProcessor", False),
        ("not a name", False),
    ],
)
def test_is_transformers_class(name, known):
    assert is_transformers_class(name) is known


def test_resolution_imports_nothing_heavy():
    code = (
        "import sys\n"
        "from vlmctl.config.model import ModelConfig\n"
        "from vlmctl.models.resolve import resolve_model, is_transformers_class\n"
        "assert not is_transformers_class('Phi3VForCausalLM')\n"
        "resolve_model(ModelConfig(model_name_or_path='Qwen/Qwen2-VL-2B-Instruct'))\n"
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
