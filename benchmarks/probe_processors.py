"""Which families' processors need torch/torchvision in the installed transformers (#16).

Two steps, since building the tiny twins needs the full install:

    # 1. in the full install: save each family's tiny processor (no weights) to DIR
    python benchmarks/probe_processors.py build DIR
    # 2. in any environment (e.g. a venv with transformers, tokenizers, pillow, numpy, av and no
    #    torch): load each with AutoProcessor and run it on an image (and a video when it has
    #    a video processor), with numpy tensors (torch tensors where torch is installed)
    python benchmarks/probe_processors.py probe DIR

Prints one line per family: the processor and image/video processor classes, or why it failed.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import sys
from pathlib import Path


def build(out: Path) -> None:
    """Save every tiny family's processor files (weights removed) under `out/<family>`."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from vlmctl.testing.tiny import FAMILIES, build_tiny_model

    for fam in FAMILIES:
        if fam == "remote_code":
            continue
        target = out / fam
        build_tiny_model(fam, target)
        for weights in target.glob("*.safetensors"):
            weights.unlink()
        print(f"{fam}: {target}")


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    hit = [ln for ln in lines if "requires" in ln or "not found" in ln]
    return f"{type(exc).__name__}: {(hit or lines or [''])[0][:160]}"


def probe(root: Path) -> None:
    """Load and run each saved processor here; print what worked."""
    import numpy as np
    from PIL import Image
    from transformers import AutoProcessor

    have = {m: importlib.util.find_spec(m) is not None for m in ("torch", "torchvision")}
    print(f"installed: {json.dumps(have)}")
    tensors = "pt" if have["torch"] else "np"
    img = Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8"))
    video = (np.random.default_rng(1).random((8, 32, 32, 3)) * 255).astype("uint8")
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        res: dict[str, str] = {}
        try:
            p = AutoProcessor.from_pretrained(d)
        except Exception as exc:  # noqa: BLE001 - the point is to report it
            print(f"{d.name:<16} load FAIL {_first_line(exc)}")
            continue
        image_proc = type(getattr(p, "image_processor", None)).__name__
        video_proc = type(getattr(p, "video_processor", None)).__name__
        res["load"] = f"{type(p).__name__} (image: {image_proc}, video: {video_proc})"
        try:
            kw = {"suffix": "a"} if d.name == "paligemma" else {}
            tok = getattr(p, "image_token", None) or "<image>"
            p(text=[f"{tok} hi"], images=[img], return_tensors=tensors, **kw)
            res["image"] = "ok"
        except Exception as exc:  # noqa: BLE001
            res["image"] = f"FAIL {_first_line(exc)}"
        if getattr(p, "video_processor", None) is not None:
            try:
                vt = getattr(p, "video_token", None) or "<video>"
                p(text=[f"{vt} hi"], videos=[video], return_tensors=tensors)
                res["video"] = "ok"
            except Exception as exc:  # noqa: BLE001
                res["video"] = f"FAIL {_first_line(exc)}"
        print(f"{d.name:<16} " + "  ".join(f"{k}: {v}" for k, v in res.items()))


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("build", "probe"):
        print(__doc__)
        raise SystemExit(2)
    target = Path(sys.argv[2])
    if sys.argv[1] == "build":
        shutil.rmtree(target, ignore_errors=True)
        build(target)
    else:
        probe(target)
