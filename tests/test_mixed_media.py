"""Issue #13, data that must work: mixed images and video, inline media, mixed-type JSON
folders, and no invented system prompt for chat datasets (generated data only)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _mixed_util import (
    MIXED_COLLATOR,
    content_parts_rows,
    write_config_set,
    write_image,
    write_shape,
)
from typer.testing import CliRunner

from vlmctl.cli import app
from vlmctl.config.collator import CollatorConfig
from vlmctl.data.messages import row_to_example


def validate_json(*args) -> tuple[int, dict]:
    r = CliRunner().invoke(app, ["validate", *map(str, args), "--format", "json"])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, json.loads(r.stdout)


def findings(doc: dict) -> list[dict]:
    return doc["config_sets"][0]["findings"]


def problems(doc: dict) -> list[str]:
    return [f["text"] for f in findings(doc) if f["severity"] in ("error", "warning")]


def both_cfg(**extra) -> CollatorConfig:
    return CollatorConfig.model_validate(
        {
            "data_processing": {"image_data": True, "video_data": True},
            "conversation": {"column": "messages", "images_column": None, "videos_column": None},
            **extra,
        }
    )


# --- 1. mixed images and video -------------------------------------------------------------


def test_both_on_keeps_each_rows_images_and_videos():
    cfg = both_cfg()
    got = [row_to_example(r, cfg, i) for i, r in enumerate(content_parts_rows())]
    assert [(len(e.images), len(e.videos)) for e in got] == [(2, 0), (0, 1), (1, 1), (1, 0)]
    assert all(not e.notes for e in got)
    kinds = [p["type"] for p in got[2].messages[0]["content"]]
    assert kinds == ["image", "video", "text"]


def test_both_on_flat_rows_take_what_each_row_has():
    msgs = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "q"}],
        },
        {"role": "assistant", "content": "{answer_column}"},
    ]
    cfg = CollatorConfig.model_validate(
        {
            "data_processing": {"image_data": True, "video_data": True},
            "message_format": {"training_messages": msgs},
        }
    )
    img_row = {"image": "a.png", "video": None, "question": "q", "answer": "a"}
    vid_row = {"image": "", "video": "v.mp4", "question": "q", "answer": "a"}
    both_row = {"image": "a.png", "video": "v.mp4", "question": "q", "answer": "a"}
    assert (row_to_example(img_row, cfg).images, row_to_example(img_row, cfg).videos) == (
        ["a.png"],
        [],
    )
    assert row_to_example(vid_row, cfg).videos == ["v.mp4"]
    ex = row_to_example(both_row, cfg)
    assert ex.images == ["a.png"] and ex.videos == ["v.mp4"]
    from vlmctl.errors import DataError

    with pytest.raises(DataError, match="neither an image"):
        row_to_example({"image": None, "video": "", "question": "q", "answer": "a"}, cfg, 3)


def _processor(path):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(str(path))


def test_video_wins_only_for_a_processor_that_takes_one_kind(tiny_model_dir):
    from vlmctl.collate import VLMCollator, takes_images_and_videos

    cfg = both_cfg()
    row = content_parts_rows()[2]
    qwen = VLMCollator(_processor(tiny_model_dir("qwen2_vl")), cfg, model_type="qwen2_vl")
    assert takes_images_and_videos(qwen.processor)
    ex = qwen.fit_media(row_to_example(row, cfg, 2))
    assert len(ex.images) == 1 and len(ex.videos) == 1 and not ex.notes

    smol = _processor(tiny_model_dir("smolvlm"))
    llava = _processor(tiny_model_dir("llava"))
    assert not takes_images_and_videos(smol) and not takes_images_and_videos(llava)
    col = VLMCollator(smol, cfg, model_type="smolvlm")
    ex = col.fit_media(row_to_example(row, cfg, 2))
    assert ex.images == [] and len(ex.videos) == 1
    assert [p["type"] for p in ex.messages[0]["content"]] == ["video", "text"]
    assert "video wins" in ex.notes[0] and "SmolVLMProcessor" in ex.notes[0]


def test_mixed_dataset_validates_clean_with_both_kinds_counted(tiny_model_dir, tmp_path):
    write_shape("content_parts", tmp_path / "data")
    config = write_config_set(tmp_path / "config", tiny_model_dir("qwen2_vl"), MIXED_COLLATOR)
    code, doc = validate_json(config)
    assert code == 0, problems(doc)
    assert problems(doc) == []
    media = doc["config_sets"][0]["data"]["media"]
    assert media == {"images": 4, "videos": 2, "rows_with_images": 3, "rows_with_videos": 2}
    text = CliRunner().invoke(app, ["validate", str(config)]).stdout
    assert "4 images in 3 rows · 2 videos in 2 rows" in text


def test_validate_lists_video_wins_rows_for_a_one_kind_processor(tiny_model_dir, tmp_path):
    write_shape("content_parts", tmp_path / "data")
    collator = {**MIXED_COLLATOR}
    config = write_config_set(tmp_path / "config", tiny_model_dir("smolvlm"), collator)
    _, doc = validate_json(config)  # the tiny SmolVLM twin has no video token: video rows fail
    rows = {
        f["row"] for f in findings(doc) if "video wins" in f["message"] and f["row"] is not None
    }
    assert rows == {2}, findings(doc)


# --- 2. inline media as a first-class source -----------------------------------------------


def test_inline_media_need_no_column(tmp_path):
    from vlmctl.config.load import load_config_set

    write_shape("content_parts", tmp_path / "data")
    config = write_config_set(tmp_path / "config", "Qwen/Qwen2-VL-2B-Instruct", MIXED_COLLATOR)
    cs = load_config_set(config)
    bad = [f.one_line() for f in cs.findings if f.severity in ("error", "warning")]
    assert not [b for b in bad if "column" in b], bad


def test_inline_media_are_checked_like_column_media(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    write_shape("content_parts", data)
    rows = content_parts_rows()
    rows[1]["messages"][0]["content"][0]["video"] = "media/missing.mp4"
    (data / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = write_config_set(tmp_path / "config", tiny_model_dir("qwen2_vl"), MIXED_COLLATOR)
    code, doc = validate_json(config)
    assert code == 1
    errs = [(f["row"], f["code"]) for f in findings(doc) if f["severity"] == "error"]
    assert errs == [(1, "media-not-found")], errs


def test_video_on_but_no_row_carries_a_video_warns(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    write_shape("content_parts", data)
    rows = [content_parts_rows()[0], content_parts_rows()[3]]
    (data / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = write_config_set(tmp_path / "config", tiny_model_dir("qwen2_vl"), MIXED_COLLATOR)
    _, doc = validate_json(config)
    assert [f["code"] for f in findings(doc) if f["severity"] == "warning"] == ["no-media-in-rows"]


# --- 3. a folder of JSON files with mixed value types --------------------------------------


def _json_folder(root: Path) -> Path:
    folder = root / "data" / "json"
    write_image(root / "data" / "images" / "panda.jpeg", 3)
    write_image(root / "data" / "images" / "cat.png", 4)
    conv = [{"from": "human", "value": "<image>What?"}, {"from": "gpt", "value": "An animal."}]
    folder.mkdir(parents=True)
    (folder / "a.json").write_text(
        json.dumps([{"image": "data/images/panda.jpeg", "conversations": conv}])
    )
    (folder / "b.json").write_text(
        json.dumps([{"image": ["data/images/cat.png"], "conversations": conv}])
    )
    text_only = [{"from": "human", "value": "Hi?"}, {"from": "gpt", "value": "Hello."}]
    (folder / "c.json").write_text(json.dumps([{"conversations": text_only}]))
    return folder


def test_json_folder_with_mixed_value_types_keeps_paths_clean(tiny_model_dir, tmp_path):
    from vlmctl.data.dataset import load_splits

    _json_folder(tmp_path)
    collator = {
        "dataset": {"path": "../data/json", "media_root": ".."},
        "conversation": {
            "column": "conversations",
            "role_key": "from",
            "content_key": "value",
            "images_column": "image",
            "videos_column": None,
        },
    }
    config = write_config_set(tmp_path / "config", tiny_model_dir("qwen2_vl"), collator)
    cfg = CollatorConfig.model_validate(collator)
    data = load_splits(cfg, config)
    refs = sorted(
        ref for i, row in enumerate(data.train) for ref in row_to_example(row, cfg, i).images
    )
    assert refs == ["data/images/cat.png", "data/images/panda.jpeg"]
    code, doc = validate_json(config)
    assert code == 0, problems(doc)


def test_flat_rows_parse_json_text_media_lists():
    cfg = CollatorConfig.model_validate({})
    row = {"image": '["a.png", "b.png"]', "question": "q", "answer": "a"}
    assert row_to_example(row, cfg).images == ["a.png", "b.png"]


# --- 4. no invented system prompt for chat datasets ----------------------------------------


def test_chat_rows_get_no_scaffold_system_prompt():
    cfg = both_cfg()
    assert cfg.message_format.system_prompt == "Answer briefly."  # the scaffold's default
    ex = row_to_example(content_parts_rows()[0], cfg, 0)
    assert [m["role"] for m in ex.messages] == ["user", "assistant"]
    assert ex.system_source == "template default"
    own = both_cfg()
    own.conversation.system_prompt = "Be terse."
    ex = row_to_example(content_parts_rows()[0], own, 0)
    assert ex.messages[0] == {"role": "system", "content": [{"type": "text", "text": "Be terse."}]}


def test_validate_says_which_system_prompt_each_row_shape_gets(tiny_model_dir, tmp_path):
    data = tmp_path / "data"
    write_shape("content_parts", data)
    rows = content_parts_rows()
    rows[3]["messages"].insert(0, {"role": "system", "content": "Own prompt."})
    (data / "mixed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = write_config_set(tmp_path / "config", tiny_model_dir("qwen2_vl"), MIXED_COLLATOR)
    _, doc = validate_json(config)
    notes = {f["code"]: f["message"] for f in findings(doc) if f["severity"] == "info"}
    assert "system-prompt" in notes and "Answer briefly." in notes["system-prompt"]
    text = notes["system-prompt-rows"]
    assert "3 row(s) (e.g. row 0)" in text and "chat template's default" in text
    assert "1 row(s) (e.g. row 3): their own system turn" in text


# --- done when: a mixed image/video dataset validates, previews, trains and merges ----------


@pytest.mark.slow
def test_mixed_dataset_previews_trains_and_merges(tiny_model_dir, tmp_path):
    import os
    import subprocess
    import sys

    write_shape("content_parts", tmp_path / "data")
    config = write_config_set(tmp_path / "config", tiny_model_dir("qwen2_vl"), MIXED_COLLATOR)
    r = CliRunner().invoke(app, ["preview", str(config), "--rows", "0-3", "--format", "json"])
    assert r.exit_code == 0, r.output
    samples = json.loads(r.stdout)["samples"]
    assert [s["dropped"] for s in samples] == [None] * 4
    pads = [
        (
            sum(t["piece"] == "<|image_pad|>" for t in s["tokens"]),
            sum(t["piece"] == "<|video_pad|>" for t in s["tokens"]),
        )
        for s in samples
    ]
    # rows: two images / one video / an image and a video / one image
    assert [(i > 0, v > 0) for i, v in pads] == [
        (True, False),
        (False, True),
        (True, True),
        (True, False),
    ], pads
    assert all(s["media_tokens"] >= i + v for s, (i, v) in zip(samples, pads, strict=True))

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env["TMPDIR"] = str(tmp_path)

    def vlmctl(*args):
        return subprocess.run(
            [sys.executable, "-m", "vlmctl", *map(str, args)],
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=600,
        )

    train = vlmctl("train", config)
    assert train.returncode == 0, train.stderr[-3000:]
    assert "done: 2 steps" in train.stderr and "loss trend" in train.stderr
    assert "video decoded with" in train.stderr  # which decoder read the clips (#19 item 7)
    merge = vlmctl("merge", tmp_path / "run", "--output", tmp_path / "merged")
    assert merge.returncode == 0, merge.stderr[-3000:] + merge.stdout[-3000:]
    report = json.loads((tmp_path / "merged" / "merge-report.json").read_text())
    assert report["verify"]["passed"] is True
