"""The tiny twins are real architectures that reload, train and stay offline."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlmctl.testing.tiny import FAMILIES, FAMILY_INFO, build_tiny_model
from vlmctl.testing.tiny_families import IMAGE_SIZE

VIDEO_FAMILIES = tuple(f for f in FAMILIES if FAMILY_INFO[f]["supports_video"])


def _image(rgb=(200, 30, 30)):
    from PIL import Image

    return Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), rgb)


def _load(path, family):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    trust = FAMILY_INFO[family]["trust_remote_code"]
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust)
    model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=trust)
    return processor, model


def _image_batch(processor, family):
    if family == "paligemma":
        batch = processor(
            text=["<image>What colour is the image?"],
            images=[_image()],
            suffix=["red"],
            return_tensors="pt",
        )
        return batch, batch.pop("labels")
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]},
        {
            "role": "user",
            "content": [
                {"type": "image", "image": _image()},
                {"type": "text", "text": "What colour is the image?"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "red"}]},
    ]
    batch = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_tensors="pt"
    )
    return batch, batch["input_ids"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One build per family for the whole module (each takes well under a second)."""
    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = build_tiny_model(family, tmp_path_factory.mktemp(family))
        return cache[family]

    return get


def test_family_info_covers_every_family():
    assert set(FAMILY_INFO) == set(FAMILIES)
    assert VIDEO_FAMILIES == ("qwen2_vl", "qwen2_5_vl", "llava_onevision")
    for family, info in FAMILY_INFO.items():
        assert info["image_token"], family
        assert info["end_of_turn"], family
        assert bool(info["video_token"]) == info["supports_video"], family


def test_unknown_family_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown tiny family"):
        build_tiny_model("gpt5_vision", tmp_path)


@pytest.mark.parametrize("family", FAMILIES)
def test_reload_forward_backward(family, built):
    import torch

    path = built(family)
    assert (path / "config.json").is_file()
    assert (path / "model.safetensors").is_file()
    assert (path / "tokenizer.json").is_file()
    size_mb = sum(f.stat().st_size for f in path.iterdir()) / 1e6
    assert size_mb < 5, f"{family} twin is {size_mb:.1f} MB"

    processor, model = _load(path, family)
    info = FAMILY_INFO[family]
    assert type(model).__name__ == info["model_class"]
    assert type(processor).__name__ == info["processor_class"]

    batch, labels = _image_batch(processor, family)
    image_id = processor.tokenizer.convert_tokens_to_ids(info["image_token"])
    n_image_tokens = int((batch["input_ids"] == image_id).sum())
    assert 1 <= n_image_tokens <= 64, n_image_tokens
    assert batch["input_ids"].shape[1] < 128

    model.train()
    out = model(**batch, labels=labels)
    assert math.isfinite(out.loss.item())
    # Random weights over a ~1k vocab: the loss is near log(vocab), far from 0.
    assert out.loss.item() > 1.0
    out.loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # The image reaches the loss: the vision tower gets a gradient.
    vision_grads = [
        p.grad.abs().sum().item()
        for n, p in model.named_parameters()
        if p.grad is not None and any(k in n for k in ("visual", "vision_tower", "vision_model"))
    ]
    assert vision_grads and sum(vision_grads) > 0


@pytest.mark.parametrize("family", [f for f in FAMILIES if FAMILY_INFO[f]["has_chat_template"]])
def test_chat_template_renders_turns(family, built):
    from transformers import AutoProcessor

    info = FAMILY_INFO[family]
    processor = AutoProcessor.from_pretrained(
        built(family), trust_remote_code=info["trust_remote_code"]
    )
    messages = [
        {"role": "system", "content": [{"type": "text", "text": "Answer briefly."}]},
        {
            "role": "user",
            "content": [{"type": "image"}, {"type": "text", "text": "Which colour?"}],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "blue"}]},
        {"role": "user", "content": [{"type": "text", "text": "Sure?"}]},
    ]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert "Which colour?" in text and "blue" in text and "Sure?" in text
    assert text.index("Which colour?") < text.index("blue") < text.index("Sure?")
    placeholder = "<|vision_start|><|image_pad|><|vision_end|>" if "qwen" in family else None
    assert (placeholder or info["image_token"]) in text
    if info["template_ends_turn"]:
        assert text.count(info["end_of_turn"]) >= 3
    # add_generation_prompt opens an assistant turn at the very end.
    without = processor.apply_chat_template(messages, tokenize=False)
    assert text.startswith(without) and len(text) > len(without)


def test_paligemma_marks_the_suffix(built):
    processor, _ = _load(built("paligemma"), "paligemma")
    assert processor.chat_template is None
    batch, labels = _image_batch(processor, "paligemma")
    eos = processor.tokenizer.eos_token_id
    trained = labels[labels != -100].tolist()
    assert trained[-1] == eos
    assert processor.tokenizer.decode(trained[:-1]).strip() == "red"
    # token_type_ids mark the suffix so it attends causally.
    assert batch["token_type_ids"][0, -len(trained) :].tolist() == [1] * len(trained)


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
@pytest.mark.parametrize("as_numpy", [False, True], ids=["pil", "numpy"])
def test_video_forward(family, as_numpy, built):
    from PIL import Image

    processor, model = _load(built(family), family)
    frames = [
        Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), (0, 40 * i, 255 - 40 * i)) for i in range(4)
    ]
    video = np.stack([np.asarray(f) for f in frames]) if as_numpy else frames
    messages = [
        {
            "role": "user",
            "content": [
                {"type": "video", "video": video},
                {"type": "text", "text": "What happens in the video?"},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "It turns green."}]},
    ]
    batch = processor.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_tensors="pt"
    )
    assert "pixel_values_videos" in batch
    video_id = processor.tokenizer.convert_tokens_to_ids(FAMILY_INFO[family]["video_token"])
    assert int((batch["input_ids"] == video_id).sum()) > 0
    out = model(**batch, labels=batch["input_ids"])
    assert math.isfinite(out.loss.item())
    out.loss.backward()


def test_remote_code_needs_trust(built):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoProcessor

    path = built("remote_code")
    assert (path / "modeling_tiny_remote.py").is_file()
    # trust_remote_code=False (not None): None would prompt on a terminal.
    for auto in (AutoConfig, AutoProcessor, AutoModelForCausalLM):
        with pytest.raises(ValueError, match="trust_remote_code"):
            auto.from_pretrained(path, trust_remote_code=False)
    config = AutoConfig.from_pretrained(path, trust_remote_code=True)
    assert type(config).__name__ == "TinyRemoteVLMConfig"
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)
    assert type(model).__name__ == "TinyRemoteVLMForCausalLM"


def test_same_seed_same_weights(tmp_path):
    from safetensors.torch import load_file

    a = load_file(build_tiny_model("qwen2_vl", tmp_path / "a", seed=3) / "model.safetensors")
    b = load_file(build_tiny_model("qwen2_vl", tmp_path / "b", seed=3) / "model.safetensors")
    c = load_file(build_tiny_model("qwen2_vl", tmp_path / "c", seed=4) / "model.safetensors")
    assert a.keys() == b.keys() == c.keys()
    assert all((a[k] == b[k]).all() for k in a)
    assert any(not (a[k] == c[k]).all() for k in a)
    tok_a = (tmp_path / "a" / "tokenizer.json").read_text()
    assert tok_a == (tmp_path / "c" / "tokenizer.json").read_text()


@pytest.mark.parametrize("family", FAMILIES)
def test_deterministic_per_family(family, tmp_path):
    from safetensors.torch import load_file

    a = load_file(build_tiny_model(family, tmp_path / "a") / "model.safetensors")
    b = load_file(build_tiny_model(family, tmp_path / "b") / "model.safetensors")
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a)


@pytest.mark.parametrize("family", ["qwen2_vl", "internvl", "llava"])
def test_batch_of_two_pads_as_documented(family, built):
    from PIL import Image

    processor, _ = _load(built(family), family)
    sizes = [(32, 32), (64, 48)]
    convs = [
        [
            {
                "role": "user",
                "content": [
                    {"type": "image", "image": Image.new("RGB", size, (0, 200, 0))},
                    {"type": "text", "text": text},
                ],
            }
        ]
        for size, text in zip(
            sizes, ["Colour?", "What colour is the image in the picture?"], strict=True
        )
    ]
    batch = processor.apply_chat_template(
        convs, tokenize=True, return_dict=True, return_tensors="pt", padding=True
    )
    mask = batch["attention_mask"]
    assert mask.shape[0] == 2 and (mask == 0).any()
    padded_row = int(mask.sum(1).argmin())
    left = FAMILY_INFO[family]["padding_side"] == "left"
    assert mask[padded_row, 0 if left else -1] == 0
