"""Datasets with planted faults, and config sets pointing at them, for validate/preview tests.

A flat VQA CSV (`image_name,question,answer`) whose images live in `images/`. The config puts
the question BEFORE the image, so a long question pushes the image span past max_length (the
"media span would be cut" case) while a long answer only makes the text too long.
"""

from __future__ import annotations

import csv
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LONG_WORDS = " ".join(["word"] * 120)

# row -> (severity, code) that validate must report for each planted fault (truncate_text).
FAULTS = {
    3: ("error", "media-not-found"),
    5: ("error", "media-truncated"),
    7: ("error", "media-not-image"),
    9: ("error", "row-value"),
    11: ("warning", "row-text-cut"),
    13: ("warning", "media-span-cut"),
}


@dataclass
class Row:
    image_name: str
    question: str
    answer: str


def jpeg_bytes(seed: int, size: int = 32) -> bytes:
    """A small noisy JPEG (noise so that a truncated copy really misses data)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, "RGB").save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_csv(path: Path, rows: list[Row]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["image_name", "question", "answer"])
        for r in rows:
            w.writerow([r.image_name, r.question, r.answer])


def plant_faults(folder: Path, rows: list[Row], images: Path) -> list[Row]:
    """Rows with the planted faults of FAULTS (files written into `images`)."""
    rows = list(rows)
    good = images / rows[5].image_name
    data = good.read_bytes()
    (images / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (images / "not_really.jpg").write_text("hello, I am a text file, not a picture\n")
    rows[3] = Row("missing.jpg", rows[3].question, rows[3].answer)
    rows[5] = Row("truncated.jpg", rows[5].question, rows[5].answer)
    rows[7] = Row("not_really.jpg", rows[7].question, rows[7].answer)
    rows[9] = Row(rows[9].image_name, rows[9].question, "")
    rows[11] = Row(rows[11].image_name, rows[11].question, LONG_WORDS)
    rows[13] = Row(rows[13].image_name, LONG_WORDS, rows[13].answer)
    return rows


def generated_rows(images: Path, n: int = 20, n_images: int = 5) -> list[Row]:
    """`n` clean rows over `n_images` generated JPEGs (written into `images`)."""
    images.mkdir(parents=True, exist_ok=True)
    for k in range(n_images):
        (images / f"img{k}.jpg").write_bytes(jpeg_bytes(k, 32 + 8 * k))
    colours = ["red", "green", "blue", "black", "white"]
    return [
        Row(f"img{i % n_images}.jpg", f"what colour is item {i}", colours[i % len(colours)])
        for i in range(n)
    ]


def write_config_set(
    folder: Path,
    data_csv: Path,
    model: Path | str,
    *,
    max_length: int = 100,
    policy: str = "truncate_text",
    question_column: str = "question",
    media_root: Path | None = None,
    mask_input_tokens: bool = False,
) -> Path:
    """The four YAML files of a config set for the VQA CSV (question before the image)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vlm_model_config.yaml").write_text(f'model_name_or_path: "{model}"\n')
    root = f'  media_root: "{media_root}"\n' if media_root else ""
    (folder / "vlm_collator_config.yaml").write_text(
        f"""dataset:
  path: "{data_csv}"
{root}dataset_columns:
  image_column: "image_name"
  question_column: "{question_column}"
  answer_column: "answer"
  video_column: null
message_format:
  system_prompt: null
  training_messages:
    - role: "user"
      content:
        - type: "text"
          text: "{{question_column}}"
        - type: "image"
    - role: "assistant"
      content:
        - type: "text"
          text: "{{answer_column}}"
text_processing:
  max_length: {max_length}
  truncation_policy: "{policy}"
label_masking:
  mask_input_tokens: {str(mask_input_tokens).lower()}
"""
    )
    (folder / "train_config.yaml").write_text(
        "per_device_train_batch_size: 2\nreport_to: []\nbf16: false\n"
    )
    (folder / "peft_config.yaml").write_text("r: 8\nlora_alpha: 16\n")
    return folder


def make_generated_set(root: Path, model: Path, *, faults: bool, n: int = 20, **kw) -> Path:
    """A generated dataset (with or without the planted faults) and its config set."""
    data = root / "data"
    images = data / "images"
    rows = generated_rows(images, n)
    if faults:
        rows = plant_faults(data, rows, images)
    write_csv(data / "train.csv", rows)
    return write_config_set(root / "config", data / "train.csv", model, media_root=images, **kw)


def copy_abo_subset(shared: Path, dest: Path, n: int = 50) -> tuple[Path, list[Row]]:
    """The first `n` rows of the real abo_vqa_csv and only the images they use."""
    src = shared / "abo_vqa_csv"
    with open(src / "vqa.csv", newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = [
            Row(r["image_name"], r["question"], r["answer"])
            for _, r in zip(range(n), reader, strict=False)
        ]
    images = dest / "curated_images"
    images.mkdir(parents=True, exist_ok=True)
    for name in {r.image_name for r in rows}:
        shutil.copy2(src / "curated_images" / name, images / name)
    return images, rows


def snapshot(folder: Path) -> dict:
    """Every file under `folder` with its size, mtime and bytes (to prove nothing was written)."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns, p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
