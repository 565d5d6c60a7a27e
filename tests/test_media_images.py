"""vlmctl.media.images: decoding by content, mode conversion, EXIF, resize semantics, errors."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmctl.errors import ConfigError, DataError
from vlmctl.media.images import load_image, probe_image, resize_image
from vlmctl.media.paths import resolve_media_path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def px(img: Image.Image, xy=(0, 0)) -> tuple:
    return tuple(img.getpixel(xy))


def save(img: Image.Image, path: Path, fmt: str, **kw) -> Path:
    img.save(path, format=fmt, **kw)
    return path


def error_text(exc: pytest.ExceptionInfo) -> str:
    return str(exc.value)


# ---------------------------------------------------------------------------------------------
# mode conversion, exact pixels


def test_rgba_transparent_over_white(tmp_path):
    img = Image.new("RGBA", (4, 2), (0, 0, 0, 0))
    img.putpixel((1, 0), (255, 0, 0, 255))
    img.putpixel((2, 0), (0, 0, 0, 128))
    out = load_image(save(img, tmp_path / "a.png", "PNG"))
    assert out.mode == "RGB"
    assert px(out, (0, 0)) == (255, 255, 255)
    assert px(out, (1, 0)) == (255, 0, 0)
    r, g, b = px(out, (2, 0))
    assert r == g == b and abs(r - 127) <= 1  # half black over white


def test_la_and_grey(tmp_path):
    la = Image.new("LA", (2, 1), (0, 0))
    la.putpixel((1, 0), (40, 255))
    out = load_image(save(la, tmp_path / "la.png", "PNG"))
    assert [px(out, (x, 0)) for x in range(2)] == [(255, 255, 255), (40, 40, 40)]
    grey = Image.new("L", (2, 1), 77)
    out = load_image(save(grey, tmp_path / "l.png", "PNG"))
    assert out.mode == "RGB" and px(out) == (77, 77, 77)
    one = Image.new("1", (2, 1), 1)
    assert px(load_image(save(one, tmp_path / "1.png", "PNG"))) == (255, 255, 255)


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.new("P", (2, 1), 0)
    pal.putpalette([10, 20, 30, 200, 100, 50])
    pal.putpixel((1, 0), 1)
    out = load_image(save(pal, tmp_path / "p.png", "PNG"))
    assert [px(out, (x, 0)) for x in range(2)] == [(10, 20, 30), (200, 100, 50)]
    out = load_image(save(pal, tmp_path / "pt.png", "PNG", transparency=0))
    assert [px(out, (x, 0)) for x in range(2)] == [(255, 255, 255), (200, 100, 50)]
    gif = save(pal, tmp_path / "pt.gif", "GIF", transparency=0)
    assert px(load_image(gif)) == (255, 255, 255)


def test_cmyk(tmp_path):
    img = Image.new("CMYK", (2, 1), (0, 0, 0, 0))
    img.putpixel((1, 0), (255, 0, 0, 0))
    out = load_image(save(img, tmp_path / "c.tif", "TIFF"))
    assert [px(out, (x, 0)) for x in range(2)] == [(255, 255, 255), (0, 255, 255)]


def test_16bit_scaled_not_clipped(tmp_path):
    arr = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)
    img = Image.fromarray(arr)
    assert img.mode == "I;16"
    for path in (save(img, tmp_path / "g.png", "PNG"), save(img, tmp_path / "g.tif", "TIFF")):
        out = load_image(path)
        assert [px(out, (x, 0))[0] for x in range(4)] == [0, 1, 128, 255]
        assert out.mode == "RGB"


def test_int32_and_float_modes():
    i32 = Image.fromarray(np.array([[0, 65535, 70000, -5]], dtype=np.int32))
    assert i32.mode == "I"
    assert [px(load_image(i32), (x, 0))[0] for x in range(4)] == [0, 255, 255, 0]
    f01 = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32))
    assert [px(load_image(f01), (x, 0))[0] for x in range(3)] == [0, 128, 255]
    f255 = Image.fromarray(np.array([[0.0, 100.0, 300.0]], dtype=np.float32))
    assert [px(load_image(f255), (x, 0))[0] for x in range(3)] == [0, 100, 255]


def test_convert_to_rgb_false_keeps_mode(tmp_path):
    img = Image.new("RGBA", (3, 3), (1, 2, 3, 4))
    out = load_image(save(img, tmp_path / "a.png", "PNG"), convert_to_rgb=False)
    assert out.mode == "RGBA" and px(out) == (1, 2, 3, 4)


def test_exif_orientation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (20, 0, 40, 20))  # left red, right blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    path = save(img, tmp_path / "o.jpg", "JPEG", exif=exif.tobytes(), quality=95)
    out = load_image(path)
    assert out.size == (20, 40)
    top, bottom = px(out, (10, 5)), px(out, (10, 34))
    assert top[0] > 200 and top[2] < 50  # the left (red) half is now on top
    assert bottom[2] > 200 and bottom[0] < 50
    assert probe_image(path) == (20, 40, "RGB")


# ---------------------------------------------------------------------------------------------
# resize semantics (documented in the module docstring)


@pytest.mark.parametrize(
    ("mode", "size", "max_size", "expected"),
    [
        ("keep_aspect", (1000, 500), 448, (448, 224)),
        ("keep_aspect", (500, 1000), 448, (224, 448)),
        ("keep_aspect", (1000, 333), 100, (100, 33)),
        ("keep_aspect", (300, 200), 448, (300, 200)),
        ("keep_aspect", (448, 100), 448, (448, 100)),
        ("crop", (1000, 500), 448, (448, 448)),
        ("crop", (300, 200), 448, (200, 200)),
        ("crop", (200, 300), 100, (100, 100)),
        ("stretch", (1000, 500), 448, (448, 448)),
        ("stretch", (300, 200), 448, (448, 448)),
        ("keep_aspect", (1000, 500), None, (1000, 500)),
        ("crop", (1000, 500), None, (1000, 500)),
        ("stretch", (1000, 500), None, (1000, 500)),
    ],
)
def test_resize_sizes(mode, size, max_size, expected):
    img = Image.new("RGB", size, (9, 9, 9))
    out = load_image(img, resize_mode=mode, max_size=max_size)
    assert out.size == expected


def test_crop_is_centred_with_floored_offset():
    arr = np.tile(np.arange(107, dtype=np.uint8), (100, 1))  # pixel value = its column
    out = resize_image(Image.fromarray(arr), "crop", 1000)
    assert out.size == (100, 100)
    got = np.asarray(out)
    assert got[0, 0] == 3 and got[0, -1] == 102  # 7 spare columns: 3 left, 4 right


def test_crop_keeps_the_middle_third():
    img = Image.new("RGB", (300, 100), (255, 0, 0))
    img.paste((0, 255, 0), (100, 0, 200, 100))
    img.paste((0, 0, 255), (200, 0, 300, 100))
    out = load_image(img, resize_mode="crop", max_size=50)
    assert out.size == (50, 50)
    assert np.all(np.asarray(out) == np.array([0, 255, 0], dtype=np.uint8))


def test_keyword_settings_combine():
    img = Image.new("RGBA", (100, 50), (0, 0, 0, 0))
    assert load_image(img, resize_mode="stretch", max_size=32).size == (32, 32)
    assert load_image(img, max_size=32).size == (32, 16)
    out = load_image(img, resize_mode="crop", max_size=32, convert_to_rgb=False)
    assert out.size == (32, 32) and out.mode == "RGBA"


def test_unknown_resize_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="resize_mode"):
        load_image(Image.new("RGB", (4, 4)), resize_mode="fit", max_size=2)
    with pytest.raises(ConfigError, match="max_size"):
        load_image(Image.new("RGB", (4, 4)), max_size=0)


# ---------------------------------------------------------------------------------------------
# inputs and content sniffing


def test_png_and_webp_named_jpg(tmp_path):
    img = Image.new("RGB", (6, 4), (12, 34, 56))
    png = save(img, tmp_path / "png.jpg", "PNG")
    webp = save(img, tmp_path / "webp.jpg", "WEBP", lossless=True)
    assert px(load_image(png)) == (12, 34, 56)
    assert px(load_image(webp)) == (12, 34, 56)
    assert probe_image(webp) == (6, 4, "RGB")


def test_value_kinds(tmp_path):
    img = Image.new("RGB", (3, 2), (1, 2, 3))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    data = buf.getvalue()
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.png").write_bytes(data)
    dirs = [tmp_path / "nothere", tmp_path / "sub"]
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    for value in (
        img,
        data,
        bytearray(data),
        {"bytes": data, "path": None},
        {"bytes": data, "path": "does/not/matter.png"},  # bytes win, like datasets
        {"bytes": None, "path": "x.png"},
        "x.png",
        Path("x.png"),
        str(tmp_path / "sub" / "x.png"),
        uri,
    ):
        out = load_image(value, base_dirs=dirs)
        assert out.size == (3, 2) and px(out) == (1, 2, 3), value if isinstance(value, str) else 0
    assert resolve_media_path("x.png", dirs) == tmp_path / "sub" / "x.png"


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (None, "got NoneType"),
        (123, "got int"),
        ({"bytes": None, "path": None}, "neither 'bytes' nor 'path'"),
        ("", "empty media path"),
        ("https://example.com/a.jpg", "remote media is not fetched"),
    ],
)
def test_bad_values(value, needle):
    with pytest.raises(DataError, match=needle) as exc:
        load_image(value, row=4)
    assert exc.value.findings[0].row == 4


def test_missing_file_lists_searched_dirs(tmp_path):
    a, b = tmp_path / "dirA", tmp_path / "dirB"
    with pytest.raises(DataError) as exc:
        load_image("x.jpg", base_dirs=[a, b], row=7)
    finding = exc.value.findings[0]
    assert finding.message == f"file not found: x.jpg (searched: {a}, {b})"
    assert finding.row == 7
    assert finding.one_line().startswith("row 7: file not found: x.jpg")
    with pytest.raises(DataError, match="file not found"):
        probe_image(str(tmp_path / "abs.jpg"))


def test_text_file_named_jpg(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("hello, this is not a picture\n")
    with pytest.raises(DataError) as exc:
        load_image(path)
    msg = exc.value.findings[0].message
    assert "notes.jpg" in msg and "not an image" in msg and "text file" in msg


def test_lfs_pointer_named_jpg(tmp_path):
    path = tmp_path / "lfs.jpg"
    path.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n")
    with pytest.raises(DataError) as exc:
        load_image(path)
    assert "Git LFS" in exc.value.findings[0].message
    assert "git lfs pull" in exc.value.findings[0].hint


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.png: empty file \(0 bytes\)"):
        load_image(path)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image(tmp_path, fmt):
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, fmt)
    path = tmp_path / f"cut.{fmt.lower()}"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataError) as exc:
        load_image(path, row=2)
    msg = exc.value.findings[0].message
    assert msg.startswith(f"{path}: truncated image")
    with pytest.raises(DataError, match="truncated image"):
        probe_image(path)
    with pytest.raises(DataError, match=r"<bytes>: truncated image"):
        load_image(path.read_bytes())


def test_decompression_bomb(tmp_path, monkeypatch):
    path = save(Image.new("RGB", (50, 50)), tmp_path / "bomb.png", "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 2500 > 2x: Pillow's own error
    with pytest.raises(DataError) as exc:
        load_image(path, row=1)
    assert exc.value.findings[0].message == f"decompression bomb: {path}: 2500 pixels > limit 1000"
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # 2500 in (1x, 2x]: Pillow only warns
    with pytest.raises(DataError, match="2500 pixels > limit 2000"):
        load_image(path)
    with pytest.raises(DataError, match="decompression bomb"):
        probe_image(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(DataError, match=r"<bytes>: 2500 pixels > limit 100"):
        load_image(path.read_bytes(), max_pixels=100)
    assert load_image(path).size == (50, 50)


def test_probe_reports_file_mode(tmp_path):
    path = save(Image.new("RGBA", (7, 5)), tmp_path / "p.png", "PNG")
    assert probe_image(path) == (7, 5, "RGBA")
    assert probe_image({"bytes": path.read_bytes(), "path": None}) == (7, 5, "RGBA")


def test_media_modules_import_no_heavy_libraries():
    code = (
        "import sys, vlmctl.media.images, vlmctl.media.video\n"
        "heavy = {'torch', 'transformers', 'datasets', 'decord', 'av', 'cv2'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# real third-party data (../shared/data)

realdata = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real data folder {SHARED_DATA} is absent"
)

LMMS_SIZES = {
    "bm.jpg": (1080, 1080),
    "curry.jpg": (942, 623),
    "soccer1.jpg": (1368, 912),
    "soccer2.jpg": (650, 431),
    **{f"post{i}.png": (930, 1240) for i in range(1, 5)},
}


def _as_list(v):
    return [] if v is None else [v] if isinstance(v, str) else list(v)


@pytest.mark.realdata
@realdata
def test_realdata_llamafactory_images():
    data = SHARED_DATA / "llamafactory" / "data"
    rows = json.loads((data / "mllm_demo.json").read_text())
    refs = [p for r in rows for p in r["images"]]
    assert len(refs) == 8 and len(set(refs)) == 3
    jsonl = (data / "v1_multimodal_demo.jsonl").read_text().splitlines()
    v1 = [
        part["value"]
        for line in jsonl
        if line.strip()
        for msg in json.loads(line)["messages"]
        for part in msg["content"]
        if part["type"] == "image_url"
    ]
    assert len(set(v1)) == 3
    # v1 paths are relative to the repository root, one level above data/.
    for ref in set(refs) | set(v1):
        img = load_image(ref, base_dirs=[data, data.parent])
        assert img.mode == "RGB"
        assert img.width == 300 and 166 <= img.height <= 199


@pytest.mark.realdata
@realdata
def test_realdata_lmms_finetune_images():
    root = SHARED_DATA / "lmms_finetune" / "example_data"
    refs: list[str] = []
    for f in sorted(root.glob("*.json")):
        for rec in json.loads(f.read_text()):
            refs += _as_list(rec.get("image"))
    assert len(refs) == 111 and len(set(refs)) == 108
    celeba = 0
    for ref in sorted(set(refs)):
        img = load_image(ref, base_dirs=[root / "images"])
        assert img.mode == "RGB", ref
        if ref.startswith("celeba/"):
            celeba += 1
            assert img.size == (178, 218), ref
        else:
            assert img.size == LMMS_SIZES[ref], ref
    assert celeba == 100
    # The lying extensions and RGBA posters, through the cheap validate path.
    assert probe_image(root / "images" / "soccer1.jpg") == (1368, 912, "RGB")
    assert probe_image(root / "images" / "soccer2.jpg") == (650, 431, "RGB")
    assert probe_image(root / "images" / "post1.png") == (930, 1240, "RGBA")
    with Image.open(root / "images" / "soccer1.jpg") as raw:
        assert raw.format == "PNG"
    with Image.open(root / "images" / "soccer2.jpg") as raw:
        assert raw.format == "WEBP"
    small = load_image("post1.png", base_dirs=[root / "images"], max_size=448)
    assert small.size == (336, 448) and small.mode == "RGB"


@pytest.mark.realdata
@realdata
def test_realdata_abo_grayscale():
    folder = SHARED_DATA / "abo_vqa_csv" / "curated_images"
    files = sorted(folder.glob("*.jpg"))
    assert len(files) == 200
    modes = {}
    for f in files:
        modes[f.name] = probe_image(f)[2]
        img = load_image(f)
        assert img.mode == "RGB" and img.size == (256, 256)
    assert sorted(n for n, m in modes.items() if m == "L") == [
        "00a69c51.jpg",
        "034266bd.jpg",
        "03f304ff.jpg",
    ]
