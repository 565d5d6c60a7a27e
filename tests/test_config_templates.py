"""Every shipped template goes through the real loader, and the wheel ships them."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from _config_util import load_yaml

from vlmctl.config import FILES, MODELS
from vlmctl.config.load import load_config_set
from vlmctl.config.templates import render_templates, templates_dir

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("key", sorted(FILES))
def test_template_parses_and_validates(key):
    doc = load_yaml(templates_dir() / FILES[key])
    MODELS[key].model_validate(doc.data)
    first = (templates_dir() / FILES[key]).read_text(encoding="utf-8").splitlines()[0]
    assert first == (
        "# yaml-language-server: $schema=./.vlmctl-schema/"
        f"{FILES[key].removesuffix('.yaml')}.schema.json"
    )


def test_template_set_has_every_seed_key(tmp_path):
    for name, text in render_templates().items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    cs = load_config_set(tmp_path)
    assert set(cs.model.model_classes) == {
        "Qwen/Qwen2-VL-2B-Instruct",
        "llava-hf/llava-1.5-7b-hf",
        "OpenGVLab/InternVL2-2B",
        "google/paligemma-3b-pt-448",
        "microsoft/Phi-3-vision-128k-instruct",
    }
    trusted = {k for k, e in cs.model.model_classes.items() if e.trust_remote_code}
    assert trusted == {"OpenGVLab/InternVL2-2B", "microsoft/Phi-3-vision-128k-instruct"}
    assert cs.model.loading_params.trust_remote_code is False
    seed_train = {
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "gradient_accumulation_steps": 2,
        "learning_rate": 1e-5,
        "num_train_epochs": 1.0,
        "logging_steps": 0.1,
        "eval_steps": 0.1,
        "save_steps": 0.1,
        "save_total_limit": 2,
        "gradient_checkpointing": True,
        "bf16": True,
        "fp16": False,
        "group_by_length": True,
        "remove_unused_columns": False,
        "dataloader_pin_memory": False,
        "report_to": ["wandb"],
        "run_name": "qwen2-vl-2b-vqa-finetuning",
    }
    assert {k: getattr(cs.train, k) for k in seed_train} == seed_train
    p = cs.peft
    assert (
        p.task_type,
        p.r,
        p.target_modules,
        p.lora_alpha,
        p.lora_dropout,
        p.bias,
        p.use_rslora,
        p.use_dora,
    ) == ("CAUSAL_LM", 64, "all-linear", 16, 0.05, "none", False, False)
    c = cs.collator
    assert c.message_format.system_prompt == "Answer briefly."
    assert c.video_processing.frame_extraction.num_frames == 8
    assert c.text_processing.max_length == 2048
    assert c.label_masking.ignore_index == -100 and c.label_masking.mask_input_tokens is False


@pytest.mark.slow
def test_wheel_ships_templates(tmp_path):
    out = tmp_path / "wheel"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(REPO)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = out.glob("vlmctl-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in FILES.values():
        assert f"vlmctl/_templates/{name}" in names
    assert "vlmctl/cli.py" in names
