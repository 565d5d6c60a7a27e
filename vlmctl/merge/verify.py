"""Verify a merge: the adapter model, the merged model and the base on the same probe inputs,
compared and judged."""

from __future__ import annotations

from pathlib import Path

from vlmctl.errors import Finding, VlmctlError
from vlmctl.merge.plan import MergePlan

# Probe questions and colours for generated verify inputs.
_PROBES = (
    ((200, 30, 30), "What colour is the image?"),
    ((30, 160, 60), "Describe the picture in one word."),
    ((40, 60, 210), "Is this image bright or dark?"),
    ((230, 200, 40), "What do you see?"),
)


def generated_probes(processor, n: int) -> list[dict]:
    """A coloured 32x32 image and a short question, rendered through the chat template."""
    from PIL import Image

    probes = []
    template = getattr(processor, "chat_template", None)
    for rgb, question in _PROBES[: max(1, n)]:
        image = Image.new("RGB", (32, 32), rgb)
        if template:
            messages = [
                {
                    "role": "user",
                    "content": [
                        {"type": "image", "image": image},
                        {"type": "text", "text": question},
                    ],
                }
            ]
            batch = processor.apply_chat_template(
                messages,
                add_generation_prompt=True,
                tokenize=True,
                return_dict=True,
                return_tensors="pt",
            )
        else:
            # No template (PaliGemma): the prompt starts with the image token, as in training.
            token = getattr(processor, "image_token", None) or ""
            batch = processor(text=[token + question], images=[image], return_tensors="pt")
        probes.append(dict(batch))
    return probes


def training_probes(plan: MergePlan, processor, n: int) -> list[dict]:
    """The first rows of the training set, through the training collator (same rendering)."""
    manifest = plan.manifest
    cfg = manifest.collator_config() if manifest is not None else None
    if cfg is None:
        raise LookupError("manifest has no collator config")
    from vlmctl.data.dataset import load_splits
    from vlmctl.runtime import build_collator, model_type_of

    config_dir = Path(manifest.config_dir or (plan.run_dir / "configs"))
    data = load_splits(cfg, config_dir)
    rows = [data.train[i] for i in range(min(n, len(data.train)))]
    if not rows:
        raise LookupError("training set is empty")
    # The run's family (the worker records it); a manifest from before it did: the base's.
    model_type = manifest.model_type or model_type_of(plan.base_dir)
    collator = build_collator(processor, cfg, data.media_dirs, model_type)
    probes = []
    for row in rows:
        batch = dict(collator([row]))
        batch.pop("labels", None)
        probes.append(batch)
    return probes


def make_probes(plan: MergePlan, processor, n: int) -> tuple[list[dict], str]:
    """Verify inputs and where they came from: training rows when the run's data still loads
    (they exercise the adapted paths), else generated ones."""
    if plan.manifest is not None and plan.run_dir is not None:
        try:
            return training_probes(plan, processor, n), "training data (first rows)"
        except Exception as exc:  # noqa: BLE001 - fall back to generated probes, say why
            reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"
            return generated_probes(processor, n), f"generated (training data unusable: {reason})"
    return generated_probes(processor, n), "generated (no run manifest)"


def probe_logits(model, probes: list[dict]) -> list:
    """Last-layer logits (fp32, real tokens only) for each probe."""
    import torch

    dtype = next(model.parameters()).dtype
    outs = []
    with torch.inference_mode():
        for batch in probes:
            inputs = {
                k: (v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v)
                for k, v in batch.items()
            }
            logits = model(**inputs).logits.float()
            mask = batch.get("attention_mask")
            if mask is not None:
                logits = logits[mask.bool()]
            outs.append(logits.reshape(-1, logits.shape[-1]))
    return outs


def fp32_tolerance(max_abs_logit: float) -> float:
    """The fp32 |dlogit| a correct merge stays within: float rounding of the refolded weights."""
    return 1e-3 * max(1.0, max_abs_logit)


def compare(a: list, b: list) -> dict:
    """Max |dlogit|, top-1 agreement, tokens and logit scale: two models on the same probes.

    `top1_agreement_beyond_ties` also counts as agreeing a token whose two top-1 candidates are
    a near-tie in the first model (within twice the fp32 tolerance): float rounding may flip
    such a token (a tiny random model has many), and that flip says nothing about the merge."""
    import torch

    scale = max(float(x.abs().max()) for x in a)
    tie = 2 * fp32_tolerance(scale)
    diffs, agree, ties = [], 0, 0
    for x, y in zip(a, b, strict=True):  # strict: a probe lost on one side is an error
        diffs.append(float((x - y).abs().max()))
        ax, ay = x.argmax(-1), y.argmax(-1)
        same = ax == ay
        agree += int(same.sum())
        margin = x.gather(-1, ax.unsqueeze(-1)) - x.gather(-1, ay.unsqueeze(-1))
        ties += int(torch.logical_and(~same, margin.squeeze(-1) <= tie).sum())
    total = sum(x.shape[0] for x in a)
    return {
        "max_abs_dlogit": max(diffs),
        # total > 0: the max() calls above raise on zero probes or a probe of zero tokens
        "top1_agreement": agree / total,
        "top1_agreement_beyond_ties": (agree + ties) / total,
        "tokens": total,
        "max_abs_logit": scale,
    }


def judge(report: dict, dtype: str) -> tuple[bool, bool]:
    """(verify passed, adapter is a no-op) from the figures.

    Pass: fp32 needs max |dlogit| <= 1e-3 * max(1, max |logit|) and every top-1 to agree
    except near-ties (see compare); bf16/fp16 (the merged weights are rounded once, the adapter
    model is not) need >= 90% top-1 agreement. No-op: the merged model's logits equal the
    base's exactly."""
    am = report["adapter_vs_merged"]
    if dtype == "float32":
        ok = am["max_abs_dlogit"] <= fp32_tolerance(am["max_abs_logit"])
        ok = ok and am["top1_agreement_beyond_ties"] == 1.0
    else:
        ok = am["top1_agreement"] >= 0.9
    noop = report["merged_vs_base"]["max_abs_dlogit"] == 0.0
    return ok, noop


BF16_ROUNDING = 2.0**-8  # bf16 keeps 8 significant bits: half a unit in the last place


def change_vs_base(fig: dict) -> dict:
    """How much the adapter moves the logits against the base, and whether that is within
    bf16 rounding of the logits (max |logit| x 2^-8): then the adapter has not measurably
    changed the model (too few steps, a tiny learning rate), though verify may pass."""
    bound = BF16_ROUNDING * max(1.0, fig["max_abs_logit"])
    return {
        "max_abs_dlogit": fig["max_abs_dlogit"],
        "bf16_rounding": bound,
        "within_bf16_rounding": fig["max_abs_dlogit"] <= bound,
    }


# --------------------------------------------------------------------------- the merge


def verify_failure(report: dict) -> Finding:
    am = report["verify"]["adapter_vs_merged"]
    return Finding(
        "error",
        f"verify failed: merged model differs from the adapter model (max |dlogit| "
        f"{am['max_abs_dlogit']:.3g}, top-1 agreement {am['top1_agreement']:.1%}); nothing written",
        hint="rerun with VLMCTL_DEBUG=1 and report it; --no-verify skips the check",
    )


def peft_zero_delta(model) -> bool:
    """True when every LoRA B is zero and there is nothing else (DoRA, bias, modules_to_save)."""
    import torch

    any_lora = False
    for name, param in model.named_parameters():
        if "lora_B" in name:
            any_lora = True
            if bool(torch.count_nonzero(param)):
                return False
        elif "lora_magnitude_vector" in name or "modules_to_save" in name:
            return False
    return any_lora


class MergeVerifyError(VlmctlError):
    """Verify refused the merge; carries the report so the figures can still be printed."""

    def __init__(self, report: dict, finding: Finding):
        super().__init__(finding)
        self.report = report
