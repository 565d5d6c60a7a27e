"""`validate --sample N` scales the supervised-token count of the sample up to the whole split
(and down by eval_size when the eval rows are split off the train file)."""

from __future__ import annotations

import json

import pytest
from _validate_util import make_generated_set
from typer.testing import CliRunner

from vlmctl.cli import app


def _supervised(config, *args) -> dict:
    r = CliRunner().invoke(app, ["validate", str(config), "--format", "json", *args])
    return json.loads(r.stdout)["config_sets"][0]["data"]["supervised"]


@pytest.fixture(scope="module")
def clean(tmp_path_factory, tiny_model_dir):
    return make_generated_set(
        tmp_path_factory.mktemp("est"), tiny_model_dir("qwen2_vl"), faults=False, n=40
    )


def test_sample_estimate_scales_up_to_the_whole_split(clean):
    full = _supervised(clean)
    assert full["estimated"] is False
    assert full["tokens_per_epoch"] == full["tokens_checked"]
    sample = _supervised(clean, "--sample", "10")
    assert sample["estimated"] is True
    assert sample["tokens_checked"] < full["tokens_checked"]
    # 10 of 40 rows checked: the epoch holds about 4x what the sample holds ...
    assert sample["tokens_per_epoch"] == round(sample["tokens_checked"] * 40 / 10)
    # ... and the estimate lands near the exact count of the full pass.
    assert (
        abs(sample["tokens_per_epoch"] - full["tokens_per_epoch"])
        <= 0.25 * full["tokens_per_epoch"]
    )


def test_eval_size_takes_its_share_out_of_the_estimate(clean):
    path = clean / "vlm_collator_config.yaml"
    text = path.read_text()
    path.write_text(text.replace("dataset:\n", "dataset:\n  eval_size: 0.25\n", 1))
    try:
        out = _supervised(clean)
    finally:
        path.write_text(text)
    assert out["estimated"] is True
    assert out["tokens_per_epoch"] == round(out["tokens_checked"] * 0.75)
