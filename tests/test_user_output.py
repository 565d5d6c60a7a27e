"""Issue #13, output a user can act on (items 5-9), on generated data and tiny twins."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from _config_util import line_of
from _mixed_util import MIXED_COLLATOR, content_parts_rows, write_config_set, write_shape
from _validate_util import FAULTS, make_generated_set
from typer.testing import CliRunner

from vlmctl.cli import app


def invoke(*args, env=None):
    r = CliRunner().invoke(app, [*map(str, args)], env=env)
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


@pytest.fixture(scope="module")
def qwen(tiny_model_dir):
    return tiny_model_dir("qwen2_vl")


def _mixed(tmp_path: Path, qwen, rows=None, **collator) -> Path:
    data = tmp_path / "data"
    write_shape("content_parts", data)
    if rows is not None:
        (data / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return write_config_set(tmp_path / "config", qwen, {**MIXED_COLLATOR, **collator})


# --- 5. --format github: row findings attach to a file --------------------------------------


def _gh_rows(out: str) -> dict[int, str]:
    rows = {}
    for line in out.splitlines():
        if "::row " in line:
            rows[int(line.split("::row ", 1)[1].split(":", 1)[0])] = line
    return rows


def test_github_row_findings_point_at_the_csv_line(qwen, tmp_path):
    config = make_generated_set(tmp_path, qwen, faults=True)
    r = invoke("validate", config, "--format", "github")
    assert r.exit_code == 1
    rows = _gh_rows(r.stdout)
    assert set(FAULTS) <= set(rows)
    csv_file = tmp_path / "data" / "train.csv"
    for row in FAULTS:
        # header on line 1, row 0 on line 2 (the generated CSV has no quoted newlines)
        assert f"file={csv_file},line={row + 2}," in rows[row], rows[row]


def test_github_row_findings_point_at_the_jsonl_line_or_the_config(qwen, tmp_path):
    rows = content_parts_rows()
    rows[2]["messages"][1]["content"] = ""  # an empty answer turn
    config = _mixed(tmp_path, qwen, rows)
    data = tmp_path / "data" / "mixed.jsonl"
    data.write_text("\n" + data.read_text())  # a blank first line: row 2 is on line 4
    r = invoke("validate", config, "--format", "github")
    assert f"file={data},line=4," in _gh_rows(r.stdout)[2]

    # A JSON list has no line per row: the annotation goes to the file itself.
    listed = tmp_path / "data" / "mixed.json"
    listed.write_text(json.dumps(rows))
    r = invoke("validate", config, "--format", "github", "--set", f"collator.dataset.path={listed}")
    line = _gh_rows(r.stdout)[2]
    assert f"file={listed}," in line and "line=" not in line

    # A folder: the config's dataset.path line.
    folder = tmp_path / "data" / "parts"
    folder.mkdir()
    (folder / "train.json").write_text(json.dumps(rows))
    collator_yaml = config / "vlm_collator_config.yaml"
    collator_yaml.write_text(collator_yaml.read_text().replace("mixed.jsonl", "parts"))
    r = invoke("validate", config, "--format", "github")
    line = _gh_rows(r.stdout)[2]
    assert f"file={collator_yaml},line={line_of(collator_yaml, 'data/parts')}," in line, line


# --- 6. preview notes dropped media; preview and train list every bad row ----------------------


def test_preview_notes_a_dropped_video(qwen, tmp_path):
    config = _mixed(tmp_path, qwen, data_processing={"image_data": True, "video_data": False})
    r = invoke("preview", config, "--rows", "1", "--format", "json")
    assert r.exit_code == 0, r.output
    (sample,) = json.loads(r.stdout)["samples"]
    assert sample["media_tokens"] == 0
    assert any("1 video(s) dropped" in n for n in sample["notes"]), sample["notes"]
    text = invoke("preview", config, "--rows", "1").stdout
    assert "note: row 1: 1 video(s) dropped" in text


def test_preview_and_train_list_every_bad_row(qwen, tmp_path):
    from vlmctl.errors import DataError
    from vlmctl.training.parent import TrainRequest
    from vlmctl.training.parent import train as run_train

    rows = content_parts_rows()
    rows[0]["messages"][0]["content"][0]["image"] = "media/missing0.jpg"
    rows[3]["messages"][0]["content"][0]["image"] = "media/missing3.jpg"
    config = _mixed(tmp_path, qwen, rows)
    r = invoke("preview", config, "--rows", "0-3")
    assert r.exit_code == 1
    assert "missing0.jpg" in r.output and "missing3.jpg" in r.output, r.output

    def never(argv, env):
        raise AssertionError("launched")

    with pytest.raises(DataError) as exc:
        run_train(TrainRequest(config_dir=config), launcher=never)
    assert [f.row for f in exc.value.findings] == [0, 3]
    assert not (tmp_path / "run").exists()


# --- 7. noise -----------------------------------------------------------------------------


def test_validate_notes_once_with_codes_and_silenceable(tmp_path):
    a = make_generated_set(tmp_path / "a", "Qwen/Qwen2-VL-2B-Instruct", faults=False)
    b = make_generated_set(tmp_path / "b", "Qwen/Qwen2-VL-2B-Instruct", faults=False)
    out = invoke("validate", a, b, "--config-only").stdout
    notes = [ln for ln in out.splitlines() if ln.strip().startswith("info:")]
    assert notes and all(ln.rstrip().endswith("]") for ln in notes), notes
    # the same notes for the second set are not printed again
    assert sum("[mapping]" in ln for ln in notes) == len(
        {ln.split(":", 3)[-1] for ln in notes if "[mapping]" in ln}
    )
    texts = [ln.split("): ", 1)[-1] for ln in notes]
    assert len(texts) == len(set(texts)), notes
    assert "--hide-notes" in out

    quiet = invoke("validate", a, "--config-only", "--hide-notes", "all").stdout
    assert "info:" not in quiet and "hidden" in quiet
    env_quiet = invoke("validate", a, "--config-only", env={"VLMCTL_HIDE_NOTES": "mapping"}).stdout
    assert "[mapping]" not in env_quiet and "info:" in env_quiet


def test_bitsandbytes_kernels_hint_is_dropped_unless_quantization_is_on(capsys):
    from vlmctl.quiet import BNB_LOGGER, quiet_bitsandbytes

    logger = logging.getLogger(BNB_LOGGER)
    saved = list(logger.filters)
    try:
        quiet_bitsandbytes(quantization_on=False)
        handler = logging.StreamHandler()
        logger.addHandler(handler)
        try:
            logger.warning(
                "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make "
                "sure you already `pip install kernels`",
                "boom",
            )
            logger.warning("a real bitsandbytes problem")
        finally:
            logger.removeHandler(handler)
        err = capsys.readouterr().err
        assert "gemm_4bit_forward" not in err and "a real bitsandbytes problem" in err
    finally:
        logger.filters[:] = saved


def test_wandb_offline_url_warning_is_dropped(capfd, monkeypatch):
    import wandb
    from wandb.errors import term

    from vlmctl.quiet import quiet_wandb_offline_url

    # An earlier in-process wandb.init (a train test) leaves wandb's terminal in silent mode,
    # which would hide both lines; this test is about vlmctl's filter, so wandb speaks here.
    monkeypatch.setattr(term, "_silent", False)
    monkeypatch.setattr(term, "_show_warnings", True)

    saved = wandb.termwarn
    try:
        quiet_wandb_offline_url()
        wandb.termwarn("URL not available in offline run")
        wandb.termwarn("something that matters")
    finally:
        wandb.termwarn = saved
    err = capfd.readouterr().err
    assert "URL not available" not in err and "something that matters" in err


def test_train_worker_and_merge_install_the_filters():
    import inspect

    from vlmctl.demo import pipeline as demo
    from vlmctl.merge import run as merge_run
    from vlmctl.training import worker_steps

    assert "quiet_bitsandbytes(cs.model.quantization.enabled)" in inspect.getsource(
        worker_steps._set_up
    )
    assert "quiet_wandb_offline_url()" in inspect.getsource(worker_steps._set_up_wandb)
    assert "quiet_bitsandbytes(" in inspect.getsource(merge_run.run_merge)
    assert "quiet_bitsandbytes(" in inspect.getsource(demo.run_demo)


# --- 8. non-Latin token pieces ------------------------------------------------------------


def test_preview_pieces_of_non_latin_text_read_correctly(qwen, tmp_path):
    rows = content_parts_rows()
    answer = "你好，世界 🙂 안녕하세요"
    rows[3]["messages"][1]["content"][0]["text"] = answer
    config = _mixed(tmp_path, qwen, rows)
    r = invoke("preview", config, "--rows", "3", "--format", "json")
    (sample,) = json.loads(r.stdout)["samples"]
    pieces = [t["piece"] for t in sample["tokens"]]
    assert "\ufffd" not in "".join(pieces)
    assert answer in "".join(pieces)
    text = invoke("preview", config, "--rows", "3").stdout
    assert "你好" in text and "\ufffd" not in text


# --- 9. an adapter that did not change the model ---------------------------------------------


def test_loss_trend_says_when_the_loss_did_not_move():
    from vlmctl.training.callbacks import loss_trend

    flat = loss_trend([(1, 2.3456), (2, 2.3456), (4, 2.34561)], 1e-5)
    assert "flat" in flat and "not measurably changed" in flat and "1e-05" in flat
    moved = loss_trend([(1, 2.0), (4, 1.0)])
    assert "-50.0%" in moved and "not measurably" not in moved
    assert loss_trend([(1, 2.0)]) is None


def test_step_log_prints_the_trend_with_the_summary():
    from types import SimpleNamespace

    from vlmctl.training.callbacks import StepLog

    printed = []
    log = StepLog()
    log._print = printed.append
    state = SimpleNamespace(
        is_world_process_zero=True, num_input_tokens_seen=0, global_step=1, max_steps=2
    )
    args = SimpleNamespace(learning_rate=1e-5)
    log.on_log(args, state, None, logs={"loss": 1.5})
    state.global_step = 2
    log.on_log(args, state, None, logs={"loss": 1.5})
    log.on_log(args, state, None, logs={"train_loss": 1.5, "train_runtime": 1.0})
    assert "loss trend: flat" in printed[-1]


def _scaled_run(base: Path, run: Path, scale: float) -> Path:
    from safetensors.torch import load_file, save_file
    from test_merge import make_run

    make_run(base, run, "qwen2_vl")
    f = run / "adapter_model.safetensors"
    state = load_file(str(f))
    save_file({k: v * scale if "lora_B" in k else v for k, v in state.items()}, str(f))
    return run


def test_merge_says_when_the_adapter_change_is_within_bf16_rounding(qwen, tmp_path):
    tiny = _scaled_run(qwen, tmp_path / "tiny-run", 1e-7)
    r = invoke("merge", tiny, "--output", tmp_path / "m1")
    assert r.exit_code == 0, r.output
    assert "not measurably changed" in r.output and "bf16 rounding" in r.output
    report = json.loads((tmp_path / "m1" / "merge-report.json").read_text())
    assert report["verify"]["change_vs_base"]["within_bf16_rounding"] is True

    real = _scaled_run(qwen, tmp_path / "real-run", 1.0)
    r = invoke("merge", real, "--output", tmp_path / "m2")
    assert r.exit_code == 0, r.output
    assert "not measurably changed" not in r.output and "adapter vs base" in r.output
