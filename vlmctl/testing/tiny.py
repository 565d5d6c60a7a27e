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

from pathlib import Path
from typing import Any

from vlmctl.testing.tiny_families import build_parts, make_remote

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

    config, model_cls, processor = build_parts(family)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config).to(torch.float32).eval()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    if family == "remote_code":
        make_remote(out, model)
    return out
