"""Tiny offline twins of every supported VLM family, for tests and the demo.

`build_tiny_model(family, out_dir, seed)` writes, with no network and in about a second, a
random-weight checkpoint of the REAL transformers architecture (hidden 64, 2 layers, 32x32
images, a handful of image tokens), a byte-level BPE tokenizer trained here on a small English
corpus, the family's image/video processors and a chat template with the family's real turn
structure and special tokens. Everything reloads through `AutoProcessor` / `AutoModelFor...`.

Traps handled, per family (transformers 5.x):
- qwen2_vl / qwen2_5_vl: `image_token_id`/`video_token_id`/`vision_start_token_id` in the config
  must equal the tokenizer's ids; `sum(mrope_section) * 2 == head_dim`; the vision patch,
  temporal and merge sizes must equal the image AND video processor's; with 32x32 images patch
  14 does not divide (smart_resize rounds to multiples of patch*merge = 28 and min_pixels would
  upscale): patch 8 / merge 2 give 4 image tokens for 32x32 (min_pixels 16x16, max_pixels
  64x64, so bigger images cost at most 16 tokens).
  Qwen2-VL's vision `hidden_size` is the text hidden size (the merger's output); Qwen2.5-VL
  uses `out_hidden_size` for that and needs `window_size` to be a multiple of patch*merge and
  `fullatt_block_indexes` within `depth`. The batch carries `mm_token_type_ids`.
- llava: a CLIP tower adds a CLS token that `vision_feature_select_strategy="default"` drops,
  so the processor needs `num_additional_image_tokens=1` and `patch_size` to count tokens.
  The real llava-1.5 template drops system turns and emits no `</s>` after the answer (the
  tokenizer adds `<s>`): mirrored as is; `FAMILY_INFO["llava"]["end_of_turn"]` is the eos.
- paligemma: no chat template (prefix/suffix through `processor(text=, images=, suffix=)`);
  the processor adds 1,152 `<loc>`/`<seg>` tokens, so the vocab size is read after building
  it; the image processor needs an `image_seq_length` attribute; text-only calls are refused.
- internvl (HF-native): the placeholder in text is `<IMG_CONTEXT>`; the tokenizer needs the
  `start_image_token`/`end_image_token`/`context_image_token`/`video_token` attributes; the
  processor's `image_seq_length` must equal (image_size/patch)^2 * downsample_ratio^2; it
  needs a video processor (torchvision) even for images; the processor forces
  `crop_to_patches=True` (a non-square image becomes several 32x32 tiles + a thumbnail,
  bounded here by max_patches=4) and pads on the LEFT by default, like the real one.
- idefics3 / smolvlm: `do_image_splitting=False` (no row/col grid) and `image_seq_len` =
  (image_size/patch)^2 / scale_factor^2; the row/col tokens are in the vocab anyway.
  SmolVLM's processor needs `num2words` and a video processor.
- llava_onevision: anyres is pinned to one 32x32 grid point, so an image is base + one crop
  (+ newline tokens); a video frame is pooled 2x2; SigLIP adds no CLS token.
- remote_code: a LLaVA subclass under custom class names in the folder's own
  `configuration_tiny_remote.py` / `modeling_tiny_remote.py` / `processing_tiny_remote.py`,
  wired through `auto_map` (config, model, processor): loading needs `trust_remote_code=True`,
  like the seed's InternVL2 / Phi-3-vision. Its template mirrors Phi-3's `<|user|>`/`<|end|>`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FAMILIES: tuple[str, ...] = (
    "qwen2_vl",
    "qwen2_5_vl",
    "llava",
    "paligemma",
    "internvl",
    "idefics3",
    "smolvlm",
    "llava_onevision",
    "remote_code",
)

# What callers (collator tests, demo, resolve tests) need to know about each twin without
# loading it. `end_of_turn` is the token that closes an assistant turn in the rendered text
# (or the eos when the real template emits none: see `template_ends_turn`); `padding_side` is
# the processor's default when it pads a batch.
FAMILY_INFO: dict[str, dict[str, Any]] = {
    "qwen2_vl": {
        "model_class": "Qwen2VLForConditionalGeneration",
        "processor_class": "Qwen2VLProcessor",
        "supports_video": True,
        "image_token": "<|image_pad|>",
        "video_token": "<|video_pad|>",
        "end_of_turn": "<|im_end|>",
        "template_ends_turn": True,
        "has_chat_template": True,
        "trust_remote_code": False,
        "padding_side": "right",
    },
    "qwen2_5_vl": {
        "model_class": "Qwen2_5_VLForConditionalGeneration",
        "processor_class": "Qwen2_5_VLProcessor",
        "supports_video": True,
        "image_token": "<|image_pad|>",
        "video_token": "<|video_pad|>",
        "end_of_turn": "<|im_end|>",
        "template_ends_turn": True,
        "has_chat_template": True,
        "trust_remote_code": False,
        "padding_side": "right",
    },
    "llava": {
        "model_class": "LlavaForConditionalGeneration",
        "processor_class": "LlavaProcessor",
        "supports_video": False,
        "image_token": "<image>",
        "video_token": None,
        "end_of_turn": "</s>",
        "template_ends_turn": False,
        "has_chat_template": True,
        "trust_remote_code": False,
        "padding_side": "right",
    },
    "paligemma": {
        "model_class": "PaliGemmaForConditionalGeneration",
        "processor_class": "PaliGemmaProcessor",
        "supports_video": False,
        "image_token": "<image>",
        "video_token": None,
        "end_of_turn": "<eos>",
        "template_ends_turn": False,
        "has_chat_template": False,
        "trust_remote_code": False,
        "padding_side": "right",
    },
    "internvl": {
        "model_class": "InternVLForConditionalGeneration",
        "processor_class": "InternVLProcessor",
        "supports_video": False,
        "image_token": "<IMG_CONTEXT>",
        "video_token": None,
        "end_of_turn": "<|im_end|>",
        "template_ends_turn": True,
        "has_chat_template": True,
        "trust_remote_code": False,
        "padding_side": "left",
    },
    "idefics3": {
        "model_class": "Idefics3ForConditionalGeneration",
        "processor_class": "Idefics3Processor",
        "supports_video": False,
        "image_token": "<image>",
        "video_token": None,
        "end_of_turn": "<end_of_utterance>",
        "template_ends_turn": True,
        "has_chat_template": True,
        "trust_remote_code": False,
        "padding_side": "right",
    },
    "smolvlm": {
        "model_class": "SmolVLMForConditionalGeneration",
        "processor_class": "SmolVLMProcessor",
        "supports_video": False,
        "image_token": "<image>",
        "video_token": None,
        "end_of_turn": "<end_of_utterance>",
        "template_ends_turn": True,
        "has_chat_template": True,
        "trust_remote_code": False,
        "padding_side": "right",
    },
    "llava_onevision": {
        "model_class": "LlavaOnevisionForConditionalGeneration",
        "processor_class": "LlavaOnevisionProcessor",
        "supports_video": True,
        "image_token": "<image>",
        "video_token": "<video>",
        "end_of_turn": "<|im_end|>",
        "template_ends_turn": True,
        "has_chat_template": True,
        "trust_remote_code": False,
        "padding_side": "right",
    },
    "remote_code": {
        "model_class": "TinyRemoteVLMForCausalLM",
        "processor_class": "TinyRemoteVLMProcessor",
        "supports_video": False,
        "image_token": "<image>",
        "video_token": None,
        "end_of_turn": "<|end|>",
        "template_ends_turn": True,
        "has_chat_template": True,
        "trust_remote_code": True,
        "padding_side": "right",
    },
}

IMAGE_SIZE = 32
VOCAB_SIZE = 512
_HIDDEN = 64
_VISION_HIDDEN = 32

# --------------------------------------------------------------------------- chat templates
# Copied in structure from each family's published template (generation markers dropped: the
# collator finds answer spans itself). Message content may be a string or a list of parts.

_QWEN2_VL_TEMPLATE = (
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
_LLAVA_TEMPLATE = (
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
_INTERNVL_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' %}{{ '<IMG_CONTEXT>\n' }}"
    "{% elif content['type'] == 'video' %}{{ '<video>\n' }}"
    "{% elif content['type'] == 'text' %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def _idefics_template(bos: str) -> str:
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
_ONEVISION_TEMPLATE = (
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
_PHI3_TEMPLATE = (
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


def _make_tokenizer(
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


# --------------------------------------------------------------------------- text configs


def _text_config(model_type: str, vocab_size: int, **extra: Any) -> dict[str, Any]:
    cfg = {
        "model_type": model_type,
        "vocab_size": vocab_size,
        "hidden_size": _HIDDEN,
        "intermediate_size": 2 * _HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "head_dim": _HIDDEN // 4,
        "max_position_embeddings": 4096,
    }
    cfg.update(extra)
    return cfg


def _vision_tower(model_type: str, patch_size: int, **extra: Any) -> dict[str, Any]:
    cfg = {
        "model_type": model_type,
        "hidden_size": _VISION_HIDDEN,
        "intermediate_size": 2 * _VISION_HIDDEN,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "image_size": IMAGE_SIZE,
        "patch_size": patch_size,
    }
    cfg.update(extra)
    return cfg


def _ids(tok, **names: str) -> dict[str, int]:
    return {key: tok.convert_tokens_to_ids(value) for key, value in names.items()}


# --------------------------------------------------------------------------- families

_QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]


def _build_qwen(family: str):
    import transformers as tf

    tok = _make_tokenizer(
        _QWEN_SPECIALS,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        extra={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        chat_template=_QWEN2_VL_TEMPLATE,
    )
    patch, merge, temporal = 8, 2, 2
    # 32x32 -> 4 image tokens; images up to 64x64 pixels (16 tokens) keep their aspect.
    proc_kw = {
        "patch_size": patch,
        "merge_size": merge,
        "temporal_patch_size": temporal,
        "min_pixels": (patch * merge) ** 2,
        "max_pixels": (2 * IMAGE_SIZE) ** 2,
    }
    # The reference (qwen-vl-utils) behaviour; unset, every video call warns.
    video_kw = {**proc_kw, "cap_pixels_per_frame": True}
    ids = _ids(
        tok,
        image_token_id="<|image_pad|>",
        video_token_id="<|video_pad|>",
        vision_start_token_id="<|vision_start|>",
        vision_end_token_id="<|vision_end|>",
    )
    text = _text_config(
        f"{family}_text",
        len(tok),
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if family == "qwen2_vl":
        vision = {
            "depth": 2,
            "embed_dim": _VISION_HIDDEN,
            "hidden_size": _HIDDEN,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": patch,
            "spatial_merge_size": merge,
            "temporal_patch_size": temporal,
        }
        config = tf.Qwen2VLConfig(text_config=text, vision_config=vision, **ids)
        model = tf.Qwen2VLForConditionalGeneration
        image_proc = tf.Qwen2VLImageProcessor(**proc_kw)
        video_proc = tf.Qwen2VLVideoProcessor(**video_kw)
        processor = tf.Qwen2VLProcessor(
            image_processor=image_proc,
            tokenizer=tok,
            video_processor=video_proc,
            chat_template=_QWEN2_VL_TEMPLATE,
        )
    else:
        vision = {
            "depth": 2,
            "hidden_size": _VISION_HIDDEN,
            "intermediate_size": 2 * _VISION_HIDDEN,
            "out_hidden_size": _HIDDEN,
            "num_heads": 2,
            "patch_size": patch,
            "spatial_merge_size": merge,
            "temporal_patch_size": temporal,
            "window_size": patch * merge * 2,
            "fullatt_block_indexes": [1],
        }
        config = tf.Qwen2_5_VLConfig(text_config=text, vision_config=vision, **ids)
        model = tf.Qwen2_5_VLForConditionalGeneration
        image_proc = tf.Qwen2VLImageProcessor(**proc_kw)
        video_proc = tf.Qwen2VLVideoProcessor(**video_kw)
        processor = tf.Qwen2_5_VLProcessor(
            image_processor=image_proc,
            tokenizer=tok,
            video_processor=video_proc,
            chat_template=_QWEN2_VL_TEMPLATE,
        )
    return config, model, processor


def _build_llava(template: str, specials: list[str], eos: str):
    import transformers as tf

    tok = _make_tokenizer(
        ["<s>", "</s>", "<unk>", "<pad>", "<image>", *specials],
        bos="<s>",
        eos=eos,
        pad="<pad>",
        unk="<unk>",
        extra={"image_token": "<image>"},
        add_bos=True,
        chat_template=template,
    )
    patch = 16
    # CLIP adds a CLS token; "default" strategy drops it again before the projector.
    image_proc = tf.CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = tf.LlavaProcessor(
        image_processor=image_proc,
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=template,
    )
    config = tf.LlavaConfig(
        vision_config=_vision_tower("clip_vision_model", patch, projection_dim=_VISION_HIDDEN),
        text_config=_text_config(
            "llama",
            len(tok),
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        ),
        image_token_index=tok.image_token_id,
        image_seq_length=(IMAGE_SIZE // patch) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    return config, tf.LlavaForConditionalGeneration, processor


def _build_paligemma():
    import transformers as tf

    tok = _make_tokenizer(
        ["<bos>", "<eos>", "<pad>", "<unk>", "<image>"],
        bos="<bos>",
        eos="<eos>",
        pad="<pad>",
        unk="<unk>",
        extra={"image_token": "<image>"},
        add_bos=True,
    )
    patch = 16
    seq = (IMAGE_SIZE // patch) ** 2
    image_proc = tf.SiglipImageProcessor(
        size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, image_seq_length=seq
    )
    image_proc.image_seq_length = seq
    processor = tf.PaliGemmaProcessor(image_processor=image_proc, tokenizer=tok)
    vocab = len(processor.tokenizer)  # after the processor's 1,152 <loc>/<seg> tokens
    text = _text_config(
        "gemma",
        vocab,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    config = tf.PaliGemmaConfig(
        vision_config=_vision_tower(
            "siglip_vision_model", patch, projection_dim=_HIDDEN, num_image_tokens=seq
        ),
        text_config=text,
        image_token_index=processor.image_token_id,
        projection_dim=_HIDDEN,
        hidden_size=_HIDDEN,
        vocab_size=vocab,
    )
    return config, tf.PaliGemmaForConditionalGeneration, processor


def _build_internvl():
    import transformers as tf

    extra = {
        "start_image_token": "<img>",
        "end_image_token": "</img>",
        "context_image_token": "<IMG_CONTEXT>",
        "video_token": "<video>",
    }
    tok = _make_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        eos="<|im_end|>",
        pad="<|endoftext|>",
        extra=extra,
        chat_template=_INTERNVL_TEMPLATE,
    )
    patch = 8
    seq = (IMAGE_SIZE // patch) ** 2 // 4  # pixel shuffle with downsample_ratio 0.5
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    # The processor forces crop_to_patches=True (real InternVL tiling, plus a thumbnail):
    # max_patches=4 bounds an image at 5 tiles x 4 tokens.
    image_proc = tf.GotOcr2ImageProcessor(
        size=size,
        max_patches=4,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    video_proc = tf.InternVLVideoProcessor(size=size)
    processor = tf.InternVLProcessor(
        image_processor=image_proc,
        tokenizer=tok,
        video_processor=video_proc,
        image_seq_length=seq,
        chat_template=_INTERNVL_TEMPLATE,
    )
    config = tf.InternVLConfig(
        vision_config={
            "model_type": "internvl_vision",
            "hidden_size": _VISION_HIDDEN,
            "intermediate_size": 2 * _VISION_HIDDEN,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": [IMAGE_SIZE, IMAGE_SIZE],
            "patch_size": [patch, patch],
        },
        text_config=_text_config(
            "qwen2", len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
        ),
        image_token_id=tok.context_image_token_id,
        image_seq_length=seq,
        downsample_ratio=0.5,
    )
    return config, tf.InternVLForConditionalGeneration, processor


_ROW_COL = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]


def _build_idefics(family: str):
    import transformers as tf

    if family == "idefics3":
        bos, eos, pad = "<|begin_of_text|>", "<end_of_utterance>", "<|end_of_text|>"
    else:
        bos, eos, pad = "<|im_start|>", "<end_of_utterance>", "<|im_end|>"
    specials = [bos, pad, "<fake_token_around_image>", "<image>", "<end_of_utterance>"]
    specials += ["<global-img>", *_ROW_COL]
    if family == "smolvlm":
        specials.append("<video>")
    template = _idefics_template(bos)
    tok = _make_tokenizer(
        specials,
        bos=bos,
        eos=eos,
        pad=pad,
        extra={
            "image_token": "<image>",
            "fake_image_token": "<fake_token_around_image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
        chat_template=template,
    )
    patch, scale = 8, 2
    seq = (IMAGE_SIZE // patch) ** 2 // scale**2
    img_kw = {
        "do_image_splitting": False,
        "size": {"longest_edge": IMAGE_SIZE},
        "max_image_size": {"longest_edge": IMAGE_SIZE},
    }
    vision = _vision_tower(f"{family}_vision", patch)
    text = _text_config(
        "llama",
        len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    ids = {"image_token_id": tok.image_token_id, "scale_factor": scale}
    if family == "idefics3":
        processor = tf.Idefics3Processor(
            image_processor=tf.Idefics3ImageProcessor(**img_kw),
            tokenizer=tok,
            image_seq_len=seq,
            chat_template=template,
        )
        config = tf.Idefics3Config(vision_config=vision, text_config=text, **ids)
        return config, tf.Idefics3ForConditionalGeneration, processor
    video_proc = tf.SmolVLMVideoProcessor(
        size={"longest_edge": IMAGE_SIZE}, max_image_size={"longest_edge": IMAGE_SIZE}
    )
    processor = tf.SmolVLMProcessor(
        image_processor=tf.SmolVLMImageProcessor(**img_kw),
        tokenizer=tok,
        video_processor=video_proc,
        image_seq_len=seq,
        chat_template=template,
    )
    config = tf.SmolVLMConfig(vision_config=vision, text_config=text, **ids)
    return config, tf.SmolVLMForConditionalGeneration, processor


def _build_onevision():
    import transformers as tf

    tok = _make_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
        eos="<|im_end|>",
        pad="<|endoftext|>",
        extra={"image_token": "<image>", "video_token": "<video>"},
        chat_template=_ONEVISION_TEMPLATE,
    )
    patch = 8
    pinpoints = [[IMAGE_SIZE, IMAGE_SIZE]]
    size = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    image_proc = tf.LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints)
    video_proc = tf.LlavaOnevisionVideoProcessor(size=size)
    num_image_tokens = (IMAGE_SIZE // patch) ** 2
    processor = tf.LlavaOnevisionProcessor(
        image_processor=image_proc,
        tokenizer=tok,
        video_processor=video_proc,
        num_image_tokens=num_image_tokens,
        vision_feature_select_strategy="full",
        chat_template=_ONEVISION_TEMPLATE,
    )
    config = tf.LlavaOnevisionConfig(
        vision_config=_vision_tower("siglip_vision_model", patch),
        text_config=_text_config(
            "qwen2", len(tok), eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
        ),
        image_token_index=tok.image_token_id,
        video_token_index=tok.video_token_id,
        image_grid_pinpoints=pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    return config, tf.LlavaOnevisionForConditionalGeneration, processor


# --------------------------------------------------------------------------- remote code

_REMOTE_CONFIGURATION = '''"""Tiny remote-code VLM config (a LLaVA config under its own model_type)."""

from transformers import LlavaConfig


class TinyRemoteVLMConfig(LlavaConfig):
    model_type = "tiny_remote_vlm"
'''

_REMOTE_MODELING = '''"""Tiny remote-code VLM: LLaVA under custom class names, loaded via auto_map."""

from transformers import LlavaForConditionalGeneration

from .configuration_tiny_remote import TinyRemoteVLMConfig


class TinyRemoteVLMForCausalLM(LlavaForConditionalGeneration):
    config_class = TinyRemoteVLMConfig
'''

_REMOTE_PROCESSING = '''"""Tiny remote-code VLM processor: LLaVA's processor under a custom class name."""

from transformers import LlavaProcessor


class TinyRemoteVLMProcessor(LlavaProcessor):
    pass
'''

_REMOTE_AUTO_MAP = {
    "AutoConfig": "configuration_tiny_remote.TinyRemoteVLMConfig",
    "AutoModelForImageTextToText": "modeling_tiny_remote.TinyRemoteVLMForCausalLM",
    "AutoModelForCausalLM": "modeling_tiny_remote.TinyRemoteVLMForCausalLM",
}


def _make_remote(out: Path, model) -> None:
    """Turn a saved LLaVA twin into a folder that only loads with trust_remote_code."""
    from safetensors.torch import save_file

    # save_pretrained writes LLaVA in its legacy key layout (language_model.model.*), which
    # only model_type "llava" maps back on load; remote code gets the module's own names.
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "configuration_tiny_remote.py").write_text(_REMOTE_CONFIGURATION)
    (out / "modeling_tiny_remote.py").write_text(_REMOTE_MODELING)
    (out / "processing_tiny_remote.py").write_text(_REMOTE_PROCESSING)

    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["model_type"] = "tiny_remote_vlm"
    cfg["architectures"] = ["TinyRemoteVLMForCausalLM"]
    cfg["auto_map"] = _REMOTE_AUTO_MAP
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    for name in ("processor_config.json", "tokenizer_config.json", "preprocessor_config.json"):
        path = out / name
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        data["processor_class"] = "TinyRemoteVLMProcessor"
        data["auto_map"] = {"AutoProcessor": "processing_tiny_remote.TinyRemoteVLMProcessor"}
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


# --------------------------------------------------------------------------- entry point


def build_tiny_model(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write a tiny random-weight twin of `family` to `out_dir` and return the folder.

    Offline and about a second: tests and the demo get a real architecture, tokenizer,
    processors and chat template without the hub. Same `seed` -> same weights.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown tiny family {family!r}; choose one of {', '.join(FAMILIES)}")
    import torch

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    if family in ("qwen2_vl", "qwen2_5_vl"):
        config, model_cls, processor = _build_qwen(family)
    elif family == "llava":
        config, model_cls, processor = _build_llava(_LLAVA_TEMPLATE, [], "</s>")
    elif family == "remote_code":
        specials = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
        config, model_cls, processor = _build_llava(_PHI3_TEMPLATE, specials, "<|end|>")
    elif family == "paligemma":
        config, model_cls, processor = _build_paligemma()
    elif family == "internvl":
        config, model_cls, processor = _build_internvl()
    elif family in ("idefics3", "smolvlm"):
        config, model_cls, processor = _build_idefics(family)
    else:
        config, model_cls, processor = _build_onevision()

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config).to(torch.float32).eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    if family == "remote_code":
        _make_remote(out, model)
    return out
