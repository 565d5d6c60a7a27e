"""Packing's checks and set-up against a config set: which model is packed, validate's
refusal and bin report, and the worker's preparation of bins (the packing itself is
vlmctl/packing.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vlmctl.packing import (
    _MODEL_TYPE_CLASS,
    PackingCollator,
    bin_dataset,
    bin_report,
    describe,
    make_bins,
    refusal,
    row_lengths,
    spec_of,
)


def _local_config(cs: Any) -> dict[str, Any]:
    """The model folder's config.json when the model is a local folder (else {})."""
    import json
    from pathlib import Path

    folder = Path(cs.model_location())
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def model_identity(cs: Any) -> tuple[str | None, str | None, bool]:
    """(model class, model_type, remote code) as far as known without loading the model."""
    from vlmctl.errors import VlmctlError

    if not cs.model.model_name_or_path:
        return None, None, False
    try:
        from vlmctl.models.resolve import AUTO_MODEL, resolve_model

        res = resolve_model(cs.model)
    except VlmctlError:
        return None, None, False
    data = _local_config(cs)
    model_type = data.get("model_type")
    cls = None if res.model_class == AUTO_MODEL else res.model_class
    if cls is None:
        archs = data.get("architectures") or []
        cls = archs[0] if archs else _MODEL_TYPE_CLASS.get(model_type or "")
    remote = res.source == "remote_code" or bool(data.get("auto_map"))
    return cls, model_type, remote


def config_findings(cs: Any) -> list[Any]:
    """validate: refuse packing where it cannot be exact; say what it does where it is on."""
    spec = spec_of(cs.train)
    if not spec.on:
        return []
    key = "packing" if spec.packing else "padding_free"
    cls, model_type, remote = model_identity(cs)
    out = []
    if cls is None and model_type is None:
        if cs.model.model_name_or_path:
            out.append(
                cs.finding(
                    "info",
                    "train",
                    key,
                    f"{key}: the model family is not known before loading "
                    f"({cs.model.model_name_or_path} is not a local folder): train checks it",
                    code="packing-family",
                )
            )
    else:
        why = refusal(cls, model_type, remote)
        if why:
            out.append(_refused(cs, key, why))
            return out
    tp = cs.collator.text_processing
    if spec.packing:
        note = (
            f"packing: rows go into bins of text_processing.max_length={tp.max_length} tokens "
            "(best-fit decreasing); per_device_train_batch_size counts bins, and each batch of "
            "bins is one padding-free row (position ids restart per row)"
        )
        if cs.train.group_by_length:
            note += "; group_by_length has no effect (bins are all about max_length long)"
        if not tp.truncation:
            note += "; with truncation: false a row longer than a bin trains alone in its own bin"
    else:
        note = (
            "padding_free: each batch of rows is one row of concatenated sequences (no "
            "padding, no bins); position ids restart per row"
        )
    out.append(cs.finding("info", "train", key, note, code="packing"))
    return out


def _refused(cs: Any, key: str, why: str) -> Any:
    """The one refusal finding, at validate (config) and at train (the loaded model)."""
    return cs.finding(
        "error",
        "train",
        key,
        f"{key} cannot be exact for this model: {why}",
        hint=f"set {key}: false",
        code="packing-refused",
    )


# --------------------------------------------------------------------------- train


def check_model(cs: Any, model: Any) -> None:
    """Train: refuse packing for the model actually loaded (ConfigError at the packing key)."""
    from vlmctl.errors import ConfigError

    spec = spec_of(cs.train)
    if not spec.on:
        return
    config = getattr(model, "config", None)
    remote = bool(getattr(config, "auto_map", None))
    why = refusal(type(model).__name__, getattr(config, "model_type", None), remote)
    if why:
        key = "packing" if spec.packing else "padding_free"
        raise ConfigError(_refused(cs, key, why))


def prepare_training(
    cs: Any, model: Any, collator: Any, train_ds: Any, eval_ds: Any, say: Any = None
) -> tuple[Any, Any, Any]:
    """(data collator, train dataset, eval dataset) for the Trainer when packing is on.

    `packing`: exact row lengths -> bins -> one Trainer item per bin. `padding_free` alone: the
    datasets stay, only the collator flattens each batch.
    """
    check_model(cs, model)
    spec = spec_of(cs.train)
    packer = PackingCollator(collator, {"train": train_ds, "eval": eval_ds})
    if not spec.packing:
        return packer, train_ds, eval_ds
    capacity = cs.collator.text_processing.max_length
    out = []
    for name, ds in (("train", train_ds), ("eval", eval_ds)):
        if ds is None:
            out.append(None)
            continue
        lengths = row_lengths(collator, ds)
        bins = make_bins(lengths, capacity)
        if say is not None:
            dropped = sum(1 for x in lengths if x is None)
            extra = f"; {dropped} rows dropped by the length policy" if dropped else ""
            say(f"packing {name}: {describe(bin_report(bins, lengths, capacity))}{extra}")
        out.append(bin_dataset(bins, name))
    return packer, out[0], out[1]


def validate_bins(cs: Any, lengths: Sequence[int]) -> tuple[dict[str, Any] | None, Any]:
    """validate's data pass: the bins the checked rows make (summary, info finding).

    `lengths` are the rows' untruncated lengths; the length policy is applied here as training
    applies it (truncate_text cuts to max_length, the other policies drop longer rows).
    """
    spec = spec_of(cs.train)
    if not spec.packing or not lengths:
        return None, None
    tp = cs.collator.text_processing
    trained: list[int | None] = []
    for n in lengths:
        if tp.truncation and n > tp.max_length:
            trained.append(tp.max_length if tp.truncation_policy == "truncate_text" else None)
        else:
            trained.append(int(n))
    report = bin_report(make_bins(trained, tp.max_length), trained, tp.max_length)
    finding = cs.finding(
        "info",
        "train",
        "packing",
        f"packing the checked rows: {describe(report)}",
        code="packing-bins",
    )
    return report, finding
