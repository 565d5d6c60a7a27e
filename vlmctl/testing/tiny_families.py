"""The tiny twins' architectures: per family a config, model class and processor.

Each builder returns (config, model class, processor); `vlmctl.testing.tiny` writes them out.
The traps each family needs handled are listed in `vlmctl.testing.tiny`'s docstring.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from vlmctl.testing.tiny_tokenizer import (
    INTERNVL_TEMPLATE,
    LLAVA_TEMPLATE,
    ONEVISION_TEMPLATE,
    PHI3_TEMPLATE,
    QWEN2_VL_TEMPLATE,
    idefics_template,
    make_tokenizer,
)

IMAGE_SIZE = 32
_HIDDEN = 64
_VISION_HIDDEN = 32


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

    tok = make_tokenizer(
        _QWEN_SPECIALS,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        extra={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
        chat_template=QWEN2_VL_TEMPLATE,
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
    vision = _qwen_vision(family, patch, merge, temporal)
    if family == "qwen2_vl":
        config_cls, model, processor_cls = (
            tf.Qwen2VLConfig,
            tf.Qwen2VLForConditionalGeneration,
            tf.Qwen2VLProcessor,
        )
    else:
        config_cls, model, processor_cls = (
            tf.Qwen2_5_VLConfig,
            tf.Qwen2_5_VLForConditionalGeneration,
            tf.Qwen2_5_VLProcessor,
        )
    config = config_cls(text_config=text, vision_config=vision, **ids)
    processor = processor_cls(
        image_processor=tf.Qwen2VLImageProcessor(**proc_kw),
        tokenizer=tok,
        video_processor=tf.Qwen2VLVideoProcessor(**video_kw),
        chat_template=QWEN2_VL_TEMPLATE,
    )
    return config, model, processor


def _qwen_vision(family: str, patch: int, merge: int, temporal: int) -> dict[str, Any]:
    """The vision tower: Qwen2-VL's hidden_size is the text's (the merger's output);
    Qwen2.5-VL has out_hidden_size for that, and windowed attention."""
    if family == "qwen2_vl":
        return {
            "depth": 2,
            "embed_dim": _VISION_HIDDEN,
            "hidden_size": _HIDDEN,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": patch,
            "spatial_merge_size": merge,
            "temporal_patch_size": temporal,
        }
    return {
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


def _build_llava(template: str, specials: list[str], eos: str):
    import transformers as tf

    tok = make_tokenizer(
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

    tok = make_tokenizer(
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
    tok = make_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        eos="<|im_end|>",
        pad="<|endoftext|>",
        extra=extra,
        chat_template=INTERNVL_TEMPLATE,
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
        chat_template=INTERNVL_TEMPLATE,
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
    template = idefics_template(bos)
    tok = make_tokenizer(
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

    tok = make_tokenizer(
        ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
        eos="<|im_end|>",
        pad="<|endoftext|>",
        extra={"image_token": "<image>", "video_token": "<video>"},
        chat_template=ONEVISION_TEMPLATE,
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
        chat_template=ONEVISION_TEMPLATE,
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


def make_remote(out: Path, model) -> None:
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


def build_parts(family: str):
    """(config, model class, processor) of one family's tiny twin, nothing written yet."""
    if family in ("qwen2_vl", "qwen2_5_vl"):
        return _build_qwen(family)
    elif family == "llava":
        return _build_llava(LLAVA_TEMPLATE, [], "</s>")
    elif family == "remote_code":
        specials = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
        return _build_llava(PHI3_TEMPLATE, specials, "<|end|>")
    elif family == "paligemma":
        return _build_paligemma()
    elif family == "internvl":
        return _build_internvl()
    elif family in ("idefics3", "smolvlm"):
        return _build_idefics(family)
    else:
        return _build_onevision()
