"""row_to_example: template variables, braces, media slots, context, video-wins, errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from vlmctl.config.collator import CollatorConfig
from vlmctl.data.messages import Example, row_to_example, template_variables
from vlmctl.errors import ConfigError, DataError


def _cfg(**sections) -> CollatorConfig:
    return CollatorConfig.model_validate(sections)


ROW = {"image": "a.png", "question": "What colour?", "answer": "red", "video": "v.mp4"}


def test_default_template_renders_seed_layout():
    ex = row_to_example(ROW, _cfg(), row_index=3)
    assert isinstance(ex, Example)
    assert ex.row == 3
    assert ex.messages == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Answer briefly."},
                {"type": "image"},
                {"type": "text", "text": "What colour?"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
    ]
    assert ex.images == ["a.png"]
    assert ex.videos == []


def test_variables_extra_columns_and_literal_braces():
    cfg = _cfg(
        dataset_columns={"question_column": "query", "topic_column": "topic"},
        message_format={
            "system_prompt": "Be {{exact}}.",
            "training_messages": [
                {"role": "system", "content": "{system_prompt}"},
                {"role": "user", "content": 'Q about {topic_column}: {question_column} {{"k": 1}}'},
                {"role": "assistant", "content": [{"type": "text", "text": "{answer_column}"}]},
            ],
        },
    )
    row = {"query": "How many?", "topic": "dots", "answer": 3}
    ex = row_to_example(row, cfg, 0)
    # system_prompt is inserted verbatim (its braces are its own text, not template syntax)
    assert ex.messages[0]["content"] == [{"type": "text", "text": "Be {{exact}}."}]
    assert ex.messages[1]["content"] == [
        {"type": "text", "text": 'Q about dots: How many? {"k": 1}'}
    ]
    assert ex.messages[2]["content"] == [{"type": "text", "text": "3"}]  # numbers via str()
    assert template_variables(cfg) == [
        "system_prompt",
        "topic_column",
        "question_column",
        "answer_column",
    ]


@pytest.mark.parametrize("value", [None, "", "   \n"])
def test_empty_value_names_row_and_column(value):
    row = {**ROW, "answer": value}
    with pytest.raises(DataError) as err:
        row_to_example(row, _cfg(), row_index=17)
    f = err.value.findings[0]
    assert f.row == 17
    assert "'answer'" in f.message and f.key == "dataset_columns.answer_column"
    assert "row 17" in str(err.value)


def test_missing_column_suggests_close_name():
    row = {"image": "a.png", "question": "q", "answr": "x"}
    with pytest.raises(DataError) as err:
        row_to_example(row, _cfg(), row_index=2)
    f = err.value.findings[0]
    assert f.row == 2 and "no column 'answer'" in f.message and "answr" in f.hint


def test_missing_image_is_an_error_not_a_text_only_row():
    with pytest.raises(DataError) as err:
        row_to_example({**ROW, "image": None}, _cfg(), row_index=5)
    assert err.value.findings[0].row == 5
    assert err.value.findings[0].key == "dataset_columns.image_column"


def test_unknown_variable_is_a_config_error_with_suggestion():
    cfg = _cfg(
        message_format={"training_messages": [{"role": "user", "content": "{questoin_column}"}]}
    )
    with pytest.raises(ConfigError) as err:
        row_to_example(ROW, cfg, 0)
    assert "questoin_column" in err.value.findings[0].message
    assert "question_column" in err.value.findings[0].hint


def test_null_mapped_column_used_by_template_is_a_config_error():
    cfg = _cfg(
        dataset_columns={"question_column": None},
        message_format={"training_messages": [{"role": "user", "content": "{question_column}"}]},
    )
    with pytest.raises(ConfigError):
        row_to_example(ROW, cfg, 0)


def test_whitespace_only_text_part_and_empty_message_are_dropped():
    cfg = _cfg(
        message_format={
            "system_prompt": None,
            "training_messages": [
                {"role": "system", "content": "{system_prompt}"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "{system_prompt}"},
                        {"type": "image"},
                        {"type": "text", "text": "{question_column}"},
                    ],
                },
                {"role": "assistant", "content": "{answer_column}"},
            ],
        }
    )
    ex = row_to_example(ROW, cfg, 0)
    assert [m["role"] for m in ex.messages] == ["user", "assistant"]
    assert ex.messages[0]["content"] == [
        {"type": "image"},
        {"type": "text", "text": "What colour?"},
    ]


def test_one_image_part_takes_the_whole_list_in_order():
    ex = row_to_example({**ROW, "image": ["a.png", "b.png", "c.png"]}, _cfg(), 0)
    assert ex.images == ["a.png", "b.png", "c.png"]
    parts = ex.messages[0]["content"]
    assert [p["type"] for p in parts] == ["text", "image", "image", "image", "text"]


def test_several_image_parts_match_list_items_one_to_one():
    cfg = _cfg(
        message_format={
            "training_messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image"},
                        {"type": "text", "text": "vs"},
                        {"type": "image"},
                    ],
                },
                {"role": "assistant", "content": "{answer_column}"},
            ]
        }
    )
    ex = row_to_example({**ROW, "image": ["a.png", "b.png"]}, cfg, 0)
    assert ex.images == ["a.png", "b.png"]
    assert [p["type"] for p in ex.messages[0]["content"]] == ["image", "text", "image"]
    with pytest.raises(DataError) as err:
        row_to_example({**ROW, "image": ["a.png", "b.png", "c.png"]}, cfg, 4)
    assert err.value.findings[0].row == 4 and "2 image parts" in err.value.findings[0].message


def test_empty_item_in_media_list_is_an_error():
    with pytest.raises(DataError) as err:
        row_to_example({**ROW, "image": ["a.png", ""]}, _cfg(), 9)
    assert err.value.findings[0].row == 9


def test_context_column_prepended_when_template_does_not_place_it():
    cfg = _cfg(dataset_columns={"context_column": "ctx"})
    ex = row_to_example({**ROW, "ctx": "It is a flag."}, cfg, 0)
    first = ex.messages[0]["content"]
    assert first[0] == {"type": "text", "text": "It is a flag.\n"}
    assert first[1] == {"type": "text", "text": "Answer briefly."}
    with pytest.raises(DataError) as err:
        row_to_example({**ROW, "ctx": ""}, cfg, 11)
    assert err.value.findings[0].row == 11 and "'ctx'" in err.value.findings[0].message


def test_context_column_placed_by_template_is_not_duplicated():
    cfg = _cfg(
        dataset_columns={"context_column": "ctx"},
        message_format={
            "training_messages": [
                {"role": "user", "content": "{question_column} Context: {context_column}"},
                {"role": "assistant", "content": "{answer_column}"},
            ]
        },
    )
    ex = row_to_example({**ROW, "ctx": "flag"}, cfg, 0)
    assert ex.messages[0]["content"] == [{"type": "text", "text": "What colour? Context: flag"}]


def test_video_only_turns_image_slot_into_video_slot():
    # The seed's scenario 2: only the flags change, the template keeps its image part.
    cfg = _cfg(data_processing={"image_data": False, "video_data": True})
    ex = row_to_example(ROW, cfg, 0)
    assert ex.images == [] and ex.videos == ["v.mp4"]
    assert [p["type"] for p in ex.messages[0]["content"]] == ["text", "video", "text"]


def test_both_on_keeps_image_and_video_parts():
    msgs = [
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "q"}],
        },
        {"role": "assistant", "content": "{answer_column}"},
    ]
    both = _cfg(
        data_processing={"image_data": True, "video_data": True},
        message_format={"training_messages": msgs},
    )
    ex = row_to_example(ROW, both, 0)
    assert ex.images == ["a.png"] and ex.videos == ["v.mp4"]
    assert [p["type"] for p in ex.messages[0]["content"]] == ["image", "video", "text"]
    images_only = _cfg(message_format={"training_messages": msgs})
    ex = row_to_example(ROW, images_only, 0)
    assert ex.images == ["a.png"] and ex.videos == []
    assert [p["type"] for p in ex.messages[0]["content"]] == ["image", "text"]
    video_disabled = _cfg(
        data_processing={"image_data": False, "video_data": True},
        video_processing={"enabled": False},
        message_format={"training_messages": msgs},
    )
    ex = row_to_example(ROW, video_disabled, 0)
    assert ex.images == [] and ex.videos == []


def test_conversation_config_delegates_to_chat(monkeypatch):
    import vlmctl.data.chat as chat

    seen = {}

    def fake(row, cfg, row_index):
        seen["args"] = (row, row_index)
        return Example(messages=[], row=row_index)

    monkeypatch.setattr(chat, "conversation_to_example", fake)
    cfg = _cfg(conversation={"column": "messages"})
    ex = row_to_example({"messages": []}, cfg, 8)
    assert ex.row == 8 and seen["args"] == ({"messages": []}, 8)


def test_messages_module_imports_no_heavy_library():
    code = (
        "import sys, vlmctl.data.messages; "
        "bad = [m for m in ('torch', 'transformers', 'trl', 'datasets') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
