"""Padding and training speed: default batching vs length grouping vs packing (issue #15).

    python benchmarks/bench_packing.py [--rows 96] [--batch 8] [--out /tmp/bench-packing]
    python benchmarks/bench_packing.py --device cuda --shape qwen2-vl-2b --trl   (GPU, bf16)

Rows like /work/shared/data's abo_vqa_csv (a product photo, a short question, a one-word
answer), with ONE TO THREE images per row of varied sizes, are generated locally (nothing is
read from /work/shared). Every row is encoded once by vlmctl's collator to get its exact length
(media tokens included). Then, on the same rows:

1. Padded-token fraction of one epoch: default batching (random order, `--batch` rows padded
   to the longest), length grouping (the Trainer's LengthGroupedSampler on the exact lengths),
   and packing (bins of `--capacity` tokens, best-fit decreasing: the share of bin capacity
   left empty; the packed tensor itself carries no padding at all). Goal: packing <= 2%.
2. Training tokens/s, one epoch, packed vs padded (default batching): the same model
   initialisation, AdamW, the collator's work included; tokens = real (non-pad) tokens.
   Goal: packed >= 1.5x padded on the CPU tiny Qwen2-VL.
   `--shape qwen2-vl-2b` uses a random model of Qwen2-VL-2B's sizes (28 layers, hidden 1536,
   vision depth 32) with the tiny tokenizer, for a GPU; `--trl` adds a plain TRL script
   (SFTTrainer + TRL's own vision collator, padded) on the same rows. Peak GPU memory is
   reported per mode on CUDA.
Prints a JSON summary and writes OUT/bench-packing.json.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

OBJECTS = {
    "shoe": ["main color", "style", "heel type", "toe shape", "upper material"],
    "bed": ["main color", "headboard shape", "frame material", "number of legs"],
    "bracelet": ["metal color", "clasp type", "stone shape", "overall style"],
    "microwave": ["main color", "handle color", "number of control panels"],
    "chair": ["seat material", "leg color", "backrest shape", "number of legs"],
}
ANSWERS = ["white", "black", "leather", "four", "curved", "gold", "square", "wood", "kitten"]


def make_rows(n: int, seed: int = 0, max_side: int = 128, side: int = 0) -> list[dict]:
    """abo_vqa_csv-like rows with 1-3 images each (varied sizes, or all `side` x `side`)."""
    import numpy as np
    from PIL import Image

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        obj = rng.choice(list(OBJECTS))
        k = rng.choice([1, 1, 2, 3])  # one to three photos of the product
        images = []
        for _ in range(k):
            w, h = rng.randint(32, max_side), rng.randint(32, max_side)
            if side:  # abo_vqa_csv's curated images are all 256 x 256
                w = h = side
            arr = np.random.default_rng(seed * 1000 + i * 3 + len(images)).integers(
                0, 255, (h, w, 3), dtype=np.uint8
            )
            images.append(Image.fromarray(arr))
        q = f"What is the {rng.choice(OBJECTS[obj])} of the {obj}"
        if rng.random() < 0.3:
            q += " shown in " + ("these photos" if k > 1 else "this photo")
        rows.append({"images": images, "question": q, "answer": rng.choice(ANSWERS)})
    return rows


def to_example(row: dict, i: int):
    from vlmctl.data.example import Example

    content = [{"type": "image"} for _ in row["images"]]
    content.append({"type": "text", "text": row["question"]})
    messages = [
        {"role": "user", "content": content},
        {"role": "assistant", "content": [{"type": "text", "text": row["answer"]}]},
    ]
    return Example(messages=messages, images=list(row["images"]), videos=[], row=i)


def _pixels(ip, lo: int, hi: int) -> None:
    ip.min_pixels, ip.max_pixels = lo, hi
    ip.size = {"shortest_edge": lo, "longest_edge": hi}


def build_model(
    shape: str, folder: Path, device: str, dtype, layers: int | None = None, vocab: int = 151936
):
    """(processor, model): the tiny Qwen2-VL twin, or a random Qwen2-VL-2B-shaped model.

    `qwen2-vl-2b-lm`: Qwen2-VL-2B's language-model widths (`layers` of them, default 2) and a
    one-layer 64-wide vision tower with the real patch 14 / merge 2 (a 256-px image is 81
    tokens, as on the real model): a CPU-sized model whose step cost is the language model's
    per-token work, as on real models, not the tiny twin's vision tower and overhead.
    """
    import torch
    import transformers as tf

    from vlmctl.testing.tiny import build_tiny_model

    tiny = build_tiny_model("qwen2_vl", folder / "tiny")
    processor = tf.AutoProcessor.from_pretrained(str(tiny))
    ip = processor.image_processor
    if shape == "tiny":
        _pixels(ip, 16 * 16, 128 * 128)  # images up to 128 px keep their size: 4-64 tokens
        model = tf.AutoModelForImageTextToText.from_pretrained(str(tiny))
    else:  # Qwen2-VL-2B's sizes, random weights, the tiny tokenizer's ids
        cfg = tf.AutoConfig.from_pretrained(str(tiny))
        text = cfg.text_config
        for key, value in {
            "hidden_size": 1536,
            "intermediate_size": 8960,
            "num_hidden_layers": 28,
            "num_attention_heads": 12,
            "num_key_value_heads": 2,
            "head_dim": 128,
            "vocab_size": vocab,
            "max_position_embeddings": 32768,
        }.items():
            setattr(text, key, value)
        text.rope_parameters = {
            "rope_type": "default",
            "rope_theta": 1e6,
            "mrope_section": [16, 24, 24],
        }
        v = cfg.vision_config
        lm_only = shape == "qwen2-vl-2b-lm"
        for key, value in {
            "depth": 1 if lm_only else 32,
            "embed_dim": 64 if lm_only else 1280,
            "hidden_size": 1536,
            "num_heads": 2 if lm_only else 16,
            "mlp_ratio": 4,
            "patch_size": 14,
        }.items():
            setattr(v, key, value)
        ip.patch_size, ip.merge_size = 14, 2
        _pixels(ip, 56 * 56, 448 * 448)
        if lm_only:
            text.num_hidden_layers = layers or 2
            text.layer_types = ["full_attention"] * text.num_hidden_layers
        elif layers:  # a smoke test of this path on a CPU
            text.num_hidden_layers, v.depth = layers, layers
            text.layer_types = text.layer_types[:layers] if text.layer_types else None
        elif text.layer_types:
            text.layer_types = [text.layer_types[0]] * text.num_hidden_layers
        torch.manual_seed(0)
        model = tf.Qwen2VLForConditionalGeneration(cfg)
    model = model.to(device=device, dtype=dtype)
    model.config.use_cache = False
    return processor, model


def padded_fraction(batches: list[list[int]], lengths: list[int]) -> float:
    real = sum(lengths[i] for b in batches for i in b)
    total = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - real / total


class Split:
    """Where a CPU step's time goes: collate, forward, backward, optimizer, and inside
    forward+backward the vision tower, the attention kernels and the LM head.

    Measured in process CPU seconds (with `--threads 1`, the step's own work: a shared
    machine's load does not inflate it as it does wall time).

    Forward parts are timed by hooks; a backward part by identity autograd nodes on its
    output (its gradient arrives: start) and its input (its gradient leaves: end). The CPU
    autograd engine runs one node at a time, so the spans do not overlap. The vision tower is
    the first thing of the forward graph: its backward ends when backward ends.
    """

    def __init__(self, model) -> None:
        import torch
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

        self.t: dict[str, float] = {}
        self._spans: list[tuple[str, dict]] = []
        split = self

        class Mark(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x, box, key):
                ctx.box, ctx.key = box, key
                return x.view_as(x)

            @staticmethod
            def backward(ctx, g):
                ctx.box.setdefault(ctx.key, time.process_time())
                return g, None, None

        self.Mark = Mark
        sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]

        def timed_sdpa(module, q, k, v, *args, **kwargs):
            if module.__class__.__name__.startswith("Qwen2VLVision"):
                return sdpa(module, q, k, v, *args, **kwargs)
            box: dict = {}
            q, k, v = (Mark.apply(x, box, "end") for x in (q, k, v))
            t0 = time.process_time()
            out, w = sdpa(module, q, k, v, *args, **kwargs)
            split.add("attention_fwd", time.process_time() - t0)
            split._spans.append(("attention_bwd", box))
            return Mark.apply(out, box, "start"), w

        ALL_ATTENTION_FUNCTIONS["sdpa"] = timed_sdpa
        inner = model.model
        self._hook(inner.visual, "vision", grad_in=False)
        self._hook(model.lm_head, "lm_head", grad_in=True)

    def add(self, key: str, secs: float) -> None:
        self.t[key] = self.t.get(key, 0.0) + secs

    def _hook(self, module, name: str, grad_in: bool) -> None:
        state: dict = {}

        def pre(mod, args):
            state["t0"] = time.process_time()
            state["box"] = box = {}
            self._spans.append((f"{name}_bwd", box))
            if grad_in and args and getattr(args[0], "requires_grad", False):
                return (self.Mark.apply(args[0], box, "end"), *args[1:])
            return None

        def post(mod, args, out):
            self.add(f"{name}_fwd", time.process_time() - state["t0"])
            if hasattr(out, "pooler_output"):  # the vision tower's merged features
                out.pooler_output = self.Mark.apply(out.pooler_output, state["box"], "start")
                return out
            return self.Mark.apply(out, state["box"], "start")

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    def backward_done(self, end: float) -> None:
        """Turn this step's backward marks into seconds."""
        for key, box in self._spans:
            if "start" in box:
                self.add(key, box.get("end", end) - box["start"])
        self._spans.clear()


def train_epoch(model, batches, collate, device, lr=1e-4, split: Split | None = None) -> dict:
    """One pass over `batches` (lists of encodings): tokens/s over collate + step time."""
    import torch

    from vlmctl.packing import model_inputs

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    real = seen = 0
    if split:
        split.t.clear()
    t0, c0 = time.perf_counter(), time.process_time()
    for encs in batches:
        ta = time.process_time()
        batch = collate(encs)
        n_sup = int((batch["labels"][..., 1:] != -100).sum())
        batch = model_inputs(model, batch)
        labels = batch.pop("labels")
        batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(model.dtype)
        tb = time.process_time()
        logits = model(**batch).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(),
            labels[:, 1:].flatten().to(device),
            ignore_index=-100,
            reduction="sum",
        ) / max(1, n_sup)
        tc = time.process_time()
        loss.backward()
        td = time.process_time()
        opt.step()
        opt.zero_grad(set_to_none=True)
        te = time.process_time()
        if split:
            split.backward_done(td)
            for key, secs in (
                ("collate", tb - ta),
                ("forward", tc - tb),
                ("backward", td - tc),
                ("optimizer", te - td),
            ):
                split.add(key, secs)
        real += sum(e.length for e in encs)
        seen += batch["input_ids"].numel()
    if device == "cuda":
        torch.cuda.synchronize()
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = {
        "cpu_seconds": round(cpu, 2),
        "tokens_per_cpu_second": round(real / cpu, 1),
        "seconds": round(secs, 2),
        "tokens": real,
        "tensor_tokens": seen,
        "tokens_per_second": round(real / secs, 1),
        "steps": len(batches),
    }
    if device == "cuda":
        out["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if split:
        out["split_seconds"] = {k: round(v, 2) for k, v in split.t.items()}
    return out


def run_trl(processor, model, rows, batch: int, out: Path, bf16: bool) -> dict:
    """A plain TRL script on the same rows: SFTTrainer + its own vision collator (padded)."""
    import datasets
    import torch
    from trl import SFTConfig, SFTTrainer

    ds = datasets.Dataset.from_list(
        [
            {
                "images": r["images"],
                "prompt": [to_example(r, 0).messages[0]],
                "completion": [to_example(r, 0).messages[1]],
            }
            for r in rows
        ]
    )
    args = SFTConfig(
        output_dir=str(out / "trl"),
        num_train_epochs=1,
        per_device_train_batch_size=batch,
        learning_rate=1e-4,
        save_strategy="no",
        report_to="none",
        bf16=bf16,
        use_cpu=not torch.cuda.is_available(),
        max_length=None,
        logging_steps=1000,
        disable_tqdm=True,
        activation_checkpointing=False,
        include_num_input_tokens_seen="non_padding",
    )
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=processor)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    result = trainer.train()
    m = result.metrics
    res = {
        "seconds": round(m["train_runtime"], 2),
        "tokens": int(trainer.state.num_input_tokens_seen),
        "tokens_per_second": round(trainer.state.num_input_tokens_seen / m["train_runtime"], 1),
        "steps": trainer.state.global_step,
    }
    if torch.cuda.is_available():
        res["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return res


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; returns (and prints) the JSON summary."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=96)
    p.add_argument("--batch", type=int, default=8, help="rows per padded batch")
    p.add_argument("--capacity", type=int, default=1024, help="tokens per bin (max_length)")
    p.add_argument("--bins-per-step", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--shape", default="tiny", choices=["tiny", "qwen2-vl-2b", "qwen2-vl-2b-lm"])
    p.add_argument("--image-side", type=int, default=0, help="all images N x N (abo_vqa_csv: 256)")
    p.add_argument("--vocab", type=int, default=151936, help="vocabulary (2b shapes)")
    p.add_argument("--split", action="store_true", help="time split of every step")
    p.add_argument(
        "--threads", type=int, default=0, help="torch threads (1: CPU time immune to load)"
    )
    p.add_argument("--trl", action="store_true", help="also time a plain TRL script (padded)")
    p.add_argument("--repeats", type=int, default=2, help="best of N epochs per mode")
    p.add_argument("--out", default="/tmp/bench-packing")
    p.add_argument(
        "--layers", type=int, default=None, help="LM layers (2b-lm: default 2; 2b: smoke test)"
    )
    p.add_argument("--no-train", action="store_true", help="padding fractions only")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch
    from transformers.trainer_pt_utils import get_length_grouped_indices

    from vlmctl.collate import VLMCollator
    from vlmctl.config.collator import CollatorConfig
    from vlmctl.packing import PackingCollator, bin_report, make_bins

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.threads:
        torch.set_num_threads(a.threads)
    dtype = torch.bfloat16 if a.device == "cuda" else torch.float32
    processor, model = build_model(a.shape, out, a.device, dtype, a.layers, a.vocab)
    cfg = CollatorConfig.model_validate(
        {
            "text_processing": {"max_length": a.capacity},
            "label_masking": {"mask_input_tokens": True},
        }
    )
    col = VLMCollator(processor, cfg, model_type="qwen2_vl")
    rows = make_rows(a.rows, seed=0, max_side=128 if a.shape == "tiny" else 640, side=a.image_side)
    examples = [to_example(r, i) for i, r in enumerate(rows)]
    t = time.perf_counter()
    encoded = []
    for k in range(0, len(examples), 16):
        encoded += col.encode_examples(examples[k : k + 16])
    encode_seconds = time.perf_counter() - t
    keep = [i for i, e in enumerate(encoded) if not e.drop_reason]
    lengths = [encoded[i].length if i in set(keep) else None for i in range(len(encoded))]
    L = [x or 0 for x in lengths]

    rng = random.Random(0)
    order = keep[:]
    rng.shuffle(order)
    default = [order[k : k + a.batch] for k in range(0, len(order), a.batch)]
    g = torch.Generator().manual_seed(0)
    grouped_order = [
        keep[i] for i in get_length_grouped_indices([L[i] for i in keep], a.batch, generator=g)
    ]
    grouped = [grouped_order[k : k + a.batch] for k in range(0, len(grouped_order), a.batch)]
    bins = make_bins(lengths, a.capacity)
    report = bin_report(bins, lengths, a.capacity)
    rng.shuffle(bins)
    steps = [sum(bins[k : k + a.bins_per_step], []) for k in range(0, len(bins), a.bins_per_step)]

    summary: dict = {
        "machine": {
            "device": torch.cuda.get_device_name(0) if a.device == "cuda" else "cpu",
            "cpus": os.cpu_count(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "torch_threads": torch.get_num_threads(),
        },
        "shape": a.shape,
        "rows": len(keep),
        "images_per_row": {n: sum(1 for r in rows if len(r["images"]) == n) for n in (1, 2, 3)},
        "row_tokens": {
            "min": min(L[i] for i in keep),
            "max": max(L),
            "mean": round(sum(L) / len(keep), 1),
        },
        "encode_seconds": round(encode_seconds, 2),
        "padded_fraction": {
            "default_batching": round(padded_fraction(default, L), 4),
            "group_by_length": round(padded_fraction(grouped, L), 4),
            "packing_bin_slack": round(1 - report["fill_ratio"], 4),
            "packing_tensor": 0.0,
        },
        "bins": report,
        "batch_rows": a.batch,
    }
    summary["model"] = {
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "text_layers": model.config.text_config.num_hidden_layers,
        "text_hidden": model.config.text_config.hidden_size,
        "vocab": model.config.text_config.vocab_size,
        "vision_depth": model.config.vision_config.depth,
        "image_side": a.image_side or "varied",
        "capacity": a.capacity,
        "attn": model.config._attn_implementation,
    }
    packer = PackingCollator(col)
    split = Split(model) if a.split else None
    init = {k: v.detach().clone() for k, v in model.state_dict().items()}

    if a.no_train:
        print(json.dumps(summary, indent=2))
        return summary
    modes = {"padded": (default, col.collate_encoded), "packed": (steps, packer.collate_encoded)}
    runs: dict[str, list] = {m: [] for m in modes}
    for _ in range(a.repeats):  # alternating, so a load change on a shared machine hits both
        for mode, (batches, collate) in modes.items():
            model.load_state_dict(init)
            epoch = [[encoded[i] for i in b] for b in batches]
            runs[mode].append(train_epoch(model, epoch, collate, a.device, split=split))
    summary["runs"] = {
        m: [(x["tokens_per_second"], x["tokens_per_cpu_second"]) for x in r]
        for m, r in runs.items()
    }
    summary["train"] = {m: max(r, key=lambda x: x["tokens_per_second"]) for m, r in runs.items()}
    tr = summary["train"]
    summary["speedup_packed_vs_padded"] = round(
        tr["packed"]["tokens_per_second"] / tr["padded"]["tokens_per_second"], 2
    )
    summary["speedup_cpu_seconds"] = round(
        tr["packed"]["tokens_per_cpu_second"] / tr["padded"]["tokens_per_cpu_second"], 2
    )
    if a.trl:
        model.load_state_dict(init)
        tr["trl_plain_padded"] = run_trl(processor, model, rows, a.batch, out, a.device == "cuda")
    summary["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    (out / "bench-packing.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
