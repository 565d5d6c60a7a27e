"""Media budgets (`vlmctl.models.budgets`) against the real processor classes and released files.

The arithmetic must give what the processors give (image grids, tiles, crops), and the packaged
table of released defaults must agree with the released processor files in the kit.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from vlmctl.models import budgets as B

ROOT = Path(__file__).resolve().parents[1]
KIT = ROOT / "tests" / "realkit"
SHARED = ROOT.parent / "shared" / "real-models"
SIZES = [(1024, 768), (640, 480), (64, 48), (3000, 200), (300, 1900), (448, 448)]
TILE_SIZES = [
    (1024, 768),
    (64, 48),
    (300, 1900),
    (900, 300),
    (1000, 1000),
]  # upscaled to ~1500 px: few


def _img(w: int, h: int):
    from PIL import Image

    return Image.new("RGB", (w, h), "red")


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl", "glm4v"])
def test_qwen_grid_matches_the_image_processor(model_type):
    from transformers import Qwen2VLImageProcessor

    s = B.FAMILIES[model_type]
    proc = Qwen2VLImageProcessor(
        min_pixels=s["min_pixels"],
        max_pixels=s["max_pixels"],
        patch_size=s["patch_size"],
        merge_size=s["merge_size"],
        temporal_patch_size=s["temporal_patch_size"],
    )
    budget = B.budget_for("x", model_type)
    for w, h in SIZES:
        thw = proc(images=[_img(w, h)], return_tensors="pt")["image_grid_thw"][0].tolist()
        expected = thw[0] * thw[1] * thw[2] // s["merge_size"] ** 2
        assert budget.image_tokens(w, h) == expected, (model_type, w, h)


@pytest.mark.parametrize(
    ("model_type", "cls"),
    [("idefics3", "Idefics3ImageProcessor"), ("smolvlm", "SmolVLMImageProcessor")],
)
def test_idefics_tiles_match_the_image_processor(model_type, cls):
    import transformers

    s = B.FAMILIES[model_type]
    proc = getattr(transformers, cls)(
        size={"longest_edge": s["longest_edge"]},
        max_image_size={"longest_edge": s["tile"]},
        do_image_splitting=True,
    )
    for w, h in TILE_SIZES:
        n = proc(images=[[_img(w, h)]], return_tensors="pt")["pixel_values"].shape[1]
        assert B.idefics_tiles(w, h, s) == n, (model_type, w, h)


def test_internvl_tiles_match_the_hf_image_processor():
    from transformers import GotOcr2ImageProcessor

    s = B.FAMILIES["internvl"]
    proc = GotOcr2ImageProcessor(
        crop_to_patches=True,
        min_patches=s["min_tiles"],
        max_patches=s["max_tiles"],
        size={"height": s["image_size"], "width": s["image_size"]},
    )
    for w, h in TILE_SIZES:
        n = int(proc(images=[_img(w, h)], return_tensors="pt")["num_patches"][0])
        assert B.internvl_tiles(w, h, s) == n, (w, h)


def test_phi3v_tokens_match_the_released_processing_code():
    path = SHARED / "phi-3-vision" / "image_processing_phi3_v.py"
    if not path.is_file():
        pytest.skip(f"{path} absent (shared real-models folder not here)")
    spec = importlib.util.spec_from_file_location("phi3v_ip", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["phi3v_ip"] = mod
    spec.loader.exec_module(mod)
    proc = mod.Phi3VImageProcessor(num_crops=16)
    budget = B.budget_for("x", "phi3_v")
    for w, h in SIZES:
        assert budget.image_tokens(w, h) == proc.calc_num_image_tokens_from_image_size(w, h), (w, h)


def test_fixed_costs_match_the_processor_classes():
    import inspect

    import transformers

    for model_type, cls, arg in [
        ("gemma3", "Gemma3Processor", "image_seq_length"),
        ("idefics2", "Idefics2Processor", "image_seq_len"),
    ]:
        default = inspect.signature(getattr(transformers, cls).__init__).parameters[arg].default
        assert B.budget_for("x", model_type).image_tokens() == default, model_type


def test_the_table_agrees_with_the_released_files_in_the_kit():
    # Qwen2.5-VL's released preprocessor_config.json: the table's values, exactly.
    folder = KIT / "qwen2_5_vl"
    b = B.budget_for(str(folder))
    assert b.model_type == "qwen2_5_vl"
    for key in ("patch_size", "merge_size", "temporal_patch_size", "min_pixels", "max_pixels"):
        assert b.settings[key] == B.FAMILIES["qwen2_5_vl"][key], key
    assert any("preprocessor_config.json" in s for s in b.sources)
    # InternVL2-2B's released config.json: 448-px tiles of 256 tokens, at most 12 plus a thumbnail.
    b = B.budget_for(str(KIT / "internvl_chat"))
    assert b.model_type == "internvl_chat"
    for key in ("image_size", "tokens_per_tile", "max_tiles", "min_tiles", "thumbnail"):
        assert b.settings[key] == B.FAMILIES["internvl_chat"][key], key
    # PaliGemma-448's released preprocessor config: 1024 tokens an image (the table's 256 is 224 px).
    b = B.budget_for(str(KIT / "paligemma"), "paligemma")
    assert b.image_tokens() == 1024


def test_the_issue_numbers():
    """Two typical images cost what the issue measured with the released defaults."""
    assert 2 * B.budget_for(str(KIT / "internvl_chat")).image_tokens() == 6656  # ~6,700
    assert 2 * B.budget_for("x", "idefics3").image_tokens() == 4394  # ~4,700 with text
    assert 2 * B.budget_for(str(KIT / "paligemma"), "paligemma").image_tokens() == 2048  # ~2,070


@pytest.mark.parametrize(
    ("hub_id", "model_type"),
    [
        ("Qwen/Qwen2-VL-2B-Instruct", "qwen2_vl"),
        ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl"),
        ("Qwen/Qwen3-VL-2B-Instruct", "qwen3_vl"),
        ("OpenGVLab/InternVL2-2B", "internvl_chat"),
        ("OpenGVLab/InternVL3-1B-hf", "internvl"),
        ("google/paligemma-3b-pt-448", "paligemma"),
        ("google/gemma-3-4b-it", "gemma3"),
        ("HuggingFaceTB/SmolVLM2-2.2B-Instruct", "smolvlm"),
        ("llava-hf/llava-1.5-7b-hf", "llava"),
        ("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "llava_onevision"),
        ("microsoft/Phi-3-vision-128k-instruct", "phi3_v"),
        ("meta-llama/Llama-3.2-11B-Vision-Instruct", "mllama"),
        ("someone/unknown-model", None),
    ],
)
def test_guess_model_type(hub_id, model_type):
    assert B.guess_model_type(hub_id) == model_type


@pytest.mark.parametrize(
    "model_type", ["qwen2_vl", "qwen3_vl", "idefics3", "smolvlm", "internvl", "phi3_v"]
)
def test_knob_makes_a_typical_image_fit(model_type):
    budget = B.budget_for("x", model_type)
    for per_image in (300, 900, 1500):
        knob = budget.knob(per_image)
        if knob is None:
            continue
        params, why = knob
        tuned = dict(budget.settings)
        if "size" in params and budget.kind == "qwen":
            tuned["max_pixels"] = params["size"]["longest_edge"]
        elif "size" in params:
            tuned["longest_edge"] = params["size"]["longest_edge"]
        if "do_image_splitting" in params:
            tuned["do_image_splitting"] = params["do_image_splitting"]
        for key in ("max_patches", "max_dynamic_patch"):
            if key in params:
                tuned["max_tiles"] = params[key]
        if "num_crops" in params:
            tuned["num_crops"] = params["num_crops"]
        assert B.Budget(model_type, tuned).image_tokens() <= per_image, (model_type, per_image, why)
