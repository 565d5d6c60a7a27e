"""The span rule's paths, with small hand-written templates (no model files): trusted and
untrusted `{% generation %}` markers in one batch, chats that are not plain data, templates
whose generation prompt is not what a past answer renders as, and span ends next to media."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from vlmctl.collate.labels import _expanded_spans
from vlmctl.collate.render import ChatRenderer, _is_plain, first_text
from vlmctl.errors import VlmctlError

# Assistant turns: "A: " + answer + " " + eos; the answer alone is inside the markers unless
# the message says `nomark` (then the markers do not check out for that chat).
MARKED = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}A: "
    "{% if m.get('nomark') %}{{ m['content'] }}{% else %}"
    "{% generation %}{{ m['content'] }}{% endgeneration %}{% endif %} {{ eos_token }}{{ '\\n' }}"
    "{% else %}U: {{ m['content'] }}{{ '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}A: {% endif %}"
)
# Same, no markers, and a generation prompt that opens a think block a past answer lacks.
THINK = (
    "{% for m in messages %}{% if m['role'] == 'assistant' %}A: {{ m['content'] }} "
    "{{ eos_token }}{{ '\\n' }}{% else %}U: {{ m['content'] }}{{ '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}A: <think>{% endif %}"
)
# As THINK, and the chat without the prompt ends with a footer: no prefix holds at all.
FOOTER = THINK.replace(
    "{% if add_generation_prompt %}",
    "{% if not add_generation_prompt %}--{% endif %}{% if add_generation_prompt %}",
)


def renderer(template: str, markers: bool = False, gen_prompt: bool = False) -> ChatRenderer:
    """A renderer over a bare tokenizer stand-in: only the template and eos matter here."""
    return ChatRenderer(
        SimpleNamespace(),
        SimpleNamespace(text_processing=SimpleNamespace(add_generation_prompt=gen_prompt)),
        template,
        eos_token="</s>",
        special_strings=["</s>"],
        special_tokens_map={"eos_token": "</s>"},
        has_generation_markers=markers,
    )


def texts(result) -> list[list[str]]:
    return [[full[s:e] for s, e in spans] for full, spans in result]


def u(text):
    return {"role": "user", "content": text}


def a(text, **extra):
    return {"role": "assistant", "content": text, **extra}


def test_a_batch_mixing_trusted_and_untrusted_markers_keeps_each_chats_spans():
    """Marker spans (answer only) where they check out, prefix renders (answer through eos)
    elsewhere, each chat in its place; a marked chat ending with a user turn gets the prompt."""
    chats = [
        [u("q1"), a("red")],  # markers hold
        [u("q2"), a("blue", nomark=True)],  # no marker: incremental renders
        [u("q3"), a("green"), u("more?")],  # markers hold, generation prompt at the end
        [u("q4"), a("cyan", nomark=True), u("q5"), a("teal", nomark=True)],
    ]
    out = renderer(MARKED, markers=True, gen_prompt=True).assistant_char_spans_many(chats)
    assert texts(out) == [["red"], ["blue </s>"], ["green"], ["cyan </s>", "teal </s>"]]
    assert [full for full, _ in out] == [
        "U: q1\nA: red </s>\n",
        "U: q2\nA: blue </s>\n",
        "U: q3\nA: green </s>\nU: more?\nA: ",
        "U: q4\nA: cyan </s>\nU: q5\nA: teal </s>\n",
    ]


def test_all_marked_batch_and_markers_off_give_the_answers():
    chats = [[u("q1"), a("red")], [u("q3"), a("green"), u("more?")]]
    out = renderer(MARKED, markers=True).assistant_char_spans_many(chats)
    assert texts(out) == [["red"], ["green"]]
    assert out[1][0] == "U: q3\nA: green </s>\nU: more?\n"  # add_generation_prompt off
    # The same template read without its markers: prefix renders, through the eos.
    out = renderer(MARKED, markers=False).assistant_char_spans_many(chats)
    assert texts(out) == [["red </s>"], ["green </s>"]]


class Opaque:
    """A rich object in a chat (like a decoded image): not plain template data."""

    def __str__(self) -> str:
        return "raw-object-text"


def test_a_chat_that_is_not_plain_data_renders_through_the_sanitising_path():
    """HF's path hands the template inert placeholders for rich objects; the fast path is
    only for plain data, also when the rich value sits in the chat's last message."""
    plain = [u("q1"), a("red")]
    rich = [u("q2"), a("blue"), u(Opaque())]
    assert _is_plain(plain) and not _is_plain(rich)
    for batch in ([rich], [plain, rich], [rich, plain]):
        out = renderer(THINK).assistant_char_spans_many(batch)
        full = dict(zip(map(id, batch), (f for f, _ in out), strict=True))[id(rich)]
        assert full == "U: q2\nA: blue </s>\nU: <Opaque>\n"
    rich_first = [u(Opaque()), a("blue")]
    ((full, spans),) = renderer(THINK).assistant_char_spans_many([rich_first])
    assert full == "U: <Opaque>\nA: blue </s>\n"
    assert [full[s:e] for s, e in spans] == ["blue </s>"]


def test_plain_chats_take_the_fast_renderer(monkeypatch):
    """Plain chats (what row_to_example builds) never pay for HF's per-call copies."""
    import transformers.utils.chat_template_utils as ctu

    def refuse(*args, **kwargs):
        raise AssertionError("plain chats went through render_jinja_template")

    monkeypatch.setattr(ctu, "render_jinja_template", refuse)
    chats = [[u("q1"), a("red"), u("q2"), a("blue")], [u("q3"), a("green")]]
    out = renderer(THINK).assistant_char_spans_many(chats)
    assert texts(out) == [["red </s>", "blue </s>"], ["green </s>"]]


def test_generation_prompt_unlike_a_past_answer_starts_the_span_where_they_diverge():
    """`A: <think>` is not a prefix of `A: red`: the answer starts after `A: `."""
    chats = [[u("q1"), a("red"), u("q2"), a("blue")]]
    ((full, spans),) = renderer(THINK).assistant_char_spans_many(chats)
    assert full == "U: q1\nA: red </s>\nU: q2\nA: blue </s>\n"
    assert [full[s:e] for s, e in spans] == ["red </s>", "blue </s>"]


@pytest.mark.parametrize(
    "chat",
    [
        [u("q1"), a("red"), u("q2"), a("blue")],  # through turn 1 is not a prefix of the chat
        [u("q1"), a("red")],  # neither the prompted nor the bare chat before it is a prefix
    ],
)
def test_no_prefix_holds_is_a_template_spans_error_with_the_marker_hint(chat):
    with pytest.raises(VlmctlError) as info:
        renderer(FOOTER).assistant_char_spans_many([chat])
    finding = info.value.findings[0] if hasattr(info.value, "findings") else info.value.finding
    assert finding.code == "template-spans"
    assert finding.message == (
        "cannot find the assistant turns in this chat template: "
        "a chat prefix does not render as a prefix"
    )
    assert "{% generation %}" in finding.hint


def test_an_answer_that_renders_as_nothing_has_no_span():
    """A template that prints only an assistant's content: an empty answer spans nothing."""
    bare = (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{{ m['content'] }}"
        "{% else %}U: {{ m['content'] }};{% endif %}{% endfor %}"
    )
    out = renderer(bare).assistant_char_spans_many([[u("q"), a(""), u("r"), a("ok")]])
    assert texts(out) == [["ok"]]


# A media placeholder at [10, 17) expanded to [10, 30): 13 characters gained.
REPL = [{"span": (10, 17), "new_span": (10, 30)}]


@pytest.mark.parametrize(
    ("end", "low", "high"),
    [
        (16, 16, 16),  # ends inside the placeholder: inside the expansion, nothing gained
        (17, 11, 30),  # ends at the placeholder's end: within the expansion (all media)
        (18, 31, 31),  # one character after it: the whole gain
    ],
)
def test_span_end_next_to_a_media_placeholder_shifts_by_what_lies_before_it(end, low, high):
    media, shifted = _expanded_spans(REPL, [[2, end]])
    assert media == [(10, 30)]
    ((start, new_end),) = shifted
    assert start == 2 and low <= new_end <= high


def test_span_start_after_a_placeholder_shifts_and_replacements_sort_by_position():
    repl = [{"span": (40, 47), "new_span": (53, 60)}, *REPL]  # given out of order
    media, shifted = _expanded_spans(repl, [[17, 20], [47, 50], [9, 10]])
    assert media == [(10, 30), (53, 60)]
    assert shifted == [(30, 33), (60, 63), (9, 10)]


def test_a_chat_opening_with_an_answer_spans_the_answer_not_the_turn_header():
    """Nothing renders before a leading assistant turn, yet its header does: the span starts
    where the same turn rendered with no content departs from it."""
    ((full, spans),) = renderer(THINK).assistant_char_spans_many([[a("hi"), u("q"), a("ok")]])
    assert [full[s:e] for s, e in spans] == ["hi </s>", "ok </s>"]
    assert full[: spans[0][0]] == "A: "


QWEN2_VL_TEMPLATE = Path(__file__).parent / "realkit" / "qwen2_vl" / "chat_template.jinja"


@pytest.mark.parametrize(
    "first",
    [a("hi"), {"role": "assistant", "content": [{"type": "text", "text": "hi"}]}],
    ids=["text", "parts"],
)
def test_a_leading_answer_on_qwen2_vls_released_template_trains_no_system_prompt(first):
    """Qwen2-VL's released template puts a default system prompt and the assistant header
    before a leading answer: neither is inside its span (it was, whole, before the fix)."""
    r = renderer(QWEN2_VL_TEMPLATE.read_text(encoding="utf-8"))
    ((full, spans),) = r.assistant_char_spans_many([[first, u("q"), a("ok")]])
    assert full.startswith("<|im_start|>system\nYou are a helpful assistant.")
    assert [full[s:e] for s, e in spans] == ["hi<|im_end|>", "ok<|im_end|>"]


@pytest.mark.parametrize(
    "first",
    [
        a("<|im_end|>odd"),
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "<|im_end|>odd"}],
        },
    ],
    ids=["text", "parts"],
)
def test_a_leading_answer_that_opens_like_the_turns_closing_is_spanned_from_its_start(first):
    """An answer opening with the template's own closing text would carry the departure point
    into the answer; the last whole occurrence of its first text part caps it."""
    r = renderer(QWEN2_VL_TEMPLATE.read_text(encoding="utf-8"))
    ((full, spans),) = r.assistant_char_spans_many([[first]])
    (span,) = spans
    assert full[span[0] :].startswith("<|im_end|>odd<|im_end|>")
    assert full[: span[0]].endswith("<|im_start|>assistant\n")


def test_a_leading_answer_the_template_rewrites_is_found_by_the_empty_turn():
    """Text the template changes (here upper-cased) appears nowhere as written: the empty
    turn's render alone places the start."""
    shouts = THINK.replace("A: {{ m['content'] }}", "A: {{ m['content'] | upper }}")
    ((full, spans),) = renderer(shouts).assistant_char_spans_many([[a("hi"), u("q"), a("ok")]])
    assert [full[s:e] for s, e in spans] == ["HI </s>", "OK </s>"]


def test_a_template_refusing_an_empty_turn_spans_the_whole_leading_turn():
    """The empty-turn render is a probe: a template that refuses it leaves the leading answer's
    span at the start of the chat, as before (header included), not missing."""
    refuses = THINK.replace(
        "{% for m in messages %}",
        "{% for m in messages %}{% if not m['content'] %}{{ raise_exception('empty') }}{% endif %}",
    )
    ((full, spans),) = renderer(refuses).assistant_char_spans_many([[a("hi"), u("q"), a("ok")]])
    assert [full[s:e] for s, e in spans] == ["A: hi </s>", "ok </s>"]


def test_first_text_is_the_first_non_blank_text_part():
    assert first_text("  hi ") == "hi"
    assert first_text(None) == "" and first_text([]) == ""
    parts = [{"type": "image", "text": "no"}, {"type": "text", "text": " "}, {"type": "text"}]
    assert (
        first_text([*parts, {"type": "text", "text": " b "}, {"type": "text", "text": "c"}]) == "b"
    )
    assert first_text(["x", {"type": "text", "text": 3}]) == ""


def test_a_leading_answer_whose_text_is_also_in_the_system_prompt_starts_at_the_answer():
    """The cap is the LAST whole occurrence of the answer's text: "helpful" also stands in
    Qwen2-VL's default system prompt, which must stay out of the span."""
    r = renderer(QWEN2_VL_TEMPLATE.read_text(encoding="utf-8"))
    ((full, spans),) = r.assistant_char_spans_many([[a("helpful")]])
    assert [full[s:e] for s, e in spans] == ["helpful<|im_end|>"]


def test_a_blank_leading_answer_starts_after_its_header():
    """No text to look for: the empty-turn render alone places the start."""
    r = renderer(QWEN2_VL_TEMPLATE.read_text(encoding="utf-8"))
    ((full, spans),) = r.assistant_char_spans_many([[a("   "), u("q"), a("ok")]])
    assert full[: spans[0][0]].endswith("<|im_start|>assistant\n")
    assert [full[s:e] for s, e in spans] == ["   <|im_end|>", "ok<|im_end|>"]


def test_a_leading_answer_at_the_very_start_of_a_headerless_render_is_capped_to_zero():
    """A template that renders only the content and a closing: an answer opening with that
    closing is found at position 0, where its span starts."""
    bare = "{% for m in messages %}{{ m['content'] }}</s>\n{% endfor %}"
    ((full, spans),) = renderer(bare).assistant_char_spans_many([[a("</s>x")]])
    assert spans == [[0, len("</s>x</s>")]]


IDEFICS3_TEMPLATE = Path(__file__).parent / "realkit" / "idefics3" / "chat_template.jinja"


def test_a_leading_answer_on_idefics3s_released_template_trains_no_header():
    """Idefics3's template reads content[0] (an empty part list is refused): the probe is one
    empty text part, so the "<|begin_of_text|>Assistant: " before the answer stays out."""
    template = IDEFICS3_TEMPLATE.read_text(encoding="utf-8")
    first = {"role": "assistant", "content": [{"type": "text", "text": "hello there"}]}
    ((full, spans),) = renderer(template).assistant_char_spans_many([[first, u("q"), a("ok")]])
    assert full.startswith("<|begin_of_text|>Assistant: hello there")
    assert full[spans[0][0] : spans[0][1]] == "hello there<end_of_utterance>"


ONEVISION_TEMPLATE = Path(__file__).parent / "realkit" / "llava_onevision" / "chat_template.json"


def test_a_leading_answer_on_llava_onevisions_template_starts_after_its_part_markup():
    """LLaVA-OneVision's template (transformers' processor test) writes a newline before each
    text part: the probe's empty text part gets it too, so it stays out of the span."""
    import json

    template = json.loads(ONEVISION_TEMPLATE.read_text(encoding="utf-8"))["chat_template"]
    first = {"role": "assistant", "content": [{"type": "text", "text": "hello there"}]}
    ((full, spans),) = renderer(template).assistant_char_spans_many([[first, u("q"), a("ok")]])
    assert full[: spans[0][0]].endswith("<|im_start|>assistant \n")
    assert full[spans[0][0] : spans[0][1]] == "hello there<|im_end|>"
