"""Padding-free packing for vision-language training (`packing` / `padding_free` keys).

TRL 1.16 refuses `packing` and `padding_free` for vision data, so vlmctl does both itself, on
top of its own collator, and only where the result is exact (tests/test_packing_exact.py):

- Rows are encoded by the same `VLMCollator` path as unpacked training (template, spans,
  media expansion, truncation policy), so a packed row holds exactly the tokens and labels the
  padded path trains on. A row is never split: a row longer than `max_length` has gone through
  the truncation policy first (or sits alone in its own bin when truncation is off).
- `packing: true`: rows are placed into bins of `text_processing.max_length` tokens by their
  true lengths (media tokens included), best-fit decreasing (`packing_strategy: bfd`, TRL's
  name); the Trainer's dataset is then one item per bin (row indices; the collator fetches
  the rows), so `per_device_train_batch_size`
  counts bins, as with TRL's packing. `padding_free: true` alone keeps the Trainer's batches of
  rows. Either way a batch becomes ONE row of concatenated sequences: no padding at all.
- Attention never crosses rows: `position_ids` restart at 0 per row and no `attention_mask`
  is passed, so transformers builds the block-diagonal causal mask from the position ids
  (`masking_utils.find_packed_sequence_indices` for sdpa/eager; flash-attention's varlen path
  reads the same position ids). For M-RoPE families (Qwen2-VL, Qwen2.5-VL, Qwen3-VL) the 3-D
  rope positions are computed by the model's own `get_rope_index` per row (the rows laid out
  as a padded batch with an attention mask) and concatenated, with the restarting text
  positions in front (the `(4, 1, T)` layout those models read for packed input).
- Media tensors keep row order (the model scatters image features onto image tokens in order);
  per-row pixel stacks (Idefics3/SmolVLM) become one stack, their all-zero fillers skipped by
  the model as before.
- The first label of every row is ignored: the token before it belongs to the previous row,
  and in an unpacked row position 0 is never a target either. The loss is the Trainer's:
  a sum over supervised tokens divided by the supervised-token count of the accumulated batch
  (`num_items_in_batch`), exactly as the padded path computes it.

Families where packing cannot be exact are refused (`refusal`) with the reason: attention
driven by `token_type_ids` (PaliGemma's prefix, Gemma 3's bidirectional image spans), cross-
attention to images (Mllama), remote code (its forward is not known to honour packed
position ids), and any family the exactness tests do not cover.
"""

from __future__ import annotations

import bisect
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SEQ_LENS_KEY = "vlmctl_seq_lens"
"""Batch key of a packed batch: the rows' lengths (removed before the model is called)."""
STRATEGIES = ("bfd",)

# Model classes whose packed forward equals the unpacked one (tests/test_packing_exact.py).
MROPE_CLASSES = frozenset(
    {
        "Qwen2VLForConditionalGeneration",
        "Qwen2_5_VLForConditionalGeneration",
        "Qwen3VLForConditionalGeneration",
    }
)
EXACT_CLASSES = MROPE_CLASSES | frozenset(
    {
        "LlavaForConditionalGeneration",
        "LlavaNextForConditionalGeneration",
        "LlavaOnevisionForConditionalGeneration",
        "InternVLForConditionalGeneration",
        "Idefics2ForConditionalGeneration",
        "Idefics3ForConditionalGeneration",
        "SmolVLMForConditionalGeneration",
    }
)
_MODEL_TYPE_CLASS = {
    "qwen2_vl": "Qwen2VLForConditionalGeneration",
    "qwen2_5_vl": "Qwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "Qwen3VLForConditionalGeneration",
    "llava": "LlavaForConditionalGeneration",
    "llava_next": "LlavaNextForConditionalGeneration",
    "llava_onevision": "LlavaOnevisionForConditionalGeneration",
    "internvl": "InternVLForConditionalGeneration",
    "idefics2": "Idefics2ForConditionalGeneration",
    "idefics3": "Idefics3ForConditionalGeneration",
    "smolvlm": "SmolVLMForConditionalGeneration",
}
# Why some families can never be packed exactly (model_type or class name prefix -> reason).
REFUSED = {
    "paligemma": "PaliGemma's prefix attends bidirectionally through token_type_ids "
    "(create_causal_mask's token-type or_mask), which position-id packing cannot express",
    "gemma3": "Gemma 3's image tokens attend bidirectionally within their span through "
    "token_type_ids, which position-id packing cannot express",
    "gemma3n": "Gemma 3n's image/audio tokens attend bidirectionally through token_type_ids, "
    "which position-id packing cannot express",
    "mllama": "Mllama attends to images by cross-attention per batch row "
    "(cross_attention_mask): a packed row would mix the rows' images",
}


def _class_family(name: str) -> str | None:
    low = name.lower()
    for fam in REFUSED:
        if low.startswith(fam.replace("_", "")):
            return fam
    return None


def refusal(
    model_class: str | None, model_type: str | None = None, remote: bool = False
) -> str | None:
    """Why packing cannot be exact for this model (None: proven exact)."""
    if model_type in REFUSED:
        return REFUSED[model_type]
    fam = _class_family(model_class or "")
    if fam:
        return REFUSED[fam]
    if remote:
        return (
            f"{model_class or model_type} runs remote code, whose forward is not known to "
            "honour packed position ids (attention could cross rows)"
        )
    cls = model_class if model_class in EXACT_CLASSES else _MODEL_TYPE_CLASS.get(model_type or "")
    if cls in EXACT_CLASSES:
        return None
    what = model_class or model_type or "this model"
    return (
        f"packing is not proven exact for {what}: vlmctl packs only the families its exactness "
        "tests cover (Qwen2-VL, Qwen2.5-VL, Qwen3-VL, LLaVA, LLaVA-NeXT, LLaVA-OneVision, "
        "InternVL, Idefics2/3, SmolVLM)"
    )


def is_mrope(model_class: str | None) -> bool:
    """M-RoPE families need 3-D rope positions computed per row."""
    return model_class in MROPE_CLASSES


@dataclass(frozen=True)
class PackSpec:
    """What the train config asks for: bins (`packing`) and/or one row per batch."""

    packing: bool
    padding_free: bool
    strategy: str = "bfd"

    @property
    def on(self) -> bool:
        """Whether batches are flattened into one row (both keys imply it)."""
        return self.packing or self.padding_free


def spec_of(train: Any) -> PackSpec:
    """The packing keys of a `TrainConfig` (SFTConfig names; vlmctl's own meaning for VLMs)."""

    def get(key: str, default: Any) -> Any:
        return train.get(key, default) if isinstance(train, Mapping) else getattr(train, key)

    return PackSpec(
        packing=bool(get("packing", False)),
        padding_free=bool(get("padding_free", False)),
        strategy=str(get("packing_strategy", "bfd")),
    )


# --------------------------------------------------------------------------- bins


def make_bins(lengths: Sequence[int | None], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: row indices grouped into bins of at most `capacity` tokens.

    `None` lengths (rows the length policy drops) go in no bin. A row longer than `capacity`
    (only possible with truncation off) gets a bin of its own. Deterministic: ties keep the
    row order, so every process and every resumed run builds the same bins.
    """
    order = sorted(
        (i for i, n in enumerate(lengths) if n is not None), key=lambda i: (-lengths[i], i)
    )
    bins: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (space left, bin index), sorted
    for i in order:
        n = int(lengths[i])  # type: ignore[arg-type]
        if n > capacity:
            bins.append([i])
            continue
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            space, b = free.pop(k)
            bins[b].append(i)
            space -= n
        else:
            b = len(bins)
            bins.append([i])
            space = capacity - n
        if space > 0:
            bisect.insort(free, (space, b))
    # Rows inside a bin in dataset order (the bin's content, not its placement order).
    return [sorted(b) for b in bins]


def bin_report(
    bins: Sequence[Sequence[int]], lengths: Sequence[int | None], capacity: int
) -> dict[str, Any]:
    """Bins, fill ratio and rows per bin: what `validate` and `preview` show."""
    sizes = [sum(int(lengths[i] or 0) for i in b) for b in bins]
    rows = [len(b) for b in bins]
    tokens = sum(sizes)
    return {
        "bins": len(bins),
        "rows": sum(rows),
        "capacity": capacity,
        "tokens": tokens,
        "fill_ratio": tokens / (capacity * len(bins)) if bins else 0.0,
        "rows_per_bin": {
            "min": min(rows, default=0),
            "mean": (sum(rows) / len(rows)) if rows else 0.0,
            "max": max(rows, default=0),
        },
        "over_capacity": sum(1 for s in sizes if s > capacity),
    }


def describe(report: Mapping[str, Any]) -> str:
    """One line for people: `12 bins of 2048 tokens, fill 97.3%, rows per bin 3-9 (mean 5.1)`."""
    rpb = report["rows_per_bin"]
    text = (
        f"{report['rows']} rows -> {report['bins']} bins of {report['capacity']} tokens, "
        f"fill {100 * report['fill_ratio']:.1f}%, rows per bin {rpb['min']}-{rpb['max']} "
        f"(mean {rpb['mean']:.1f})"
    )
    if report.get("over_capacity"):
        text += f", {report['over_capacity']} rows alone in a bin (longer than a bin)"
    return text


def trained_length(collator: Any, enc: Any) -> int | None:
    """The length a row trains with after the length policy (None: the row is dropped).

    `enc` is an untruncated encoding (`encode_examples(..., truncate=False)`).
    """
    if enc.drop_reason or enc.num_supervised == 0 or not collator.fits(enc):
        return None
    tp = collator.cfg.text_processing
    if tp.truncation and enc.length > tp.max_length:
        if tp.truncation_policy != "truncate_text":
            return None
        return tp.max_length
    return enc.length


def row_lengths(collator: Any, dataset: Any, chunk: int = 16) -> list[int | None]:
    """Exact trained length of every row of `dataset` (media tokens included), in order.

    Each row is encoded by the training collator (without cutting); rows the length policy
    would drop get None. This decodes every image once before training: the price of bins
    that are exactly full.
    """
    from vlmctl.collate import ROW_INDEX_KEY
    from vlmctl.data.messages import row_to_example

    out: list[int | None] = []
    n = len(dataset)
    for start in range(0, n, chunk):
        rows = [dataset[i] for i in range(start, min(n, start + chunk))]
        examples = [
            row_to_example(r, collator.cfg, r.get(ROW_INDEX_KEY, start + k))
            for k, r in enumerate(rows)
        ]
        for enc in collator.encode_examples(examples, truncate=False):
            out.append(trained_length(collator, enc))
    return out


BIN_KEY = "vlmctl_bin"
SPLIT_KEY = "vlmctl_split"


def bin_dataset(bins: Sequence[Sequence[int]], split: str) -> Any:
    """The Trainer's dataset when packing: one item per bin (its row indices and split).

    A `datasets.Dataset`, as SFTTrainer requires; `PackingCollator` fetches the raw rows from
    the split's dataset when the batch is made.
    """
    import datasets

    return datasets.Dataset.from_dict(
        {BIN_KEY: [list(map(int, b)) for b in bins], SPLIT_KEY: [split] * len(bins)}
    )


# --------------------------------------------------------------------------- batches


def pack_batch(
    batch: Mapping[str, Any],
    lengths: Sequence[int],
    ignore_index: int = -100,
    row_pixels: bool = False,
):
    """A right-padded batch (n rows) -> one packed row of sum(lengths) tokens.

    Per-token tensors are cut to each row's length and concatenated; `position_ids` restart
    at 0 per row; there is no `attention_mask` (the packed mask comes from the position ids);
    each row's first label is ignored; media tensors keep row order. `row_pixels`: the
    processor stacks images per row (Idefics2/3, SmolVLM: rows x images x ...), which become
    one row of images.
    """
    import torch

    n = len(lengths)
    ids = batch["input_ids"]
    if ids.shape[0] != n:
        raise ValueError(f"{ids.shape[0]} rows in the batch, {n} lengths")
    width = ids.shape[1]
    if "attention_mask" in batch:
        am = batch["attention_mask"]
        want = torch.arange(width)[None, :] < torch.tensor(list(lengths))[:, None]
        if not torch.equal(am.bool(), want):
            raise ValueError("pack_batch needs right-padded rows of the given lengths")
    out: dict[str, Any] = {}
    for key, value in batch.items():
        if key == "attention_mask":
            continue
        if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape == (n, width):
            out[key] = torch.cat([value[i, :L] for i, L in enumerate(lengths)])[None]
        else:
            out[key] = value
    starts = torch.tensor([0, *list(lengths)[:-1]]).cumsum(0)
    if "labels" in out:
        out["labels"] = out["labels"].clone()
        out["labels"][0, starts] = ignore_index
    out["position_ids"] = torch.cat([torch.arange(L) for L in lengths])[None]
    out[SEQ_LENS_KEY] = torch.tensor(list(lengths), dtype=torch.long)
    for key in ("pixel_values", "pixel_attention_mask") if row_pixels else ():
        value = out.get(key)
        if isinstance(value, torch.Tensor) and value.dim() >= 4 and value.shape[0] == n:
            out[key] = value.reshape(1, n * value.shape[1], *value.shape[2:])
    return out


class PackingCollator:
    """`VLMCollator` + packing: raw rows (or bins of raw rows) -> one packed row per batch."""

    def __init__(self, collator: Any, sources: Mapping[str, Any] | None = None) -> None:
        self.collator = collator
        self.sources = dict(sources or {})  # split -> raw dataset (items of a bin dataset)

    def __getattr__(self, name: str) -> Any:  # stats, tokenizer, cfg ... of the inner one
        if name == "collator":
            raise AttributeError(name)
        return getattr(self.collator, name)

    def encode(self, items: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Encodings of the rows of `items` (bins are expanded in order), dropped rows out."""
        from vlmctl.collate import ROW_INDEX_KEY
        from vlmctl.data.messages import row_to_example

        rows: list[Mapping[str, Any]] = []
        for item in items:
            if BIN_KEY in item:
                source = self.sources[item[SPLIT_KEY]]
                rows.extend(source[int(i)] for i in item[BIN_KEY])
            else:
                rows.append(item)
        examples = [row_to_example(r, self.collator.cfg, r.get(ROW_INDEX_KEY)) for r in rows]
        return [e for e in self.collator.encode_examples(examples) if not e.drop_reason]

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """Items -> a packed batch (input_ids (1, T), position_ids, labels, media tensors)."""
        from vlmctl.errors import DataError, Finding

        encoded = self.encode(items)
        self.collator.stats["batches"] += 1
        if not encoded:
            self.collator.stats["all_dropped_batches"] += 1
            raise DataError(
                Finding(
                    "error",
                    f"every row of this packed batch was dropped "
                    f"(dropped so far: {self.collator.drop_summary()})",
                    hint="raise text_processing.max_length or use truncation_policy: truncate_text",
                    key="text_processing.max_length",
                    code="all-rows-dropped",
                )
            )
        return self.collate_encoded(encoded)

    def collate_encoded(self, encoded: Sequence[Any]) -> dict[str, Any]:
        """Encodings -> one packed row (the padded batch of the inner collator, unpadded)."""
        padded = self.collator.collate_encoded(encoded)
        ignore = self.collator.cfg.label_masking.ignore_index
        lengths = [e.length for e in encoded if not e.drop_reason]
        row_pixels = bool(getattr(self.collator, "_row_batched_pixels", False))
        return pack_batch(padded, lengths, ignore, row_pixels=row_pixels)


# --------------------------------------------------------------------------- model side


def _rope_owner(model: Any) -> Any | None:
    """The module with `get_rope_index` (the inner Qwen*VLModel), through PEFT/DDP wrappers."""
    cached = getattr(model, "_vlmctl_rope_owner", None)
    if cached is not None:
        return cached
    for mod in model.modules():
        if hasattr(type(mod), "get_rope_index"):
            try:
                object.__setattr__(model, "_vlmctl_rope_owner", mod)
            except Exception:  # noqa: BLE001 - caching is optional
                pass
            return mod
    return None


def mrope_positions(owner: Any, batch: Mapping[str, Any], lengths: Sequence[int]):
    """(3, 1, T) M-RoPE positions: `get_rope_index` of each row alone, concatenated.

    The rows are laid out as a right-padded batch with an attention mask, the form the model's
    own function handles (it consumes the image/video grids in row order).
    """
    import torch

    ids = batch["input_ids"][0]
    n, width = len(lengths), max(lengths)
    mask = torch.arange(width)[None, :] < torch.tensor(list(lengths))[:, None]
    padded = ids.new_zeros((n, width))
    padded[mask] = ids
    kwargs: dict[str, Any] = {"attention_mask": mask.long().to(ids.device)}
    params = inspect.signature(owner.get_rope_index).parameters
    for key, value in batch.items():
        if key in ("input_ids", "attention_mask", "position_ids") or key not in params:
            continue
        if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape == (1, ids.numel()):
            row = value.new_zeros((n, width))
            row[mask] = value[0]
            value = row
        kwargs[key] = value
    pos, _ = owner.get_rope_index(padded.to(ids.device), **kwargs)
    return pos[:, mask.to(pos.device)][:, None, :]


def model_inputs(model: Any, batch: Mapping[str, Any]) -> dict[str, Any]:
    """A packed batch -> the model's keyword arguments (M-RoPE positions where needed)."""
    out = dict(batch)
    lengths = out.pop(SEQ_LENS_KEY, None)
    if lengths is None:
        return out
    # transformers builds the packed mask only without a cache (and without attention_mask).
    out["use_cache"] = False
    owner = _rope_owner(model)
    if owner is not None:
        import torch

        text = out["position_ids"]
        rope = mrope_positions(owner, out, [int(x) for x in lengths])
        out["position_ids"] = torch.cat([text[None].to(rope.device), rope], dim=0)
    return out


# --------------------------------------------------------------------------- validate
