"""`vlmctl init --model` writes defaults under which a typical row (two images, a short Q/A)
fits `max_length`, from the family's released processor settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from vlmctl.cli import app
from vlmctl.config.load import load_config_set
from vlmctl.models import budgets as B

KIT = Path(__file__).resolve().parent / "realkit"


def _init(tmp_path: Path, model: str) -> tuple[str, object]:
    d = tmp_path / "cfg"
    r = CliRunner().invoke(app, ["init", str(d), "--model", model])
    assert r.exit_code == 0, r.stdout
    return r.stdout, load_config_set(d)


def _tuned(budget: B.Budget, params: dict) -> B.Budget:
    s = dict(budget.settings)
    size = params.get("size") or {}
    if budget.kind == "qwen" and size:
        s["max_pixels"] = size["longest_edge"]
    elif size:
        s["longest_edge"] = size["longest_edge"]
    for key in ("max_patches", "max_dynamic_patch"):
        if key in params:
            s["max_tiles"] = params[key]
    if "num_crops" in params:
        s["num_crops"] = params["num_crops"]
    return B.Budget(budget.model_type, s)


@pytest.mark.parametrize(
    "model",
    [
        "Qwen/Qwen2-VL-2B-Instruct",
        "HuggingFaceM4/Idefics3-8B-Llama3",
        "HuggingFaceTB/SmolVLM2-2.2B-Instruct",
        "microsoft/Phi-3-vision-128k-instruct",
        "OpenGVLab/InternVL3-1B-hf",
    ],
)
def test_a_processor_setting_makes_the_typical_row_fit(tmp_path, model):
    out, cs = _init(tmp_path, model)
    budget = B.budget_for(model)
    assert B.row_tokens(budget) > 2048  # the released defaults do not fit
    params = cs.model.processor_params.model_dump(exclude={"trust_remote_code"})
    assert params, out
    assert cs.collator.text_processing.max_length == 2048
    assert B.row_tokens(_tuned(budget, params)) <= 2048
    assert "wrote processor_params." in out


@pytest.mark.parametrize(
    ("model", "expected"),
    [(str(KIT / "internvl_chat"), 6912), ("google/paligemma-3b-pt-448", 2304)],
)
def test_max_length_is_raised_when_no_setting_helps(tmp_path, model, expected):
    out, cs = _init(tmp_path, model)
    assert cs.collator.text_processing.max_length == expected
    assert cs.model.processor_params.model_dump(exclude={"trust_remote_code"}) == {}
    assert f"-> {expected}" in out


def test_models_that_fit_are_left_alone_and_unknown_ones_say_nothing(tmp_path):
    out, cs = _init(tmp_path / "a", "llava-hf/llava-1.5-7b-hf")
    assert cs.collator.text_processing.max_length == 2048
    assert "fits max_length 2048" in out
    out, cs = _init(tmp_path / "b", "someone/unknown-model")
    assert cs.collator.text_processing.max_length == 2048
    assert "budget" not in out
