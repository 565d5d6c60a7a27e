"""The demo's data and config set: solid-colour images with "What color is this?" -> the
colour's name, and the four files from `vlmctl init`'s templates with the demo's settings.

Also the quickest real training set for tests and benchmarks (`write_color_dataset`,
`write_config_set`).
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "purple": (130, 40, 170),
    "orange": (245, 140, 20),
    "black": (15, 15, 15),
    "white": (240, 240, 240),
}
QUESTION = "What color is this?"
IMAGE_SIZE = 32


@dataclass
class DemoOptions:
    """What `vlmctl demo` was asked for."""

    out: Path
    model: str | None = None
    steps: int = 120
    train_images: int = 256
    eval_images: int = 40
    seed: int = 0
    exclude_vision_modules: bool = True
    lr: float = 2e-3
    batch_size: int = 8
    extra_overrides: tuple[str, ...] = ()


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 18):
    return tuple(max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)


def write_color_dataset(folder: Path, n_train: int, n_eval: int, seed: int = 0) -> dict:
    """`train.csv` and `eval.csv` (image, question, answer) over solid-colour PNGs.

    Each image is one colour with a little per-pixel noise, so no two images are identical and
    the held-out ones are new to the model.
    """
    from PIL import Image

    rng = random.Random(seed)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    names = list(COLORS)
    out = {}
    for split, n in (("train", n_train), ("eval", n_eval)):
        rows = []
        for i in range(n):
            name = names[i % len(names)] if split == "eval" else rng.choice(names)
            base = _jitter(COLORS[name], rng)
            img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), base)
            px = img.load()
            for _ in range(IMAGE_SIZE * 2):
                x, y = rng.randrange(IMAGE_SIZE), rng.randrange(IMAGE_SIZE)
                px[x, y] = _jitter(base, rng, 10)
            rel = f"images/{split}_{i:04d}.png"
            img.save(folder / rel)
            rows.append({"image": rel, "question": QUESTION, "answer": name})
        with (folder / f"{split}.csv").open("w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=["image", "question", "answer"])
            w.writeheader()
            w.writerows(rows)
        out[split] = rows
    return out


def write_config_set(config_dir: Path, model_path: str, opts: DemoOptions) -> None:
    """The four files, from `vlmctl init`'s templates, with the demo's settings applied."""
    from ruamel.yaml import YAML

    from vlmctl.config.templates import render_templates

    config_dir.mkdir(parents=True, exist_ok=True)
    texts = render_templates(model_path)
    yaml = YAML()  # round-trip: the template comments stay
    yaml.preserve_quotes = True
    changes: dict[str, dict[str, Any]] = {
        "vlm_model_config.yaml": {
            "loading_params.torch_dtype": "torch.float32",
            "loading_params.device_map": None,
        },
        "vlm_collator_config.yaml": {
            "dataset.path": "../data/train.csv",
            "text_processing.max_length": 256,
            # Learn the answer, not the fixed prompt: a clean signal in few steps.
            "label_masking.mask_input_tokens": True,
        },
        "train_config.yaml": {
            "output_dir": str(opts.out / "run"),
            "per_device_train_batch_size": opts.batch_size,
            "per_device_eval_batch_size": opts.batch_size,
            "gradient_accumulation_steps": 1,
            "learning_rate": opts.lr,
            "max_steps": opts.steps,
            "lr_scheduler_type": "constant",
            "warmup_steps": 0,
            "logging_steps": 10,
            "eval_steps": None,
            "save_steps": opts.steps,
            "save_total_limit": 1,
            "gradient_checkpointing": False,
            "bf16": False,
            "group_by_length": False,
            "report_to": ["none"],
            "run_name": "vlmctl-demo",
            "seed": opts.seed,
        },
        "peft_config.yaml": {
            "r": 16,
            "lora_alpha": 32,
            "lora_dropout": 0.0,
            "exclude_vision_modules": opts.exclude_vision_modules,
        },
    }
    for name, text in texts.items():
        data = yaml.load(text)
        for dotted, value in changes.get(name, {}).items():
            node = data
            *parents, last = dotted.split(".")
            for p in parents:
                node = node[p]
            node[last] = value
        with (config_dir / name).open("w", encoding="utf-8") as f:
            yaml.dump(data, f)
