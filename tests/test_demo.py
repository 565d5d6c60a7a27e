"""`vlmctl demo`: the dataset it generates, the config set it writes, and the whole run (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlmctl.config.load import load_config_set
from vlmctl.demo import COLORS, QUESTION, DemoOptions, write_color_dataset, write_config_set

REPO = Path(__file__).resolve().parent.parent


def test_colour_dataset_is_learnable_and_held_out(tmp_path):
    from PIL import Image

    rows = write_color_dataset(tmp_path, 24, 16, seed=3)
    assert len(rows["train"]) == 24 and len(rows["eval"]) == 16
    # Every colour appears in the held-out set; answers are colour names.
    assert {r["answer"] for r in rows["eval"]} == set(COLORS)
    assert all(r["question"] == QUESTION for r in rows["train"])
    train_files = {r["image"] for r in rows["train"]}
    assert not train_files & {r["image"] for r in rows["eval"]}
    for r in rows["eval"][:8]:
        img = Image.open(tmp_path / r["image"]).convert("RGB")
        assert img.size == (32, 32)
        # The dominant pixel is close to the named colour.
        (count, pixel) = max(img.getcolors(32 * 32))
        assert sum(abs(a - b) for a, b in zip(pixel, COLORS[r["answer"]], strict=True)) < 80
    assert (tmp_path / "train.csv").read_text().splitlines()[0] == "image,question,answer"


def test_demo_config_set_validates(tmp_path):
    write_color_dataset(tmp_path / "data", 8, 0)
    write_config_set(tmp_path / "config", "some/model", DemoOptions(out=tmp_path, steps=7))
    cs = load_config_set(tmp_path / "config")
    assert cs.train.extra_keys()["max_steps"] == 7
    assert cs.peft.r == 16 and cs.peft.exclude_vision_modules is True
    assert cs.collator.label_masking.mask_input_tokens is True
    assert cs.train.report_to_list() == []
    assert cs.model.model_name_or_path == "some/model"
    # The template comments survive (init-like files a user can read).
    assert "# " in (tmp_path / "config" / "train_config.yaml").read_text()


@pytest.mark.slow
def test_demo_end_to_end(tmp_path):
    """The full demo offline: validate, preview, train, merge, then held-out accuracy."""
    out = tmp_path / "demo"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TMPDIR=str(tmp_path), PYTHONPATH=str(REPO))
    env.pop("WANDB_API_KEY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "vlmctl", "demo", "--out", str(out)],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "demo-report.json").read_text())
    printed = json.loads(proc.stdout)
    assert printed["accuracy"] == report["accuracy"]
    assert report["chance"] == pytest.approx(1 / len(COLORS))
    assert report["total"] == 40
    assert report["accuracy"] >= 3 * report["chance"], report
    assert report["steps"]["validate"] == "ok" and report["steps"]["train"] == "ok"
    assert report["global_step"] == 120
    assert report["train_seconds"] > 0
    if report["steps"]["merge"] == "ok":
        merged = out / report["merged_model"]
        assert (merged / "config.json").is_file()
    assert "learned" in proc.stderr
