"""Real datasets (../shared/data) end to end at the batch level: example config set ->
load_splits -> VLMCollator with a tiny twin -> labels.

Each dataset goes through a family that supports its media (video rows: qwen2_vl). Checks: no
row dropped, some tokens trained, and no media token ever carries a label.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from vlmctl.config.collator import CollatorConfig
from vlmctl.data.dataset import iter_rows, load_splits

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
EXAMPLES = REPO / "examples"
MEDIA_STRINGS = {"<image>", "<video>", "<|image_pad|>", "<|video_pad|>"}

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(
        not SHARED.is_dir(),
        reason=f"real datasets not present at {SHARED} (see shared/data/README.md)",
    ),
]


def example_cfg(name: str, **dataset_update) -> tuple[CollatorConfig, Path]:
    folder = EXAMPLES / name
    data = YAML(typ="safe").load((folder / "vlm_collator_config.yaml").read_text())
    cfg = CollatorConfig.model_validate(data)
    if dataset_update:
        cfg = cfg.model_copy(update={"dataset": cfg.dataset.model_copy(update=dataset_update)})
    return cfg, folder


def processor_for(path: Path):
    from transformers import AutoProcessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoProcessor.from_pretrained(str(path))


def run_batch(family_dir: Path, cfg: CollatorConfig, folder: Path, n: int | None = None):
    from vlmctl.collate import VLMCollator

    data = load_splits(cfg, folder)
    rows = [row for i, row in iter_rows(data.train) if n is None or i < n]
    proc = processor_for(family_dir)
    collator = VLMCollator(proc, cfg, data.media_dirs)
    batch = collator(rows)
    tok = getattr(proc, "tokenizer", proc)
    media_ids = {i for s, i in tok.get_added_vocab().items() if s in MEDIA_STRINGS}
    return rows, batch, media_ids, collator


def assert_labels(rows, batch, media_ids, collator, *, expect_media: bool = True):
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.shape[0] == len(rows), collator.drop_summary()  # nothing dropped
    ignore = collator.cfg.label_masking.ignore_index
    trained = labels != ignore
    assert trained.any(dim=1).all()  # every row trains some tokens
    is_media = sum((ids == m) for m in media_ids).bool()
    if expect_media:
        assert is_media.any(), "no media tokens in the batch"
    assert not (trained & is_media).any(), "a media token carries a label"
    # trained labels equal the input ids they supervise (no shift in the collator)
    assert (labels[trained] == ids[trained]).all()


def test_abo_vqa_through_collator_qwen2_vl(tiny_model_dir):
    cfg, folder = example_cfg("abo_vqa")
    out = run_batch(tiny_model_dir("qwen2_vl"), cfg, folder, n=6)
    assert_labels(*out)
    assert "pixel_values" in out[1]


def test_abo_vqa_through_collator_llava(tiny_model_dir):
    cfg, folder = example_cfg("abo_vqa")
    out = run_batch(tiny_model_dir("llava"), cfg, folder, n=4)
    assert_labels(*out)


def test_llamafactory_mllm_through_collator_qwen2_vl(tiny_model_dir):
    cfg, folder = example_cfg("llamafactory_mllm")
    rows, batch, media_ids, collator = run_batch(tiny_model_dir("qwen2_vl"), cfg, folder)
    assert len(rows) == 6
    assert_labels(rows, batch, media_ids, collator)


def test_llamafactory_video_through_collator_qwen2_vl(tiny_model_dir):
    cfg, folder = example_cfg("llamafactory_video")
    rows, batch, media_ids, collator = run_batch(tiny_model_dir("qwen2_vl"), cfg, folder)
    assert len(rows) == 3  # mp4 and avi, different sizes and fps
    assert_labels(rows, batch, media_ids, collator)
    assert "pixel_values_videos" in batch


def test_lmms_celeba_through_collator_llava(tiny_model_dir):
    cfg, folder = example_cfg("lmms_finetune_llava")
    out = run_batch(tiny_model_dir("llava"), cfg, folder, n=4)
    assert_labels(*out)


def test_lmms_multi_image_and_text_only_through_collator_qwen2_vl(tiny_model_dir):
    base = "../../../shared/data/lmms_finetune/example_data"
    qwen = tiny_model_dir("qwen2_vl")
    # RGBA PNGs, a PNG and a WEBP named .jpg, 2 and 4 images per row
    cfg, folder = example_cfg(
        "lmms_finetune_llava", path=f"{base}/multi_images.json", eval_path=None
    )
    assert_labels(*run_batch(qwen, cfg, folder))
    # two rows with an image, two text-only rows
    cfg, folder = example_cfg(
        "lmms_finetune_llava", path=f"{base}/single_image_has_text_only.json", eval_path=None
    )
    assert_labels(*run_batch(qwen, cfg, folder))


def test_lmms_video_plus_image_sample_through_collator_qwen2_vl(tiny_model_dir):
    base = "../../../shared/data/lmms_finetune/example_data"
    cfg, folder = example_cfg("lmms_finetune_llava", path=f"{base}/video.json", eval_path=None)
    cfg = cfg.model_copy(
        update={"data_processing": cfg.data_processing.model_copy(update={"video_data": True})}
    )
    rows, batch, media_ids, collator = run_batch(tiny_model_dir("qwen2_vl"), cfg, folder)
    assert_labels(rows, batch, media_ids, collator)
    assert "pixel_values_videos" in batch  # 720p clips with audio tracks
