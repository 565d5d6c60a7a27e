"""Real-kit jobs run in a CHILD process by the real-kit tests (memory is returned when it ends).

Why a subprocess: a LoRA step on a kit model computes logits over the real vocabulary (152k for
Qwen) for ~1,000 tokens, and an in-process run of every family kept the pytest process growing
(past 20 GB in a full suite run: glibc keeps freed arenas, torch keeps its caches). Each job
here runs in its own `python` and prints ONE JSON line (the last line of stdout) with what the
test asserts, plus its peak RSS.

    python tests/_realkit_job.py build FAMILY OUT_DIR
    python tests/_realkit_job.py build-all OUT_ROOT FAMILY...
    python tests/_realkit_job.py train FAMILY MODEL_DIR WORK_DIR
    python tests/_realkit_job.py pack FAMILY MODEL_DIR
"""

from __future__ import annotations

import json
import math
import resource
import sys
import time
import warnings
from pathlib import Path

TARGETS = r".*(language_model|text_model).*\.(q_proj|v_proj|wqkv)"  # wqkv: InternLM2


def _peak_rss_mb() -> float:
    """This process's own peak (VmHWM). ru_maxrss is kept across fork+exec, so a child of a big
    pytest process reported the parent's peak (22 GB for every family in a full run)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def build(family: str, out: str) -> dict:
    """Assemble the kit and save its tiny model (what `kit_model_folder` gives the tests)."""
    from _realkit_util import kit

    from vlmctl.testing.realkit import build_kit_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        folder = build_kit_model(kit(family), out)
    return {"folder": str(folder)}


def build_all(out_root: str, *families: str) -> dict:
    """`build` for several kits in one process (one import of torch/transformers for all)."""
    import gc
    import traceback

    folders, errors = {}, {}
    for family in families:
        try:
            folders[family] = build(family, str(Path(out_root) / family))["folder"]
        except Exception:  # noqa: BLE001 - reported per family, the test shows it
            errors[family] = traceback.format_exc()[-4000:]
        gc.collect()
    return {"folders": folders, "errors": errors}


def train(family: str, base: str, work: str) -> dict:
    """One LoRA step (finite loss), merge + verify, reload the merged folder and generate."""
    import torch
    from _collate_util import cfg, image
    from _realkit_util import ANSWERS, kit, two_turn_chat
    from peft import LoraConfig, get_peft_model

    from vlmctl.collate import VLMCollator
    from vlmctl.merge.plan import MergeOptions
    from vlmctl.merge.run import run_merge
    from vlmctl.testing.realkit import load_kit_model, load_kit_processor

    torch.set_num_threads(1)
    base_dir, work_dir = Path(base), Path(work)
    k = kit(family)
    processor = load_kit_processor(base_dir, k)
    col = VLMCollator(
        processor,
        cfg(label_masking={"mask_input_tokens": True}, text_processing={"truncation": False}),
        model_type=k.model_type,
    )
    # One row, one turn: the logits over the real vocabulary dominate memory.
    batch = col.collate_encoded(col.encode_examples([two_turn_chat(ANSWERS[:1])]))
    model = load_kit_model(base_dir, k)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    loss = peft_model(**batch).loss
    loss.backward()
    opt.step()
    with torch.no_grad():
        loss2 = peft_model(**batch).loss.item()

    run = work_dir / "run"
    gen = torch.Generator().manual_seed(0)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # one step moves B by ~lr: make the adapter act measurably
            param.data = torch.randn(param.shape, generator=gen) * 0.5
    peft_model.save_pretrained(run)
    processor.save_pretrained(run)
    manifest = {
        "model_name_or_path": str(base_dir),
        "configs": {
            "model": {
                "model_name_or_path": str(base_dir),
                "loading_params": {"torch_dtype": "float32", "trust_remote_code": k.remote_code},
            },
            "peft": {"r": 4, "lora_alpha": 8},
        },
        "finished": True,
    }
    (run / "vlmctl-run.json").write_text(json.dumps(manifest))
    del peft_model, model, opt
    opts = MergeOptions(
        source=run, output=work_dir / "merged", dtype="fp32", trust_remote_code=k.remote_code
    )
    result = run_merge(opts)
    verify = result.report["verify"]

    out = work_dir / "merged"
    proc = load_kit_processor(out, k)
    merged = load_kit_model(out, k).eval()
    msgs = [
        {
            "role": "user",
            "content": [{"type": "image", "image": image(5)}, {"type": "text", "text": "Colour?"}],
        }
    ]
    if getattr(proc, "chat_template", None) or getattr(proc.tokenizer, "chat_template", None):
        inputs = proc.apply_chat_template(
            msgs, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
    else:  # a prefix/suffix processor (PaliGemma pt): the prompt is the prefix
        inputs = proc(text="Colour?", images=image(5), return_tensors="pt")
    with torch.inference_mode():
        ids = merged.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    return {
        "loss": loss.item(),
        "loss_after_step": loss2,
        "finite": math.isfinite(loss.item()) and math.isfinite(loss2),
        "tokens": int(batch["input_ids"].shape[1]),
        "verify_passed": verify.get("passed"),
        "max_abs_dlogit": (verify.get("adapter_vs_merged") or {}).get("max_abs_dlogit"),
        "verify": verify,
        "new_tokens": int(ids.shape[1] - inputs["input_ids"].shape[1]),
    }


def pack(family: str, base: str) -> dict:
    """Packing exactness on the kit model in BASE (tests/test_packing_exact.py's comparison):
    the largest |delta| of logits, per-row loss and gradients, packed vs one row at a time."""
    import test_packing_exact as t
    import torch

    torch.set_num_threads(1)
    col, model = t.kit_setup(family, Path(base))
    return t.compare(col, model, t.varied_rows())


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    job, args = argv[0], argv[1:]
    start = time.perf_counter()
    jobs = {"build": build, "build-all": build_all, "train": train, "pack": pack}
    result = jobs[job](*args)
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
