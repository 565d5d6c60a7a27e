"""`vlmctl validate`, dataset pass: planted faults with their row indices in text, JSON and
GitHub output; no false findings on clean data; numbers equal to what the collator gives;
nothing written; config-only stays light.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _validate_util import (
    FAULTS,
    Row,
    copy_abo_subset,
    make_generated_set,
    plant_faults,
    snapshot,
    write_config_set,
    write_csv,
)
from typer.testing import CliRunner

from vlmctl.cli import app

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
needs_shared = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"real datasets not present at {SHARED} (see shared/data/README.md)"
)


def validate(*args: object) -> tuple[int, str]:
    r = CliRunner().invoke(app, ["validate", *map(str, args)])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout


def validate_json(*args: object) -> tuple[int, dict]:
    code, out = validate(*args, "--format", "json")
    return code, json.loads(out)


def row_findings(doc: dict) -> dict[int, list[tuple[str, str]]]:
    out: dict[int, list[tuple[str, str]]] = {}
    for f in doc["config_sets"][0]["findings"]:
        if f["row"] is not None:
            out.setdefault(f["row"], []).append((f["severity"], f["code"]))
    return out


def assert_faults_reported(config: Path) -> dict:
    """Each planted fault, with its row, in all three formats; nothing on other rows."""
    code, doc = validate_json(config)
    assert code == 1
    found = row_findings(doc)
    assert found == {row: [expected] for row, expected in FAULTS.items()}
    data = doc["config_sets"][0]["data"]
    assert data["truncation"]["cut_text"] == 1
    assert data["truncation"]["dropped_media_span"] == 1
    assert data["rows"]["with_errors"] == 4

    code, text = validate(config)
    assert code == 1
    lines = text.splitlines()
    for row, (severity, _) in FAULTS.items():
        assert any(ln.strip().startswith(f"{severity}:") and f"row {row}:" in ln for ln in lines), (
            row,
            text,
        )
    assert "dataset pass" in text and "supervised" in text

    code, gh = validate(config, "--format", "github")
    assert code == 1
    for row, (severity, _) in FAULTS.items():
        assert any(
            ln.startswith(f"::{severity} ") and f"::row {row}: " in ln for ln in gh.splitlines()
        ), (
            row,
            gh,
        )
    return doc


def assert_clean(doc: dict) -> None:
    s = doc["config_sets"][0]
    bad = [f["text"] for f in s["findings"] if f["severity"] != "info"]
    assert bad == [], bad
    assert s["data"]["rows"]["with_errors"] == 0


@pytest.fixture(scope="module")
def qwen(tiny_model_dir):
    return tiny_model_dir("qwen2_vl")


@pytest.fixture(scope="module")
def faulty(tmp_path_factory, qwen):
    return make_generated_set(tmp_path_factory.mktemp("faulty"), qwen, faults=True)


@pytest.fixture(scope="module")
def clean(tmp_path_factory, qwen):
    return make_generated_set(tmp_path_factory.mktemp("clean"), qwen, faults=False)


# ---------------------------------------------------------------------------------------------
# generated data (default tier)


def test_planted_faults_are_reported_with_their_rows(faulty):
    assert_faults_reported(faulty)


def test_clean_data_has_no_findings_and_exact_token_counts(clean, qwen):
    code, doc = validate_json(clean)
    assert code == 0
    assert_clean(doc)
    data = doc["config_sets"][0]["data"]
    assert data["model"]["processor_loaded"] is True
    assert data["rows"] == {
        "total": 20, "checked": 20, "eval_checked": 0, "sampled": False, "with_errors": 0,
        "with_warnings_only": 0, "num_proc": 1,
    }  # fmt: skip
    # The numbers are the collator's: encode every row the way train does and compare.
    from _collate_util import encode_row
    from transformers import AutoProcessor

    from vlmctl.collate import VLMCollator
    from vlmctl.config.load import load_config_set
    from vlmctl.data.dataset import iter_rows, load_splits

    cs = load_config_set(clean)
    loaded = load_splits(cs.collator, cs.dir)
    collator = VLMCollator(AutoProcessor.from_pretrained(qwen), cs.collator, loaded.media_dirs)
    encs = [encode_row(collator, row, i) for i, row in iter_rows(loaded.train)]
    lengths = sorted(e.length for e in encs)
    assert data["supervised"]["tokens_per_epoch"] == sum(e.num_supervised for e in encs)
    assert data["supervised"]["estimated"] is False
    assert data["lengths"]["total"]["min"] == lengths[0]
    assert data["lengths"]["total"]["max"] == lengths[-1]
    media = sorted(e.num_media_tokens for e in encs)
    assert (data["lengths"]["media"]["min"], data["lengths"]["media"]["max"]) == (
        media[0],
        media[-1],
    )
    assert media[0] < media[-1]  # the images differ in size: expansion is really measured
    assert data["truncation"] == {
        "policy": "truncate_text", "over_max_length": 0, "dropped_too_long": 0,
        "dropped_media_span": 0, "cut_text": 0, "errors": 0,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("policy", "severity", "code", "exit_code"),
    [("drop", "warning", "row-too-long", 0), ("error", "error", "row-too-long", 1)],
)
def test_truncation_policy_decides_what_happens_to_long_rows(
    tmp_path, qwen, policy, severity, code, exit_code
):
    config = make_generated_set(tmp_path, qwen, faults=False, policy=policy)
    data_csv = tmp_path / "data" / "train.csv"
    from _validate_util import LONG_WORDS, Row, generated_rows

    rows = generated_rows(tmp_path / "data" / "images")
    rows[2] = Row(rows[2].image_name, rows[2].question, LONG_WORDS)
    rows[4] = Row(rows[4].image_name, LONG_WORDS, rows[4].answer)
    write_csv(data_csv, rows)
    got, doc = validate_json(config)
    assert got == exit_code
    assert row_findings(doc) == {2: [(severity, code)], 4: [(severity, code)]}
    text = {f["row"]: f["message"] for f in doc["config_sets"][0]["findings"] if f["row"]}
    word = "dropped" if policy == "drop" else "train stops with an error"
    assert word in text[2] and word in text[4]
    trunc = doc["config_sets"][0]["data"]["truncation"]
    assert trunc["over_max_length"] == 2
    assert trunc["dropped_too_long" if policy == "drop" else "errors"] == 2


def test_wrong_column_name_says_did_you_mean_in_every_format(tmp_path, qwen):
    config = make_generated_set(tmp_path, qwen, faults=False, question_column="questoin")
    code, doc = validate_json(config)
    assert code == 1
    errors = [f for f in doc["config_sets"][0]["findings"] if f["severity"] == "error"]
    assert len(errors) == 1
    f = errors[0]
    assert f["code"] == "column-missing" and f["key"] == "dataset_columns.question_column"
    assert f["hint"] == "did you mean 'question'?"
    assert f["file"].endswith("vlm_collator_config.yaml") and f["line"] == 6
    assert any("fix the column mapping" in s for s in doc["config_sets"][0]["data"]["skipped"])
    code, text = validate(config)
    assert code == 1 and "column 'questoin' is not in the dataset" in text
    assert "did you mean 'question'?" in text
    code, gh = validate(config, "--format", "github")
    assert code == 1
    assert any(
        ln.startswith("::error file=") and "line=6" in ln and "questoin" in ln
        for ln in gh.splitlines()
    )


def test_num_proc_2_gives_the_same_results(faulty):
    _, one = validate_json(faulty)
    _, two = validate_json(faulty, "--num-proc", "2")
    strip = lambda d: [  # noqa: E731
        (f["row"], f["code"], f["message"]) for f in d["config_sets"][0]["findings"]
    ]
    assert strip(one) == strip(two)
    d1, d2 = one["config_sets"][0]["data"], two["config_sets"][0]["data"]
    assert d2["rows"]["num_proc"] == 2
    for key in ("lengths", "truncation", "supervised"):
        assert d1[key] == d2[key]


def test_sample_checks_a_seeded_subset_and_estimates(faulty):
    code, doc = validate_json(faulty, "--sample", "5")
    data = doc["config_sets"][0]["data"]
    assert data["rows"]["checked"] == 5 and data["rows"]["sampled"] is True
    assert data["supervised"]["estimated"] is True
    assert set(row_findings(doc)) <= set(FAULTS)
    _, again = validate_json(faulty, "--sample", "5")
    assert row_findings(again) == row_findings(doc)


@pytest.mark.parametrize(
    "args", [("--sample", "3", "--all"), ("--config-only", "--num-proc", "2"), ("--num-proc", "0")]
)
def test_bad_flag_combinations_are_usage_errors(faulty, args):
    r = CliRunner().invoke(app, ["validate", str(faulty), *args])
    assert r.exit_code == 2, r.output


def test_config_only_skips_the_dataset(faulty):
    code, doc = validate_json(faulty, "--config-only")
    assert code == 0
    assert "data" not in doc["config_sets"][0]
    assert row_findings(doc) == {}


def test_processor_unreachable_is_one_line_and_row_checks_still_run(tmp_path):
    config = make_generated_set(tmp_path, "nobody-here/not-a-cached-model", faults=True)
    code, doc = validate_json(config)
    assert code == 1
    findings = doc["config_sets"][0]["findings"]
    unreachable = [f for f in findings if f["code"] == "processor-unreachable"]
    assert len(unreachable) == 1 and unreachable[0]["severity"] == "warning"
    # Media and values are still checked without the processor; lengths are not.
    assert row_findings(doc) == {r: [e] for r, e in FAULTS.items() if e[0] == "error"}
    assert doc["config_sets"][0]["data"]["lengths"] is None


def test_hub_dataset_offline_is_one_warning(tmp_path, qwen):
    config = write_config_set(tmp_path / "c", "nobody-here/not-a-dataset", qwen)
    (config / "vlm_collator_config.yaml").write_text(
        (config / "vlm_collator_config.yaml")
        .read_text()
        .replace(
            'path: "nobody-here/not-a-dataset"', 'path: "nobody-here/not-a-dataset"\n  format: hub'
        )
    )
    code, doc = validate_json(config)
    assert code == 0, doc
    warnings = [f for f in doc["config_sets"][0]["findings"] if f["severity"] != "info"]
    assert [f["code"] for f in warnings] == ["dataset-unreachable"]
    assert doc["config_sets"][0]["data"]["dataset"]["reachable"] is False


def _run_cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "vlmctl", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=600,
    )


@pytest.mark.slow
def test_validate_writes_nothing(tmp_path, faulty):
    cache = tmp_path / "hf-datasets-cache"
    cache.mkdir()
    home = tmp_path / "hf-home"
    before_cfg, before_data = snapshot(faulty), snapshot(faulty.parent / "data")
    r = _run_cli(
        ["validate", str(faulty), "--format", "json"],
        {"HF_DATASETS_CACHE": str(cache), "HF_HOME": str(home), "TMPDIR": str(tmp_path)},
    )
    assert r.returncode == 1, r.stderr
    assert len(row_findings(json.loads(r.stdout))) == len(FAULTS)
    assert snapshot(faulty) == before_cfg
    assert snapshot(faulty.parent / "data") == before_data
    assert list(cache.iterdir()) == []
    assert not home.exists() or list(home.rglob("*")) == []
    # The private build folder is removed at the end too.
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("vlmctl-validate-")] == []


@pytest.mark.slow
def test_config_only_imports_nothing_heavy(faulty):
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from vlmctl.cli import app\n"
        f"r = CliRunner().invoke(app, ['validate', {str(faulty)!r}, '--config-only'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets', 'trl', 'peft') "
        "if m in sys.modules]\n"
        "print(r.exit_code, heavy)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip() == "0 []", r.stdout + r.stderr


# ---------------------------------------------------------------------------------------------
# chat datasets: keys, roles, tags, media counts, short videos


def _write_chat(folder: Path, rows: list[dict], qwen: Path, conversation: str, **extra) -> Path:
    from _validate_util import jpeg_bytes

    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "chat.json").write_text(json.dumps(rows))
    (data / "a.jpg").write_bytes(jpeg_bytes(1))
    cfg = folder / "config"
    write_config_set(cfg, data / "chat.json", qwen)
    text = (cfg / "vlm_collator_config.yaml").read_text()
    text = text.split("dataset_columns:")[0] + conversation
    for k, v in extra.items():
        text += f"{k}: {v}\n"
    (cfg / "vlm_collator_config.yaml").write_text(text)
    return cfg


def _video(path: Path, frames: int) -> None:
    import av
    import numpy as np

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        for i in range(frames):
            img = np.full((32, 32, 3), 20 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_chat_dataset_keys_roles_and_tag_counts(tmp_path, qwen):
    ok = {"conversations": [{"from": "human", "value": "<image>What is it?"},
                            {"from": "gpt", "value": "noise"}], "image": ["a.jpg"]}  # fmt: skip
    two_tags = {"conversations": [{"from": "human", "value": "<image><image>Two?"},
                                  {"from": "gpt", "value": "one"}], "image": ["a.jpg"]}  # fmt: skip
    conv = "conversation:\n  column: conversations\n  images_column: image\n  videos_column: null\n"
    # Wrong keys: the data uses from/value (LLaVA), the config the defaults role/content.
    cfg = _write_chat(tmp_path / "keys", [ok, ok], qwen, conv)
    code, doc = validate_json(cfg)
    assert code == 1
    errs = {f["key"]: f for f in doc["config_sets"][0]["findings"] if f["severity"] == "error"}
    assert errs["conversation.role_key"]["hint"] == "did you mean 'from'?"
    assert errs["conversation.content_key"]["hint"] == "did you mean 'value'?"
    # Right keys: a tag/media count mismatch names its row; an unknown role is a config error.
    conv_ok = conv + "  role_key: from\n  content_key: value\n"
    cfg = _write_chat(tmp_path / "tags", [ok, two_tags, ok], qwen, conv_ok)
    code, doc = validate_json(cfg)
    assert code == 1
    assert row_findings(doc) == {1: [("error", "conversation")]}
    bot = {"conversations": [{"from": "human", "value": "<image>Hi"},
                             {"from": "bot", "value": "x"}], "image": "a.jpg"}  # fmt: skip
    cfg = _write_chat(tmp_path / "roles", [ok, bot], qwen, conv_ok)
    code, doc = validate_json(cfg)
    roles = [f for f in doc["config_sets"][0]["findings"] if f["code"] == "conversation-role"]
    assert code == 1 and len(roles) == 1 and "'bot'" in roles[0]["message"]


def test_short_and_broken_videos_are_reported(tmp_path, qwen):
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    _video(data / "short.mp4", 3)
    _video(data / "long.mp4", 12)
    (data / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 200)
    rows = [
        {"messages": [{"role": "user", "content": "<video>What happens?"},
                      {"role": "assistant", "content": "it gets brighter"}], "videos": [v]}
        for v in ("long.mp4", "short.mp4", "broken.mp4")
    ]  # fmt: skip
    conv = "conversation:\n  column: messages\n  images_column: null\n  videos_column: videos\n"
    extra = {
        "data_processing": "{image_data: false, video_data: true}",
        "video_processing": "{frame_extraction: {library: pyav, num_frames: 4}}",
        "text_processing": "{max_length: 2048}",
    }
    cfg = _write_chat(tmp_path, rows, qwen, conv, **extra)
    code, doc = validate_json(cfg)
    assert code == 1
    found = row_findings(doc)
    assert found[1] == [("warning", "video-too-short")]
    assert found[2][0][0] == "error" and found[2][0][1].startswith("media")
    assert 0 not in found
    assert doc["config_sets"][0]["data"]["lengths"]["rows"] == 2


# ---------------------------------------------------------------------------------------------
# real data (../shared/data)


def _abo_copy(tmp_path: Path, qwen: Path, faults: bool) -> Path:
    data = tmp_path / "abo"
    images, rows = copy_abo_subset(SHARED, data, n=50)
    if faults:
        rows = plant_faults(data, rows, images)
    write_csv(data / "vqa.csv", rows)
    return write_config_set(tmp_path / "config", data / "vqa.csv", qwen, media_root=images)


@pytest.mark.realdata
@needs_shared
def test_real_abo_copy_with_planted_faults(tmp_path, qwen):
    config = _abo_copy(tmp_path, qwen, faults=True)
    doc = assert_faults_reported(config)
    assert doc["config_sets"][0]["data"]["rows"]["checked"] == 50


@pytest.mark.realdata
@needs_shared
def test_real_abo_copy_clean_has_no_findings(tmp_path, qwen):
    code, doc = validate_json(_abo_copy(tmp_path, qwen, faults=False))
    assert code == 0
    assert_clean(doc)
    assert doc["config_sets"][0]["data"]["lengths"]["media"]["min"] > 0


@pytest.mark.realdata
@needs_shared
@pytest.mark.slow
@pytest.mark.parametrize(
    ("example", "args"),
    [
        ("abo_vqa", ("--sample", "200")),
        ("llamafactory_mllm", ()),
        ("llamafactory_video", ()),
        ("lmms_finetune_llava", ()),
    ],
)
def test_real_examples_validate_clean(tiny_model_dir, example, args):
    from vlmctl.config.load import load_config_set

    cs = load_config_set(REPO / "examples" / example)
    family = "qwen2_vl" if cs.collator.use_video else "qwen2_vl"
    model = tiny_model_dir(family)
    code, doc = validate_json(
        REPO / "examples" / example, "--set", f"model.model_name_or_path={model}", *args
    )
    s = doc["config_sets"][0]
    bad = [f["text"] for f in s["findings"] if f["severity"] != "info"]
    assert code == 0 and bad == [], bad
    assert s["data"]["rows"]["checked"] > 0
    assert s["data"]["supervised"]["tokens_per_epoch"] > 0


# ---------------------------------------------------------------------------------------------
# streaming: capped findings, eval split, missing data, progress


def test_many_bad_rows_are_capped_with_the_rest_counted(tmp_path, qwen):
    from _validate_util import generated_rows

    config = make_generated_set(tmp_path, qwen, faults=False, n=60)
    rows = generated_rows(tmp_path / "data" / "images", 60)
    rows = [Row(f"gone{i}.jpg", r.question, r.answer) for i, r in enumerate(rows)]
    write_csv(tmp_path / "data" / "train.csv", rows)
    code, doc = validate_json(config)
    assert code == 1
    findings = doc["config_sets"][0]["findings"]
    listed = [f for f in findings if f["code"] == "media-not-found" and f["row"] is not None]
    assert [f["row"] for f in listed] == list(range(20))
    (more,) = [f for f in findings if f["code"] == "media-not-found" and f["row"] is None]
    assert more["message"].startswith("40 more rows with the same problem")
    assert more["rows"] == list(range(20, 60))  # the README promises the row numbers in JSON
    assert all(f["rows"] is None for f in listed)
    assert doc["config_sets"][0]["data"]["rows"]["with_errors"] == 60


def test_eval_file_is_checked_too(tmp_path, qwen):
    from _validate_util import generated_rows

    config = make_generated_set(tmp_path, qwen, faults=False)
    rows = generated_rows(tmp_path / "data" / "images", 4)
    rows[2] = Row("missing-eval.jpg", rows[2].question, rows[2].answer)
    write_csv(tmp_path / "data" / "eval.csv", rows)
    collator_yaml = config / "vlm_collator_config.yaml"
    collator_yaml.write_text(
        collator_yaml.read_text().replace(
            "dataset:\n", f'dataset:\n  eval_path: "{tmp_path / "data" / "eval.csv"}"\n'
        )
    )
    code, doc = validate_json(config)
    assert code == 1
    (f,) = [f for f in doc["config_sets"][0]["findings"] if f["row"] is not None]
    assert f["row"] == 2 and f["message"].startswith("eval split: file not found")
    rows_summary = doc["config_sets"][0]["data"]["rows"]
    assert (rows_summary["checked"], rows_summary["eval_checked"]) == (20, 4)


def test_missing_local_dataset_is_an_error_at_dataset_path(tmp_path, qwen):
    config = write_config_set(tmp_path / "c", tmp_path / "nowhere.csv", qwen)
    code, doc = validate_json(config)
    assert code == 1
    errors = [f for f in doc["config_sets"][0]["findings"] if f["severity"] == "error"]
    assert len(errors) == 1 and "dataset not found" in errors[0]["message"]
    assert errors[0]["file"].endswith("vlm_collator_config.yaml") and errors[0]["line"] == 2
    assert doc["config_sets"][0]["data"]["dataset"]["reachable"] is False


def test_progress_bar_appears_only_after_a_second(monkeypatch):
    from vlmctl.checks import collect as dc

    clock = [100.0]
    monkeypatch.setattr(dc.time, "monotonic", lambda: clock[0])
    bar = dc.Progress(True, 10, "rows")
    bar.advance()
    assert bar.bar is None  # under a second: nothing drawn
    clock[0] += 1.5
    bar.advance()
    assert bar.bar is not None and bar.done == 2
    bar.close()
    off = dc.Progress(False, 10, "rows")
    clock[0] += 5
    off.advance()
    assert off.bar is None


def test_rows_left_without_supervised_tokens_are_reported(tmp_path, qwen):
    from _validate_util import LONG_WORDS, generated_rows

    config = make_generated_set(tmp_path, qwen, faults=False, mask_input_tokens=True)
    collator_yaml = config / "vlm_collator_config.yaml"
    text = collator_yaml.read_text()
    question = '        - type: "text"\n          text: "{question_column}"\n'
    image = '        - type: "image"\n'
    assert question + image in text
    collator_yaml.write_text(text.replace(question + image, image + question))  # image first
    rows = generated_rows(tmp_path / "data" / "images")
    rows[6] = Row(rows[6].image_name, LONG_WORDS, rows[6].answer)  # the answer is cut away
    write_csv(tmp_path / "data" / "train.csv", rows)
    code, doc = validate_json(config)
    assert code == 0
    assert row_findings(doc) == {6: [("warning", "no-supervised-tokens")]}
    sup = doc["config_sets"][0]["data"]["supervised"]
    assert sup["rows_without_supervised_tokens"] == 1 and sup["rows_kept"] == 19
