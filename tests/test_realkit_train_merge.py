"""One LoRA step, merge and generate on each kit family's real files (tiny random weights)."""

from __future__ import annotations

import json
import math
import os as _os

import pytest
from _collate_util import cfg, image
from _realkit_util import ANSWERS, kit, kit_model_folder, kit_params, two_turn_chat

from vlmctl.collate import VLMCollator

# Known problem (2026-11-30): in a full `pytest -q` run, the in-process work of this module on
# real-size kits grew the pytest process past 20 GB and the kernel's OOM killer ended the whole
# run (seen twice on fresh clones). Until it runs in a subprocess with bounded memory, it runs
# only when asked: VLMCTL_REALKIT_HEAVY=1 python -m pytest -q tests/<this file>.
pytestmark = pytest.mark.skipif(
    _os.environ.get("VLMCTL_REALKIT_HEAVY") != "1",
    reason="real-size kit run in-process: OOM in a full suite run; set VLMCTL_REALKIT_HEAVY=1",
)


TARGETS = r".*language_model.*\.(q_proj|v_proj)"


# Kits whose tiny model (the real config shrunk by vlmctl.testing.realkit) has been run through
# this test. Qwen2-VL's shrink misses two FACTS.md traps (vision out size == text hidden size,
# sum(mrope_section) * 2 == head_dim): strict xfail until build_kit_model handles them.
TRAINED = ("llava", "llava_onevision")
KNOWN_BROKEN = {"qwen2_vl": "shrunk Qwen2-VL config: vision/text sizes and mrope_section disagree"}


def _train_params():
    out = []
    for param in kit_params(models_only=True):
        family = param.values[0]
        marks = list(param.marks)
        if family in KNOWN_BROKEN:
            marks.append(pytest.mark.xfail(strict=True, reason=KNOWN_BROKEN[family]))
        elif family not in TRAINED:
            marks.append(pytest.mark.skip(reason=f"{family}: its shrunk model was not run yet"))
        out.append(pytest.param(family, marks=marks, id=family))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("family", _train_params())
def test_lora_step_merge_verify_and_generate(family, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmctl.merge.plan import MergeOptions
    from vlmctl.merge.run import run_merge

    base = kit_model_folder(family)
    trust = kit(family).remote_code
    processor = AutoProcessor.from_pretrained(base, trust_remote_code=trust)
    col = VLMCollator(
        processor, cfg(label_masking={"mask_input_tokens": True}), model_type=kit(family).model_type
    )
    # One row, one turn: a real processor's image costs ~600-1,500 tokens, and the logits of a
    # 152k vocabulary over them are what dominates memory here.
    batch = col.collate_encoded(col.encode_examples([two_turn_chat(ANSWERS[:1])]))
    model = AutoModelForImageTextToText.from_pretrained(base, trust_remote_code=trust)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS))
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    loss = peft_model(**batch).loss
    assert math.isfinite(loss.item())
    loss.backward()
    opt.step()
    assert math.isfinite(peft_model(**batch).loss.item())

    run = tmp_path / "run"
    gen = torch.Generator().manual_seed(0)
    for name, param in peft_model.named_parameters():
        if "lora_B" in name:  # one step moves B by ~lr: make the adapter act measurably
            param.data = torch.randn(param.shape, generator=gen) * 0.5
    peft_model.save_pretrained(run)
    processor.save_pretrained(run)
    manifest = {
        "model_name_or_path": str(base),
        "configs": {
            "model": {
                "model_name_or_path": str(base),
                "loading_params": {"torch_dtype": "float32", "trust_remote_code": trust},
            },
            "peft": {"r": 4, "lora_alpha": 8},
        },
        "finished": True,
    }
    (run / "vlmctl-run.json").write_text(json.dumps(manifest))
    result = run_merge(MergeOptions(source=run, output=tmp_path / "merged", dtype="fp32"))
    report = result.report
    assert report["verify"]["passed"] is True, report["verify"]
    assert report["verify"]["adapter_vs_merged"]["max_abs_dlogit"] <= 1e-4

    out = tmp_path / "merged"
    proc = AutoProcessor.from_pretrained(out, trust_remote_code=trust)
    merged = AutoModelForImageTextToText.from_pretrained(out, trust_remote_code=trust).eval()
    msgs = [
        {
            "role": "user",
            "content": [{"type": "image", "image": image(5)}, {"type": "text", "text": "Colour?"}],
        }
    ]
    inputs = proc.apply_chat_template(
        msgs, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
    )
    with torch.inference_mode():
        ids = merged.generate(**inputs, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert ids.shape[1] == inputs["input_ids"].shape[1] + 3
