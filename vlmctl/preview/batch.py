"""Which rows, and the batch the ONE collator builds from them (what `train` would build)."""

from __future__ import annotations

from typing import Any

from vlmctl.errors import DataError, Finding, UsageError


def parse_rows(text: str) -> list[int]:
    """`0,5,7` or `0-3,9` -> [0, 5, 7] / [0, 1, 2, 3, 9]."""
    out: list[int] = []
    for item in (p.strip() for p in text.split(",")):
        if not item:
            continue
        try:
            if "-" in item:
                a, b = (int(x) for x in item.split("-", 1))
                if b < a:
                    raise ValueError
                out.extend(range(a, b + 1))
            else:
                out.append(int(item))
        except ValueError:
            raise UsageError(
                f"--rows {text!r}: expected row numbers like 0,5,7 or 0-3", hint="rows count from 0"
            ) from None
    if not out or any(i < 0 for i in out):
        raise UsageError(f"--rows {text!r}: expected row numbers >= 0", hint="e.g. --rows 0,5,7")
    return list(dict.fromkeys(out))


def build_preview(cs: Any, rows: list[int] | None = None, batch_size: int | None = None) -> dict:
    """Encode and collate the chosen rows (default: the first batch) -> the JSON document."""
    from vlmctl.data.messages import row_to_example
    from vlmctl.quiet import quiet_transformers
    from vlmctl.runtime import (
        build_collator,
        load_data,
        locate,
        private_datasets_cache,
        processor_or_error,
    )

    site = locate(cs)
    res = site.resolution
    processor = processor_or_error(cs, site)
    c = cs.collator
    with private_datasets_cache():
        data = load_data(cs, whole_file=True)
        ds = data.train
        n = len(ds)
        if rows is None:
            size = batch_size or cs.train.per_device_train_batch_size or 1
            rows = list(range(min(size, n)))
        bad = [i for i in rows if i >= n]
        if bad:
            raise UsageError(
                f"--rows: row {bad[0]} is out of range (the train split has {n} "
                "rows, numbered from 0)",
                hint=f"use rows 0-{n - 1}",
            )
        raw = [ds[i] for i in rows]
    with quiet_transformers():
        collator = build_collator(processor, c, data.media_dirs, site.model_type)
        # Exactly what the collator's __call__ does for a training batch, except that every
        # bad row is reported (validate's way), not only the first.
        examples, bad_rows = [], []
        for i, row in zip(rows, raw, strict=True):
            try:
                examples.append(collator.fit_media(row_to_example(row, c, i)))
            except DataError as exc:
                bad_rows += _at_row(exc.findings, i)
        encoded = _encode_all(collator, examples, bad_rows)
        kept = [e for e in encoded if not e.drop_reason]
        if not kept:
            raise DataError(
                Finding(
                    "error",
                    f"every chosen row was dropped ({collator.drop_summary()})",
                    hint="pick other --rows, or raise text_processing.max_length",
                    key="text_processing.max_length",
                    code="all-rows-dropped",
                )
            )
        batch = collator.collate_encoded(kept)
        kinds = collator.kinds_batch(kept, batch["input_ids"].shape[1])
    from vlmctl.preview.document import document

    return document(cs, res, rows, encoded, kept, batch, kinds, collator)


def _at_row(findings: list[Finding], row: int | None) -> list[Finding]:
    for f in findings:
        if f.row is None:
            f.row = row
    return list(findings)


def _encode_all(collator: Any, examples: list, bad_rows: list[Finding]) -> list:
    """Encode the rows in one call; when a row fails, find every failing row, then raise
    one DataError listing them all (as validate does), not only the first."""
    if not bad_rows:
        try:
            return collator.encode_examples(examples)
        except DataError:
            if len(examples) == 1:
                raise
    encoded = []
    for ex in examples:
        try:
            encoded += collator.encode_examples([ex])
        except DataError as exc:
            bad_rows += _at_row(exc.findings, ex.row)
    if bad_rows:
        raise DataError(sorted(bad_rows, key=lambda f: -1 if f.row is None else f.row))
    return collator.encode_examples(examples)
