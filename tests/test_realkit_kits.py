"""The kit models are tiny and consistent, and InternVL2's processor adapter does InternVL's math.

Fast (meta-device builds, no weights): a config size the shrink misses once built a 7B
Qwen2.5-VL inside a test run (its released config.json is flat: the text sizes are top-level).
"""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from _collate_util import image
from _realkit_util import kit, kit_folder, kit_params, kit_processor

from vlmctl.testing.realkit import kit_model_config, load_kit
from vlmctl.testing.realkit_shrink import MAX_KIT_PARAMS, check_tiny

MODEL_KITS = kit_params(models_only=True)


@pytest.mark.parametrize("family", MODEL_KITS)
def test_shrunk_kit_config_is_tiny_and_consistent(family, tmp_path):
    import shutil

    folder = tmp_path / family
    shutil.copytree(kit_folder(family), folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config, model_cls = kit_model_config(kit(family), folder)
        n = check_tiny(config, model_cls, kit(family))
    assert 0 < n <= MAX_KIT_PARAMS, n
    proc = kit_processor(family)
    tok = proc.tokenizer
    # (InternVL2's remote config keeps its LLM under llm_config, which get_text_config misses)
    text = getattr(config, "llm_config", None) or config.get_text_config()
    assert text.hidden_size <= 64 and text.num_hidden_layers <= 2
    assert text.vocab_size >= len(tok)
    # The logits of one step are tokens x vocab: a config class's default vocabulary (Gemma's
    # 257k) on a 33k kit tokenizer cost gigabytes; only a released config's padding is kept.
    assert text.vocab_size <= max(len(tok), 152_064), text.vocab_size
    # The model finds its image features only at the tokenizer's image token id.
    for key in ("image_token_id", "image_token_index"):
        if hasattr(config, key):
            name = getattr(tok, "image_token", None) or proc.image_token
            assert getattr(config, key) == tok.convert_tokens_to_ids(name), (key, name)
    rope = getattr(text, "rope_parameters", None) or {}
    if "mrope_section" in rope:  # FACTS.md: sum(mrope_section) * 2 == head_dim
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        assert sum(rope["mrope_section"]) * 2 == head_dim, rope


def test_an_unshrunk_released_config_is_refused(tmp_path):
    """Qwen2.5-VL-7B's released config.json built as is: 8B parameters (counted on meta)."""
    import transformers as tf

    k = load_kit(kit("qwen2_5_vl").path)
    data = json.loads((k.path / "config.json").read_text())
    data.pop("torch_dtype", None)
    config = tf.AutoConfig.for_model(**data)
    with pytest.raises(ValueError, match="parameters"):
        check_tiny(config, tf.AutoModelForImageTextToText, k)


# --------------------------------------------------------------------------- InternVL2 adapter


def _internvl():
    return kit_processor("internvl_chat")


@pytest.mark.skipif(not any(p.values[0] == "internvl_chat" and not p.marks for p in kit_params()),
                    reason="internvl_chat kit unavailable (needs sentencepiece)")  # fmt: skip
class TestInternVLChatProcessor:
    def test_settings_come_from_the_checkpoint_config(self):
        proc = _internvl()
        cfg = json.loads((kit("internvl_chat").path / "config.json").read_text())
        assert (proc.image_size, proc.max_dynamic_patch, proc.use_thumbnail) == (
            cfg["force_image_size"],
            cfg["max_dynamic_patch"],
            cfg["use_thumbnail"],
        )
        # InternVLChatModel: int((448 // 14) ** 2 * 0.5 ** 2)
        assert proc.num_image_token == 256

    @pytest.mark.parametrize(
        ("size", "grid"),
        [
            ((32, 32), (1, 1)),
            ((896, 448), (2, 1)),
            ((448, 1344), (1, 3)),
            ((300, 299), (1, 1)),
            ((1000, 999), (3, 3)),
        ],
    )
    def test_tile_grid_follows_the_aspect_ratio(self, size, grid):
        from vlmctl.models.internvl_chat import closest_grid

        assert closest_grid(*size, 448, 1, 12) == grid

    def test_big_square_image_takes_the_larger_grid_on_a_tie(self):
        from vlmctl.models.internvl_chat import closest_grid

        # 1:1, 2:2 and 3:3 tie on the aspect ratio: a big image takes the largest that it
        # fills more than half of (the released tie rule).
        assert closest_grid(1400, 1400, 448, 1, 12) == (3, 3)

    def test_each_image_tag_becomes_its_tiles_context_tokens(self):
        proc = _internvl()
        tok = proc.tokenizer
        wide = image(1, (896, 448))  # 2 tiles + thumbnail
        out = proc("<s>A <image> B <image> C", [image(0), wide])
        ids = out["input_ids"][0]
        ctx = tok.convert_tokens_to_ids("<IMG_CONTEXT>")
        assert int((ids == ctx).sum()) == 256 * (1 + 3)
        assert int((ids == tok.convert_tokens_to_ids("<img>")).sum()) == 2
        assert out["pixel_values"].shape == (4, 3, 448, 448)
        assert out["image_flags"].shape == (4, 1)
        assert int((ids == tok.bos_token_id).sum()) == 1  # the template's bos, not a second

    def test_pixels_are_bicubic_resized_and_imagenet_normalised(self):
        from PIL import Image

        proc = _internvl()
        img = image(3, (30, 30))  # one tile (a 40x30 image would take a 4x3 grid)
        pv = proc("<image>", [img])["pixel_values"][0]
        ref = (
            torch.tensor(
                list(img.resize((448, 448), Image.BICUBIC).getdata()), dtype=torch.float32
            ).T.reshape(3, 448, 448)
            / 255.0
        )
        mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
        std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
        assert torch.allclose(pv, (ref - mean) / std, atol=1e-5)

    def test_more_images_than_tags_is_refused(self):
        with pytest.raises(ValueError, match="tags"):
            _internvl()("<s>no tag here", [image(0)])


def test_preview_pieces_of_negative_media_ids_do_not_reach_the_tokenizer():
    """Phi-3-vision's processor writes image positions as negative ids; the slow/fast tokenizer
    raises OverflowError on them (seen through `vlmctl preview` on the phi3_v kit)."""
    from vlmctl.preview.document import decode_pieces

    tok = kit_processor("phi3_v").tokenizer
    ids = tok("red").input_ids
    pieces = decode_pieces(tok, [-1, -1, *ids])
    assert pieces[:2] == ["<image>", "<image>"]
    assert "".join(pieces[2:]).strip().endswith("red")
