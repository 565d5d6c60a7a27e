"""The span rule on template styles the twins' own templates do not show (see DESIGN.md).

Each case swaps the chat template of a copy of the tiny Qwen2-VL twin's processor (its
tokenizer knows <|im_start|>/<|im_end|> as special tokens) for a template in a given style,
and checks the kept labels: each answer plus ONE end-of-turn, nothing around it.
"""

from __future__ import annotations

import copy

import pytest
import torch
from _collate_util import cfg, chat, processor

from vlmctl.collate import VLMCollator
from vlmctl.errors import VlmctlError

ANSWERS = ["red 1 square", "The circle is blue."]
_IMG = "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% endif %}{% endfor %}"  # noqa: E501
_TXT = "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"  # noqa: E501

TEMPLATES = {
    # TRL's training style: end-of-turn AND its newline inside the markers.
    "eot_and_newline_inside_markers": (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['role'] == 'assistant' %}{% generation %}" + _TXT + "<|im_end|>\n"
        "{% endgeneration %}{% else %}" + _IMG + _TXT + "<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    # Gemma style: assistant renamed 'model', system folded into the first user turn,
    # text trimmed, no markers.
    "role_rename_system_folded_trim": (
        "{% set sys = '' %}{% if messages[0]['role'] == 'system' %}"
        "{% set sys = messages[0]['content'][0]['text'] + '\n\n' %}"
        "{% set messages = messages[1:] %}{% endif %}"
        "{% for message in messages %}{% set role = 'model' if message['role'] == 'assistant' "
        "else message['role'] %}<|im_start|>{{ role }}\n{% if loop.first %}{{ sys }}{% endif %}"
        + _IMG
        + "{{ ("
        + _TXT.replace("{{ c['text'] }}", "{{ c['text'] | trim }}")
        + ") }}"
        "<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>model\n{% endif %}"
    )
    .replace("{{ ({%", "{%")
    .replace("{% endfor %}) }}", "{% endfor %}"),
    # A template that drops system turns entirely.
    "drops_system": (
        "{% for message in messages %}{% if message['role'] != 'system' %}"
        "<|im_start|>{{ message['role'] }}\n" + _IMG + _TXT + "<|im_end|>\n{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    # Markers that do not hold the answer (around the header): checked, not trusted.
    "markers_that_lie": (
        "{% for message in messages %}{% if message['role'] == 'assistant' %}{% generation %}"
        "<|im_start|>assistant{% endgeneration %}\n" + _TXT + "<|im_end|>\n{% else %}"
        "<|im_start|>{{ message['role'] }}\n" + _IMG + _TXT + "<|im_end|>\n{% endif %}"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    # String-only content: the template concatenates message['content'].
    "string_content": (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{{ message['content'] }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
}


@pytest.fixture(scope="module")
def base_processor(tiny_model_dir):
    return processor(tiny_model_dir("qwen2_vl"))


def _collator(base, template, **sections):
    proc = copy.copy(base)
    proc.chat_template = template
    sections.setdefault("label_masking", {"mask_input_tokens": True})
    return VLMCollator(proc, cfg(**sections), model_type="qwen2_vl")


def _runs(mask):
    out, start = [], None
    for i, v in enumerate(mask.tolist() + [False]):
        if v and start is None:
            start = i
        elif not v and start is not None:
            out.append((start, i))
            start = None
    return out


@pytest.mark.parametrize("style", sorted(TEMPLATES))
def test_each_answer_plus_one_end_of_turn_and_nothing_after_it(base_processor, style):
    col = _collator(base_processor, TEMPLATES[style])
    # Only the trimming template drops the spaces around the first answer (data as given).
    padded = style == "role_rename_system_folded_trim"
    ex = chat([" " + ANSWERS[0] + " " if padded else ANSWERS[0], ANSWERS[1]], n_images=1)
    ex.messages.insert(0, {"role": "system", "content": [{"type": "text", "text": "Be brief."}]})
    enc = col.encode_example(ex)
    tok = col.tokenizer
    runs = _runs(enc.labels != -100)
    decoded = [tok.decode(enc.labels[s:e]) for s, e in runs]
    assert [d.lstrip(" ") for d in decoded] == [a + "<|im_end|>" for a in ANSWERS], decoded
    # never a second end-of-turn in the input: the template's own only
    assert (
        enc.text.count("<|im_end|>")
        == col.renderer.render_many([ex.messages], False)[0].count("<|im_end|>")
        or style == "string_content"
    )
    assert (enc.input_ids == tok.convert_tokens_to_ids("<|image_pad|>")).sum() > 0


def test_string_content_gets_the_processors_image_tag(base_processor):
    col = _collator(base_processor, TEMPLATES["string_content"])
    enc = col.encode_example(chat(ANSWERS, n_images=1))
    assert "<|image_pad|>\nWhat colour is it? (0)" in enc.text
    assert enc.num_media_tokens > 0


@pytest.mark.parametrize(
    "template",
    [
        "{{ raise_exception('Only user and assistant roles are supported!') }}",
        "{% for m in messages %}{{ m['content'] + 1 }}{% endfor %}",
        "{% for m in messages %}{{ m['content'][5]['text'] }}{% endfor %}",
    ],
    ids=["raise_exception", "type_error", "undefined"],
)
def test_a_template_that_fails_is_a_one_line_finding(base_processor, template):
    col = _collator(base_processor, template)
    with pytest.raises(VlmctlError) as err:
        col.encode_example(chat(ANSWERS, n_images=1))
    assert "\n" not in str(err.value)


def test_no_special_token_after_answer_inserts_eos_once(base_processor):
    # llava-1.5 style with markers around text + ' ': eos after the answer, before the space.
    template = (
        "{% for message in messages %}{{ message['role'].upper() + ': ' }}"
        "{% if message['role'] == 'assistant' %}{% generation %}" + _TXT + "{{ ' ' }}"
        "{% endgeneration %}{% else %}" + _IMG + _TXT + "{{ ' ' }}{% endif %}{% endfor %}"
    )
    col = _collator(base_processor, template)
    enc = col.encode_example(chat(ANSWERS, n_images=1))
    eos = col.tokenizer.eos_token
    assert f"{ANSWERS[0]}{eos} USER: " in enc.text
    assert enc.text.count(eos) == 2
    kept = enc.labels[enc.labels != -100]
    assert col.tokenizer.decode(kept).replace(" ", "") == "".join(
        a.replace(" ", "") + eos for a in ANSWERS
    )
    assert torch.equal(enc.labels != -100, enc.kinds == 3)
