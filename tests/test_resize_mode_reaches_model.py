"""`image_processing.resize_mode` reaches the model: on a non-square image each mode gives the
processor a different picture (grid or pixels). If the collator stopped passing the mode, crop
and stretch would silently behave like keep_aspect."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _collate_util import cfg, processor
from PIL import Image

from vlmctl.collate import VLMCollator
from vlmctl.data.example import Example

W, H, MAX = 96, 48, 48


def _stripes() -> Image.Image:
    """Red | green | blue thirds: a centre crop and a stretch keep different colours."""
    arr = np.zeros((H, W, 3), dtype=np.uint8)
    arr[:, : W // 3, 0] = 255
    arr[:, W // 3 : 2 * W // 3, 1] = 255
    arr[:, 2 * W // 3 :, 2] = 255
    return Image.fromarray(arr)


def _expected(mode: str) -> Image.Image:
    """What each documented mode makes of the 96x48 picture, computed here with PIL alone."""
    img = _stripes()
    lanczos = Image.Resampling.LANCZOS
    if mode == "keep_aspect":
        return img.resize((MAX, H * MAX // W), lanczos, reducing_gap=3.0)
    if mode == "crop":
        left = (W - H) // 2
        return img.crop((left, 0, left + H, H))
    return img.resize((MAX, MAX), lanczos)


def _example(path) -> Example:
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "colour?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "striped"}]},
    ]
    return Example(messages=messages, images=[str(path)], row=0)


@pytest.fixture(scope="module")
def batches(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("resize")
    path = folder / "stripes.png"
    _stripes().save(path)
    proc = processor(tiny_model_dir("qwen2_vl"))
    out = {}
    for mode in ("keep_aspect", "crop", "stretch"):
        c = cfg(image_processing={"resize_mode": mode, "max_size": MAX})
        col = VLMCollator(proc, c, [folder], model_type="qwen2_vl")
        out[mode] = col.collate_encoded([col.encode_example(_example(path))])
    return proc, out


@pytest.mark.parametrize("mode", ["keep_aspect", "crop", "stretch"])
def test_each_mode_gives_the_processor_the_documented_picture(batches, mode):
    proc, out = batches
    want = proc.image_processor(images=[_expected(mode)], return_tensors="pt")
    assert out[mode]["image_grid_thw"].tolist() == want["image_grid_thw"].tolist()
    assert torch.allclose(out[mode]["pixel_values"], want["pixel_values"])


def test_the_modes_differ_on_a_non_square_image(batches):
    _, out = batches
    grids = {m: tuple(b["image_grid_thw"][0].tolist()) for m, b in out.items()}
    assert grids["keep_aspect"] != grids["crop"] == grids["stretch"]
    assert not torch.allclose(out["crop"]["pixel_values"], out["stretch"]["pixel_values"])
