"""Generated datasets in the shapes people publish (issue #13), and config sets for them.

Shapes: flat CSV, LLaVA `conversations`, ShareGPT/LLaMA-Factory `messages` + `images`/`videos`
lists, InternLM-XComposer `<ImageHere>` chats, and Qwen-style content parts with inline image
and video paths (a mixed image/video dataset). Media are tiny generated JPEG/PNG files and a
12-frame H.264 clip, so every test runs in seconds.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def write_image(path: Path, seed: int, size: int = 32) -> Path:
    """A small noisy image (format from the suffix)."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGB").save(path)
    return path


def write_mp4(path: Path, n: int = 24, fps: int = 6) -> Path:
    """A 32x32 H.264 clip whose frames fade from black."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(n):
            arr = np.full((32, 32, 3), (i * 10) % 250, dtype=np.uint8)
            for pkt in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return path


def write_media(folder: Path) -> None:
    """media/a.jpg, media/b.png, media/clip.mp4 under `folder`."""
    write_image(folder / "media" / "a.jpg", 1)
    write_image(folder / "media" / "b.png", 2)
    write_mp4(folder / "media" / "clip.mp4")


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def content_parts_rows() -> list[dict]:
    """Qwen-style chats with inline media: two images / one video / an image and a video."""

    def user(*parts):
        return {"role": "user", "content": list(parts)}

    def answer(text):
        return {"role": "assistant", "content": [{"type": "text", "text": text}]}

    img = lambda p: {"type": "image", "image": p}  # noqa: E731
    vid = lambda p: {"type": "video", "video": p}  # noqa: E731
    txt = lambda t: {"type": "text", "text": t}  # noqa: E731
    return [
        {"messages": [user(img("media/a.jpg"), img("media/b.png"), txt("Same?")), answer("No.")]},
        {"messages": [user(vid("media/clip.mp4"), txt("What happens?")), answer("It fades.")]},
        {
            "messages": [
                user(img("media/a.jpg"), vid("media/clip.mp4"), txt("Image in the clip?")),
                answer("No."),
            ]
        },
        {"messages": [user(img("media/b.png"), txt("Colour?")), answer("Noise.")]},
    ]


def write_shape(shape: str, folder: Path) -> Path:
    """Write a generated dataset of `shape` (and its media) into `folder`; return the data file."""
    write_media(folder)
    if shape == "flat":
        path = folder / "train.csv"
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["image_name", "question", "answer"])
            for i in range(4):
                w.writerow(["a.jpg" if i % 2 else "b.png", f"What is item {i}?", f"thing {i}"])
        return path
    if shape == "llava":
        rows = [
            {
                "id": i,
                "image": "media/a.jpg" if i != 2 else ["media/a.jpg", "media/b.png"],
                "conversations": [
                    {"from": "human", "value": "<image>\nDescribe it." * (2 if i == 2 else 1)},
                    {"from": "gpt", "value": f"Noise {i}."},
                ],
            }
            for i in range(3)
        ]
        rows.append({"id": 3, "conversations": [
            {"from": "human", "value": "Text only?"}, {"from": "gpt", "value": "Yes."}]})  # fmt: skip
        path = folder / "train.json"
        path.write_text(json.dumps(rows, indent=1))
        return path
    if shape == "sharegpt":
        rows = [
            {
                "messages": [
                    {"role": "user", "content": "<image>Who is this?"},
                    {"role": "assistant", "content": "Noise."},
                    {"role": "user", "content": "<image>And this?"},
                    {"role": "assistant", "content": "More noise."},
                ],
                "images": ["media/a.jpg", "media/b.png"],
            },
            {
                "messages": [
                    {"role": "user", "content": "<video>What happens?"},
                    {"role": "assistant", "content": "It fades."},
                ],
                "videos": ["media/clip.mp4"],
            },
        ]
        path = folder / "mllm.json"
        path.write_text(json.dumps(rows, indent=1))
        return path
    if shape == "internlm":
        rows = [
            {
                "id": str(i),
                "image": ["media/a.jpg"],
                "conversations": [
                    {"from": "user", "value": "<ImageHere> What is shown?"},
                    {"from": "assistant", "value": f"Noise {i}."},
                ],
            }
            for i in range(3)
        ]
        path = folder / "xcomposer.json"
        path.write_text(json.dumps(rows, indent=1))
        return path
    if shape == "content_parts":
        return _jsonl(folder / "mixed.jsonl", content_parts_rows())
    raise ValueError(shape)


def write_config_set(
    folder: Path,
    model: Path | str,
    collator: dict[str, Any],
    *,
    steps: int = 2,
    out: Path | None = None,
) -> Path:
    """The four files from `vlmctl init`'s templates, with `collator` sections replacing the
    template's (a section given as a dict replaces that top-level key entirely)."""
    from ruamel.yaml import YAML

    from vlmctl.config.templates import render_templates

    folder.mkdir(parents=True, exist_ok=True)
    yaml = YAML()
    texts = render_templates(str(model))
    train = {
        "output_dir": str(out or folder.parent / "run"),
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 1,
        "learning_rate": 1e-3,
        "max_steps": steps,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "logging_steps": 1,
        "eval_steps": None,
        "save_steps": steps,
        "save_total_limit": 1,
        "gradient_checkpointing": False,
        "bf16": False,
        "group_by_length": False,
        "report_to": ["none"],
    }
    changes = {
        "vlm_model_config.yaml": {
            "loading_params": {"torch_dtype": "torch.float32", "device_map": None}
        },
        "vlm_collator_config.yaml": {"text_processing": {"max_length": 1024}, **collator},
        "train_config.yaml": train,
        "peft_config.yaml": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0},
    }
    for name, text in texts.items():
        data = yaml.load(text)
        for key, value in changes.get(name, {}).items():
            if (
                isinstance(value, dict)
                and isinstance(data.get(key), dict)
                and name != ("vlm_collator_config.yaml")
            ):
                data[key].update(value)
            else:
                data[key] = value
        with (folder / name).open("w", encoding="utf-8") as f:
            yaml.dump(data, f)
    return folder


MIXED_COLLATOR: dict[str, Any] = {
    "dataset": {"path": "../data/mixed.jsonl"},
    "data_processing": {"image_data": True, "video_data": True},
    "conversation": {"column": "messages", "images_column": None, "videos_column": None},
    "video_processing": {"frame_extraction": {"num_frames": 4}},
}
