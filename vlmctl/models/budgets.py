"""What one image (and one video frame) costs in tokens with a model's real processor settings.

Why: a processor's defaults decide most of a row's length. With the released settings a
two-image row costs about 6,700 tokens on InternVL2 (13 tiles of 256 per image), 4,700 on
Idefics3 (1456-px upscale, 364-px tiles of 169) and 2,070 on PaliGemma-448; under the default
`max_length: 2048` every such row is dropped. `init` uses these numbers to write settings under
which a typical row fits, and `validate` to say which setting makes over-long rows fit.

Pure Python and cheap (no torch/transformers import): the arithmetic is the processors' own
(Qwen's `smart_resize`, Idefics3's rescale-then-tile, InternVL's closest-aspect-ratio tiles,
Phi-3-vision's HD transform), with the released defaults kept in `FAMILIES` (keyed by
`model_type`) and overridden by a local folder's `preprocessor_config.json` /
`processor_config.json` / `config.json` when there is one. `tests/test_budgets.py` checks
the arithmetic and the table against the real processor classes and the kit's released files.
`image_tokens` counts the media placeholder tokens (the processor's expansion of the image
token); `knob` also leaves room for the few wrapper tokens around each image (Qwen's
<|vision_start|>/<|vision_end|>, InternVL's <img>/</img>, Idefics3's per-tile markers), which
`validate` counts as media.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# A "typical" image for init's defaults and for rows whose sizes are unknown: a 4:3 photo.
TYPICAL_IMAGE = (1024, 768)  # width, height
# What init budgets for: two images, a short question and answer, template overhead.
TYPICAL_IMAGES_PER_ROW = 2
TYPICAL_TEXT_TOKENS = 200

_QWEN2_VL: dict[str, Any] = {
    "kind": "qwen",
    "patch_size": 14,
    "merge_size": 2,
    "temporal_patch_size": 2,
    "min_pixels": 3136,
    "max_pixels": 12845056,
    "video_min_pixels": 128 * 28 * 28,
    "video_max_pixels": 768 * 28 * 28,
}

# Released processor defaults per model_type. `kind` picks the arithmetic.
FAMILIES: dict[str, dict[str, Any]] = {
    "qwen2_vl": _QWEN2_VL,
    "qwen2_5_vl": dict(_QWEN2_VL),  # Qwen2.5-VL kept Qwen2-VL's processor settings
    "qwen3_vl": {
        "kind": "qwen",
        "patch_size": 16,
        "merge_size": 2,
        "temporal_patch_size": 2,
        "min_pixels": 65536,
        "max_pixels": 16777216,
        # the video processor caps the whole clip (32*32*768 pixels): the share of 8 frames
        "video_min_pixels": 4096,
        "video_max_pixels": 32 * 32 * 768 // 8,
    },
    "glm4v": {
        "kind": "qwen",
        "patch_size": 14,
        "merge_size": 2,
        "temporal_patch_size": 2,
        "min_pixels": 12544,
        "max_pixels": 47040000,
        # the video processor caps the whole clip: the share of 8 frames
        "video_min_pixels": 12544,
        "video_max_pixels": 28 * 28 * 2 * 30000 // 8,
    },
    "llava": {"kind": "fixed", "image_seq_length": 576},
    "paligemma": {"kind": "fixed", "image_seq_length": 256},  # 1024 at 448 px, 4096 at 896 px
    "gemma3": {"kind": "fixed", "image_seq_length": 256},
    "idefics2": {"kind": "fixed", "image_seq_length": 64},
    "mllama": {"kind": "fixed", "image_seq_length": 1},  # cross-attention: one <|image|> token
    "idefics3": {
        "kind": "tiles",
        "longest_edge": 1456,
        "tile": 364,
        "image_seq_len": 169,
        "do_image_splitting": True,
    },
    "smolvlm": {
        "kind": "tiles",
        "longest_edge": 1536,
        "tile": 384,
        "image_seq_len": 81,
        "do_image_splitting": True,
    },
    "internvl": {
        "kind": "internvl",
        "image_size": 448,
        "tokens_per_tile": 256,
        "min_tiles": 1,
        "max_tiles": 12,
        "thumbnail": True,
    },
    "internvl_chat": {
        "kind": "internvl",
        "image_size": 448,
        "tokens_per_tile": 256,
        "min_tiles": 1,
        "max_tiles": 12,
        "thumbnail": True,
    },
    "phi3_v": {"kind": "phi3v", "num_crops": 16, "num_img_tokens": 144},
    # Any-resolution grids: the count depends on the grid pinpoints; these are the upper bounds
    # of the released settings (base image plus the largest grid).
    "llava_next": {"kind": "fixed", "image_seq_length": 2928, "upper_bound": True},
    "llava_onevision": {"kind": "fixed", "image_seq_length": 7371, "upper_bound": True},
}

# Hub-id fragments -> model_type, for `init --model <hub id>` without a local folder.
_ID_HINTS: list[tuple[str, str]] = [
    (r"qwen2\.5-vl|qwen2_5_vl", "qwen2_5_vl"),
    (r"qwen3-vl|qwen3_vl", "qwen3_vl"),
    (r"qwen2-vl|qwen2_vl", "qwen2_vl"),
    (r"glm-4\.1v|glm-4v|glm4v", "glm4v"),
    (r"internvl[23]?(\.5)?-.*-hf$", "internvl"),
    (r"internvl", "internvl_chat"),
    (r"paligemma", "paligemma"),
    (r"gemma-3", "gemma3"),
    (r"smolvlm", "smolvlm"),
    (r"idefics3", "idefics3"),
    (r"idefics2", "idefics2"),
    (r"llava-onevision", "llava_onevision"),
    (r"llava-v1\.6|llava-next", "llava_next"),
    (r"llava", "llava"),
    (r"llama-3\.2-.*vision", "mllama"),
    (r"phi-3(\.5)?-vision", "phi3_v"),
]


@dataclass
class Budget:
    """A model family's media cost: settings plus the processor's arithmetic."""

    model_type: str
    settings: dict[str, Any]
    sources: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """Which arithmetic applies (qwen, fixed, tiles, internvl, phi3v)."""
        return str(self.settings["kind"])

    def image_tokens(self, width: int = TYPICAL_IMAGE[0], height: int = TYPICAL_IMAGE[1]) -> int:
        """Media tokens of one image of this size with these settings."""
        s = self.settings
        if self.kind == "qwen":
            h, w = qwen_resize(
                height, width, s["patch_size"] * s["merge_size"], s["min_pixels"], s["max_pixels"]
            )
            return (h // s["patch_size"]) * (w // s["patch_size"]) // s["merge_size"] ** 2
        if self.kind == "fixed":
            return int(s["image_seq_length"])
        if self.kind == "tiles":
            return idefics_tiles(width, height, s) * int(s["image_seq_len"])
        if self.kind == "internvl":
            return internvl_tiles(width, height, s) * int(s["tokens_per_tile"])
        if self.kind == "phi3v":
            w, h = phi3v_size(width, height, int(s["num_crops"]))
            n = int(s["num_img_tokens"])
            return int((h // 336 * w // 336 + 1) * n + 1 + (h // 336 + 1) * 12)
        raise ValueError(f"unknown budget kind {self.kind!r}")

    def frame_tokens(self, width: int = TYPICAL_IMAGE[0], height: int = TYPICAL_IMAGE[1]) -> float:
        """Media tokens one video frame adds (Qwen merges 2 frames into one temporal patch)."""
        s = self.settings
        if self.kind == "qwen":
            h, w = qwen_resize(
                height,
                width,
                s["patch_size"] * s["merge_size"],
                s["video_min_pixels"],
                s["video_max_pixels"],
            )
            grid = (h // s["patch_size"]) * (w // s["patch_size"]) // s["merge_size"] ** 2
            return grid / s["temporal_patch_size"]
        if self.kind == "internvl":  # one tile per frame
            return float(s["tokens_per_tile"])
        if self.kind == "tiles":  # SmolVLM frames are single (unsplit) images
            return float(s["image_seq_len"])
        return float(self.image_tokens(width, height))

    @property
    def upper_bound(self) -> bool:
        """True when image_tokens is the released grid's maximum, not an exact count."""
        return bool(self.settings.get("upper_bound"))

    def knob(self, per_image: int) -> tuple[dict[str, Any], str] | None:
        """`processor_params` under which one typical image costs at most `per_image` tokens."""
        s = self.settings
        if per_image <= 0:
            return None
        if self.kind == "qwen":
            unit = (s["patch_size"] * s["merge_size"]) ** 2
            tokens = per_image - 2  # <|vision_start|> ... <|vision_end|>
            if tokens < 1:
                return None
            max_pixels = tokens * unit
            if max_pixels < s["min_pixels"]:
                return None
            return (
                {"size": {"longest_edge": max_pixels, "shortest_edge": s["min_pixels"]}},
                f"size.longest_edge {max_pixels} pixels (= {tokens} x "
                f"{s['patch_size'] * s['merge_size']}^2: at most {tokens} tokens an image)",
            )
        if self.kind == "tiles":
            seq = int(s["image_seq_len"])
            if per_image < seq + 3:
                return None
            tile = int(s["tile"])

            def cost_of(n_images: int) -> int:  # each tile: 2 markers; the global image: 3
                return n_images * (seq + 2) + 1

            if per_image < cost_of(3):  # no split: one image of seq tokens
                return (
                    {"do_image_splitting": False},
                    f"do_image_splitting false ({seq} tokens an image)",
                )
            for n in range(max(1, int(s["longest_edge"]) // tile), 0, -1):
                cand = {**s, "longest_edge": n * tile}
                cost = cost_of(idefics_tiles(*TYPICAL_IMAGE, cand))
                if cost <= per_image:
                    return (
                        {"size": {"longest_edge": n * tile}},
                        f"size.longest_edge {n * tile} ({cost} tokens a {TYPICAL_IMAGE[0]}x"
                        f"{TYPICAL_IMAGE[1]} image)",
                    )
            return (
                {"do_image_splitting": False},
                f"do_image_splitting false ({seq} tokens an image)",
            )
        if self.kind == "internvl":
            per_tile = int(s["tokens_per_tile"])
            if per_image < per_tile + 2:  # <img> ... </img>
                return None
            best = None
            for n in range(int(s["max_tiles"]), 0, -1):
                cand = {**s, "max_tiles": n}
                if internvl_tiles(*TYPICAL_IMAGE, cand) * per_tile + 2 <= per_image:
                    best = n
                    break
            if best is None:
                return None
            key = "max_dynamic_patch" if self.model_type == "internvl_chat" else "max_patches"
            cost = internvl_tiles(*TYPICAL_IMAGE, {**s, "max_tiles": best}) * per_tile
            return (
                {key: best},
                f"{key} {best} ({cost} tokens a {TYPICAL_IMAGE[0]}x{TYPICAL_IMAGE[1]} image)",
            )
        if self.kind == "phi3v":
            for n in range(int(s["num_crops"]), 0, -1):
                cand = Budget(self.model_type, {**s, "num_crops": n})
                cost = cand.image_tokens()
                if cost <= per_image:
                    return ({"num_crops": n}, f"num_crops {n} ({cost} tokens a typical image)")
            return None
        return None  # fixed cost: only max_length (or another checkpoint) helps


def qwen_resize(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """Qwen2-VL's `smart_resize`: sides multiples of `factor`, area within the pixel limits."""
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def idefics_tiles(width: int, height: int, s: dict[str, Any]) -> int:
    """Idefics3/SmolVLM: images (tiles plus the global one) after rescale-to-longest-edge."""
    if not s.get("do_image_splitting", True):
        return 1
    max_len, tile = int(s["longest_edge"]), int(s["tile"])
    aspect = width / height
    if width >= height:
        width, height = max_len, int(max_len / aspect)
        height += height % 2
    else:
        height, width = max_len, int(max_len * aspect)
        width += width % 2
    height, width = max(height, 1), max(width, 1)
    aspect = width / height
    if width >= height:
        width = math.ceil(width / tile) * tile
        height = math.ceil(int(width / aspect) / tile) * tile
    else:
        height = math.ceil(height / tile) * tile
        width = math.ceil(int(height * aspect) / tile) * tile
    if height > tile or width > tile:
        return math.ceil(height / tile) * math.ceil(width / tile) + 1
    return 1


def internvl_tiles(width: int, height: int, s: dict[str, Any]) -> int:
    """InternVL's dynamic preprocess: tiles of the closest grid ratio, plus a thumbnail."""
    lo, hi, size = int(s["min_tiles"]), int(s["max_tiles"]), int(s["image_size"])
    ratios = sorted(
        {
            (i, j)
            for n in range(lo, hi + 1)
            for i in range(1, n + 1)
            for j in range(1, n + 1)
            if lo <= i * j <= hi
        },
        key=lambda r: r[0] * r[1],
    )
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    area = width * height
    for r in ratios:
        diff = abs(aspect - r[0] / r[1])
        if diff < best_diff:
            best, best_diff = r, diff
        elif diff == best_diff and area > 0.5 * size * size * r[0] * r[1]:
            best = r
    blocks = best[0] * best[1]
    return blocks + (1 if s.get("thumbnail", True) and blocks != 1 else 0)


def phi3v_size(width: int, height: int, hd_num: int) -> tuple[int, int]:
    """Phi-3-vision's `calc_hd_transform_size`: the padded size, multiples of 336."""
    transposed = width < height
    if transposed:
        width, height = height, width
    ratio = width / height
    scale = 1
    while scale * math.ceil(scale / ratio) <= hd_num:
        scale += 1
    scale -= 1
    new_w = int(scale * 336)
    new_h = int(new_w / ratio)
    padded_h = int(math.ceil(new_h / 336) * 336)
    w, h = new_w, padded_h
    return (h, w) if transposed else (w, h)


def guess_model_type(model: str) -> str | None:
    """A hub id's family from its name (init without a local folder); None when unknown."""
    low = model.lower()
    for pattern, model_type in _ID_HINTS:
        if re.search(pattern, low):
            return model_type
    return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def budget_for(model: str, model_type: str | None = None) -> Budget | None:
    """The budget of a hub id or local folder: table defaults, then the folder's own files."""
    folder = Path(model).expanduser()
    cfg: dict[str, Any] = {}
    if folder.is_dir():
        cfg = _read_json(folder / "config.json")
        model_type = model_type or cfg.get("model_type")
    model_type = model_type or guess_model_type(model)
    if model_type not in FAMILIES:
        return None
    settings = dict(FAMILIES[model_type])
    sources = [f"vlmctl's table of released defaults ({model_type})"]
    res = re.search(r"-(224|448|896)\b", model)
    if model_type == "paligemma" and res and not folder.is_dir():
        settings["image_seq_length"] = (int(res.group(1)) // 14) ** 2  # SigLIP patch 14
    if folder.is_dir():
        _apply_folder(model_type, settings, folder, cfg, sources)
    return Budget(model_type, settings, sources)


def _apply_folder(
    model_type: str, s: dict[str, Any], folder: Path, cfg: dict, sources: list
) -> None:
    """Override the table with what the folder's processor files say."""
    pre = _read_json(folder / "preprocessor_config.json")
    proc = _read_json(folder / "processor_config.json")
    vid = _read_json(folder / "video_preprocessor_config.json")
    # transformers 5 saves one processor_config.json with the image/video processors inside.
    if isinstance(proc.get("image_processor"), dict):
        pre = {**proc["image_processor"], **pre}
    if isinstance(proc.get("video_processor"), dict):
        vid = {**proc["video_processor"], **vid}
    for name, data in (("preprocessor_config.json", pre), ("processor_config.json", proc)):
        if data:
            sources.append(str(folder / name))
    kind = s["kind"]
    size = pre.get("size") if isinstance(pre.get("size"), dict) else {}
    if kind == "qwen":
        for key in ("patch_size", "merge_size", "temporal_patch_size", "min_pixels", "max_pixels"):
            if isinstance(pre.get(key), int):
                s[key] = pre[key]
        if isinstance(size.get("shortest_edge"), int) and "min_pixels" not in pre:
            s["min_pixels"] = size["shortest_edge"]
        if isinstance(size.get("longest_edge"), int) and "max_pixels" not in pre:
            s["max_pixels"] = size["longest_edge"]
        vsize = vid.get("size") if isinstance(vid.get("size"), dict) else {}
        s["video_min_pixels"] = vid.get(
            "min_pixels", vsize.get("shortest_edge", s["video_min_pixels"])
        )
        s["video_max_pixels"] = vid.get(
            "max_pixels", vsize.get("longest_edge", s["video_max_pixels"])
        )
    elif kind == "fixed":
        for data in (proc, pre, cfg):
            for key in ("image_seq_length", "num_image_tokens", "mm_tokens_per_image"):
                if isinstance(data.get(key), int) and not s.get("upper_bound"):
                    s["image_seq_length"] = data[key]
                    return
    elif kind == "tiles":
        if isinstance(size.get("longest_edge"), int):
            s["longest_edge"] = size["longest_edge"]
        mis = pre.get("max_image_size")
        if isinstance(mis, dict) and isinstance(mis.get("longest_edge"), int):
            s["tile"] = mis["longest_edge"]
        if isinstance(pre.get("do_image_splitting"), bool):
            s["do_image_splitting"] = pre["do_image_splitting"]
        if isinstance(proc.get("image_seq_len"), int):
            s["image_seq_len"] = proc["image_seq_len"]
    elif kind == "internvl":
        if model_type == "internvl_chat" and cfg:
            s["image_size"] = int(cfg.get("force_image_size") or s["image_size"])
            s["max_tiles"] = int(cfg.get("max_dynamic_patch") or s["max_tiles"])
            s["min_tiles"] = int(cfg.get("min_dynamic_patch") or s["min_tiles"])
            s["thumbnail"] = bool(cfg.get("use_thumbnail", s["thumbnail"]))
            ratio = float(cfg.get("downsample_ratio") or 0.5)
            patch = int((cfg.get("vision_config") or {}).get("patch_size") or 14)
            s["tokens_per_tile"] = int((s["image_size"] // patch) ** 2 * ratio**2)
            sources.append(str(folder / "config.json"))
        else:
            for key, src in (("max_tiles", "max_patches"), ("min_tiles", "min_patches")):
                if isinstance(pre.get(src), int):
                    s[key] = pre[src]
            if isinstance(proc.get("image_seq_length"), int):
                s["tokens_per_tile"] = proc["image_seq_length"]
            if pre.get("crop_to_patches") is False:
                s["max_tiles"] = 1
    elif kind == "phi3v":
        for key in ("num_crops", "num_img_tokens"):
            if isinstance(pre.get(key), int):
                s[key] = pre[key]


def row_tokens(
    budget: Budget, images: int = TYPICAL_IMAGES_PER_ROW, text: int = TYPICAL_TEXT_TOKENS
) -> int:
    """A typical row's length: `images` typical images plus `text` tokens."""
    return images * budget.image_tokens() + text
