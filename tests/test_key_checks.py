"""Issue #19: values validate used to accept and train (or the loss) did not honour.

Each case is a config value changed away from its default; `validate` (the loader's
cross-field rules) must refuse it at the key, saying the allowed values, or say the key has
no effect in this combination. Nothing here loads a model.
"""

from __future__ import annotations

import importlib.util
import platform
import sys
from pathlib import Path

import pytest

from tests._config_util import line_of, write_set
from vlmctl.config import FILES
from vlmctl.config.load import collect_config_set

REPO = Path(__file__).resolve().parent.parent


def findings_for(directory: Path, overrides=()):
    cs, findings = collect_config_set(directory, list(overrides))
    return cs, findings


def one(findings, key: str, severity: str = "error"):
    hits = [f for f in findings if f.severity == severity and (f.key or "").endswith(key)]
    assert hits, f"no {severity} at {key}: {[f.one_line() for f in findings]}"
    return hits[0]


# (file_key, old text, new text, key, fragments the message must carry)
IN_FILE = [
    ("collator", "ignore_index: -100", "ignore_index: -1", "label_masking.ignore_index", ["-100"]),
    ("collator", "ignore_index: -100", "ignore_index: 5", "label_masking.ignore_index", ["-100"]),
    ("train", "logging_steps: 0.1", "logging_steps: 1.5", "logging_steps", ["1.5", "fraction"]),
    ("train", "save_steps: 0.1", "save_steps: 2.5", "save_steps", ["2.5"]),
    ("train", "eval_steps: 0.1", "eval_steps: 1.5", "eval_steps", ["1.5"]),
    (
        "peft",
        'target_modules: "all-linear"',
        'target_modules: "all_linear"',
        "target_modules",
        ["all-linear"],
    ),
    (
        "model",
        'device_map: "auto"',
        'device_map: "gpu"',
        "loading_params.device_map",
        ["auto", "cuda"],
    ),
    ("peft", "lora_dropout: 0.05", "lora_dropout: 1.5", "lora_dropout", [">= 0", "< 1", "1.5"]),
    ("train", "save_total_limit: 2", "save_total_limit: -3", "save_total_limit", [">= 0", "-3"]),
    ("train", 'report_to: ["wandb"]', 'report_to: ["mlflowx"]', "report_to", ["mlflowx"]),
]


@pytest.mark.parametrize("file_key,old,new,key,fragments", IN_FILE, ids=[c[2] for c in IN_FILE])
def test_train_refusals_are_validate_errors_at_their_line(tmp_path, file_key, old, new, key,
                                                          fragments):  # fmt: skip
    directory = write_set(tmp_path / "cfg", **{file_key: (old, new)})
    cs, findings = findings_for(directory)
    assert cs is None
    f = one(findings, key)
    for frag in fragments:
        assert frag in f.one_line(), f.one_line()
    needle = new.split(":")[0] + ":"
    assert f.line == line_of(directory / FILES[file_key], needle), f.one_line()


def test_report_to_misspelled_or_not_installed(tmp_path):
    d = write_set(tmp_path / "cfg")
    f = one(findings_for(d, ["train.report_to=[tensorbord]"])[1], "report_to")
    assert "did you mean 'tensorboard'" in f.one_line()
    if (
        importlib.util.find_spec("tensorboard") is None
        and importlib.util.find_spec("tensorboardX") is None
    ):
        f = one(findings_for(d, ["train.report_to=[tensorboard]"])[1], "report_to")
        assert "not installed" in f.message and "pip install tensorboard" in f.one_line()
    cs, _ = findings_for(d, ["train.report_to=[none]"])
    assert cs is not None


@pytest.mark.parametrize(
    "override,fragment",
    [
        ("train.max_steps=lots", "an integer"),
        ("train.warmup_steps=abc", "a number"),
        ("train.torch_compile=maybe", "true or false"),
        ("train.dataloader_num_workers=1.5", "an integer"),
    ],
)
def test_sftconfig_fields_are_type_checked(tmp_path, override, fragment):
    d = write_set(tmp_path / "cfg")
    key = override.split("=")[0].split(".")[1]
    f = one(findings_for(d, [override])[1], key)
    assert fragment in f.message and "SFTConfig" in f.one_line(), f.one_line()


def test_sftconfig_fields_of_the_right_type_pass(tmp_path):
    d = write_set(tmp_path / "cfg")
    cs, findings = findings_for(
        d, ["train.max_steps=10", "train.warmup_steps=0.1", "train.lr_scheduler_type=cosine",
            "train.torch_compile=false", "train.eval_strategy=no"]
    )  # fmt: skip
    assert cs is not None, [f.one_line() for f in findings if f.severity == "error"]


def test_padding_false_with_batches_of_several_rows_is_refused(tmp_path):
    d = write_set(tmp_path / "cfg", collator=("padding: true", "padding: false"))
    f = one(findings_for(d)[1], "text_processing.padding")
    assert "per_device_train_batch_size" in f.one_line()
    cs, _ = findings_for(d, ["train.per_device_train_batch_size=1"])
    assert cs is not None


def test_keys_without_effect_are_said(tmp_path):
    d = write_set(tmp_path / "cfg", collator=('resize_mode: "keep_aspect"', 'resize_mode: "crop"'))
    cs, findings = findings_for(d)
    f = one(findings, "image_processing.resize_mode", "warning")
    assert "max_size" in f.message and "no effect" in f.message
    cs, findings = findings_for(d, ["collator.image_processing.max_size=64"])
    assert not [x for x in findings if (x.key or "").endswith("resize_mode")]

    d2 = write_set(tmp_path / "cfg2")
    video = [
        "collator.data_processing.video_data=true",
        "collator.data_processing.image_data=false",
        "collator.message_format.training_messages[0].content[1].type=video",
        "collator.video_processing.file_processing.convert_to_rgb=false",
    ]
    _, findings = findings_for(d2, video)
    f = one(findings, "file_processing.convert_to_rgb", "warning")
    assert "no effect" in f.message and "RGB" in f.message


def test_bias_all_with_vision_excluded_is_refused(tmp_path):
    d = write_set(tmp_path / "cfg", peft=('bias: "none"', 'bias: "all"'))
    f = one(findings_for(d)[1], "bias")
    assert "vision" in f.message and "lora_only" in f.one_line()
    cs, _ = findings_for(d, ["peft.exclude_vision_modules=false"])
    assert cs is not None


# --- model_classes against the checkpoint -------------------------------------------------


@pytest.fixture(scope="module")
def qwen(tiny_model_dir):
    return tiny_model_dir("qwen2_vl")


def _entry_set(tmp_path: Path, model: Path, model_class: str, processor_class: str | None,
               trust: bool = False) -> Path:  # fmt: skip
    d = write_set(tmp_path / "cfg")
    path = d / FILES["model"]
    text = path.read_text()
    text = text.replace(
        'model_name_or_path: "Qwen/Qwen2-VL-2B-Instruct"', f'model_name_or_path: "{model}"', 1
    )
    entry = (
        f'    "{model}":\n        model_class: "{model_class}"\n'
        f"        processor_class: {processor_class or 'null'}\n"
        f"        trust_remote_code: {str(trust).lower()}\n"
    )
    path.write_text(text.replace("model_classes:\n", "model_classes:\n" + entry, 1))
    return d


def test_misspelled_processor_class_is_a_located_error(tmp_path, qwen):
    d = _entry_set(tmp_path, qwen, "Qwen2VLForConditionalGeneration", "Qwen2VLProcesor")
    cs, findings = findings_for(d)
    f = one(findings, "processor_class")
    assert cs is None and "did you mean 'Qwen2VLProcessor'" in f.one_line()
    assert f.line == line_of(d / FILES["model"], "processor_class:")


@pytest.mark.parametrize("trust", [False, True])
def test_misspelled_model_class_is_not_called_remote_code(tmp_path, qwen, trust):
    d = _entry_set(tmp_path, qwen, "Qwen2VLForConditionalGen", None, trust=trust)
    cs, findings = findings_for(d)
    f = one(findings, "model_class")
    assert cs is None and "no such class" in f.message and "trust_remote_code" not in f.one_line()
    assert "Qwen2VLForConditionalGeneration" in f.one_line()


def test_model_class_of_another_architecture_is_refused(tmp_path, qwen):
    d = _entry_set(tmp_path, qwen, "LlavaForConditionalGeneration", None)
    cs, findings = findings_for(d)
    f = one(findings, "model_class")
    assert cs is None and "qwen2_vl" in f.message and "llava" in f.message
    d = _entry_set(tmp_path / "ok", qwen, "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor")
    cs, findings = findings_for(d)
    assert cs is not None, [x.one_line() for x in findings if x.severity == "error"]


# --- video: max_duration in the "too short" warning, and which decoder read the clips -------


def test_video_too_short_counts_only_frames_within_max_duration(tmp_path, qwen):
    from test_validate_data import _video, _write_chat, row_findings, validate_json

    data = tmp_path / "data"
    data.mkdir()
    _video(data / "long.mp4", 12)  # 12 frames at 10 fps: 1.2 s
    rows = [
        {"messages": [{"role": "user", "content": "<video>What happens?"},
                      {"role": "assistant", "content": "it gets brighter"}], "videos": ["long.mp4"]}
    ]  # fmt: skip
    conv = "conversation:\n  column: messages\n  images_column: null\n  videos_column: videos\n"
    extra = {
        "data_processing": "{image_data: false, video_data: true}",
        "video_processing": "{frame_extraction: {library: pyav, num_frames: 4}, "
        "file_processing: {max_duration: 0.2}}",
        "text_processing": "{max_length: 2048}",
    }
    cfg = _write_chat(tmp_path, rows, qwen, conv, **extra)
    _, doc = validate_json(cfg)
    assert row_findings(doc).get(0) == [("warning", "video-too-short")]
    (f,) = [f for f in doc["config_sets"][0]["findings"] if f["code"] == "video-too-short"]
    assert "max_duration" in f["message"] and "2 frames" in f["message"]


@pytest.mark.parametrize("library", ["pyav", "decord"])
def test_collator_counts_which_decoder_read_the_clips(tmp_path, qwen, library):
    from test_validate_data import _video

    from vlmctl.collate import VLMCollator
    from vlmctl.config import CollatorConfig, ModelConfig
    from vlmctl.models.resolve import load_processor, resolve_model

    # PyAV is in the data extra this test already needs, and decord in the train extra on
    # x86_64 Linux: a missing one there is a broken install and fails below, not a skip.
    decord_expected = (
        platform.machine() == "x86_64"
        and sys.platform == "linux"
        and importlib.util.find_spec("trl") is not None  # the train extra is installed
    )
    if library == "decord" and not decord_expected and importlib.util.find_spec("decord") is None:
        pytest.skip("decord is a dependency only of the train extra on x86_64 Linux")
    _video(tmp_path / "v.mp4", 12)
    mc = ModelConfig(model_name_or_path=str(qwen))
    proc = load_processor(resolve_model(mc), mc, str(qwen))
    cfg = CollatorConfig.model_validate({
        "data_processing": {"image_data": False, "video_data": True},
        "video_processing": {"frame_extraction": {"library": library, "num_frames": 4}},
        "message_format": {"system_prompt": None, "training_messages": [
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "{question_column}"}]},
            {"role": "assistant", "content": "{answer_column}"}]},
    })  # fmt: skip
    col = VLMCollator(proc, cfg, [tmp_path], model_type="qwen2_vl")
    col([{"video": "v.mp4", "question": "q", "answer": "a", "image": None}])
    used = {k: v for k, v in col.stats.items() if k.startswith("video_decoder_")}
    assert used == {f"video_decoder_{library}": 1}, used


def test_hub_ids_are_checked_against_the_cached_config(tmp_path, monkeypatch):
    """A hub id in the local cache: its config.json is read from the cache's layout."""
    cache = tmp_path / "hub"
    snap = cache / "models--org--vlm" / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (cache / "models--org--vlm" / "refs").mkdir()
    (cache / "models--org--vlm" / "refs" / "main").write_text("abc123")
    (snap / "config.json").write_text(
        '{"model_type": "qwen2_vl", "architectures": ["Qwen2VLForConditionalGeneration"]}'
    )
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    d = _entry_set(tmp_path, "org/vlm", "LlavaForConditionalGeneration", None)  # type: ignore[arg-type]
    f = one(findings_for(d)[1], "model_class")
    assert f.code == "class-mismatch" and "qwen2_vl" in f.message
