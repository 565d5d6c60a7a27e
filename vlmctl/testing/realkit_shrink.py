"""How a kit's real config is shrunk to a tiny model that still runs (`vlmctl.testing.realkit`).

Why a module of its own: the real config's token ids, vocabulary, patch and image sizes are kept
while hidden sizes, layers and heads shrink, and several families tie sizes together (the FACTS.md
traps: Qwen's vision output width, M-RoPE sections, PaliGemma's projection, mllama's
concatenated vision layers); `check_tiny` refuses a model a missed key leaves at real size.
"""

from __future__ import annotations

from typing import Any

# Shrunk sizes: hidden sizes, layers and heads only (token ids, vocab, patch/image sizes stay).
_TEXT_SHRINK = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
}
_VISION_SHRINK = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "projection_dim": 32,
}


def _shrink(cfg: dict, sizes: dict, override: dict) -> dict:
    out = dict(cfg)
    out.pop("layer_types", None)  # per-layer lists follow num_hidden_layers (rebuilt by default)
    for key, value in sizes.items():
        if key in ("num_key_value_heads", "head_dim", "projection_dim") and key not in cfg:
            continue
        out[key] = value
    out.update(override or {})
    return out


def _make_consistent(data: dict, shrink: dict) -> None:
    """Fix what shrinking the generic sizes leaves inconsistent (the FACTS.md traps).

    - a vision tower whose `hidden_size` is its OUTPUT width (Qwen2-VL: `embed_dim` is the
      width) or that has an `out_hidden_size` (Qwen2.5-VL, Qwen3-VL) must output the text
      hidden size; `depth` / `num_heads` are the tower's layers and heads;
    - per-layer index lists (Qwen2.5-VL's full-attention blocks, Qwen3-VL's deepstack layers)
      must name layers that still exist;
    - an M-RoPE `mrope_section` must cover half the shrunk head_dim (sum * 2 == head_dim),
      in the released proportions.
    """
    text_key = _text_key(data)
    text = data[text_key] if text_key else data
    vision = data.get("vision_config")
    over = shrink.get("vision") or {}
    if isinstance(vision, dict):
        width = _VISION_SHRINK["hidden_size"]
        if "embed_dim" in vision:  # Qwen2-VL: hidden_size is the merger's output
            vision["embed_dim"] = width
            vision["hidden_size"] = text.get("hidden_size", vision["hidden_size"])
        if "out_hidden_size" in vision:
            vision["out_hidden_size"] = text.get("hidden_size", vision["out_hidden_size"])
        if "depth" in vision:
            vision["depth"] = _VISION_SHRINK["num_hidden_layers"]
        if "num_heads" in vision:
            vision["num_heads"] = _VISION_SHRINK["num_attention_heads"]
        depth = vision.get("depth") or vision.get("num_hidden_layers") or 2
        for key in ("fullatt_block_indexes", "deepstack_visual_indexes"):
            if isinstance(vision.get(key), list) and key not in over:
                vision[key] = list(range(depth))[-min(len(vision[key]), depth) :]
        if isinstance(vision.get("intermediate_layers_indices"), list):  # Llama-3.2-Vision
            vision["intermediate_layers_indices"] = list(range(depth))
        if "num_global_layers" in vision:
            vision["num_global_layers"] = 1
        if "vision_output_dim" in vision:  # the final + each intermediate layer, concatenated
            layers = len(vision.get("intermediate_layers_indices") or []) + 1
            vision["vision_output_dim"] = vision["hidden_size"] * layers
        vision.update(over)
    if "projection_dim" in data and text is not data:  # PaliGemma: the projector's output
        data["projection_dim"] = text.get("hidden_size", data["projection_dim"])
    if isinstance(text.get("cross_attention_layers"), list):  # Llama-3.2-Vision: one of two
        text["cross_attention_layers"] = [text.get("num_hidden_layers", 2) - 1]
    head_dim = text.get("head_dim") or text["hidden_size"] // text["num_attention_heads"]
    default = _MROPE_DEFAULT.get(str(data.get("model_type")))
    rope = text.get("rope_parameters")
    if default and isinstance(rope, dict) and "mrope_section" not in rope:
        rope["mrope_section"] = list(default)  # the modeling code's default, scaled below
    for key in ("rope_parameters", "rope_scaling"):
        for holder in (text, data):
            rope = holder.get(key)
            if isinstance(rope, dict) and isinstance(rope.get("mrope_section"), list):
                rope["mrope_section"] = _scaled_sections(rope["mrope_section"], head_dim // 2)


# M-RoPE sections the modeling code uses when the config names none (sum * 2 == head_dim 128).
_MROPE_DEFAULT = {"qwen2_vl": (16, 24, 24), "qwen2_5_vl": (16, 24, 24), "qwen3_vl": (24, 20, 20)}


def _scaled_sections(sections: list[int], total: int) -> list[int]:
    """`sections` rescaled to sum to `total`, keeping their proportions (each at least 1)."""
    old = sum(sections)
    out = [max(1, round(s * total / old)) for s in sections]
    out[-1] += total - sum(out)
    return out


# Config keys holding a token id, and the processor/tokenizer attributes naming that token.
_TOKEN_ID_KEYS = {
    "image_token_id": ("image_token",),
    "image_token_index": ("image_token",),
    "video_token_id": ("video_token",),
    "video_token_index": ("video_token",),
    "vision_start_token_id": ("vision_start_token",),
    "vision_end_token_id": ("vision_end_token",),
    "boi_token_index": ("boi_token",),
    "eoi_token_index": ("eoi_token",),
}


def _match_token_ids(data: dict, processor, tok) -> None:
    """Point the config's media/special token ids at the kit tokenizer's ids.

    A config class's defaults carry the reference checkpoint's ids (PaliGemma's <image> at
    257152, Gemma 3's at 262144); a kit whose tokenizer puts those tokens elsewhere would
    never find its image features."""
    for key, attrs in _TOKEN_ID_KEYS.items():
        if key not in data:
            continue
        for attr in attrs:
            # The tokenizer's token first: Gemma3Processor's own image_token is <start_of_image>
            # (what the user writes), the model's image_token_index the soft token it expands to.
            name = getattr(tok, attr, None) or getattr(processor, attr, None)
            if isinstance(name, str) and name:
                idx = tok.convert_tokens_to_ids(name)
                if isinstance(idx, int) and idx >= 0 and idx != tok.unk_token_id:
                    data[key] = idx
                break
    text_key = _text_key(data)
    for holder in (data, data[text_key] if text_key else None):
        if holder is None:
            continue
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            idx = getattr(tok, key, None)
            if key in holder and isinstance(idx, int):
                holder[key] = idx


MAX_KIT_PARAMS = 60_000_000


def check_tiny(config, model_cls, kit: Any) -> int:
    """Count the model's parameters on the meta device; refuse a kit model that is not tiny.

    Why: a config key the shrink misses leaves a real-size layer (a flat config's text keys
    once built a 7B Qwen2.5-VL here and took a test run's machine down). The embeddings are
    vocab x hidden (the real vocabulary), everything else is small."""
    import torch

    try:
        with torch.device("meta"):
            model = model_cls.from_config(config, trust_remote_code=kit.remote_code)
    except Exception:  # noqa: BLE001 - remote code that calls .item() while building
        # (InternViT's drop-path schedule): the config's own sizes first (every linear is at
        # most hidden x intermediate), then, shrunk, a real build on the CPU is cheap.
        _check_sizes(config.to_dict(), kit)
        model = model_cls.from_config(config, trust_remote_code=kit.remote_code)
    n = sum(p.numel() for p in model.parameters())
    if n > MAX_KIT_PARAMS:
        big = sorted(((p.numel(), name) for name, p in model.named_parameters()), reverse=True)
        raise ValueError(
            f"{kit.family}: the shrunk model has {n:,} parameters (> {MAX_KIT_PARAMS:,}); "
            f"largest: {big[:3]} (a config size the kit shrink does not cover)"
        )
    return n


def _check_sizes(data: dict, kit: Any) -> int:
    """Refuse a config whose layer sizes were not shrunk (no meta-device build possible)."""
    big = {
        f"{path}{key}": value
        for path, holder in (("", data), *((f"{k}.", v) for k, v in data.items()
                                           if isinstance(v, dict)))
        for key, value in holder.items()
        if key in ("hidden_size", "intermediate_size", "num_hidden_layers", "embed_dim")
        and isinstance(value, int) and value > 4 * _TEXT_SHRINK["intermediate_size"]
    }  # fmt: skip
    if big:
        raise ValueError(f"{kit.family}: sizes not shrunk: {big}")
    return 0


def _text_key(data: dict) -> str | None:
    """The key of the language model's sub-config (None: a flat config)."""
    for key in ("text_config", "llm_config"):
        if isinstance(data.get(key), dict):
            return key
    return None
