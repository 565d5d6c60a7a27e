"""Resume without training: which checkpoint `--resume auto` picks, and the command an
interrupted run prints to resume itself (every flag the run had, credentials named only)."""

from __future__ import annotations

import shlex
from pathlib import Path

from vlmctl.training.parent import TrainRequest, _resume_hint, latest_checkpoint

TOKEN = "hf_PlantedResumeTokenAAAAAAAAAAAAAAAAAA"


def _checkpoint(run: Path, name: str, complete: bool = True) -> Path:
    d = run / name
    d.mkdir(parents=True)
    if complete:
        (d / "trainer_state.json").write_text("{}")
    return d


def test_the_highest_step_wins_by_number_not_by_name(tmp_path):
    _checkpoint(tmp_path, "checkpoint-9")
    want = _checkpoint(tmp_path, "checkpoint-10")  # "9" > "10" as text
    _checkpoint(tmp_path, "checkpoint-100", complete=False)  # no trainer_state.json: half-saved
    assert latest_checkpoint(tmp_path) == want


def test_only_checkpoint_folders_count(tmp_path):
    assert latest_checkpoint(tmp_path) is None  # an empty run folder
    (tmp_path / "checkpoint-50").write_text("a file, not a folder")
    _checkpoint(tmp_path, "checkpoint-60-old")
    _checkpoint(tmp_path, "old-checkpoint-70")
    _checkpoint(tmp_path, "checkpoint-")
    assert latest_checkpoint(tmp_path) is None
    want = _checkpoint(tmp_path, "checkpoint-3")
    assert latest_checkpoint(tmp_path) == want
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").mkdir()  # not a file
    assert latest_checkpoint(tmp_path) == want
    assert latest_checkpoint(tmp_path / "absent") is None
    assert latest_checkpoint(want / "trainer_state.json") is None  # a file is not a run


def test_the_resume_command_repeats_every_flag_and_names_credentials_only():
    req = TrainRequest(
        config_dir=Path("/cfg dir"),
        output_dir=Path("out"),
        overrides=["peft.r=8", f"train.hub_token={TOKEN}", "model.processor_params.token=abc=="],
        model="org/model",
        dataset="data/train.csv",
        num_processes=2,
        accelerate_config="acc.yaml",
    )
    hint = _resume_hint(req, Path("/abs/out"))
    command, _, credentials = hint.partition(" (")
    assert shlex.split(command) == [
        "vlmctl", "train", "/cfg dir", "--output-dir", "/abs/out", "--set", "peft.r=8",
        "--model", "org/model", "--dataset", "data/train.csv", "--num-processes", "2",
        "--accelerate-config", "acc.yaml", "--resume", "auto",
    ]  # fmt: skip
    assert credentials == (
        "and your credentials again: --set train.hub_token=..., "
        "--set model.processor_params.token=...)"
    )
    assert TOKEN not in hint and "abc" not in hint  # a value may hold "=" (base64 padding)


def test_the_resume_command_of_a_plain_run_has_only_its_own_flags():
    hint = _resume_hint(TrainRequest(config_dir=Path("cfg")), Path("/abs/cfg/../run"))
    assert hint == "vlmctl train cfg --resume auto"  # the default output folder is implied
