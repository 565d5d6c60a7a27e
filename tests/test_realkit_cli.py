"""`vlmctl preview --format json` on a config set whose model folder holds a kit's real files.

Run as a user runs it: `python -m vlmctl` in a child process (PYTHONPATH = this checkout), so
the processor and its real-size images never stay in the pytest process. The kit folder is
built in a child too (`_realkit_util.built_model_folder`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _realkit_util import built_model_folder, end_of_turn, kit, kit_folder, kit_params
from _validate_util import Row, jpeg_bytes, write_config_set, write_csv

ROOT = Path(__file__).resolve().parents[1]


def _remote_code_entry(folder: Path, model: Path, model_class: str) -> None:
    """What a user writes for a remote-code checkpoint (InternVL2): a model_classes entry."""
    cfg = folder / "vlm_model_config.yaml"
    cfg.write_text(
        cfg.read_text()
        + f'model_classes:\n  "{model}":\n    model_class: {model_class}\n'
        + "    trust_remote_code: true\n"
        + "processor_params:\n  trust_remote_code: true\n"
    )


@pytest.mark.slow
@pytest.mark.parametrize("family", kit_params())
def test_preview_json_trains_exactly_the_answer_and_end_of_turn(family, tmp_path, monkeypatch):
    from vlmctl.models.families import FAMILIES

    # preview needs the processor only: kits that build no model (remote code whose modeling
    # files cannot run here) give their assembled real files.
    model = built_model_folder(family) if kit(family).build_model else kit_folder(family)
    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jpg").write_bytes(jpeg_bytes(0, 32))
    write_csv(data / "train.csv", [Row("a.jpg", "what colour is it", "red 1 square")])
    config = write_config_set(
        tmp_path / "config", data / "train.csv", model,
        max_length=20000, policy="drop", mask_input_tokens=True,
    )  # fmt: skip
    if kit(family).remote_code:
        cls = next(f.model_class for f in FAMILIES if f.name == family)
        _remote_code_entry(config, model, cls)
    args = ["preview", str(config), "--rows", "0", "--format", "json"]
    if family == "qwen2_vl" or kit(family).remote_code:
        # The installed entry point, as a user runs it: one family proves the process boundary
        # (and remote code stays out of the test process); the others run in-process (seconds
        # each instead of a fresh interpreter with torch and transformers).
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        r = subprocess.run(
            [sys.executable, "-m", "vlmctl", *args],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
        )  # fmt: skip
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
        stdout = r.stdout
    else:
        from typer.testing import CliRunner

        from vlmctl.cli import app

        monkeypatch.chdir(tmp_path)
        r = CliRunner().invoke(app, args)
        assert r.exit_code == 0, r.output[-4000:]
        stdout = r.stdout
    (sample,) = json.loads(stdout)["samples"]
    trained = [sp["display"] for sp in sample["spans"] if sp["kind"] == "trained"]
    eot = end_of_turn(family)
    # preview displays SentencePiece pieces without their word-boundary spaces (red1square):
    # compare without spaces; the exact token check is test_realkit_masking's.
    assert [t.replace(" ", "") for t in trained] == ["red1square" + eot], trained
    assert sample["media_tokens"] > 0
