"""The YAML reader: positions of every key, and one clear line for each unreadable file."""

from __future__ import annotations

import pytest
from _config_util import load_yaml

from vlmctl.config.yamlio import dotted, parse_dotted, parse_scalar, read_yaml
from vlmctl.errors import ConfigError


def _one(path):
    doc, problems = read_yaml(path)
    assert doc is None
    assert len(problems) == 1, problems
    return problems[0]


def test_positions_of_keys_and_list_items(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "text_processing:\n"
        "  max_length: 2048\n"
        "message_format:\n"
        "  training_messages:\n"
        "    - role: user\n"
        "      content:\n"
        "        - type: text\n"
        "          text: hi\n"
        "    - {role: assistant, content: [{type: text, text: '{a}'}]}\n"
        "lst: [1, 2]\n",
        encoding="utf-8",
    )
    doc = load_yaml(p)
    assert doc.data["text_processing"]["max_length"] == 2048
    assert doc.positions[("text_processing", "max_length")] == (2, 3)
    assert doc.position(parse_dotted("message_format.training_messages[0].content[0].text")) == (
        8,
        11,
    )
    assert doc.position(parse_dotted("message_format.training_messages[1].content[0].text")) == (
        9,
        48,
    )
    # A key that is not written falls back to its closest written parent.
    assert doc.position(("text_processing", "nope")) == (1, 1)
    assert type(doc.data["lst"]) is list and type(doc.data["text_processing"]) is dict


def test_dotted_round_trip_with_awkward_keys():
    path = ("model_classes", "llava-hf/llava-1.5-7b-hf", "model_class")
    text = dotted(path)
    assert text == 'model_classes["llava-hf/llava-1.5-7b-hf"].model_class'
    assert parse_dotted(text) == path
    assert parse_dotted("a.b[2].c") == ("a", "b", 2, "c")
    with pytest.raises(ValueError):
        parse_dotted("a..b")


def test_syntax_error_has_line_and_col(tmp_path):
    p = tmp_path / "train_config.yaml"
    p.write_text("learning_rate: 1e-5\nreport_to: [wandb\nbf16: true\n", encoding="utf-8")
    f = _one(p)
    assert f.code == "yaml-syntax"
    assert f.message.startswith("YAML syntax error")
    assert f.file == str(p) and f.line is not None and f.line >= 2 and f.col is not None
    assert f"{p}:{f.line}:{f.col}" in f.one_line()


def test_tab_indentation(tmp_path):
    p = tmp_path / "peft_config.yaml"
    p.write_text("r: 8\nlist:\n\t- a\n", encoding="utf-8")
    f = _one(p)
    assert (f.code, f.line, f.col) == ("yaml-tab", 3, 1)
    assert "tab character" in f.message and "spaces" in f.hint


def test_duplicate_key(tmp_path):
    p = tmp_path / "peft_config.yaml"
    p.write_text("r: 8\nlora_alpha: 16\nr: 16\n", encoding="utf-8")
    f = _one(p)
    assert f.code == "yaml-duplicate"
    assert f.message == "duplicate key 'r' (first at line 1)"
    assert (f.line, f.col) == (3, 1)


def test_empty_file_and_comment_only(tmp_path):
    for text in ("", "# only a comment\n"):
        p = tmp_path / "train_config.yaml"
        p.write_text(text, encoding="utf-8")
        f = _one(p)
        assert f.code == "yaml-empty" and "empty" in f.message


def test_list_file(tmp_path):
    p = tmp_path / "train_config.yaml"
    p.write_text("- learning_rate: 1e-5\n- bf16: true\n", encoding="utf-8")
    f = _one(p)
    assert f.code == "yaml-not-mapping"
    assert "holds a list" in f.message and (f.line, f.col) == (1, 1)


def test_non_utf8_bytes(tmp_path):
    p = tmp_path / "train_config.yaml"
    p.write_bytes(b"learning_rate: 1e-5\nrun_name: caf\xe9\n")
    f = _one(p)
    assert f.code == "yaml-encoding"
    assert "0xe9" in f.message and (f.line, f.col) == (2, 14)


def test_missing_file(tmp_path):
    f = _one(tmp_path / "nope.yaml")
    assert f.code == "missing-file" and f.message == "file not found"


def test_python_tags_are_refused_not_run(tmp_path):
    marker = tmp_path / "PWNED"
    p = tmp_path / "train_config.yaml"
    p.write_text(
        f"run_name: !!python/object/apply:os.system ['touch {marker}']\n", encoding="utf-8"
    )
    f = _one(p)
    assert f.code == "yaml-tag" and "not supported" in f.message
    assert not marker.exists()


def test_load_yaml_raises_config_error(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text("a: 1\na: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_yaml(p)
    assert "duplicate key 'a'" in str(info.value)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2e-4", 2e-4),
        ("1.0e-05", 1e-5),
        ("true", True),
        ("16", 16),
        ("null", None),
        ("[a, b]", ["a", "b"]),
        ("hello world", "hello world"),
        ("2024-01-01", "2024-01-01"),
        ("!!python/object/apply:os.system ['id']", "!!python/object/apply:os.system ['id']"),
    ],
)
def test_parse_scalar(text, value):
    assert parse_scalar(text) == value
