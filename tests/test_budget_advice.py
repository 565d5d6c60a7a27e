"""`validate` says which change makes over-long rows fit, and each change it names really does.

The tiny Qwen2-VL twin's processor (patch 8, merge 2, max_pixels 64x64) makes a 64x64 image
cost 16 tokens; with `max_length` set just above the text, the image pushes every row over.
The advice's numbers are then applied one at a time and validate is run again: no row may be
over `max_length` any more.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _validate_util import Row, jpeg_bytes, write_config_set, write_csv
from typer.testing import CliRunner

from vlmctl.cli import app


def _validate(config: Path) -> dict:
    r = CliRunner().invoke(app, ["validate", str(config), "--format", "json"])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return json.loads(r.stdout)["config_sets"][0]


@pytest.fixture(scope="module")
def qwen(tiny_model_dir):
    return tiny_model_dir("qwen2_vl")


def _dataset(root: Path, qwen: Path, max_length: int) -> Path:
    images = root / "data" / "images"
    images.mkdir(parents=True)
    rows = []
    for i in range(6):
        (images / f"img{i}.jpg").write_bytes(jpeg_bytes(i, 64))
        rows.append(Row(f"img{i}.jpg", f"what is item {i}", "red"))
    write_csv(root / "data" / "train.csv", rows)
    return write_config_set(
        root / "config",
        root / "data" / "train.csv",
        qwen,
        media_root=images,
        max_length=max_length,
        policy="drop",
    )


def _set_model_params(config: Path, params: dict) -> None:
    path = config / "vlm_model_config.yaml"
    text = path.read_text()
    text += "processor_params:\n" + "".join(f"  {k}: {json.dumps(v)}\n" for k, v in params.items())
    path.write_text(text)


def _set_max_length(config: Path, value: int) -> None:
    path = config / "vlm_collator_config.yaml"
    lines = [
        f"  max_length: {value}" if line.strip().startswith("max_length:") else line
        for line in path.read_text().splitlines()
    ]
    path.write_text("\n".join(lines) + "\n")


def test_advice_names_changes_that_make_the_rows_fit(tmp_path, qwen):
    # First measure the rows with room to spare, then squeeze max_length below them.
    roomy = _validate(_dataset(tmp_path / "roomy", qwen, 4096))
    lengths = roomy["data"]["lengths"]
    longest, media = lengths["total"]["max"], lengths["media"]["max"]
    assert media >= 8, lengths  # the image really costs something here
    squeeze = longest - media // 2  # over by about half an image, text still fits
    config = _dataset(tmp_path / "tight", qwen, squeeze)
    doc = _validate(config)
    trunc = doc["data"]["truncation"]
    assert trunc["over_max_length"] > 0
    fit = {c["key"]: c["value"] for c in trunc["fit"]}
    assert fit["text_processing.max_length"] >= longest
    assert "processor_params.size" in fit, trunc["fit"]
    assert fit["processor_params.size"]["longest_edge"] < 4096  # the twin's own limit
    advice = [f for f in doc["findings"] if f["code"] == "budget-fit"]
    assert len(advice) == 1 and "processor_params.size: {longest_edge: " in advice[0]["message"]
    assert f"max_length={squeeze}" in advice[0]["message"]

    # Each change alone makes every row fit.
    _set_model_params(config, {"size": fit["processor_params.size"]})
    after = _validate(config)["data"]["truncation"]
    assert after["over_max_length"] == 0, after

    config2 = _dataset(tmp_path / "tight2", qwen, squeeze)
    _set_max_length(config2, fit["text_processing.max_length"])
    after = _validate(config2)["data"]["truncation"]
    assert after["over_max_length"] == 0, after


def test_no_advice_when_rows_fit(tmp_path, qwen):
    doc = _validate(_dataset(tmp_path, qwen, 4096))
    assert doc["data"]["truncation"]["over_max_length"] == 0
    assert "fit" not in doc["data"]["truncation"]
    assert not [f for f in doc["findings"] if f["code"] == "budget-fit"]
