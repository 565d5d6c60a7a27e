"""`vlmctl preview`: a stable JSON schema, the token kinds of a fixed example on the tiny
Qwen2-VL twin, and "trained" meaning exactly "has a label" in the batch `train` gets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _validate_util import LONG_WORDS, Row, jpeg_bytes, write_config_set, write_csv
from typer.testing import CliRunner

from vlmctl.cli import app

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"

ROWS = [
    Row("a.jpg", "what colour is it", "red"),
    Row("b.jpg", "and the size of this picture", "small"),
    Row("a.jpg", "is it square", "yes it is square"),
    Row("b.jpg", LONG_WORDS, "no"),  # too long: dropped (policy drop)
]


def preview(*args: object):
    r = CliRunner().invoke(app, ["preview", *map(str, args)])
    if r.exception is not None and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r


def preview_json(*args: object) -> dict:
    r = preview(*args, "--format", "json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def make_set(root: Path, model: Path, *, mask_input_tokens: bool) -> Path:
    data = root / "data"
    data.mkdir(parents=True)
    (data / "a.jpg").write_bytes(jpeg_bytes(0, 32))
    (data / "b.jpg").write_bytes(jpeg_bytes(1, 64))
    write_csv(data / "train.csv", ROWS)
    return write_config_set(
        root / "config", data / "train.csv", model, policy="drop",
        mask_input_tokens=mask_input_tokens,
    )  # fmt: skip


@pytest.fixture(scope="module")
def qwen(tiny_model_dir):
    return tiny_model_dir("qwen2_vl")


@pytest.fixture(scope="module")
def answers_only(tmp_path_factory, qwen):
    return make_set(tmp_path_factory.mktemp("pv-answers"), qwen, mask_input_tokens=True)


@pytest.fixture(scope="module")
def seed_masking(tmp_path_factory, qwen):
    return make_set(tmp_path_factory.mktemp("pv-seed"), qwen, mask_input_tokens=False)


def test_json_schema_and_token_kinds_snapshot(answers_only):
    doc = preview_json(answers_only, "--rows", "0")
    assert sorted(doc) == ["batch", "config_dir", "model", "rows", "samples", "version"]
    assert doc["version"] == 2 and doc["rows"] == [0]
    assert sorted(doc["model"]) == ["model_class", "model_id", "processor_class", "source"]
    assert doc["model"]["processor_class"] == "Qwen2VLProcessor"
    assert sorted(doc["batch"]) == ["pad_tokens", "padding_fraction", "tensors", "total_tokens"]
    (s,) = doc["samples"]
    assert sorted(s) == [
        "dropped", "length", "media_tokens", "notes", "original_length", "padding_tokens", "row",
        "spans", "supervised_tokens", "text", "tokens", "truncated",
    ]  # fmt: skip
    assert sorted(s["tokens"][0]) == ["id", "kind", "label", "part", "piece"]
    assert sorted(s["spans"][0]) == ["display", "end", "kind", "start"]
    # The token-kind sequence of this fixed example (run lengths), and how it reads.
    assert [(sp["kind"], sp["end"] - sp["start"]) for sp in s["spans"]] == [
        ("prompt", 28), ("media", 6), ("prompt", 5), ("trained", 2), ("prompt", 1),
    ]  # fmt: skip
    assert [sp["display"] for sp in s["spans"]] == [
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "what colour is it",
        "<|vision_start|><image ×4><|vision_end|>",
        "<|im_end|>\n<|im_start|>assistant\n",
        "red<|im_end|>",
        "\n",
    ]
    assert (s["length"], s["supervised_tokens"], s["media_tokens"], s["padding_tokens"]) == (
        42, 2, 6, 0,
    )  # fmt: skip
    assert s["text"].endswith("<|im_start|>assistant\nred<|im_end|>\n")
    assert doc["batch"]["tensors"]["input_ids"] == {"shape": [1, 42], "dtype": "int64"}
    assert doc["batch"]["tensors"]["labels"] == {"shape": [1, 42], "dtype": "int64"}
    assert doc["batch"]["tensors"]["pixel_values"]["dtype"] == "float32"
    assert doc["batch"]["padding_fraction"] == 0.0


@pytest.mark.parametrize("fixture", ["answers_only", "seed_masking"])
def test_trained_tokens_are_exactly_the_labelled_tokens_of_the_train_batch(request, fixture, qwen):
    config = request.getfixturevalue(fixture)
    doc = preview_json(config, "--batch-size", "4")
    assert [s["dropped"] for s in doc["samples"]] == [None, None, None, "too_long"]

    # The batch train gets: the same collator, called the way the Trainer calls it.
    from transformers import AutoProcessor

    from vlmctl.collate import ROW_INDEX_KEY, VLMCollator
    from vlmctl.config.load import load_config_set
    from vlmctl.data.dataset import load_splits

    cs = load_config_set(config)
    data = load_splits(cs.collator, cs.dir)
    collator = VLMCollator(AutoProcessor.from_pretrained(qwen), cs.collator, data.media_dirs)
    rows = [{**data.train[i], ROW_INDEX_KEY: i} for i in range(4)]
    batch = collator(rows)
    ignore = cs.collator.label_masking.ignore_index
    kept = [s for s in doc["samples"] if not s["dropped"]]
    assert batch["input_ids"].shape[0] == len(kept) == 3
    n_trained = 0
    for i, s in enumerate(kept):
        ids = batch["input_ids"][i].tolist()
        labels = batch["labels"][i].tolist()
        assert [t["id"] for t in s["tokens"]] == ids
        for t, label in zip(s["tokens"], labels, strict=True):
            assert (t["kind"] == "trained") == (label != ignore), t
            assert t["label"] == label
            n_trained += t["kind"] == "trained"
        assert s["supervised_tokens"] == sum(1 for x in labels if x != ignore)
    assert n_trained == int((batch["labels"] != ignore).sum())
    pads = sum(s["padding_tokens"] for s in kept)
    assert pads == int((batch["attention_mask"] == 0).sum()) > 0
    assert doc["batch"]["padding_fraction"] == round(pads / batch["input_ids"].numel(), 4)
    for name, t in batch.items():
        assert doc["batch"]["tensors"][name]["shape"] == list(t.shape)


def test_text_output_shows_kinds_media_runs_and_batch(answers_only):
    r = preview(answers_only, "--rows", "0,1,3")
    assert r.exit_code == 0, r.output
    out = r.stdout
    for needle in (
        "legend:",
        "<image ×4>",
        "<image ×16>",
        "rendered chat",
        "pixel_values",
        "image_grid_thw",
        "padding:",
        "row 3",
        "dropped (too_long)",
        "supervised",
    ):
        assert needle in out, needle  # fmt: skip


@pytest.mark.parametrize(
    "args", [("--rows", "0", "--batch-size", "2"), ("--rows", "99"), ("--rows", "x")]
)
def test_bad_rows_are_usage_errors(answers_only, args):
    r = preview(answers_only, *args)
    assert r.exit_code == 2, r.output


@pytest.mark.realdata
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"real datasets not present at {SHARED}")
@pytest.mark.parametrize("example", ["abo_vqa", "llamafactory_mllm", "llamafactory_video"])
def test_preview_on_real_examples(tiny_model_dir, example):
    model = tiny_model_dir("qwen2_vl")
    doc = preview_json(
        REPO / "examples" / example, "--set", f"model.model_name_or_path={model}",
        "--batch-size", "2",
    )  # fmt: skip
    assert len(doc["samples"]) == 2
    for s in doc["samples"]:
        assert s["dropped"] is None and s["supervised_tokens"] > 0 and s["media_tokens"] > 0
        kinds = {t["kind"] for t in s["tokens"]}
        assert {"trained", "media"} <= kinds
    name = "<video ×" if example == "llamafactory_video" else "<image ×"
    assert any(name in sp["display"] for s in doc["samples"] for sp in s["spans"])
