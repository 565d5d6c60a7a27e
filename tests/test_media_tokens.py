"""Media tokens from image sizes (`vlmctl.models.media_tokens`) against the real processors.

On every tiny twin and every real-model kit: where the arithmetic claims to be exact, the ids
from image SIZES equal the processor's real output on tiny, odd, non-square and huge images
(and the arithmetic's count equals the image tokens in the real ids); everywhere else the
family is detected and keeps the pixel path. Then `validate --format json` gives the same
document with the size path and with the pixel path forced.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from _collate_util import cfg, frames
from _realkit_util import kit_params, kit_processor
from _validate_util import make_generated_set
from PIL import Image
from typer.testing import CliRunner

from vlmctl.cli import app
from vlmctl.collate import VLMCollator
from vlmctl.data.example import Example
from vlmctl.errors import DataError
from vlmctl.media.images import load_image, probe_image
from vlmctl.models import media_tokens
from vlmctl.models.media_tokens import (
    PIXEL_ENV,
    SizedImage,
    count_image_tokens,
    count_media_from_sizes,
    fast_processor,
    header_size,
    media_counter,
    resized_size,
)
from vlmctl.testing.tiny import FAMILIES

# Families whose arithmetic is exact (the test fails when one drifts in or out of the list).
FAST_TINY = {"qwen2_vl", "qwen2_5_vl", "llava", "idefics3", "smolvlm"}
FAST_KITS = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl", "llava", "idefics3", "smolvlm", "gemma3"}
# tiny, odd, non-square both ways, very thin, large, and just over the real Qwen max_pixels
SIZES = [(1, 1), (2, 3), (33, 17), (17, 33), (500, 7), (1023, 767), (1, 300), (3700, 3500)]


def _real_vs_sizes(proc) -> None:
    """The processor on real pixels vs its size-path copy: same ids (or the same error), and
    `count_image_tokens` equals the image tokens in the real ids."""
    fast = fast_processor(proc)
    token = proc.image_token
    token_id = proc.tokenizer.convert_tokens_to_ids(token)
    for w, h in SIZES:
        text = [f"look {token} here"]
        try:
            real = proc(text=text, images=[[Image.new("RGB", (w, h))]])["input_ids"][0]
        except ValueError as exc:  # e.g. Qwen's aspect ratio > 200: the size path says the same
            with pytest.raises(type(exc), match=f"^{str(exc)[:40]}"):
                fast(text=text, images=[[SizedImage((w, h))]])
            continue
        got = fast(text=text, images=[[SizedImage((w, h))]])["input_ids"][0]
        assert list(got) == list(real), (w, h)
        assert count_image_tokens(proc, [(w, h)]) == [list(real).count(token_id)], (w, h)
    # Several images per text and several texts: each image keeps its own count, in order.
    sizes = [[(640, 480), (31, 97)], [(97, 31)]]
    text = [f"a {token} b {token}", f"c {token}"]
    real = proc(text=text, images=[[Image.new("RGB", s) for s in r] for r in sizes], padding=True)
    got = fast(text=text, images=[[SizedImage(s) for s in r] for r in sizes], padding=True)
    assert got["input_ids"] == real["input_ids"]


def _load(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, trust_remote_code=True)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_twins_sizes_equal_pixels_or_fall_back(family, tiny_model_dir):
    proc = _load(tiny_model_dir(family))
    collator = VLMCollator(proc, cfg(), model_type=family)
    if family not in FAST_TINY:
        assert media_counter(proc) is None
        assert count_media_from_sizes(collator) is False
        assert collator.processor is proc
        return
    assert media_counter(proc) is not None
    _real_vs_sizes(proc)
    assert count_media_from_sizes(collator) is True
    assert collator.processor is not proc  # a copy: the caller's processor is untouched
    assert "_process_images" not in vars(proc)


@pytest.mark.slow  # the real image processors on a 3700x3500 image: ~30 s for Idefics3
@pytest.mark.parametrize("family", kit_params())
def test_real_kits_sizes_equal_pixels_or_fall_back(family):
    proc = kit_processor(family)
    if family not in FAST_KITS:
        assert media_counter(proc) is None, f"{family}: arithmetic claimed, not in FAST_KITS"
        return
    assert media_counter(proc) is not None, f"{family}: expected exact arithmetic"
    _real_vs_sizes(proc)


@pytest.mark.parametrize("family", ["idefics3", "smolvlm"])
def test_tile_grids_with_image_splitting(family, tiny_model_dir):
    """The twins do not split (one tile): make them split into up to 3 x 3 tiles."""
    proc = copy.deepcopy(_load(tiny_model_dir(family)))
    ip = proc.image_processor
    ip.do_image_splitting = True
    ip.size = {"longest_edge": 3 * ip.max_image_size["longest_edge"]}
    assert media_counter(proc) is not None
    _real_vs_sizes(proc)


def test_settings_the_arithmetic_does_not_cover_fall_back(tiny_model_dir):
    qwen = copy.deepcopy(_load(tiny_model_dir("qwen2_vl")))
    qwen.image_processor.do_resize = False
    assert media_counter(qwen) is None
    llava = copy.deepcopy(_load(tiny_model_dir("llava")))
    llava.image_processor.do_center_crop = False
    assert media_counter(llava) is None
    collator = VLMCollator(_load(tiny_model_dir("qwen2_vl")), cfg(), model_type="qwen2_vl")
    collator_no_rgb = VLMCollator(
        collator.processor, cfg(image_processing={"convert_to_rgb": False}), model_type="qwen2_vl"
    )
    assert count_media_from_sizes(collator_no_rgb) is False


def test_forced_pixel_path(tiny_model_dir, monkeypatch):
    monkeypatch.setenv(PIXEL_ENV, "1")
    collator = VLMCollator(_load(tiny_model_dir("qwen2_vl")), cfg(), model_type="qwen2_vl")
    assert count_media_from_sizes(collator) is False


# ------------------------------------------------------------------------------ sizes


def _jpeg(path: Path, size, orientation: int = 1, mode: str = "RGB") -> Path:
    rng = np.random.default_rng(size[0] * 7 + size[1])
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, format="JPEG", exif=exif.tobytes())
    return path


@pytest.mark.parametrize("mode", ["keep_aspect", "crop", "stretch"])
@pytest.mark.parametrize("max_size", [None, 1, 40, 333])
def test_resized_size_is_resize_images_arithmetic(mode, max_size):
    from vlmctl.media.images import resize_image

    for size in [(1, 1), (7, 5), (5, 7), (40, 40), (641, 480), (333, 1000), (999, 2)]:
        img = Image.new("RGB", size)
        assert resized_size(*size, mode, max_size) == resize_image(img, mode, max_size).size


def test_header_size_is_the_decoded_size(tmp_path):
    files = [
        _jpeg(tmp_path / "plain.jpg", (65, 33)),
        _jpeg(tmp_path / "rot6.jpg", (65, 33), orientation=6),
        _jpeg(tmp_path / "rot8.jpg", (20, 50), orientation=8),
        _jpeg(tmp_path / "grey.jpg", (31, 17), mode="L"),
        _jpeg(tmp_path / "cmyk.jpg", (31, 17), mode="CMYK"),
    ]
    png = tmp_path / "alpha.png"
    Image.new("RGBA", (13, 29), (1, 2, 3, 4)).save(png)
    files.append(png)
    for f in files:
        got = header_size(f.name, [tmp_path], 0)
        assert got == load_image(f.name, base_dirs=[tmp_path]).size, f.name
        assert got == probe_image(f.name, [tmp_path])[:2], f.name
    data = files[0].read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert header_size("cut.jpg", [tmp_path], 0) is None  # the real path names it
    assert header_size(Image.new("RGB", (3, 3)), [], 0) is None
    assert header_size({"bytes": data}, [], 0) == (65, 33)


# ------------------------------------------------------------------------------ collator


def _examples(folder: Path) -> list[Example]:
    names = [
        _jpeg(folder / "a.jpg", (640, 480)).name,
        _jpeg(folder / "b.jpg", (30, 200), orientation=6).name,
        _jpeg(folder / "c.jpg", (3, 2)).name,
    ]
    Image.new("LA", (77, 41)).save(folder / "d.png")
    names.append("d.png")
    out = []
    for i, name in enumerate(names):
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"q {i}"}]},
            {"role": "assistant", "content": [{"type": "text", "text": f"answer {i}"}]},
        ]
        out.append(Example(messages=messages, images=[name], row=i))
    return out


def _encode(collator, examples):
    return [
        (e.input_ids.tolist(), e.labels.tolist(), e.media_spans, e.num_supervised)
        for e in collator.encode_examples(examples, truncate=False)
    ]


@pytest.mark.parametrize("family", sorted(FAST_TINY))
@pytest.mark.parametrize(
    "images",
    [{}, {"resize_mode": "keep_aspect", "max_size": 50}, {"resize_mode": "crop", "max_size": 20}]
    + [{"resize_mode": "stretch", "max_size": 9}],
)
def test_collator_encodings_equal(family, images, tiny_model_dir, tmp_path):
    proc = _load(tiny_model_dir(family))
    c = cfg(image_processing=images)
    pixel = VLMCollator(proc, c, [tmp_path], model_type=family)
    sized = VLMCollator(proc, c, [tmp_path], model_type=family)
    assert count_media_from_sizes(sized)
    examples = _examples(tmp_path)
    assert _encode(sized, examples) == _encode(pixel, examples)
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    bad = Example(messages=examples[0].messages, images=["cut.jpg"], row=9)
    errors = []
    for col in (pixel, sized):
        with pytest.raises(DataError) as info:
            col.encode_examples([bad], truncate=False)
        errors.append([f.one_line() for f in info.value.findings])
    assert errors[0] == errors[1]


def test_video_rows_keep_the_pixel_path_and_equal(tiny_model_dir, tmp_path):
    proc = _load(tiny_model_dir("qwen2_vl"))
    pixel = VLMCollator(proc, cfg(), [tmp_path], model_type="qwen2_vl")
    sized = VLMCollator(proc, cfg(), [tmp_path], model_type="qwen2_vl")
    assert count_media_from_sizes(sized)
    ex = _examples(tmp_path)[0]
    content = [{"type": "video"}, *ex.messages[0]["content"]]
    messages = [{"role": "user", "content": content}, ex.messages[1]]
    video_row = Example(messages=messages, images=ex.images, videos=[frames(1)], row=0)
    assert _encode(sized, [video_row]) == _encode(pixel, [video_row])


# ------------------------------------------------------------------------------ validate


def _without_times(doc):
    if isinstance(doc, dict):
        return {k: _without_times(v) for k, v in doc.items() if "seconds" not in k}
    if isinstance(doc, list):
        return [_without_times(v) for v in doc]
    return doc


@pytest.mark.parametrize("family", sorted(FAST_TINY - {"qwen2_5_vl"}))
def test_validate_json_identical_with_pixel_path_forced(
    family, tiny_model_dir, tmp_path, monkeypatch
):
    config = make_generated_set(tmp_path, tiny_model_dir(family), faults=True, n=24, max_length=60)
    images = tmp_path / "data" / "images"
    _jpeg(images / "img1.jpg", (300, 100), orientation=6)
    _jpeg(images / "img2.jpg", (3, 700))
    buf = io.BytesIO()
    Image.new("RGBA", (90, 20)).save(buf, format="PNG")
    (images / "img3.jpg").write_bytes(buf.getvalue())  # a PNG under a .jpg name
    calls = []
    real = media_tokens.header_size
    monkeypatch.setattr(media_tokens, "header_size", lambda *a: calls.append(1) or real(*a))
    docs = []
    for forced in ("0", "1"):
        monkeypatch.setenv(PIXEL_ENV, forced)
        r = CliRunner().invoke(app, ["validate", str(config), "--format", "json"])
        assert r.exit_code == 1, r.stdout[-2000:]  # the planted faults are errors
        docs.append(_without_times(json.loads(r.stdout)))
        if forced == "0":
            assert len(calls) >= 20  # the size path really ran
            calls.clear()
    assert not calls  # ... and the forced pixel path did not
    assert docs[0] == docs[1]
    found = {(f["row"], f["code"]) for f in docs[0]["config_sets"][0]["findings"]}
    assert {(3, "media-not-found"), (5, "media-truncated"), (11, "row-text-cut")} <= found
