"""Loading a config set: every problem of all four files at once, placed at file:line:col."""

from __future__ import annotations

import pytest
from _config_util import edit, line_of, write_set

from vlmctl.config.load import collect_config_set, load_config_set, parse_override
from vlmctl.errors import ConfigError, UsageError


def _errors(directory, overrides=()):
    cs, findings = collect_config_set(directory, overrides)
    errors = [f for f in findings if f.severity == "error"]
    return cs, errors, findings


def _only(errors, code=None):
    picked = [e for e in errors if code is None or e.code == code]
    assert len(picked) == 1, [e.one_line() for e in errors]
    return picked[0]


def test_template_set_loads_with_notes(tmp_path):
    cs = load_config_set(write_set(tmp_path / "s"))
    assert cs.model.model_name_or_path == "Qwen/Qwen2-VL-2B-Instruct"
    assert cs.train.learning_rate == 1e-5 and cs.peft.r == 64
    assert cs.collator.dataset_columns.question_column == "question"
    codes = {f.code for f in cs.findings}
    assert "no-dataset" in codes and "mapping" in codes
    assert all(f.severity != "error" for f in cs.findings)
    file, line, col = cs.location("collator", "text_processing.max_length")
    assert file.endswith("vlm_collator_config.yaml")
    assert line == line_of(cs.files["collator"], "max_length: 2048") and col == 5


def test_missing_file_in_set(tmp_path):
    d = write_set(tmp_path / "s")
    (d / "peft_config.yaml").unlink()
    cs, errors, _ = _errors(d)
    assert cs is None
    f = _only(errors)
    assert f.code == "missing-file" and f.file == str(d / "peft_config.yaml")
    assert "vlmctl init" in f.hint


def test_unknown_train_key_suggests(tmp_path):
    d = write_set(tmp_path / "s", train=("learning_rate:", "learning_rat:"))
    _, errors, _ = _errors(d)
    f = _only(errors)
    assert f.message == "learning_rat: unknown key"
    assert f.hint == "did you mean 'learning_rate'?"
    assert (f.file, f.line, f.col) == (
        str(d / "train_config.yaml"),
        line_of(d / "train_config.yaml", "learning_rat:"),
        1,
    )


def test_sft_config_field_is_accepted_and_typos_of_it_suggested(tmp_path):
    d = write_set(
        tmp_path / "s", train=("seed: 42", "seed: 42\nmax_steps: 10\nlr_scheduler_typ: cosine")
    )
    _, errors, _ = _errors(d)
    f = _only(errors)
    assert f.key == "lr_scheduler_typ" and f.hint == "did you mean 'lr_scheduler_type'?"


def test_key_in_the_wrong_file_says_where_it_belongs(tmp_path):
    d = write_set(tmp_path / "s", peft=("r: 64", "r: 64\nmax_length: 512"))
    _, errors, _ = _errors(d)
    f = _only(errors)
    assert f.message == "max_length: unknown key"
    # max_length is nested in the collator file, not top level; lora_alpha is top level.
    d2 = write_set(tmp_path / "t", train=("seed: 42", "seed: 42\nlora_dropout: 0.1"))
    _, errors, _ = _errors(d2)
    assert _only(errors).hint == "this key belongs in peft_config.yaml"


def test_r_as_words(tmp_path):
    d = write_set(tmp_path / "s", peft=("r: 64 ", 'r: "sixty-four" '))
    _, errors, _ = _errors(d)
    f = _only(errors)
    assert f.message == "r: expected a positive integer, got 'sixty-four'"
    assert (f.line, f.col, f.key) == (line_of(d / "peft_config.yaml", "sixty-four"), 1, "r")


def test_num_frames_negative(tmp_path):
    d = write_set(tmp_path / "s", collator=("num_frames: 8", "num_frames: -1"))
    _, errors, _ = _errors(d)
    f = _only(errors)
    assert f.message == "num_frames: expected a positive integer, got -1"
    assert f.key == "video_processing.frame_extraction.num_frames"
    assert (f.line, f.col) == (line_of(d / "vlm_collator_config.yaml", "num_frames: -1"), 9)


def test_resize_mode_lists_allowed_values(tmp_path):
    d = write_set(tmp_path / "s", collator=('resize_mode: "keep_aspect"', "resize_mode: squash"))
    _, errors, _ = _errors(d)
    f = _only(errors)
    assert f.message == "resize_mode: expected one of keep_aspect, crop, stretch, got 'squash'"
    assert f.line == line_of(d / "vlm_collator_config.yaml", "resize_mode: squash")
    d2 = write_set(tmp_path / "t", collator=('resize_mode: "keep_aspect"', "resize_mode: stretc"))
    assert _only(_errors(d2)[1]).hint == "did you mean 'stretch'?"


def test_torch_dtype_injection_is_rejected_not_run(tmp_path):
    marker = tmp_path / "PWNED"
    payload = f"__import__('os').system('touch {marker}')"
    d = write_set(
        tmp_path / "s", model=('torch_dtype: "torch.bfloat16"', f'torch_dtype: "{payload}"')
    )
    _, errors, _ = _errors(d)
    f = _only(errors)
    assert f.key == "loading_params.torch_dtype" and "unknown dtype" in f.message
    assert "torch.bfloat16" in f.one_line()  # the allowed values are the fix
    assert f.line == line_of(d / "vlm_model_config.yaml", "torch_dtype:")
    assert not marker.exists()


def test_placeholder_typo(tmp_path):
    d = write_set(tmp_path / "s", collator=("{question_column}", "{questoin_column}"))
    _, errors, _ = _errors(d)
    f = _only(errors)
    assert f.code == "unknown-placeholder"
    assert f.message == "{questoin_column} is not a key of dataset_columns nor system_prompt"
    assert f.hint == "did you mean {question_column}?"
    assert f.key == "message_format.training_messages[0].content[2].text"
    assert (f.line, f.col) == (line_of(d / "vlm_collator_config.yaml", "{questoin_column}"), 17)


def test_bf16_and_fp16(tmp_path):
    d = write_set(tmp_path / "s", train=("fp16: false", "fp16: true"))
    _, errors, _ = _errors(d)
    f = _only(errors)
    assert f.code == "precision-both" and "exclusive" in f.message
    assert (f.key, f.line) == ("fp16", line_of(d / "train_config.yaml", "fp16: true"))


def test_both_media_flags_false(tmp_path):
    d = write_set(tmp_path / "s", collator=("\n    image_data: true", "\n    image_data: false"))
    _, errors, _ = _errors(d)
    f = _only(errors)
    assert f.code == "no-media" and "both false" in f.message
    assert (f.key, f.line) == (
        "data_processing",
        line_of(d / "vlm_collator_config.yaml", "data_processing:"),
    )


def test_every_problem_of_every_file_at_once(tmp_path):
    d = write_set(
        tmp_path / "s",
        peft=("r: 64 ", 'r: "sixty-four" '),
        train=("fp16: false", "fp16: true"),
        collator=("{question_column}", "{questoin_column}"),
        model=('torch_dtype: "torch.bfloat16"', 'torch_dtype: "float128"'),
    )
    edit(d / "vlm_collator_config.yaml", "num_frames: 8", "num_frames: 0")
    _, errors, _ = _errors(d)
    assert {e.code for e in errors} == {"invalid-value", "precision-both", "unknown-placeholder"}
    assert {e.key for e in errors} == {
        "r",
        "fp16",
        "loading_params.torch_dtype",
        "video_processing.frame_extraction.num_frames",
        "message_format.training_messages[0].content[2].text",
    }
    with pytest.raises(ConfigError) as info:
        load_config_set(d)
    assert len(info.value.findings) == 5
    assert len(str(info.value).splitlines()) == 5


def test_media_flag_without_column(tmp_path):
    d = write_set(tmp_path / "s", collator=('image_column: "image"', "image_column: null"))
    f = _only(_errors(d)[1])
    assert f.code == "media-column" and f.key == "dataset_columns.image_column"


def test_no_assistant_turn(tmp_path):
    d = write_set(tmp_path / "s", collator=('- role: "assistant"', '- role: "user"'))
    assert _only(_errors(d)[1]).code == "no-assistant"


def test_both_media_on_is_a_note_not_a_dropped_part(tmp_path):
    d = write_set(tmp_path / "s", collator=("\n    video_data: false", "\n    video_data: true"))
    edit(
        d / "vlm_collator_config.yaml",
        '- type: "image"',
        '- type: "video"\n              - type: "image"',
    )
    cs, errors, findings = _errors(d)
    assert errors == [] and cs is not None
    assert not {f.code for f in findings if f.severity == "warning"} & {"video-wins", "part-off"}
    assert "both-media" in {f.code for f in findings if f.severity == "info"}


def test_video_on_without_video_part(tmp_path):
    d = write_set(tmp_path / "s", collator=("\n    image_data: true", "\n    image_data: false"))
    edit(d / "vlm_collator_config.yaml", "\n    video_data: false", "\n    video_data: true")
    assert _only(_errors(d)[1]).code == "media-part"


def test_remove_unused_columns_true_warns(tmp_path):
    d = write_set(
        tmp_path / "s", train=("remove_unused_columns: false", "remove_unused_columns: true")
    )
    cs = load_config_set(d)
    assert any(f.code == "remove-unused" and f.severity == "warning" for f in cs.findings)


def test_remote_code_entry_without_trust_is_an_error(tmp_path):
    d = write_set(tmp_path / "s")
    edit(
        d / "vlm_model_config.yaml",
        'model_name_or_path: "Qwen/Qwen2-VL-2B-Instruct"',
        'model_name_or_path: "OpenGVLab/InternVL2-2B"',
    )
    assert load_config_set(d).model.model_classes["OpenGVLab/InternVL2-2B"].trust_remote_code
    edit(d / "vlm_model_config.yaml", "trust_remote_code: true   #", "trust_remote_code: false   #")
    f = _only(_errors(d)[1])
    assert f.code == "remote-code-off" and "InternVLChatModel" in f.message
    assert f.key == 'model_classes["OpenGVLab/InternVL2-2B"]'
    assert f.line == line_of(d / "vlm_model_config.yaml", '"OpenGVLab/InternVL2-2B":')


# ---- overrides ----


def test_override_parsing():
    ov = parse_override("learning_rate=2e-4")
    assert (ov.file_key, ov.path, ov.value) == ("train", ("learning_rate",), 2e-4)
    ov = parse_override("collator.video_processing.frame_extraction.num_frames=16")
    assert (ov.file_key, ov.path, ov.value) == (
        "collator",
        ("video_processing", "frame_extraction", "num_frames"),
        16,
    )
    assert parse_override("peft.target_modules=[q_proj, v_proj]").value == ["q_proj", "v_proj"]
    for bad in ("learning_rate", "=3", "a..b=1"):
        with pytest.raises(UsageError):
            parse_override(bad)


def test_overrides_apply(tmp_path):
    d = write_set(tmp_path / "s")
    cs = load_config_set(
        d,
        [
            "train.learning_rate=2e-4",
            "num_train_epochs=3",
            "peft.r=16",
            "collator.dataset.path=data/train.csv",
        ],
    )
    assert cs.train.learning_rate == 2e-4 and cs.train.num_train_epochs == 3
    assert cs.peft.r == 16 and cs.collator.dataset.path == "data/train.csv"
    assert cs.location("peft", "r") == ("--set peft.r=16", None, None)


def test_override_to_unknown_key_names_the_override(tmp_path):
    d = write_set(tmp_path / "s")
    _, errors, _ = _errors(d, ["train.learning_rat=2e-4", "peft.r=0"])
    by_key = {e.key: e for e in errors}
    assert by_key["learning_rat"].file == "--set train.learning_rat=2e-4"
    assert by_key["learning_rat"].hint == "did you mean 'learning_rate'?"
    assert by_key["r"].one_line().startswith("--set peft.r=0 (r): r: expected a positive integer")


def test_override_value_is_never_evaluated(tmp_path):
    marker = tmp_path / "PWNED"
    d = write_set(tmp_path / "s")
    payload = f"model.loading_params.torch_dtype=__import__('os').system('touch {marker}')"
    _, errors, _ = _errors(d, [payload])
    assert _only(errors).key == "loading_params.torch_dtype"
    assert not marker.exists()
