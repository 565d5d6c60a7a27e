"""Dataset-level `validate`: the config set against the real rows, media and processor.

What runs, in order (each step runs when what it needs is reachable; the others still run):
1. model: which classes and processor load it and why (`models.resolve`, pure);
2. dataset: loaded with the SAME loader as `train` (`data.dataset.load_splits`) but with
   `eval_size` ignored, so row indices are the file's own rows;
3. columns: every column the config uses exists (did-you-mean over the real names); chat
   datasets: the conversation column, role/content keys, roles and media tags;
4. rows (all rows of local data by default, a seeded sample with `--sample N`; hub data
   defaults to a sample): each row goes through `row_to_example` (empty/missing values,
   tag/media counts), videos are probed (too short, undecodable), and with the processor each
   row goes through `VLMCollator.encode_example` — the encode path `train` uses — which
   decodes every image (missing, truncated, not an image) and gives exact token counts, media
   spans and supervised tokens. The truncation policy is applied to each over-long row
   exactly as the collator would (dropped, text cut, error, media span cut);
5. statistics are streamed: per-row lengths are kept as int32 arrays (12 bytes a row) and
   findings are capped per kind, so memory does not grow with the rows' content.

Nothing is written: `datasets` builds its Arrow files in a private temporary folder that is
removed at the end (the user's HF_DATASETS_CACHE, the config folder and the dataset folder
stay untouched), and no `map()` runs. `--num-proc N` checks rows in N forked processes that
inherit the processor; at most 2N chunks are in flight so rows are never all in memory.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmctl.errors import ConfigError, DataError, Finding, VlmctlError, did_you_mean

MAX_PER_CODE = 20  # row findings of one kind shown one by one; the rest are counted
MAX_ROWS_LISTED = 1000  # row indices kept for the "and N more" finding (JSON)
HUB_DEFAULT_SAMPLE = 1000
CHUNK = 16  # rows per task handed to a worker process
_CHAT_PROBE_ROWS = 50  # rows read to check role/content keys, roles and tags
_KNOWN_TAGS = ("<image>", "<video>", "<ImageHere>", "<img>", "<|image|>", "<|video|>")


@dataclass
class DataCheckOptions:
    """How much of the data to check and how."""

    sample: int | None = None  # None: every row (local data) / HUB_DEFAULT_SAMPLE (hub)
    all_rows: bool = False  # force every row, also for hub data
    num_proc: int = 1
    progress: bool = False  # the caller decides (a TTY and the text format)


@dataclass
class DataCheckResult:
    """Findings (with row indices) plus the summary `validate` prints and puts in JSON."""

    findings: list[Finding] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# model and processor


def model_type_of(path: str, revision: str | None = None) -> str | None:
    """`model_type` from config.json (local folder or the hub cache); never downloads."""
    cfg_file: Path | None = Path(path) / "config.json"
    if not cfg_file.is_file():
        try:
            from huggingface_hub import try_to_load_from_cache

            cached = try_to_load_from_cache(path, "config.json", revision=revision)
            cfg_file = Path(cached) if isinstance(cached, str) else None
        except Exception:  # noqa: BLE001 - not a repo id: no model_type, the collator copes
            cfg_file = None
    if cfg_file is None or not cfg_file.is_file():
        return None
    try:
        return json.loads(cfg_file.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """No info/warning chatter from transformers while vlmctl owns the output."""
    import transformers

    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(level)


def load_processor_for(cs: Any, res: Any) -> tuple[Any | None, Finding | None]:
    """(processor, None), or (None, one finding saying why it cannot be loaded).

    A hub id that is not cached while offline (or needs credentials) is a warning: every check
    that does not need the processor still runs. A local folder that fails to load is an error.
    """
    from vlmctl.models.resolve import load_processor

    path = cs.model_location()
    local = Path(path).exists()
    try:
        with quiet_transformers(), _hf_offline_if_unreachable(local):
            return load_processor(res, cs.model, path, import_modules=False), None
    except VlmctlError as exc:
        return None, exc.findings[0]
    except Exception as exc:  # noqa: BLE001 - any load failure becomes one line
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if local:
            return None, cs.finding(
                "error",
                "model",
                "model_name_or_path",
                f"cannot load the processor from {path}: {text}",
                hint="the folder needs the processor files (save_pretrained of the processor)",
                code="processor-load",
            )
        return None, cs.finding(
            "warning",
            "model",
            "model_name_or_path",
            f"processor for {path!r} not reachable (offline, not cached, or needs credentials): "
            "token lengths, media decoding by the processor and masking are not checked",
            hint="run once with network access (or `hf auth login` for gated models), or point "
            "model_name_or_path at a local folder",
            code="processor-unreachable",
        )


@contextlib.contextmanager
def _hf_offline_if_unreachable(local: bool) -> Iterator[None]:
    """For hub ids: use the cache only when the hub cannot be reached (no retry storms)."""
    if local:
        yield
        return
    from vlmctl.data.dataset import env_offline, hub_reachable

    if env_offline() or hub_reachable():
        yield
        return
    import huggingface_hub.constants as hc

    saved = hc.HF_HUB_OFFLINE
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = saved


def _model_section(cs: Any, findings: list[Finding]) -> tuple[dict, Any]:
    from vlmctl.models.resolve import resolve_model

    try:
        res = resolve_model(cs.model)
    except ConfigError as exc:  # also a config-level finding; say why the processor is skipped
        return {"resolved": False, "reason": exc.findings[0].message}, None
    section = {
        "resolved": True,
        "model_id": res.model_id,
        "model_class": res.model_class,
        "processor_class": res.processor_class,
        "import_path": res.import_path,
        "source": res.source,
        "reason": res.reason,
        "remote_code": res.source == "remote_code" or res.trust_remote_code,
        "processor_loaded": False,
    }
    if res.import_path != "transformers":
        findings.append(
            cs.finding(
                "info",
                "model",
                ("model_classes", res.model_id, "import_path"),
                f"{res.import_path} is not imported by validate (importing runs its code): "
                "token lengths are measured with AutoProcessor",
                code="import-not-run",
            )
        )
    # The config checks already say how the model resolves; remote code is worth a line here
    # because the processor below runs the checkpoint's code.
    if res.source == "remote_code":
        findings.append(
            cs.finding(
                "info",
                "model",
                "model_name_or_path",
                f"remote code in use: {res.model_id} runs its own Python code (trust_remote_code)",
                code="remote-code",
            )
        )
    return section, res


# ---------------------------------------------------------------------------------------------
# dataset, without writing anything


@contextlib.contextmanager
def private_datasets_cache() -> Iterator[Path]:
    """Point `datasets` at a temporary cache folder, removed on exit (validate writes nothing).

    `datasets` builds Arrow files for csv/json/parquet even with keep_in_memory; building them
    in a private folder keeps them memory-mapped (flat RSS for big files) and the user's cache
    untouched. Caching of transforms is off too.
    """
    import datasets
    import datasets.config as dc

    tmp = Path(tempfile.mkdtemp(prefix="vlmctl-validate-"))
    names = ("HF_DATASETS_CACHE", "DOWNLOADED_DATASETS_PATH", "EXTRACTED_DATASETS_PATH")
    saved = {n: getattr(dc, n) for n in names}
    was_caching = datasets.is_caching_enabled()
    dc.HF_DATASETS_CACHE = tmp
    dc.DOWNLOADED_DATASETS_PATH = tmp / "downloads"
    dc.EXTRACTED_DATASETS_PATH = tmp / "downloads" / "extracted"
    datasets.disable_caching()
    try:
        yield tmp
    finally:
        for n, v in saved.items():
            setattr(dc, n, v)
        if was_caching:
            datasets.enable_caching()
        shutil.rmtree(tmp, ignore_errors=True)


def _load_data(cs: Any, findings: list[Finding]) -> tuple[Any | None, str | None]:
    """(LoadedData with eval_size ignored, source kind) or (None, kind) with a finding."""
    from vlmctl.data.dataset import load_splits, resolve_source

    c = cs.collator
    cfg = c.model_copy(update={"dataset": c.dataset.model_copy(update={"eval_size": None})})
    kind = None
    try:
        kind, _ = resolve_source(cfg, cs.dir)
        return load_splits(cfg, cs.dir), kind
    except DataError as exc:
        for f in exc.findings:
            if kind == "hub" and ("offline" in f.message or "unreachable" in f.message):
                f = Finding(
                    "warning",
                    f"dataset not reachable: {f.message}; row checks skipped",
                    hint=f.hint,
                    key="dataset.path",
                    code="dataset-unreachable",
                )
            elif f.file is None and f.key:
                file, line, col = cs.location("collator", f.key)
                f.file, f.line, f.col = file, line, col
            findings.append(f)
        return None, kind


# ---------------------------------------------------------------------------------------------
# columns


def _template_has(cfg: Any, kind: str) -> bool:
    return any(p.type == kind for m in cfg.message_format.training_messages for p in m.parts())


def column_findings(cs: Any, columns: list[str]) -> list[Finding]:
    """Every column the config uses must exist in the dataset (did-you-mean over real names)."""
    from vlmctl.data.messages import template_variables

    c = cs.collator
    out: list[Finding] = []

    def missing(file_key_path: str, column: str, severity: str = "error", why: str = "") -> None:
        close = did_you_mean(column, columns)
        hint = f"did you mean {close!r}?" if close else f"columns: {', '.join(columns)}"
        out.append(
            cs.finding(
                severity,
                "collator",
                file_key_path,
                f"column {column!r} is not in the dataset{why}",
                hint=hint,
                code="column-missing",
            )
        )

    if c.conversation is None:
        mapping = c.dataset_columns.mapping()
        needed = [v for v in template_variables(c) if v in mapping]
        if c.use_images and _template_has(c, "image"):
            needed.append("image_column")
        if c.use_video and (_template_has(c, "video") or _template_has(c, "image")):
            needed.append("video_column")
        if mapping.get("context_column"):
            needed.append("context_column")
        for var in dict.fromkeys(needed):
            col = mapping.get(var)
            if col is not None and col not in columns:
                missing(f"dataset_columns.{var}", col)
        return out
    conv = c.conversation
    if conv.column not in columns:
        missing("conversation.column", conv.column)
    if conv.system_column and conv.system_column not in columns:
        # Optional per row: rows without it use message_format.system_prompt.
        missing(
            "conversation.system_column",
            conv.system_column,
            "info",
            ": every row falls back to message_format.system_prompt",
        )
    for kind, col, on in (
        ("images", conv.images_column, c.use_images),
        ("videos", conv.videos_column, c.use_video),
    ):
        if col and on and col not in columns:
            missing(
                f"conversation.{kind}_column",
                col,
                "warning",
                f": {kind} come only from inline content parts (a {kind[:-1]} tag without "
                f"one is then an error; set {kind}_column: null when that is meant)",
            )
    return out


def conversation_findings(cs: Any, ds: Any) -> list[Finding]:
    """Chat datasets: role/content keys, roles outside role_map, tags the config does not use."""
    from vlmctl.data.chat import _parse_json_text
    from vlmctl.data.dataset import iter_rows

    conv = cs.collator.conversation
    out: list[Finding] = []
    key_counts: Counter = Counter()
    roles: Counter = Counter()
    texts: list[str] = []
    turns_seen = 0
    for _, row in _take(iter_rows(ds), _CHAT_PROBE_ROWS):
        turns = _parse_json_text(row.get(conv.column))
        if not isinstance(turns, list):
            continue
        for turn in turns:
            if not isinstance(turn, dict):
                continue
            turns_seen += 1
            key_counts.update(turn.keys())
            if conv.role_key in turn:
                roles[str(turn[conv.role_key])] += 1
            content = turn.get(conv.content_key)
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts += [
                    str(p.get("text") or p.get("value") or "")
                    for p in content
                    if isinstance(p, dict)
                ]
    if not turns_seen:
        return out
    keys = sorted(key_counts)
    for name, attr in ((conv.role_key, "role_key"), (conv.content_key, "content_key")):
        if name not in key_counts:
            close = did_you_mean(name, keys) or next(
                (
                    k
                    for k in (("from", "role") if attr == "role_key" else ("value", "content"))
                    if k in key_counts
                ),
                None,
            )
            hint = f"did you mean {close!r}?" if close else f"turn keys: {', '.join(keys)}"
            out.append(
                cs.finding(
                    "error",
                    "collator",
                    f"conversation.{attr}",
                    f"the turns have no key {name!r} (keys: {', '.join(keys)})",
                    hint=hint,
                    code="conversation-key",
                )
            )
    known = set(conv.role_map) | {"system", "user", "assistant"}
    for role in sorted(r for r in roles if r not in known):
        out.append(
            cs.finding(
                "error",
                "collator",
                "conversation.role_map",
                f"role {role!r} ({roles[role]} turns in the first "
                f"{_CHAT_PROBE_ROWS} rows) is not in role_map",
                hint=f"add `{role}: user` or `{role}: assistant` to role_map",
                code="conversation-role",
            )
        )
    mapped = {conv.role_map.get(r, r) for r in roles}
    if roles and "assistant" not in mapped:
        out.append(
            cs.finding(
                "error",
                "collator",
                "conversation.role_map",
                f"no role maps to 'assistant' (roles seen: {', '.join(sorted(roles))})",
                hint="map the answering role to assistant",
                code="conversation-role",
            )
        )
    joined = "\n".join(texts)
    for tag in _KNOWN_TAGS:
        if tag in (conv.image_tag, conv.video_tag) or tag not in joined:
            continue
        kind = "video" if "video" in tag else "image"
        configured = conv.video_tag if kind == "video" else conv.image_tag
        if configured not in joined:
            out.append(
                cs.finding(
                    "warning",
                    "collator",
                    f"conversation.{kind}_tag",
                    f"the text uses {tag!r} but {kind}_tag is {configured!r}: "
                    f"{tag} stays literal text",
                    hint=f"set {kind}_tag: {tag!r}",
                    code="conversation-tag",
                )
            )
    return out


def _take(it: Iterator, n: int) -> Iterator:
    for i, item in enumerate(it):
        if i >= n:
            return
        yield item


# ---------------------------------------------------------------------------------------------
# the row pass (runs in this process or in forked workers)


@dataclass
class RowResult:
    """What one row contributed: findings, and token counts when it was encoded."""

    row: int
    findings: list[Finding] = field(default_factory=list)
    length: int = -1  # full length (text + expanded media), -1 when not encoded
    media_tokens: int = 0
    supervised: int = 0  # supervised tokens `train` keeps for this row
    images: int = 0  # media the row carries after rendering (column and inline alike)
    videos: int = 0
    system_source: str | None = None  # chat rows: where the system turn comes from
    outcome: str = "ok"  # ok | invalid | dropped_too_long | cut_text | dropped_media_span
    #                      | dropped_no_labels | length_error | not_encoded
    fatal: list[Finding] | None = None  # a set-level problem: stop the pass


@dataclass
class _State:
    cfg: Any
    media_dirs: list[Path]
    collator: Any | None
    split: str = "train"


_STATE: _State | None = None  # set before forking, inherited by the worker processes


def _row_finding(f: Finding, index: int, split: str) -> Finding:
    f.row = index
    if split != "train":
        f.message = f"{split} split: {f.message}"
        f.extra = {**f.extra, "split": split}
    return f


def _adder(res: RowResult, split: str):
    def add(f: Finding) -> None:
        res.findings.append(_row_finding(f, res.row, split))

    return add


def _prepare_row(state: _State, index: int, row: dict) -> tuple[RowResult, Any | None]:
    """Checks before the processor; returns the Example when the row can be encoded."""
    from vlmctl.data.messages import row_to_example

    res = RowResult(row=index)
    add = _adder(res, state.split)
    try:
        ex = row_to_example(row, state.cfg, index)
    except DataError as exc:
        for f in exc.findings:
            add(f)
        res.outcome = "invalid"
        return res, None
    except ConfigError as exc:
        res.fatal = exc.findings
        return res, None
    if state.collator is not None:
        ex = state.collator.fit_media(ex)  # "video wins" for one-kind processors, noted
    res.images, res.videos = len(ex.images), len(ex.videos)
    res.system_source = ex.system_source
    for note in ex.notes:
        add(Finding("warning", note, code="row-note"))
    bad_media = _check_videos(state, ex, add) if ex.videos else False
    if state.collator is None:
        bad_media |= _probe_images(state, ex, add)
        res.outcome = "invalid" if bad_media else "not_encoded"
        return res, None
    if bad_media:
        res.outcome = "invalid"
        return res, None
    res.images, res.videos = len(ex.images), len(ex.videos)
    return res, ex


def _encode_one(state: _State, res: RowResult, ex: Any) -> None:
    add = _adder(res, state.split)
    try:
        enc = state.collator.encode_example(ex, truncate=False)
    except DataError as exc:
        for f in exc.findings:
            add(f)
        res.outcome = "invalid"
        return
    except VlmctlError as exc:  # the chat template cannot be used: same for every row
        res.fatal = exc.findings
        return
    _apply_policy(state, enc, res, add)


def check_rows(state: _State, chunk: list[tuple[int, dict]]) -> list[RowResult]:
    """Every row-level check of some rows; no exception escapes for data problems.

    Rows that pass the cheap checks are encoded with ONE processor call
    (`VLMCollator.encode_examples`, what `train`'s batches use); when that call fails, each
    row is encoded alone so the problem is pinned to its row.
    """
    results: list[RowResult] = []
    pending: list[tuple[RowResult, Any]] = []
    for index, row in chunk:
        res, ex = _prepare_row(state, index, row)
        results.append(res)
        if res.fatal:
            return results
        if ex is not None:
            pending.append((res, ex))
    if not pending:
        return results
    encoded = None
    if len(pending) > 1:
        try:
            encoded = state.collator.encode_examples([ex for _, ex in pending], truncate=False)
        except VlmctlError:
            encoded = None
    if encoded is None:
        for res, ex in pending:
            _encode_one(state, res, ex)
            if res.fatal:
                break
        return results
    for (res, _), enc in zip(pending, encoded, strict=True):
        _apply_policy(state, enc, res, _adder(res, state.split))
    return results


def _check_videos(state: _State, ex: Any, add) -> bool:
    from vlmctl.media.video import probe_video

    want = state.cfg.video_processing.frame_extraction.num_frames
    max_duration = state.cfg.video_processing.file_processing.max_duration
    bad = False
    for ref in ex.videos:
        if not isinstance(ref, (str, os.PathLike)):
            continue  # decoded frames or bytes: the collator checks them
        try:
            total, fps, duration, _, _ = probe_video(ref, state.media_dirs, row=ex.row)
        except DataError as exc:
            for f in exc.findings:
                add(f)
            bad = True
            continue
        usable, within = total, ""
        if max_duration is not None and fps > 0:
            # Only the first max_duration seconds are sampled (the decoders' own rule).
            usable = min(total, max(1, math.ceil(max_duration * fps - 1e-6)))
            if usable < total:
                within = f" within max_duration={max_duration:g} s"
        if usable < want:
            add(
                Finding(
                    "warning",
                    f"{os.fspath(ref)}: video too short: {usable} frames{within} "
                    f"({duration:.1f} s in all) for num_frames={want}; frames are repeated",
                    hint="lower video_processing.frame_extraction.num_frames"
                    + (", raise max_duration" if within else "")
                    + " or drop the clip",
                    code="video-too-short",
                    extra={"media": os.fspath(ref)},
                )
            )
    return bad


def _probe_images(state: _State, ex: Any, add) -> bool:
    from vlmctl.media.images import probe_image

    bad = False
    for ref in ex.images:
        try:
            probe_image(ref, state.media_dirs, row=ex.row)
        except DataError as exc:
            for f in exc.findings:
                add(f)
            bad = True
    return bad


def _apply_policy(state: _State, enc: Any, res: RowResult, add) -> None:
    """What `train` does with this row: the collator's length policy, then the label check."""
    cfg = state.cfg
    tp = cfg.text_processing
    ignore = cfg.label_masking.ignore_index
    length = enc.original_length or enc.length
    res.length = length
    res.media_tokens = enc.num_media_tokens
    supervised = enc.num_supervised
    size = f"{length} tokens ({length - res.media_tokens} text + {res.media_tokens} media)"
    if tp.truncation and length > tp.max_length:
        policy = tp.truncation_policy
        where = f"> text_processing.max_length={tp.max_length}"
        if policy == "error":
            add(
                Finding(
                    "error",
                    f"{size} {where}: train stops with an error (truncation_policy: error)",
                    hint="raise max_length, or use truncation_policy: drop or truncate_text",
                    key="text_processing.max_length",
                    code="row-too-long",
                )
            )
            res.outcome, res.supervised = "length_error", 0
            return
        if policy == "drop":
            add(
                Finding(
                    "warning",
                    f"{size} {where}: dropped (truncation_policy: drop)",
                    hint="raise max_length or use truncation_policy: truncate_text",
                    key="text_processing.max_length",
                    code="row-too-long",
                )
            )
            res.outcome, res.supervised = "dropped_too_long", 0
            return
        if not state.collator.fits(enc):
            spans = ", ".join(f"{s}-{e}" for s, e in enc.media_spans)
            add(
                Finding(
                    "warning",
                    f"{size} {where}: the cut would fall inside or before a media "
                    f"span (tokens {spans}): dropped (truncation_policy: truncate_text)",
                    hint="raise max_length, or shrink the media (image_processing.max_size, "
                    "fewer frames)",
                    key="text_processing.max_length",
                    code="media-span-cut",
                )
            )
            res.outcome, res.supervised = "dropped_media_span", 0
            return
        supervised = int((enc.labels[: tp.max_length] != ignore).sum())
        if supervised == 0:
            add(
                Finding(
                    "warning",
                    f"{size} {where}: cutting the text leaves no supervised token: dropped",
                    hint="raise max_length",
                    key="text_processing.max_length",
                    code="no-supervised-tokens",
                )
            )
            res.outcome, res.supervised = "dropped_no_labels", 0
            return
        add(
            Finding(
                "warning",
                f"{size} {where}: text cut by {length - tp.max_length} tokens, "
                f"{supervised} supervised tokens left (truncation_policy: truncate_text)",
                hint="raise max_length to keep the whole answer",
                key="text_processing.max_length",
                code="row-text-cut",
            )
        )
        res.outcome, res.supervised = "cut_text", supervised
        return
    if supervised == 0:
        add(
            Finding(
                "warning",
                f"{size}: no supervised token left after label masking: dropped",
                hint="check label_masking (mask_input_tokens) and that the answer is not empty",
                key="label_masking",
                code="no-supervised-tokens",
            )
        )
        res.outcome, res.supervised = "dropped_no_labels", 0
        return
    res.supervised = supervised


def _check_chunk(chunk: list[tuple[int, dict]]) -> list[RowResult]:
    assert _STATE is not None
    return check_rows(_STATE, chunk)


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    """Row tensors are tiny: torch's intra-op threads only add contention (measured ~4x slower
    image preprocessing with 2 threads on a busy 2-core machine)."""
    import torch

    saved = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def _worker_init(state: _State | None = None) -> None:
    """Forked workers inherit `_STATE`; spawned ones (not Linux) get it pickled here."""
    global _STATE
    if state is not None:
        _STATE = state
    # Row tensors are tiny: torch's own threads would only fight the other workers.
    import torch

    torch.set_num_threads(1)


def _chunks(rows: Iterator[tuple[int, dict]], size: int) -> Iterator[list[tuple[int, dict]]]:
    chunk: list[tuple[int, dict]] = []
    for item in rows:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_rows(state: _State, rows: Iterator[tuple[int, dict]], num_proc: int) -> Iterator[RowResult]:
    """Row results in row order; with num_proc > 1 from forked workers, ≤ 2N chunks in flight."""
    global _STATE
    if num_proc <= 1:
        with _torch_threads(1):
            for chunk in _chunks(rows, CHUNK):
                yield from check_rows(state, chunk)
        return
    import multiprocessing as mp
    from collections import deque

    _STATE = state
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    fork = sys.platform.startswith("linux")
    ctx = mp.get_context("fork" if fork else "spawn")
    pool = ctx.Pool(num_proc, initializer=_worker_init, initargs=(None if fork else state,))
    try:
        pending: deque = deque()
        for chunk in _chunks(rows, CHUNK):
            pending.append(pool.apply_async(_check_chunk, (chunk,)))
            while len(pending) >= 2 * num_proc:
                yield from pending.popleft().get()
        while pending:
            yield from pending.popleft().get()
    finally:
        pool.terminate()
        pool.join()
        _STATE = None


# ---------------------------------------------------------------------------------------------
# aggregation


class _Progress:
    """A rich progress bar on stderr that appears only once a pass has taken more than 1 s."""

    def __init__(self, enabled: bool, total: int | None, label: str):
        self.enabled = enabled
        self.total = total
        self.label = label
        self.t0 = time.monotonic()
        self.done = 0
        self.bar = None
        self.task = None

    def advance(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        if self.bar is None:
            if time.monotonic() - self.t0 < 1.0:
                return
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self.bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=self.total, completed=self.done)
            return
        self.bar.update(self.task, completed=self.done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


class _Collector:
    """Streams row results into capped findings and int32 length arrays."""

    def __init__(self) -> None:
        self.findings: list[Finding] = []
        self.per_code: Counter = Counter()
        self.overflow: dict[tuple[str, str], list] = {}
        self.lengths = array("i")
        # per encoded row, aligned with `lengths` (the media budget advice reads them)
        self.enc_images = array("i")
        self.enc_videos = array("i")
        self.outcomes: Counter = Counter()
        self.supervised_total = 0
        self.rows_checked = 0  # train rows
        self.eval_rows_checked = 0
        self.rows_with_errors = 0
        self.rows_with_warnings = 0
        self.fatal: list[Finding] | None = None
        self.media: array = array("i")
        self.images = 0
        self.videos = 0
        self.rows_with_images = 0
        self.rows_with_videos = 0
        self.system_sources: Counter = Counter()
        self.system_rows: dict[str, int] = {}

    def add(self, r: RowResult, stats: bool = True) -> None:
        if stats:
            self.rows_checked += 1
        else:
            self.eval_rows_checked += 1
        severities = {f.severity for f in r.findings}
        self.rows_with_errors += "error" in severities
        self.rows_with_warnings += "warning" in severities and "error" not in severities
        for f in r.findings:
            code = f.code or "row"
            self.per_code[code] += 1
            if self.per_code[code] <= MAX_PER_CODE:
                self.findings.append(f)
            else:
                entry = self.overflow.setdefault((code, f.severity), [0, []])
                entry[0] += 1
                if len(entry[1]) < MAX_ROWS_LISTED:
                    entry[1].append(r.row)
        if not stats:
            return
        self.images += r.images
        self.videos += r.videos
        self.rows_with_images += r.images > 0
        self.rows_with_videos += r.videos > 0
        if r.system_source:
            self.system_sources[r.system_source] += 1
            self.system_rows.setdefault(r.system_source, r.row)
        self.outcomes[r.outcome] += 1
        if r.length >= 0:
            self.lengths.append(r.length)
            self.media.append(r.media_tokens)
            self.enc_images.append(r.images)
            self.enc_videos.append(r.videos)
        self.supervised_total += r.supervised

    def overflow_findings(self) -> list[Finding]:
        out = []
        for (code, severity), (n, rows) in sorted(self.overflow.items()):
            shown = ", ".join(map(str, rows[:10])) + (", ..." if n > 10 else "")
            out.append(
                Finding(
                    severity,
                    f"{n} more rows with the same problem ({code}): rows {shown}",
                    code=code,
                    extra={"rows": rows, "count": n},
                )
            )
        return out


def _describe(values: array) -> dict | None:
    if not values:
        return None
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, int(round(0.95 * len(ordered))) - 1))]
    return {
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": p95,
        "max": ordered[-1],
        "mean": round(sum(ordered) / len(ordered), 1),
    }


# ---------------------------------------------------------------------------------------------
# entry point


def check_data(cs: Any, opts: DataCheckOptions | None = None) -> DataCheckResult:
    """Run every dataset-level check of a loaded config set; never raises for data problems."""
    opts = opts or DataCheckOptions()
    t0 = time.monotonic()
    result = DataCheckResult()
    findings = result.findings
    summary: dict[str, Any] = {"skipped": []}
    result.summary = summary
    summary["model"], res = _model_section(cs, findings)
    with private_datasets_cache():
        data, kind = _load_data(cs, findings)
        summary["dataset"] = {
            "reachable": data is not None,
            "kind": kind,
            "description": data.description if data is not None else None,
        }
        if data is None:
            summary["skipped"].append("columns and rows: the dataset could not be loaded")
        processor = None
        if res is not None:
            processor, problem = load_processor_for(cs, res)
            if problem is not None:
                findings.append(problem)
                summary["skipped"].append("token lengths and masking: no processor")
            summary["model"]["processor_loaded"] = processor is not None
        else:
            summary["skipped"].append("token lengths and masking: the model does not resolve")
        if data is not None:
            _check_loaded(cs, data, kind, processor, res, opts, result)
        del data
    summary["seconds"] = round(time.monotonic() - t0, 2)
    return result


def _check_loaded(
    cs: Any,
    data: Any,
    kind: str | None,
    processor: Any,
    res: Any,
    opts: DataCheckOptions,
    result: DataCheckResult,
) -> None:
    from vlmctl.data.dataset import iter_rows

    findings, summary = result.findings, result.summary
    ds = data.train
    columns = list(ds.column_names)
    summary["dataset"]["columns"] = columns
    col_findings = column_findings(cs, columns)
    if cs.collator.conversation is not None and not any(
        f.severity == "error" for f in col_findings
    ):
        col_findings += conversation_findings(cs, ds)
    findings += col_findings
    if any(f.severity == "error" for f in col_findings):
        summary["skipped"].append("rows: fix the column mapping first (every row would fail)")
        return

    collator = None
    if processor is not None:
        from vlmctl.collate import VLMCollator

        try:
            with quiet_transformers():
                collator = VLMCollator(
                    processor,
                    cs.collator,
                    data.media_dirs,
                    model_type=model_type_of(cs.model_location(), cs.model.revision),
                )
        except VlmctlError as exc:
            findings += exc.findings
            summary["skipped"].append("token lengths and masking: the collator cannot be built")

    total = len(ds)
    sample = opts.sample
    if sample is None and kind == "hub" and not opts.all_rows and total > HUB_DEFAULT_SAMPLE:
        sample = HUB_DEFAULT_SAMPLE
        findings.append(
            Finding(
                "info",
                f"hub dataset: checked a seeded sample of {sample} of {total} rows",
                hint="--all checks every row",
                code="rows-sampled",
            )
        )
    if opts.all_rows:
        sample = None
    n_checked = min(sample, total) if sample else total
    col = _Collector()
    bar = _Progress(
        opts.progress,
        n_checked + (len(data.eval) if data.eval is not None else 0),
        "validating rows",
    )
    state = _State(cfg=cs.collator, media_dirs=data.media_dirs, collator=collator)
    t_rows = time.monotonic()
    try:
        with quiet_transformers():
            for r in run_rows(state, iter_rows(ds, sample=sample), opts.num_proc):
                if r.fatal:
                    col.fatal = r.fatal
                    break
                col.add(r)
                bar.advance()
            if data.eval is not None and col.fatal is None:
                eval_state = _State(
                    cfg=cs.collator, media_dirs=data.media_dirs, collator=collator, split="eval"
                )
                for r in run_rows(eval_state, iter_rows(data.eval, sample=sample), opts.num_proc):
                    if r.fatal:
                        col.fatal = r.fatal
                        break
                    col.add(r, stats=False)
                    bar.advance()
    finally:
        bar.close()
    summary["row_pass_seconds"] = round(time.monotonic() - t_rows, 3)
    if col.fatal:
        findings += col.fatal
        summary["skipped"].append("rows: stopped at a problem every row would have")
    findings += col.findings
    findings += col.overflow_findings()
    findings += _media_and_system_notes(cs, col)
    locate_rows(cs, data, findings)
    _summarise(cs, col, collator, total, n_checked, sample, opts, result)


def _row_lines(path: Path, rows: set[int]) -> dict[int, int]:
    """Row index -> the line its record starts on, for CSV/TSV and JSON-lines files."""
    out: dict[int, int] = {}
    if not rows:
        return out
    last = max(rows)
    suffix = path.suffix.lower()
    with open(path, newline="", encoding="utf-8-sig") as f:
        if suffix in (".csv", ".tsv"):
            import csv

            reader = csv.reader(f, delimiter="\t" if suffix == ".tsv" else ",")
            next(reader, None)  # the header
            idx = 0
            while idx <= last:
                start = reader.line_num + 1
                record = next(reader, None)
                if record is None:
                    break
                if not record:
                    continue  # a blank line is no row
                if idx in rows:
                    out[idx] = start
                idx += 1
            return out
        head = f.read(4096).lstrip()
        if head.startswith("["):
            return out  # one JSON document: no line per row
        f.seek(0)
        idx = 0
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            if idx in rows:
                out[idx] = lineno
            idx += 1
            if idx > last:
                break
    return out


def locate_rows(cs: Any, data: Any, findings: list[Finding]) -> None:
    """Give each row finding a place in a file, for `--format github` (`extra["at"]`):
    the data file and the row's line (CSV/JSON lines), else the config's `dataset.path` line.

    Text and JSON keep their shape (row findings say `row N`); annotations need a file.
    """
    row_findings = [f for f in findings if f.row is not None and f.file is None]
    if not row_findings:
        return
    c = cs.collator
    fallback = cs.location("collator", "dataset.path")
    sources: dict[str, Path | None] = {"train": None, "eval": None}
    if isinstance(data.source, Path) and data.source.is_file():
        sources["train"] = data.source
    if c.dataset.eval_path:
        eval_file = (Path(cs.dir) / Path(c.dataset.eval_path).expanduser()).resolve()
        sources["eval"] = eval_file if eval_file.is_file() else None
    elif c.dataset.eval_split is None:
        sources["eval"] = sources["train"]
    lines: dict[str, dict[int, int]] = {}
    for split, path in sources.items():
        if path is None:
            continue
        wanted = {f.row for f in row_findings if f.extra.get("split", "train") == split}
        try:
            lines[split] = _row_lines(path, wanted)
        except (OSError, UnicodeDecodeError, ValueError):
            lines[split] = {}
    for f in row_findings:
        split = f.extra.get("split", "train")
        path = sources.get(split)
        if path is None:
            file, line, _col = fallback
            f.extra = {**f.extra, "at": (file, line)}
        else:
            f.extra = {**f.extra, "at": (str(path), lines.get(split, {}).get(f.row))}


_SYSTEM_WORDS = {
    "system turn": "their own system turn",
    "system_column": "the system_column value",
    "conversation.system_prompt": "conversation.system_prompt",
    "template default": "no system turn from vlmctl: the chat template's default applies",
}


def _media_and_system_notes(cs: Any, col: _Collector) -> list[Finding]:
    """The media the rows really carry (column and inline alike), and chat rows' system turn."""
    c = cs.collator
    out: list[Finding] = []
    if col.fatal or not col.rows_checked:
        return out
    for kind, on, n in (("image", c.use_images, col.images), ("video", c.use_video, col.videos)):
        if on and n == 0 and not (kind == "image" and c.use_video and col.videos):
            out.append(
                cs.finding(
                    "warning",
                    "collator",
                    f"data_processing.{kind}_data",
                    f"{kind}_data is true but none of the {col.rows_checked} checked rows "
                    f"carries a {kind} (column or inline content part)",
                    hint=f"set {kind}_data: false, or check the {kind} column / tags",
                    code="no-media-in-rows",
                )
            )
    if c.conversation is not None and col.system_sources:
        shapes = "; ".join(
            f"{n} row(s) (e.g. row {col.system_rows[src]}): {_SYSTEM_WORDS.get(src, src)}"
            for src, n in col.system_sources.most_common()
        )
        out.append(
            cs.finding(
                "info",
                "collator",
                "conversation.system_prompt",
                f"system prompt per row shape: {shapes}",
                code="system-prompt-rows",
            )
        )
    return out


def _summarise(
    cs: Any,
    col: _Collector,
    collator: Any,
    total: int,
    n_checked: int,
    sample: int | None,
    opts: DataCheckOptions,
    result: DataCheckResult,
) -> None:
    c = cs.collator
    tp = c.text_processing
    summary, findings = result.summary, result.findings
    summary["rows"] = {
        "total": total,
        "checked": col.rows_checked,
        "eval_checked": col.eval_rows_checked,
        "sampled": bool(sample and sample < total),
        "with_errors": col.rows_with_errors,
        "with_warnings_only": col.rows_with_warnings,
        "num_proc": opts.num_proc,
    }
    summary["media"] = {
        "images": col.images,
        "videos": col.videos,
        "rows_with_images": col.rows_with_images,
        "rows_with_videos": col.rows_with_videos,
    }
    if collator is None:
        summary["lengths"] = None
        summary["truncation"] = None
        summary["supervised"] = None
        return
    text = array("i", (a - b for a, b in zip(col.lengths, col.media, strict=True)))
    o = col.outcomes
    summary["lengths"] = {
        "rows": len(col.lengths),
        "total": _describe(col.lengths),
        "text": _describe(text),
        "media": _describe(col.media),
        "max_length": tp.max_length if tp.truncation else None,
    }
    summary["truncation"] = {
        "policy": tp.truncation_policy if tp.truncation else "off",
        "over_max_length": sum(1 for v in col.lengths if tp.truncation and v > tp.max_length),
        "dropped_too_long": o["dropped_too_long"],
        "dropped_media_span": o["dropped_media_span"],
        "cut_text": o["cut_text"],
        "errors": o["length_error"],
    }
    if summary["truncation"]["over_max_length"]:
        from vlmctl.checks.budget_advice import fit_advice

        advice = fit_advice(cs, col, tp.max_length)
        if advice is not None:
            summary["truncation"]["fit"] = advice["changes"]
            findings.append(advice["finding"])
    scale = 1.0
    estimated = False
    if sample and n_checked and n_checked < total:
        scale, estimated = total / n_checked, True
    if c.dataset.eval_size and c.dataset.eval_path is None and c.dataset.eval_split is None:
        scale *= 1 - c.dataset.eval_size
        estimated = True
    per_epoch = int(round(col.supervised_total * scale))
    kept = sum(o[k] for k in ("ok", "cut_text"))
    summary["supervised"] = {
        "rows_without_supervised_tokens": o["dropped_no_labels"],
        "rows_kept": kept,
        "tokens_checked": col.supervised_total,
        "tokens_per_epoch": per_epoch,
        "estimated": estimated,
    }
    encoded = len(col.lengths)
    if encoded and kept == 0:
        findings.append(
            cs.finding(
                "error",
                "collator",
                "text_processing",
                f"no row survives: all {encoded} encoded rows are dropped (too long or nothing to "
                "train on)",
                hint="see the row findings; raise max_length or fix label_masking",
                code="all-rows-dropped",
            )
        )


def check_media(cs: Any) -> list[Finding]:
    """`train`'s pre-flight: validate's row checks without the processor, on every row.

    Rows that cannot become an example, and media that is missing, unreadable, truncated or
    not an image/video, each named by row index (the file's own rows, as `validate` says).
    No processor is loaded (that costs the worker's start-up); errors only.
    """
    from vlmctl.data.dataset import iter_rows

    findings: list[Finding] = []
    with private_datasets_cache():
        data, _kind = _load_data(cs, findings)
        if data is None:
            return [f for f in findings if f.severity == "error"]
        if any(f.severity == "error" for f in column_findings(cs, list(data.train.column_names))):
            return []  # the config checks report the mapping; nothing row-level to add
        col = _Collector()
        splits = [("train", data.train)] + ([("eval", data.eval)] if data.eval is not None else [])
        with quiet_transformers():
            for split, ds in splits:
                state = _State(
                    cfg=cs.collator, media_dirs=data.media_dirs, collator=None, split=split
                )
                for r in run_rows(state, iter_rows(ds), 1):
                    if r.fatal:
                        return [f for f in r.fatal if f.severity == "error"]
                    col.add(r, stats=split == "train")
        del data
    found = col.findings + col.overflow_findings()
    return [f for f in found if f.severity == "error"]
