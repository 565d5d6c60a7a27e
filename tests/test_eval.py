"""`vlmctl eval`: bad --model lines, the config key, and (slow) the demo run evaluated end to end.

The slow tests share the session's ONE `vlmctl demo` run (tests/conftest.py): base model, run folder
(adapter), merged model, held-out eval.csv.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from vlmctl.demo.colors import COLORS, DemoOptions, write_color_dataset, write_config_set

REPO = Path(__file__).resolve().parent.parent


def cli(*args: str):
    from typer.testing import CliRunner

    from vlmctl.cli import app

    return CliRunner().invoke(app, ["eval", *args])


def stderr_lines(result) -> list[str]:
    try:
        text = result.stderr
    except (ValueError, AttributeError):
        text = result.output
    return [ln for ln in text.splitlines() if ln.strip()]


@pytest.fixture
def config_set(tmp_path):
    write_color_dataset(tmp_path / "data", 8, 8)
    write_config_set(tmp_path / "config", "some/model", DemoOptions(out=tmp_path, steps=2))
    return tmp_path / "config"


def _one_error(result, *needles: str) -> str:
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = stderr_lines(result)
    assert len(lines) == 1, lines
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_bad_model_not_a_model_is_one_line(config_set, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_error(cli(str(config_set), "--model", str(empty)), "not a model", "config.json")
    _one_error(cli(str(config_set), "--model", str(tmp_path / "nope")), "no such folder")


def test_bad_model_missing_base_is_one_line(config_set, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "base_model_name_or_path": str(tmp_path / "gone")})
    )
    (run / "adapter_model.safetensors").write_bytes(b"")
    line = _one_error(cli(str(config_set), "--model", str(run)), f"--model {run}")
    assert "base model" in line and "not found" in line


def test_bad_model_processor_missing_is_one_line(config_set, tmp_path):
    folder = tmp_path / "weights-only"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "qwen2_vl"}')
    (folder / "model.safetensors").write_bytes(b"")
    _one_error(cli(str(config_set), "--model", str(folder)), "processor missing")


def test_run_folder_without_peft_names_the_train_extra(config_set, tmp_path, monkeypatch):
    """An adapter needs peft (the train extra): one line naming it, not an ImportError."""
    from vlmctl import extras

    monkeypatch.setattr(extras, "missing", lambda extra: ["peft"] if extra == "train" else [])
    run = tmp_path / "run"
    run.mkdir()
    (run / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    line = _one_error(cli(str(config_set), "--model", str(run)), "vlmctl eval needs the train")
    assert 'pip install "vlmctl[train]"' in line and "merged model" in line


def test_bad_model_is_refused_before_any_other_is_loaded(config_set, tmp_path, monkeypatch):
    """Every --model is checked first: a typo in the second costs no loading of the first."""
    from vlmctl.evaluation import generate

    def boom(*_a, **_k):
        raise AssertionError("a model was loaded before every --model was checked")

    monkeypatch.setattr(generate, "load", boom)
    good = tmp_path / "good"
    good.mkdir()
    (good / "config.json").write_text("{}")
    (good / "model.safetensors").write_bytes(b"")
    (good / "tokenizer_config.json").write_text("{}")
    _one_error(cli(str(config_set), "-m", str(good), "-m", str(tmp_path / "typo")), "typo")


def test_no_eval_split_without_data_is_one_line(config_set, tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    (folder / "tokenizer_config.json").write_text("{}")
    _one_error(cli(str(config_set), "--model", str(folder)), "no eval split", "--data")


def test_generation_eval_key_is_vlmctl_own_and_not_an_sft_field(config_set):
    from vlmctl.config.load import load_config_set

    path = config_set / "train_config.yaml"
    path.write_text(path.read_text() + "generation_eval:\n  rows: 4\n  max_new_tokens: 3\n")
    cs = load_config_set(config_set)
    assert cs.train.generation_eval.rows == 4 and cs.train.generation_eval.max_new_tokens == 3
    assert "generation_eval" not in cs.train.to_sft_kwargs()
    path.write_text(path.read_text() + "  bogus: 1\n")
    from vlmctl.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        load_config_set(config_set)
    assert "generation_eval" in str(err.value.findings[0].one_line())


def test_unique_names():
    from vlmctl.evaluation.generate import unique_names

    assert unique_names(["/d/base-model", "/d/run/merged"]) == ["base-model", "merged"]
    assert unique_names(["/a/run/merged", "/b/run/merged"]) == ["a/run/merged", "b/run/merged"]


# --------------------------------------------------------------------------- the demo run (slow)


@pytest.fixture(scope="module")
def demo(demo_run):
    """The session's one `vlmctl demo` run (tests/conftest.py: generation_eval on in training)."""
    return demo_run[0]


@pytest.mark.slow
def test_demo_scores_through_eval_and_links_the_page(demo):
    report = json.loads((demo / "demo-report.json").read_text())
    page = demo / report["eval_page"]
    assert page.is_file() and page.name == "report.html"
    evald = json.loads((demo / report["eval_report"]).read_text())
    assert report["accuracy"] == pytest.approx(evald["metrics"]["merged"]["exact_match"])
    assert report["total"] == evald["n"] == 40
    assert report["accuracy"] >= 3 * report["chance"], report


@pytest.mark.slow
def test_training_wrote_generation_eval_at_each_evaluation(demo):
    """generation_eval in train_config (via --set): a line per evaluation in the run folder."""
    records = [
        json.loads(ln) for ln in (demo / "run" / "generation-eval.jsonl").read_text().splitlines()
    ]
    assert [r["step"] for r in records] == [60, 120]
    assert all(r["n"] == 4 and len(r["rows"]) == 4 for r in records)
    assert [a["row"] for a in records[0]["rows"]] == [0, 1, 2, 3]
    assert all(a["reference"] in COLORS for r in records for a in r["rows"])


@pytest.fixture(scope="module")
def evaluated(demo, tmp_path_factory):
    """`vlmctl eval` of base and merged on the demo's held-out csv (the done-when command)."""
    out = tmp_path_factory.mktemp("evalout") / "E"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    args = [
        sys.executable,
        "-m",
        "vlmctl",
        "eval",
        str(demo / "config"),
        "--model",
        str(demo / "base-model"),
        "--model",
        str(demo / "run" / "merged"),
        "--data",
        str(demo / "data" / "eval.csv"),
        "--out",
        str(out),
        "--max-new-tokens",
        "4",
    ]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return out, proc


@pytest.mark.slow
def test_eval_writes_three_files_and_the_finetune_beats_chance(evaluated):
    out, proc = evaluated
    report = json.loads((out / "eval-report.json").read_text())
    assert report["version"] == 1
    assert [m["name"] for m in report["models"]] == ["base-model", "merged"]
    assert report["n"] == 40 and report["data"]["rows"] == 40
    chance = 1 / len(COLORS)
    merged, base = report["metrics"]["merged"], report["metrics"]["base-model"]
    for m in (merged, base):
        assert set(m) >= {"exact_match", "token_f1", "rouge_l", "anls"}
    assert merged["exact_match"] >= 3 * chance, report["metrics"]
    assert base["exact_match"] < 3 * chance, report["metrics"]
    lines = [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(lines) == 40 * 2
    assert {(d["row"], d["model"]) for d in lines} == {
        (r, m) for r in range(40) for m in ("base-model", "merged")
    }
    # Per-row metrics agree with the report's means.
    em = [d["metrics"]["exact_match"] for d in lines if d["model"] == "merged"]
    assert sum(em) / 40 == pytest.approx(merged["exact_match"])
    assert all(d["reference"] in COLORS for d in lines)
    # The text output ends with the metric table and the page's path.
    tail = proc.stdout.strip().splitlines()
    assert tail[-1] == f"report: {out / 'report.html'}"
    assert any("merged" in ln and f"{merged['exact_match']:.3f}" in ln for ln in tail[:-1])
    assert "eval split" not in proc.stderr and "--data" in proc.stderr


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.rows: dict[int, list[str]] = {}
        self.wrong = 0
        self.external: list[str] = []
        self._row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-row" in a:
            self._row = int(a["data-row"])
            self.rows[self._row] = []
        if tag == "img":
            self.rows.setdefault(self._row, []).append(a.get("src", ""))
        if tag == "td" and "wrong" in (a.get("class") or ""):
            self.wrong += 1
        for key in ("src", "href"):
            if a.get(key) and not a[key].startswith("data:"):
                self.external.append(a[key])


@pytest.mark.slow
def test_report_page_is_self_contained_and_shows_every_row_image(evaluated):
    out, _ = evaluated
    text = (out / "report.html").read_text()
    page = _Page()
    page.feed(text)
    assert sorted(page.rows) == list(range(40))
    assert all(len(srcs) == 1 and srcs[0].startswith("data:image/") for srcs in page.rows.values())
    assert not page.external
    preds = [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]
    assert page.wrong == sum(1 for d in preds if d["metrics"]["exact_match"] < 1)
    assert "sortRows('differ')" in text


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(_chromium() is None, reason="no Chromium installed (apt-get install chromium)")
def test_report_page_renders_every_image_in_headless_chromium(evaluated, tmp_path):
    """A real browser loads the page; a script reports how many images decoded (naturalWidth)."""
    out, _ = evaluated
    probe = tmp_path / "probe.html"
    page = (out / "report.html").read_text()
    check = (
        "<script>window.addEventListener('load',()=>{const imgs=[...document.images];"
        "sortRows('differ');"
        "document.title='IMAGES '+imgs.filter(i=>i.complete&&i.naturalWidth>0).length+'/'"
        "+imgs.length+' ROWS '+document.querySelectorAll('#rows tr').length;});</script>"
    )
    probe.write_text(page.replace("</body>", check + "</body>"))
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probe.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "<title>IMAGES 40/40 ROWS 40</title>" in proc.stdout, proc.stdout[:500]


@pytest.mark.slow
def test_adapter_and_merged_give_the_same_predictions(demo, tmp_path):
    out = tmp_path / "E2"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO))
    args = [sys.executable, "-m", "vlmctl", "eval", str(demo / "config")]
    args += ["-m", str(demo / "run"), "-m", str(demo / "run" / "merged")]
    args += ["--data", str(demo / "data" / "eval.csv"), "--out", str(out)]
    args += ["--max-new-tokens", "4", "--format", "json"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout)
    assert [m["kind"] for m in report["models"]] == ["adapter", "model"]
    lines = [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]
    by_model: dict[str, dict[int, str]] = {}
    for d in lines:
        by_model.setdefault(d["model"], {})[d["row"]] = d["prediction"]
    adapter, merged = by_model["run"], by_model["merged"]
    assert len(adapter) == 40 and adapter == merged


@pytest.mark.slow
def test_default_data_is_the_eval_split_never_training_rows(demo, tmp_path):
    """Without --data: the config's eval split (eval_path, or the eval_size hold-out)."""
    import shutil as sh

    from vlmctl.config.load import load_config_set
    from vlmctl.data.dataset import load_splits
    from vlmctl.evaluation.run import load_rows

    config = tmp_path / "config"
    sh.copytree(demo / "config", config)
    collator = config / "vlm_collator_config.yaml"
    train_csv, held_out = demo / "data" / "train.csv", demo / "data" / "eval.csv"
    base = collator.read_text().replace("../data/train.csv", str(train_csv))
    collator.write_text(_set_eval(base, f"eval_path: {held_out}"))
    data = load_rows(load_config_set(config), None, 5)
    assert data.info["source"] == "config eval split"
    assert "never training rows" in data.info["description"]
    assert [row["image"] for _, row in data.rows] == [r["image"] for r in _csv(held_out)[:5]]

    # eval_size: the rows training held out with its seed, none of those it trained on.
    collator.write_text(_set_eval(base, "eval_size: 0.1"))
    cs = load_config_set(config)
    data = load_rows(cs, None, None)
    assert len(data.rows) == data.info["total_rows"] == 26  # 10% of 256, rounded up
    trained = load_splits(cs.collator, cs.dir, seed=cs.train.seed).train  # what train uses
    assert not {row["image"] for _, row in data.rows} & set(trained["image"])
    assert "held out" in data.info["description"]


def _set_eval(text: str, line: str) -> str:
    """Replace the `eval_size:` line of the demo's collator config (indentation kept)."""
    out = []
    for ln in text.splitlines():
        if ln.strip().startswith("eval_size:"):
            ln = ln[: len(ln) - len(ln.lstrip())] + line
        out.append(ln)
    assert out != text.splitlines()
    return "\n".join(out) + "\n"


def _csv(path: Path) -> list[dict]:
    import csv

    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_split_the_rows_and_gather_the_same_answers(demo, evaluated, tmp_path):
    """`accelerate launch` with 2 CPU processes (gloo): each answers every other row; rank 0
    writes all. (vlmctl's cpu_ddp preset: accelerate starts them through torchrun.)"""
    from vlmctl.training.launch import preset_path

    out = tmp_path / "E3"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(REPO), TMPDIR=str(tmp_path))
    env["CUDA_VISIBLE_DEVICES"] = ""  # two processes on the CPU, whatever the machine has
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(var, None)
    args = [sys.executable, "-m", "accelerate.commands.launch"]
    args += ["--config_file", str(preset_path("cpu_ddp")), "--num_processes", "2", "--quiet"]
    args += ["--main_process_port", str(_free_port())]  # other jobs may hold accelerate's 29500
    args += ["-m", "vlmctl", "eval", str(demo / "config"), "-m", str(demo / "run" / "merged")]
    args += ["--data", str(demo / "data" / "eval.csv"), "--rows", "10", "--out", str(out)]
    args += ["--max-new-tokens", "4", "--format", "json"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "eval-report.json").read_text())
    assert report["generation"]["processes"] == 2 and report["n"] == 10
    lines = [json.loads(ln) for ln in (out / "predictions.jsonl").read_text().splitlines()]
    assert [d["row"] for d in lines] == list(range(10))
    single_out, _ = evaluated
    single = {
        d["row"]: d["prediction"]
        for d in map(json.loads, (single_out / "predictions.jsonl").read_text().splitlines())
        if d["model"] == "merged" and d["row"] < 10
    }
    assert {d["row"]: d["prediction"] for d in lines} == single


@pytest.mark.slow
def test_generation_eval_callback_logs_metrics_to_the_run_folder_and_wandb(
    demo, tmp_path, monkeypatch
):
    """The training-time hook: fixed sample, same metrics, a jsonl line, a wandb table."""
    from types import SimpleNamespace

    import wandb
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmctl.collate import VLMCollator
    from vlmctl.config.load import load_config_set
    from vlmctl.config.train import GenerationEvalConfig
    from vlmctl.data.dataset import load_splits
    from vlmctl.training.generation_eval import LOG_NAME, GenerationEval

    cs = load_config_set(demo / "config")
    ds_cfg = cs.collator.dataset.model_copy(update={"eval_path": str(demo / "data" / "eval.csv")})
    data = load_splits(cs.collator.model_copy(update={"dataset": ds_cfg}), cs.dir)
    merged = demo / "run" / "merged"
    model = AutoModelForImageTextToText.from_pretrained(str(merged)).train()
    collator = VLMCollator(AutoProcessor.from_pretrained(str(merged)), cs.collator, data.media_dirs)
    settings = GenerationEvalConfig(rows=8, max_new_tokens=4, batch_size=4)
    said = []
    cb = GenerationEval(
        collator, data.eval, settings, tmp_path, data.media_dirs, "qwen2_vl", say=said.append
    )
    run = wandb.init(mode="offline", dir=str(tmp_path), project="vlmctl-test")
    logged: list[dict] = []
    real_log = wandb.log
    monkeypatch.setattr(
        wandb, "log", lambda data, *a, **k: (logged.append(data), real_log(data, *a, **k))
    )
    try:
        args = SimpleNamespace(report_to=["wandb"])
        for step in (5, 10):
            state = SimpleNamespace(is_world_process_zero=True, global_step=step)
            cb.on_evaluate(args, state, None, model=model)
        summary = dict(run.summary)
    finally:
        run.finish()
    assert model.training  # put back in training mode
    records = [json.loads(ln) for ln in (tmp_path / LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10]
    assert records[0]["rows"] == records[1]["rows"]  # a fixed sample, same model: same answers
    first = records[0]
    assert first["n"] == 8 and [r["row"] for r in first["rows"]] == list(range(8))
    assert first["metrics"]["exact_match"] >= 3 / len(COLORS)
    assert set(first["metrics"]) >= {"exact_match", "token_f1", "rouge_l", "anls"}
    assert summary["generation_eval/exact_match"] == pytest.approx(first["metrics"]["exact_match"])
    assert summary["generation_eval/samples"]["_type"] == "table-file"
    # The table holds each row's image (wandb stores a table's images in its run_table
    # artifact; the run's own table file shows "Image" placeholders): check what was logged.
    tables = [d["generation_eval/samples"] for d in logged]
    assert len(tables) == 2  # one per evaluation
    col = tables[-1].columns.index("image")
    assert len(tables[-1].data) == 8
    assert all(isinstance(row[col], wandb.Image) for row in tables[-1].data), tables[-1].data[0]
    assert said and "exact_match" in said[0]


def test_progress_bar_shows_rows_per_second_and_an_eta(capsys):
    import time

    from vlmctl.evaluation.run import _progress

    with _progress(True, "merged", 4) as advance:
        for _ in range(4):
            time.sleep(0.05)
            advance(1)
    err = capsys.readouterr().err
    assert "merged" in err and "4/4" in err and "ETA" in err
    assert " rows/s" in err
    with _progress(False, "quiet", 4) as advance:  # other processes: no bar
        advance(4)
    assert capsys.readouterr().err == ""
