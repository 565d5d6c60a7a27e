"""A processor for InternVL2's remote-code checkpoints (`internvl_chat`), which ship none.

Why: InternVL2 (`OpenGVLab/InternVL2-*`, model_type `internvl_chat`, `InternVLChatModel`)
releases a tokenizer (with a string-only chat template) and modeling code, but no HF processor:
`AutoProcessor.from_pretrained` returns the bare tokenizer, and the image handling lives in
`model.chat()` and the model card. `InternVLChatProcessor` does what that code does, read from
the checkpoint's own files, so the collator can treat InternVL2 like any other processor:

- the text: the tokenizer's chat template renders the chat (string content, images written as
  `<image>`: InternVL's `<image>` convention; the same `<|im_start|>role\\n...<|im_end|>\\n`
  layout that InternVL's own fine-tuning code builds for InternLM2 models);
- each `<image>` becomes `<img>` + `<IMG_CONTEXT>` x num_image_token x tiles + `</img>`, in
  order (`model.chat`'s replacement), with `num_image_token = (image_size // patch_size) ** 2 *
  downsample_ratio ** 2` (the modeling code's arithmetic: 256 for 448-px tiles, patch 14, 0.5);
- the image: InternVL's dynamic tiling (the aspect ratio closest to the image among the tile
  grids with min..max_dynamic_patch tiles, ties going to the larger grid when the image is
  big enough, the image resized to that grid and cut into image_size tiles, plus a thumbnail
  when there is more than one tile), each tile resized to image_size (bicubic) and
  normalised with the ImageNet mean/std: `pixel_values` (tiles, 3, S, S) and `image_flags`
  (tiles, 1), what `InternVLChatModel.forward` takes;
- the tokens: the real tokenizer on the whole expanded text, with bos added unless the text
  already starts with it (the template writes it).

`__call__` takes one text and its images and returns no offsets (the InternLM2 tokenizer is a
slow SentencePiece tokenizer): the collator finds answer spans exactly by prefix calls, as for
Phi-3-vision.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

IMAGE_TAG = "<image>"
IMG_START, IMG_END, IMG_CONTEXT = "<img>", "</img>", "<IMG_CONTEXT>"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODEL_TYPE = "internvl_chat"


def is_internvl_chat(path: str | Path) -> bool:
    """Whether a local model folder is an InternVL2-style remote-code checkpoint."""
    cfg = Path(path) / "config.json"
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("model_type") == MODEL_TYPE
    except (OSError, ValueError, AttributeError):
        return False


def closest_grid(width: int, height: int, image_size: int, lo: int, hi: int) -> tuple[int, int]:
    """The (columns, rows) tile grid InternVL picks for an image of width x height."""
    grids = sorted(
        {(i, j) for n in range(lo, hi + 1) for i in range(1, n + 1) for j in range(1, n + 1)
         if lo <= i * j <= hi},
        key=lambda g: g[0] * g[1],
    )  # fmt: skip
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in grids:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * image_size * image_size * cols * rows:
            best = (cols, rows)
    return best


class InternVLChatProcessor:
    """Tokenizer + InternVL's image tiling and `<image>` expansion, from the checkpoint's files."""

    image_token = IMAGE_TAG
    start_image_token = IMG_START
    end_image_token = IMG_END
    context_image_token = IMG_CONTEXT

    def __init__(
        self,
        tokenizer: Any,
        *,
        image_size: int = 448,
        patch_size: int = 14,
        downsample_ratio: float = 0.5,
        min_dynamic_patch: int = 1,
        max_dynamic_patch: int = 12,
        use_thumbnail: bool = True,
        dynamic_image_size: bool = True,
    ):
        self.tokenizer = tokenizer
        self.image_size = int(image_size)
        self.patch_size = int(patch_size)
        self.downsample_ratio = float(downsample_ratio)
        self.num_image_token = int((image_size // patch_size) ** 2 * (downsample_ratio**2))
        self.min_dynamic_patch = int(min_dynamic_patch)
        self.max_dynamic_patch = int(max_dynamic_patch)
        self.use_thumbnail = bool(use_thumbnail)
        self.dynamic_image_size = bool(dynamic_image_size)
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMG_CONTEXT)

    @classmethod
    def from_pretrained(cls, path: str | Path, **kwargs: Any) -> InternVLChatProcessor:
        """The checkpoint's tokenizer (remote code) and its config.json image settings."""
        from transformers import AutoTokenizer

        kwargs.pop("trust_remote_code", None)
        tok = AutoTokenizer.from_pretrained(str(path), trust_remote_code=True, **kwargs)
        return cls(tok, **image_settings(path))

    # -- what the collator and the tools read

    @property
    def chat_template(self) -> str | None:
        """The tokenizer's template (string content, `<image>` tags in the text)."""
        return self.tokenizer.chat_template

    def save_pretrained(self, out: str | Path, **kwargs: Any) -> None:
        """The tokenizer's files (the image settings stay in the checkpoint's config.json)."""
        self.tokenizer.save_pretrained(str(out), **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    # -- images

    def tiles(self, image: Any) -> list[Any]:
        """InternVL's dynamic tiles of one PIL image (one tile when tiling is off)."""
        image = image.convert("RGB") if image.mode != "RGB" else image
        size = self.image_size
        if not self.dynamic_image_size:
            return [image]
        cols, rows = closest_grid(
            image.width, image.height, size, self.min_dynamic_patch, self.max_dynamic_patch
        )
        resized = image.resize((size * cols, size * rows))
        out = [
            resized.crop((c * size, r * size, (c + 1) * size, (r + 1) * size))
            for r in range(rows)
            for c in range(cols)
        ]
        if self.use_thumbnail and len(out) != 1:
            out.append(image.resize((size, size)))
        return out

    def _pixels(self, tiles: Sequence[Any]):
        import numpy as np
        import torch
        from PIL import Image

        size = self.image_size
        mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)[:, None, None]
        std = np.asarray(IMAGENET_STD, dtype=np.float32)[:, None, None]
        arrays = []
        for tile in tiles:
            tile = tile.resize((size, size), Image.BICUBIC)
            arr = np.asarray(tile, dtype=np.float32).transpose(2, 0, 1) / 255.0
            arrays.append((arr - mean) / std)
        return torch.from_numpy(np.stack(arrays))

    # -- the call

    def __call__(self, text: str | Sequence[str], images: Sequence[Any] | None = None):
        """Text with `<image>` tags (one per image, in order) + images -> model inputs."""
        import torch
        from transformers import BatchFeature

        if not isinstance(text, str):
            if len(text) != 1:
                raise ValueError("InternVLChatProcessor takes one text per call")
            text = text[0]
        flat = list(images or [])
        if flat and isinstance(flat[0], (list, tuple)):
            flat = [im for row in flat for im in row]
        n_tags = text.count(IMAGE_TAG)
        if n_tags < len(flat):
            raise ValueError(f"{len(flat)} images but {n_tags} {IMAGE_TAG} tags in the text")
        tiles_per_image = [self.tiles(im) for im in flat]
        expanded = text
        for tiles in tiles_per_image:  # model.chat: one replacement per image, in order
            tokens = IMG_START + IMG_CONTEXT * self.num_image_token * len(tiles) + IMG_END
            expanded = expanded.replace(IMAGE_TAG, tokens, 1)
        bos = self.tokenizer.bos_token
        add_special = not (bos and expanded.startswith(bos))
        enc = self.tokenizer(expanded, add_special_tokens=add_special)
        data: dict[str, Any] = {
            "input_ids": torch.tensor([enc["input_ids"]], dtype=torch.long),
            "attention_mask": torch.tensor([enc["attention_mask"]], dtype=torch.long),
        }
        all_tiles = [t for tiles in tiles_per_image for t in tiles]
        if all_tiles:
            data["pixel_values"] = self._pixels(all_tiles)
            data["image_flags"] = torch.ones((len(all_tiles), 1), dtype=torch.long)
        return BatchFeature(data)

    def apply_chat_template(
        self,
        messages: list[dict],
        *,
        add_generation_prompt: bool = False,
        tokenize: bool = False,
        **_: Any,
    ):
        """Content-parts messages -> the template's text (or, with tokenize, model inputs)."""
        images, chat = [], []
        for m in messages:
            content = m.get("content")
            if isinstance(content, str):
                chat.append(m)
                continue
            pieces = []
            for part in content or []:
                if part.get("type") == "image":
                    pieces.append(IMAGE_TAG)
                    if part.get("image") is not None:
                        images.append(part["image"])
                elif part.get("text"):
                    pieces.append(str(part["text"]))
            chat.append({**m, "content": "\n".join(pieces)})
        text = self.tokenizer.apply_chat_template(
            chat, tokenize=False, add_generation_prompt=add_generation_prompt
        )
        if not tokenize:
            return text
        return self(text, images)


def wrap_processor(processor: Any, path: str | Path) -> Any:
    """The InternVL2 adapter when `processor` is the bare tokenizer of an internvl_chat folder."""
    if getattr(processor, "image_processor", None) is not None or not is_internvl_chat(path):
        return processor
    return InternVLChatProcessor(getattr(processor, "tokenizer", processor), **image_settings(path))


def image_settings(path: str | Path) -> dict[str, Any]:
    """The image settings of an internvl_chat config.json (the modeling code's defaults)."""
    cfg = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    vision = cfg.get("vision_config") or {}
    return {
        "image_size": cfg.get("force_image_size") or vision.get("image_size", 448),
        "patch_size": vision.get("patch_size", 14),
        "downsample_ratio": cfg.get("downsample_ratio", 0.5),
        "min_dynamic_patch": cfg.get("min_dynamic_patch", 1),
        "max_dynamic_patch": cfg.get("max_dynamic_patch", 12),
        "use_thumbnail": cfg.get("use_thumbnail", True),
        "dynamic_image_size": cfg.get("dynamic_image_size", True),
    }
