"""Collator harness: a sha256 of every tensor the collator produces, per family.

Why: a refactor or speed-up of `vlmctl.collate` must leave its output bit-identical. Run this
before and after the change and diff the two outputs (they must be equal line for line).

For every tiny twin (`vlmctl.testing.tiny`) and every real kit whose files are here
(`tests/realkit/`, no downloads), with fixed rows (seeded images, multi-turn chats, videos
where the family takes them), it runs: `__call__` on raw rows, `encode_examples` +
`collate_encoded` (all rows, then a subset: the re-processing path), the untruncated
encodings (`truncate=False`) with `fits`, each truncation policy at a small `max_length`,
`padding: max_length`, `kinds_batch`, and `encode_prompts` + `collate_prompts`. Each line is
`family/case key dtype shape sha256[:16]`; the last line per family digests all of them.

    python benchmarks/collator_digest.py [--families qwen2_vl,llava] [--no-kits | --no-tiny] > digest.txt
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]


def _digest(t) -> str:
    import torch

    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        t = t.float()
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]


def _lines(name: str, batch: dict) -> list[str]:
    return [
        f"{name} {key} {str(t.dtype).removeprefix('torch.')} {tuple(t.shape)} {_digest(t)}"
        for key, t in sorted(batch.items())
    ]


def _image(seed: int, size=(32, 32)):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def _frames(seed: int, n: int = 4):
    import numpy as np

    return np.random.default_rng(seed).integers(0, 255, (n, 32, 32, 3), dtype=np.uint8)


def _chat(k: int, turns: int, n_images: int, video: bool = False):
    from vlmctl.data.example import Example

    messages = []
    for t in range(turns):
        content = []
        if t == 0:
            content += [{"type": "video" if video else "image"} for _ in range(n_images)]
        content.append({"type": "text", "text": f"What colour is shape {k} ({t})?" + " x" * k})
        messages.append({"role": "user", "content": content})
        answer = f"It is red, with {k + t} dots" + " and more" * (k % 3)
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    media = [_frames(k + i) if video else _image(k + i) for i in range(n_images)]
    return Example(
        messages=messages,
        images=[] if video else media,
        videos=media if video else [],
        row=k,
    )


def _cfg(**sections):
    from vlmctl.config.collator import CollatorConfig

    return CollatorConfig.model_validate(sections)


def _encode_or_none(col, example) -> list:
    try:
        return col.encode_examples([example], truncate=False)
    except Exception:  # noqa: BLE001 - the row the processor refuses is left out
        return []


def _family_lines(family: str, proc, model_type: str, video: bool, multi_image: bool) -> list:
    import torch

    from vlmctl.collate import VLMCollator

    out: list[str] = []
    images = 2 if multi_image else 1
    examples = [_chat(k, 1 + k % 2, 1 + (k % images)) for k in range(6)]
    raw_rows = [
        {"image": _image(50 + k), "question": f"What is shape {k}?" + " y" * k, "answer": f"A{k}"}
        for k in range(4)
    ]
    if video:
        examples += [_chat(10 + k, 1, 1, video=True) for k in range(2)]

    def run(name: str, cfg, exs) -> None:
        col = VLMCollator(proc, cfg, model_type=model_type)
        try:
            encs = col.encode_examples(exs)
            kept = [e for e in encs if not e.drop_reason]
            out.append(f"{name} drops {[e.drop_reason for e in encs]}")
            out.append(
                f"{name} lengths {[e.length for e in encs]} {[e.original_length for e in encs]}"
            )
            out.append(f"{name} supervised {[e.num_supervised for e in encs]}")
            out.append(f"{name} media_spans {[e.media_spans for e in encs]}")
            out.append(f"{name} kinds {[_digest(e.kinds) for e in encs]}")
            if kept:
                batch = col.collate_encoded(kept)
                out.extend(_lines(f"{name}/all", batch))
                width = batch["input_ids"].shape[1]
                out.append(f"{name}/all kinds_batch {_digest(col.kinds_batch(kept, width))}")
            if len(kept) > 2:  # a subset of one call: re-processed together
                out.extend(_lines(f"{name}/subset", col.collate_encoded(kept[1::2])))
            out.append(f"{name} stats {sorted(col.stats.items())}")
        except Exception as exc:  # noqa: BLE001 - the error itself is part of the digest
            out.append(f"{name} raised {type(exc).__name__}: {str(exc)[:200]}")

    run("default", _cfg(), examples)
    run("mask_inputs", _cfg(label_masking={"mask_input_tokens": True}), examples)
    run(
        "keep_media",
        _cfg(label_masking={"mask_image_token": False, "mask_pad_token": False}),
        examples,
    )
    run(
        "pad_max", _cfg(text_processing={"padding": "max_length", "max_length": 4096}), examples[:3]
    )
    col = VLMCollator(proc, _cfg(), model_type=model_type)
    try:
        full = col.encode_examples(examples, truncate=False)
    except Exception as exc:  # noqa: BLE001 - e.g. a kit template that drops videos
        out.append(f"measure raised {type(exc).__name__}: {str(exc)[:200]}")
        full = [e for k in examples for e in _encode_or_none(col, k)]
    lengths = sorted(e.length for e in full) or [2]
    mid = lengths[len(lengths) // 2]
    for policy in ("drop", "truncate_text", "error"):
        for limit in (mid - 1, mid, mid + 1, lengths[0] - 1):
            tp = {"truncation": True, "max_length": max(limit, 1), "truncation_policy": policy}
            cfg = _cfg(text_processing=tp, label_masking={"mask_input_tokens": True})
            fits = [VLMCollator(proc, cfg, model_type=model_type).fits(e) for e in full]
            out.append(f"fits/{policy}/{limit} {fits}")
            run(f"{policy}/{limit}", cfg, examples)
    try:
        col = VLMCollator(
            proc, _cfg(label_masking={"mask_input_tokens": True}), model_type=model_type
        )
        out.extend(_lines("raw_call", col(raw_rows)))
    except Exception as exc:  # noqa: BLE001
        out.append(f"raw_call raised {type(exc).__name__}: {str(exc)[:200]}")
    try:
        col = VLMCollator(proc, _cfg(), model_type=model_type)
        prompts = col.encode_prompts(examples[:4])
        out.append(f"prompts refs {[r for _, r in prompts]}")
        out.extend(_lines("prompts", col.collate_prompts([e for e, _ in prompts])))
    except Exception as exc:  # noqa: BLE001
        out.append(f"prompts raised {type(exc).__name__}: {str(exc)[:200]}")
    total = hashlib.sha256("\n".join(out).encode()).hexdigest()[:16]
    torch.set_num_threads(1)
    return [f"{family} {line}" for line in out] + [f"{family} TOTAL {total}"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default="", help="comma-separated subset (tiny or kit names)")
    ap.add_argument("--no-kits", action="store_true", help="tiny twins only")
    ap.add_argument("--no-tiny", action="store_true", help="real kits only")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    import logging

    logging.disable(logging.WARNING)
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(1)
    from transformers import AutoProcessor

    from vlmctl.testing.realkit import (
        assemble_kit,
        kit_dirs,
        load_kit,
        load_kit_processor,
        missing_reason,
    )
    from vlmctl.testing.tiny import FAMILIES, FAMILY_INFO, build_tiny_model

    wanted = set(filter(None, args.families.split(",")))
    tmp = Path(tempfile.mkdtemp(prefix="collator-digest-"))
    for family in () if args.no_tiny else FAMILIES:
        if wanted and family not in wanted:
            continue
        info = FAMILY_INFO[family]
        folder = build_tiny_model(family, tmp / "tiny" / family)
        proc = AutoProcessor.from_pretrained(str(folder), trust_remote_code=True)
        model_type = "paligemma" if family == "paligemma" else family
        lines = _family_lines(f"tiny:{family}", proc, model_type, info["supports_video"], True)
        print("\n".join(lines), flush=True)
    if args.no_kits:
        return
    for d in kit_dirs(ROOT / "tests" / "realkit"):
        kit = load_kit(d)
        if wanted and kit.family not in wanted:
            continue
        reason = missing_reason(kit)
        if reason:
            print(f"kit:{kit.family} SKIPPED {reason}", flush=True)
            continue
        proc = load_kit_processor(assemble_kit(kit, tmp / "kit" / kit.family), kit)
        video = getattr(proc, "video_processor", None) is not None
        lines = _family_lines(f"kit:{kit.family}", proc, kit.model_type, video, True)
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
