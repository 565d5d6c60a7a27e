"""The tiny twins' text side: each family's chat template and a byte-level BPE tokenizer.

The templates are copied in structure from each family's published one; the tokenizer is
trained here, offline, on a small English corpus (see `vlmctl.testing.tiny`).
"""

from __future__ import annotations

from typing import Any

VOCAB_SIZE = 512


# --------------------------------------------------------------------------- chat templates
# Copied in structure from each family's published template (generation markers dropped: the
# collator finds answer spans itself). Message content may be a string or a list of parts.

QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# llava-hf/llava-1.5: "USER: <image>\n... ASSISTANT: ..." (system turns are not rendered).
LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] != 'system' %}"
    "{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}"
    "{% if message['role'] != 'system' %}{{ message['content'] + ' ' }}{% endif %}"
    "{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% if message['role'] != 'system' %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] + ' ' }}{% endfor %}{% endif %}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)

# OpenGVLab/InternVL3-*-hf.
INTERNVL_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def idefics_template(bos: str) -> str:
    # HuggingFaceM4/Idefics3-8B-Llama3 (bos <|begin_of_text|>) and SmolVLM (bos <|im_start|>).
    return (
        bos + "{% for message in messages %}{{ message['role'] | capitalize }}"
        "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
        "{% else %}{% if message['content'][0]['type'] == 'image' %}{{ ':' }}"
        "{% else %}{{ ': ' }}{% endif %}"
        "{% for line in message['content'] %}"
        "{% if line['type'] == 'text' %}{{ line['text'] }}"
        "{% elif line['type'] == 'image' %}{{ '<image>' }}{% endif %}{% endfor %}"
        "{% endif %}<end_of_utterance>\n{% endfor %}"
        "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
    )


# llava-hf/llava-onevision-qwen2-*-ov-hf.
ONEVISION_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'image') %}"
    "{{ '<image>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'video') %}"
    "{{ '<video>\n' }}{% endfor %}"
    "{% for content in message['content'] | selectattr('type', 'equalto', 'text') %}"
    "{{ content['text'] }}{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# microsoft/Phi-3-vision style turns ("<|user|>\n...<|end|>\n<|assistant|>\n").
PHI3_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<image>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}{% endfor %}"
    "{% endif %}{{ '<|end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# --------------------------------------------------------------------------- tokenizer

_COLOURS = (
    "red green blue yellow orange purple pink brown black white gray grey cyan magenta "
    "violet gold silver navy teal maroon olive lime beige"
).split()
_SHAPES = "square circle triangle star heart stripe dot line box ball".split()
_QUESTIONS = (
    "What is the colour of this image? What color is the picture? Which colour do you see? "
    "Is the image red? How many squares are there? Where is the circle? Who made it? "
    "Why is it blue? When was it taken? Describe the image. Describe the video. "
    "What happens in the video? How many frames? Answer briefly. Answer with one word. "
    "Yes. No. It is. There are. The image shows a. The video shows a. The colour is. "
    "The answer is. First, then, finally. Picture 1: Video 1: Frame1: Frame2: Frame3: "
    "user assistant system User Assistant System USER ASSISTANT: You are a helpful "
    "assistant. Look at the image and answer the question. caption: answer en "
)
_NUMBER_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve twenty hundred"
).split()


def _corpus() -> list[str]:
    """A few hundred lines of simple English so the BPE learns useful merges."""
    lines = [_QUESTIONS, " ".join(_NUMBER_WORDS), " ".join(str(i) for i in range(101))]
    for i, colour in enumerate(_COLOURS):
        shape = _SHAPES[i % len(_SHAPES)]
        n = _NUMBER_WORDS[i % 10]
        lines += [
            f"The image is {colour}. It is a {colour} {shape}.",
            f"What colour is the {shape}? The {shape} is {colour}.",
            f"How many {shape}s? There are {i % 10} ({n}) {colour} {shape}s.",
            f"{colour.capitalize()} {shape} at {i}, {i + 1}; row {i % 6 + 1} col {i % 4 + 1}.",
            f"Q: Which colour? A: {colour}",
            # The turn words of the families' templates, so they become few tokens.
            f"USER: What colour? ASSISTANT: {colour} ",
            f"User: Which {shape}?\nAssistant: The {colour} one.\n",
            f"system\nAnswer briefly.\nuser\nWhat is it?\nassistant\nA {colour} {shape}.\n",
        ]
    return lines


def _train_tokenizer(special_tokens: list[str]):
    """Byte-level BPE (~512 tokens): any text encodes, specials are single ids."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE + len(special_tokens),
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return tok


def make_tokenizer(
    specials: list[str],
    *,
    bos: str | None = None,
    eos: str | None = None,
    pad: str | None = None,
    unk: str | None = None,
    extra: dict[str, str] | None = None,
    add_bos: bool = False,
    chat_template: str | None = None,
):
    """A PreTrainedTokenizerFast whose named special tokens give `tok.<name>_id`."""
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    named = [t for t in (bos, eos, pad, unk) if t]
    extra = dict(extra or {})
    ordered = list(dict.fromkeys(named + specials + list(extra.values())))
    raw = _train_tokenizer(ordered)
    if add_bos and bos:
        # Llama/Gemma tokenizers prepend bos themselves; a template without it relies on that.
        raw.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, raw.token_to_id(bos))],
        )
    kwargs: dict[str, Any] = {}
    for key, value in (
        ("bos_token", bos),
        ("eos_token", eos),
        ("pad_token", pad),
        ("unk_token", unk),
    ):
        if value:
            kwargs[key] = value
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, extra_special_tokens=extra or None, model_max_length=4096, **kwargs
    )
    if chat_template is not None:
        tok.chat_template = chat_template
    return tok
