"""`vlmctl preview --format json` on a config set whose model folder holds a kit's real files."""

from __future__ import annotations

import json
import os as _os

import pytest
from _realkit_util import end_of_turn, kit_model_folder, kit_params
from _validate_util import Row, jpeg_bytes, write_config_set, write_csv
from typer.testing import CliRunner

from vlmctl.cli import app

# Known problem (2026-11-30): in a full `pytest -q` run, the in-process work of this module on
# real-size kits grew the pytest process past 20 GB and the kernel's OOM killer ended the whole
# run (seen twice on fresh clones). Until it runs in a subprocess with bounded memory, it runs
# only when asked: VLMCTL_REALKIT_HEAVY=1 python -m pytest -q tests/<this file>.
pytestmark = pytest.mark.skipif(
    _os.environ.get("VLMCTL_REALKIT_HEAVY") != "1",
    reason="real-size kit run in-process: OOM in a full suite run; set VLMCTL_REALKIT_HEAVY=1",
)


@pytest.mark.slow
@pytest.mark.parametrize("family", kit_params(models_only=True))
def test_preview_json_trains_exactly_the_answer_and_end_of_turn(family, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jpg").write_bytes(jpeg_bytes(0, 32))
    write_csv(data / "train.csv", [Row("a.jpg", "what colour is it", "red 1 square")])
    config = write_config_set(
        tmp_path / "config", data / "train.csv", kit_model_folder(family),
        max_length=20000, policy="drop", mask_input_tokens=True,
    )  # fmt: skip
    r = CliRunner().invoke(app, ["preview", str(config), "--rows", "0", "--format", "json"])
    assert r.exit_code == 0, r.output
    (sample,) = json.loads(r.stdout)["samples"]
    trained = [sp["display"] for sp in sample["spans"] if sp["kind"] == "trained"]
    eot = end_of_turn(family)
    # preview displays SentencePiece pieces without their word-boundary spaces (red1square):
    # compare without spaces; the exact token check is test_realkit_masking's.
    assert [t.replace(" ", "") for t in trained] == ["red1square" + eot], trained
    assert sample["media_tokens"] > 0
