"""`vlmctl demo`: the dataset it generates, the config set it writes, and the whole run (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vlmctl.config.load import load_config_set
from vlmctl.demo.colors import COLORS, QUESTION, DemoOptions, write_color_dataset, write_config_set

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
def test_demo_end_to_end(demo_run):
    """The full demo offline (the CLI, as the README runs it): validate, preview, train, merge,
    then held-out accuracy. The session's one demo run (tests/conftest.py), shared with test_eval."""
    out, proc = demo_run
    if proc is None:
        pytest.skip("VLMCTL_TEST_DEMO_DIR reuses a finished demo: no process output to check")
    report = json.loads((out / "demo-report.json").read_text())
    printed = json.loads(proc.stdout)
    assert printed["accuracy"] == report["accuracy"]
    assert report["chance"] == pytest.approx(1 / len(COLORS))
    assert report["total"] == 40
    assert report["accuracy"] >= 3 * report["chance"], report
    assert report["steps"]["validate"] == "ok" and report["steps"]["train"] == "ok"
    assert report["global_step"] == 120
    assert report["train_seconds"] > 0
    assert report["steps"]["preview"] == "ok" and report["steps"]["merge"] == "ok"
    assert (out / report["merged_model"] / "config.json").is_file()
    assert "learned" in proc.stderr


def _fake_verbs(monkeypatch, codes: dict[str, int]) -> list[str]:
    """The demo's subprocess verbs replaced: each returns codes[verb] (train writes a run)."""
    from vlmctl.demo import pipeline as demo

    called: list[str] = []

    def fake_vlmctl(verb, *args, env=None, log):
        called.append(verb)
        if verb == "train":
            run = Path(args[0]).parent / "run"
            run.mkdir()
            (run / "vlmctl-run.json").write_text(json.dumps({"global_step": 1, "finished": True}))
        return codes.get(verb, 0)

    def no_score(*args, **kwargs):
        called.append("score")
        raise AssertionError("the demo scored a model although a step failed")

    monkeypatch.setattr(demo, "_vlmctl", fake_vlmctl)
    monkeypatch.setattr(demo, "score", no_score)
    return called


@pytest.mark.parametrize(
    ("verb", "code"), [("preview", 2), ("preview", 1), ("train", 1), ("merge", 1)]
)
def test_a_failed_step_fails_the_demo_clearly(tmp_path, monkeypatch, verb, code):
    """A failed preview is not "not available yet", and a failed merge is not papered over by
    scoring the adapter: the demo stops with one line naming the step."""
    from vlmctl.demo.pipeline import run_demo
    from vlmctl.errors import VlmctlError

    called = _fake_verbs(monkeypatch, {verb: code})
    opts = DemoOptions(out=tmp_path / "demo", train_images=8, eval_images=4, steps=1)
    with pytest.raises(VlmctlError, match=rf"{verb} failed \(exit {code}\)"):
        run_demo(opts, log=lambda _m: None)
    assert called[-1] == verb and "score" not in called
    assert not (tmp_path / "demo" / "demo-report.json").exists()
