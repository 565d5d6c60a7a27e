"""Chat-shaped rows -> Example (vlmctl/data/chat.py): shapes, tags, roles, media rules."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from PIL import Image

from vlmctl.config.collator import CollatorConfig
from vlmctl.data.chat import conversation_to_example
from vlmctl.data.example import Example
from vlmctl.data.messages import row_to_example
from vlmctl.errors import DataError


def cfg_for(conversation: dict | None = None, **top) -> CollatorConfig:
    conv = {"column": "messages", **(conversation or {})}
    data = {"conversation": conv, "message_format": {"system_prompt": None}, **top}
    return CollatorConfig.model_validate(data)


LLAVA = {"column": "conversations", "role_key": "from", "content_key": "value"}


def texts(ex: Example) -> list[list]:
    """Per message: the parts as 'text' strings or '<image>'/'<video>' markers."""
    return [
        [p["text"] if p["type"] == "text" else f"<{p['type']}>" for p in m["content"]]
        for m in ex.messages
    ]


def roles(ex: Example) -> list[str]:
    return [m["role"] for m in ex.messages]


def test_role_content_string_with_tags_split_into_parts():
    row = {
        "messages": [
            {"role": "user", "content": "<image>\nWho are they?"},
            {"role": "assistant", "content": "Kane and Gretzka."},
            {"role": "user", "content": "What are they doing?<image>"},
            {"role": "assistant", "content": "Celebrating."},
        ],
        "images": ["a.jpg", "b.jpg"],
    }
    ex = conversation_to_example(row, cfg_for(), row_index=3)
    assert roles(ex) == ["user", "assistant", "user", "assistant"]
    assert texts(ex) == [
        ["<image>", "Who are they?"],
        ["Kane and Gretzka."],
        ["What are they doing?", "<image>"],
        ["Celebrating."],
    ]
    assert ex.images == ["a.jpg", "b.jpg"]  # in tag order
    assert ex.videos == []
    assert ex.row == 3
    assert ex.notes == []


def test_llava_from_value_with_role_map_and_string_media():
    row = {
        "conversations": [
            {"from": "human", "value": "<image>Describe this image."},
            {"from": "gpt", "value": "A person."},
        ],
        "image": "celeba/000001.jpg",
    }
    ex = conversation_to_example(row, cfg_for({**LLAVA, "images_column": "image"}))
    assert roles(ex) == ["user", "assistant"]
    assert texts(ex) == [["<image>", "Describe this image."], ["A person."]]
    assert ex.images == ["celeba/000001.jpg"]


def test_custom_role_map_and_custom_tag():
    row = {
        "conversations": [
            {"from": "Patient", "value": "Look <ImageHere> here"},
            {"from": "Doctor", "value": "Fine."},
        ],
        "imgs": ["x.png"],
    }
    conv = {
        **LLAVA,
        "role_map": {"Patient": "user", "Doctor": "assistant"},
        "images_column": "imgs",
        "image_tag": "<ImageHere>",
    }
    ex = conversation_to_example(row, cfg_for(conv))
    assert texts(ex) == [["Look", "<image>", "here"], ["Fine."]]
    assert ex.images == ["x.png"]


def test_unknown_role_names_row_and_role_with_role_map_hint():
    row = {
        "conversations": [
            {"from": "human", "value": "hi"},
            {"from": "observation", "value": "tool output"},
            {"from": "gpt", "value": "ok"},
        ]
    }
    with pytest.raises(DataError) as ei:
        conversation_to_example(row, cfg_for(LLAVA), row_index=7)
    f = ei.value.findings[0]
    assert f.row == 7
    assert "'observation'" in f.message and "turn 1" in f.message
    assert "role_map" in f.hint
    assert len(str(ei.value).splitlines()) == 1


def test_canonical_roles_always_understood_and_case_insensitive():
    row = {
        "conversations": [
            {"from": "Human", "value": "hi"},
            {"from": "assistant", "value": "hello"},
        ]
    }
    cfg = cfg_for({**LLAVA, "role_map": {"human": "user"}})
    assert roles(conversation_to_example(row, cfg)) == ["user", "assistant"]


@pytest.mark.parametrize(
    "content,images,counts",
    [
        ("<image><image>Compare", ["a.jpg"], "2 <image> tag(s) but 1 image(s)"),
        ("<image>Look", ["a.jpg", "b.jpg"], "1 <image> tag(s) but 2 image(s)"),
    ],
)
def test_tag_count_mismatch_is_a_data_error_with_counts(content, images, counts):
    row = {
        "messages": [
            {"role": "user", "content": content},
            {"role": "assistant", "content": "x"},
        ],
        "images": images,
    }
    with pytest.raises(DataError) as ei:
        conversation_to_example(row, cfg_for(), row_index=12)
    f = ei.value.findings[0]
    assert f.row == 12
    assert counts in f.message
    assert "in order" in f.hint


def test_tags_but_no_images_column_hint_names_the_columns():
    row = {
        "messages": [
            {"role": "user", "content": "<image>What?"},
            {"role": "assistant", "content": "x"},
        ],
        "image": "a.jpg",
    }
    with pytest.raises(DataError) as ei:
        conversation_to_example(row, cfg_for())  # images_column defaults to "images"
    f = ei.value.findings[0]
    assert "1 <image> tag(s) but 0 image(s)" in f.message
    assert "images_column" in f.hint and "image" in f.hint


def test_multi_image_tags_at_start_and_end():
    row = {
        "conversations": [
            {"from": "human", "value": "Write a post.<image><image><image><image>"},
            {"from": "gpt", "value": "Milan!"},
        ],
        "image": ["p1.png", "p2.png", "p3.png", "p4.png"],
    }
    ex = conversation_to_example(row, cfg_for({**LLAVA, "images_column": "image"}))
    assert texts(ex)[0] == ["Write a post.", "<image>", "<image>", "<image>", "<image>"]
    assert ex.images == ["p1.png", "p2.png", "p3.png", "p4.png"]


def test_text_only_row_without_media_column_value():
    row = {
        "conversations": [
            {"from": "human", "value": "Capital of France?"},
            {"from": "gpt", "value": "Paris."},
        ],
        "image": None,
    }
    ex = conversation_to_example(row, cfg_for({**LLAVA, "images_column": "image"}))
    assert ex.images == [] and ex.videos == []
    assert texts(ex) == [["Capital of France?"], ["Paris."]]


def test_untagged_image_is_prepended_to_first_user_turn_llava_convention():
    row = {
        "messages": [
            {"role": "user", "content": "Describe it."},
            {"role": "assistant", "content": "A cat."},
            {"role": "user", "content": "Colour?"},
            {"role": "assistant", "content": "Black."},
        ],
        "images": "cat.jpg",
    }
    ex = conversation_to_example(row, cfg_for())
    assert texts(ex)[0] == ["<image>", "Describe it."]
    assert texts(ex)[2] == ["Colour?"]
    assert ex.images == ["cat.jpg"]
    assert ex.notes and "first user turn" in ex.notes[0]


def test_image_and_video_in_one_sample_respects_data_processing():
    row = {
        "system_prompt": "Answer about the media.",
        "conversations": [
            {"from": "human", "value": "<video>What is this video about?"},
            {"from": "gpt", "value": "A teaser."},
            {"from": "human", "value": "<image>What does this image show?"},
            {"from": "gpt", "value": "The band."},
        ],
        "video": "bm_teaser.mp4",
        "image": "bm.jpg",
    }
    conv = {**LLAVA, "images_column": "image", "videos_column": "video"}
    conv["system_column"] = "system_prompt"

    # images only (the default): the video and its tag are dropped, noted
    ex = conversation_to_example(row, cfg_for(conv))
    assert ex.images == ["bm.jpg"] and ex.videos == []
    assert texts(ex) == [
        ["Answer about the media."],
        ["What is this video about?"],
        ["A teaser."],
        ["<image>", "What does this image show?"],
        ["The band."],
    ]
    assert any("1 video(s) dropped" in n for n in ex.notes)

    # both on: the row keeps its image and its video (the collator applies "video wins" only
    # for processors that take one kind per row)
    video_cfg = cfg_for(conv, data_processing={"image_data": True, "video_data": True})
    ex = conversation_to_example(row, video_cfg)
    assert ex.videos == ["bm_teaser.mp4"] and ex.images == ["bm.jpg"]
    assert texts(ex)[1] == ["<video>", "What is this video about?"]
    assert texts(ex)[3] == ["<image>", "What does this image show?"]
    assert not ex.notes


def test_disabled_kind_is_not_count_checked():
    row = {
        "messages": [
            {"role": "user", "content": "<video><video>clip"},
            {"role": "assistant", "content": "x"},
        ],
        "videos": ["only_one.mp4"],
    }
    ex = conversation_to_example(row, cfg_for())  # video off
    assert ex.videos == [] and texts(ex)[0] == ["clip"]


def test_openai_typed_parts_with_inline_image_url_and_string_system():
    row = {
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "imgs/1.png"}},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "A dog."}]},
        ]
    }
    ex = conversation_to_example(row, cfg_for(message_format={"system_prompt": "ignored"}))
    assert roles(ex) == ["system", "user", "assistant"]  # the row's own system turn wins
    assert texts(ex) == [["You are terse."], ["What is this?", "<image>"], ["A dog."]]
    assert ex.images == ["imgs/1.png"]


def test_llamafactory_v1_parts_with_value_key():
    row = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "value": "data/mllm_demo_data/1.jpg"},
                    {"type": "text", "value": "Who are they?"},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "value": "Players."}]},
        ]
    }
    ex = conversation_to_example(row, cfg_for())
    assert texts(ex) == [["<image>", "Who are they?"], ["Players."]]
    assert ex.images == ["data/mllm_demo_data/1.jpg"]


def test_hf_typed_parts_take_media_from_list_in_order_and_arrow_none_keys():
    # Rows read from Arrow carry every struct key, absent ones as None.
    img = Image.new("RGB", (4, 4))
    row = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "text": None, "image": None},
                    {"type": "text", "text": "and", "image": None},
                    {"type": "video", "text": None, "image": None},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "ok", "image": None}]},
        ],
        "images": [img],
        "videos": [{"bytes": None, "path": "v.mp4"}],
    }
    both = cfg_for()
    ex = conversation_to_example(row, both)
    assert ex.images == [img]
    assert texts(ex)[0] == ["<image>", "and"]
    video = conversation_to_example(row, cfg_for(data_processing={"video_data": True}))
    assert video.videos == [{"bytes": None, "path": "v.mp4"}] and video.images == [img]
    assert texts(video)[0] == ["<image>", "and", "<video>"]  # both on: the row keeps both


def test_system_prompt_column_then_conversation_system_prompt():
    conv = {"system_column": "sys", "system_prompt": "Default prompt."}
    turns = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    cfg = cfg_for(conv)
    ex = conversation_to_example({"messages": turns, "sys": "Row prompt."}, cfg)
    assert texts(ex)[0] == ["Row prompt."] and roles(ex)[0] == "system"
    ex = conversation_to_example({"messages": turns, "sys": None}, cfg)
    assert texts(ex)[0] == ["Default prompt."]
    # message_format.system_prompt is the flat rows' {system_prompt}: never a chat row's system
    flat_prompt = cfg_for(message_format={"system_prompt": "Answer briefly."})
    ex = conversation_to_example({"messages": turns}, flat_prompt)
    assert roles(ex) == ["user", "assistant"]


def test_conversation_as_json_text_and_media_as_json_text():
    # What a CSV cell holds.
    row = {
        "messages": json.dumps(
            [{"role": "user", "content": "<image>hi"}, {"role": "assistant", "content": "yo"}]
        ),
        "images": '["a.jpg"]',
    }
    ex = conversation_to_example(row, cfg_for())
    assert ex.images == ["a.jpg"] and texts(ex) == [["<image>", "hi"], ["yo"]]


@pytest.mark.parametrize(
    "row,needle",
    [
        ({"msgs": []}, "no column 'messages'"),
        ({"messages": []}, "empty conversation"),
        ({"messages": "just text"}, "holds text"),
        ({"messages": [{"role": "user", "content": "q"}]}, "no assistant turn"),
        (
            {"messages": [{"role": "user", "text": "q"}, {"role": "assistant", "text": "a"}]},
            "no 'content' key",
        ),
        ({"messages": [{"content": "q"}, {"role": "assistant", "content": "a"}]}, "no role"),
        (
            {
                "messages": [
                    {"role": "user", "content": None},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "has no content",
        ),
        (
            {"messages": [{"role": "user", "content": " "}, {"role": "assistant", "content": "a"}]},
            "is empty",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": "<image>q"},
                    {"role": "assistant", "content": "a"},
                ],
                "images": ["a.jpg", ""],
            },
            "item 1 of column 'images'",
        ),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "audio", "audio": "x.wav"}]},
                    {"role": "assistant", "content": "a"},
                ]
            },
            "unknown content part type 'audio'",
        ),
    ],
)
def test_bad_rows_raise_one_line_data_error_with_row(row, needle):
    with pytest.raises(DataError) as ei:
        conversation_to_example(row, cfg_for(), row_index=5)
    assert needle in str(ei.value)
    assert ei.value.findings[0].row == 5
    assert len(str(ei.value).splitlines()) == 1


def test_row_to_example_delegates_when_conversation_is_set():
    row = {
        "messages": [
            {"role": "user", "content": "<image>q"},
            {"role": "assistant", "content": "a"},
        ],
        "images": ["a.jpg"],
    }
    ex = row_to_example(row, cfg_for(), row_index=1)
    assert isinstance(ex, Example)
    assert ex.images == ["a.jpg"] and ex.row == 1


def test_chat_and_dataset_modules_import_no_heavy_libraries():
    code = (
        "import sys, vlmctl.data.chat, vlmctl.data.dataset, vlmctl.data.example\n"
        "heavy = [m for m in ('torch','transformers','datasets','peft','trl') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
