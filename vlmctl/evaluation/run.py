"""`vlmctl eval` end to end: rows -> each model's answers -> metrics -> the three output files.

Under `accelerate launch` / `torchrun` every process answers every `world`-th row of each
model and the answers are gathered on rank 0, which alone writes the outputs.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmctl.errors import Finding, VlmctlError
from vlmctl.proc import debug_enabled

REPORT = "eval-report.json"
PREDICTIONS = "predictions.jsonl"
PAGE = "report.html"
DEFAULT_ROWS = 200


@dataclass
class EvalOptions:
    """What `vlmctl eval` was asked for."""

    config_dir: Path
    models: list[str]
    data: Path | None = None
    rows: int | None = DEFAULT_ROWS  # None: all rows
    out: Path = Path("vlmctl-eval")
    max_new_tokens: int = 32
    batch_size: int = 8
    progress: bool = True


@dataclass
class EvalData:
    """The rows to evaluate and where they came from."""

    rows: list[tuple[int, dict]]
    media_dirs: list[Path]
    info: dict


def load_rows(cs: Any, data: Path | None, limit: int | None) -> EvalData:
    """`--data` (a file/folder, every row) or the config set's eval split; the first `limit`."""
    from vlmctl.data.dataset import iter_rows, load_splits

    if data is not None:
        path = Path(data).expanduser().resolve()
        if not path.exists():
            raise VlmctlError(
                Finding("error", f"--data {data}: no such file or folder", hint="check the path")
            )
        ds_cfg = cs.collator.dataset.model_copy(
            update={"path": str(path), "eval_path": None, "eval_split": None, "eval_size": None}
        )
        loaded = load_splits(cs.collator.model_copy(update={"dataset": ds_cfg}), cs.dir)
        split, source = loaded.train, f"--data {path}"
        what = f"{path} (given with --data)"
    else:
        from vlmctl.runtime import load_data

        loaded = load_data(cs, seed=cs.train.seed)  # the splits train used, eval held out
        if loaded.eval is None:
            raise VlmctlError(
                Finding(
                    "error",
                    f"{cs.dir}: the config set has no eval split, and --data was not given",
                    hint="set dataset.eval_size or dataset.eval_path in vlm_collator_config.yaml, "
                    "or pass --data FILE",
                    code="no-eval-split",
                )
            )
        split = loaded.eval
        eval_note = next(
            (p.strip() for p in loaded.description.split(";") if p.strip().startswith("eval:")),
            "eval split",
        )
        source = "config eval split"
        what = f"the config set's eval split ({eval_note}; never training rows)"
    total = len(split)
    n = total if limit is None else min(limit, total)
    rows = list(iter_rows(split.select(range(n)) if n < total else split))
    info = {
        "source": source,
        "description": what,
        "rows": n,
        "total_rows": total,
        "selection": "all rows" if n == total else f"first {n} of {total} rows",
    }
    return EvalData(rows, loaded.media_dirs, info)


def run_eval(opts: EvalOptions, log: Callable[[str], None] = print) -> dict | None:
    """Evaluate every model on the same rows and write the outputs; the report (rank 0 only)."""
    from vlmctl.config.load import load_config_set
    from vlmctl.evaluation import generate as gen
    from vlmctl.generation import generate_rows

    if not opts.models:
        raise VlmctlError(Finding("error", "no --model given", hint="pass --model FOLDER"))
    cs = load_config_set(opts.config_dir)
    names = gen.unique_names(opts.models)
    specs = [gen.resolve_spec(m, n) for m, n in zip(opts.models, names, strict=True)]
    data = load_rows(cs, opts.data, opts.rows)
    rank, world = gen.dist_info()
    main = rank == 0
    if main:
        log(f"eval: {data.info['selection']} of {data.info['description']}")
        for s in specs:
            what = f"adapter on {s.plan.base}" if s.kind == "adapter" else "model"
            log(f"eval: {s.name}: {what} ({s.path})")
            for note in s.notes:
                log(f"eval: {s.name}: note: {note}")
    _quiet()
    gen.init_dist(world)
    device = gen.pick_device()
    mine = gen.shard(data.rows, rank, world)
    answers: dict[str, list[dict]] = {}
    timings: dict[str, float] = {}
    from vlmctl.runtime import build_collator

    for spec in specs:
        loaded = gen.load(spec, cs, device)
        collator = build_collator(loaded.processor, cs.collator, data.media_dirs, loaded.model_type)
        t0 = time.monotonic()
        with _progress(main and opts.progress, f"{spec.name}", len(mine)) as advance:
            got = generate_rows(
                loaded,
                collator,
                mine,
                batch_size=opts.batch_size,
                max_new_tokens=opts.max_new_tokens,
                on_batch=advance,
            )
        timings[spec.name] = time.monotonic() - t0
        answers[spec.name] = gen.gather(got, world)
        del loaded, collator
        _free()
    gen.barrier_and_close(world)
    if not main:
        return None
    return write_outputs(opts, cs, specs, data, answers, timings, world)


def write_outputs(opts, cs, specs, data: EvalData, answers, timings, world: int) -> dict:
    """Score, then write eval-report.json, predictions.jsonl and report.html into `opts.out`."""
    from vlmctl import metrics as M
    from vlmctl.evaluation.report_html import render

    first = answers[specs[0].name]
    boxes = M.answers_are_boxes(r["reference"] for r in first)
    per_model: dict[str, list[dict]] = {}
    for spec in specs:
        for a in answers[spec.name]:
            a["metrics"] = M.score_row(a["prediction"], a["reference"], boxes)
        per_model[spec.name] = answers[spec.name]
    report = {
        "version": 1,
        "models": [
            {
                "name": s.name,
                "path": str(s.path),
                "kind": s.kind,
                **({"base": str(s.plan.base_dir)} if s.kind == "adapter" else {}),
            }
            for s in specs
        ],
        "data": data.info,
        "n": len(first),
        "metrics": {
            name: M.aggregate([a["metrics"] for a in rows]) for name, rows in per_model.items()
        },
        "generation": {
            "max_new_tokens": opts.max_new_tokens,
            "batch_size": opts.batch_size,
            "decoding": "greedy",
            "processes": world,
        },
        "seconds": {k: round(v, 2) for k, v in timings.items()},
        "boxes": boxes,
    }
    out = Path(opts.out).expanduser().absolute()
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    merged_rows = []
    for i, row in enumerate(first):
        entry = {
            "row": row["row"],
            "question": row["question"],
            "reference": row["reference"],
            "answers": {},
        }
        for spec in specs:
            a = per_model[spec.name][i]
            lines.append(
                json.dumps(
                    {
                        "row": a["row"],
                        "model": spec.name,
                        "question": a["question"],
                        "reference": a["reference"],
                        "prediction": a["prediction"],
                        "metrics": a["metrics"],
                    },
                    ensure_ascii=False,
                )
            )
            entry["answers"][spec.name] = {"prediction": a["prediction"], "metrics": a["metrics"]}
        merged_rows.append(entry)
    images = thumbnails(cs, data)
    report["files"] = {"report": str(out / REPORT), "predictions": str(out / PREDICTIONS)}
    report["files"]["page"] = str(out / PAGE)
    _write(out / PREDICTIONS, "\n".join(lines) + "\n")
    _write(out / PAGE, render(report, merged_rows, images))
    _write(out / REPORT, json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    return report


def thumbnails(cs: Any, data: EvalData) -> dict[int, list[str]]:
    """Row index -> inlined thumbnails of the row's images (video rows get none)."""
    from vlmctl.data.messages import row_to_example
    from vlmctl.evaluation.report_html import thumbnail_data_uri
    from vlmctl.media.images import load_image

    out: dict[int, list[str]] = {}
    for idx, row in data.rows:
        ex = row_to_example(row, cs.collator, idx)
        uris = []
        for ref in ex.images:
            img = load_image(ref, base_dirs=data.media_dirs, max_size=None, row=idx)
            uris.append(thumbnail_data_uri(img))
        out[idx] = uris
    return out


def _write(path: Path, text: str) -> None:
    """Write beside, then rename: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _quiet() -> None:
    if debug_enabled():
        return
    from vlmctl.quiet import quiet_process

    quiet_process(warnings=(FutureWarning, (UserWarning, "", "transformers")))


def _free() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


class _progress:
    """A rich progress bar with rows/s and an ETA (a no-op when disabled)."""

    def __init__(self, enabled: bool, label: str, total: int):
        self.enabled, self.label, self.total = enabled, label, total
        self._bar = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda _n: None
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._bar.__enter__()
        task = self._bar.add_task(self.label, total=self.total, rate="")
        bar = self._bar

        def advance(n: int) -> None:
            bar.advance(task, n)
            speed = bar.tasks[task].speed
            bar.update(task, rate=f"{speed:.2f} rows/s" if speed else "")

        return advance

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
