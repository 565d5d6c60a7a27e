"""Shared helpers of the real-kit tests: kit params, assembled processors, the 2-turn chat."""

from __future__ import annotations

import functools
import tempfile
import threading
import warnings
from pathlib import Path

import pytest
from _collate_util import image

from vlmctl.data.example import Example
from vlmctl.testing.realkit import (
    assemble_kit,
    build_kit_model,
    kit_dirs,
    load_kit,
    load_kit_processor,
    missing_reason,
)

ANSWERS = ["red 1 square", "The circle is blue."]
QUESTIONS = ["What colour is it?", "And this one?"]
_ROOT = Path(tempfile.mkdtemp(prefix="vlmctl-realkit-"))
# The marker that closes an answer in each family's released template, written here from the
# templates themselves (a kit.yaml `end_of_turn` wins). PaliGemma (no template): its eos.
END_OF_TURN = {
    "qwen2_vl": "<|im_end|>",
    "qwen2_5_vl": "<|im_end|>",
    "qwen3_vl": "<|im_end|>",
    "internvl_chat": "<|im_end|>",
    "gemma3": "<end_of_turn>",
    "idefics2": "<end_of_utterance>",
    "idefics3": "<end_of_utterance>",
    "smolvlm": "<end_of_utterance>",
    "llava_next": "</s>",
    "mllama": "<|eot_id|>",
    "paligemma": "<eos>",
}


def kit_params(models_only: bool = False):
    """pytest params, one per kit folder (a kit whose shared files are absent is skipped)."""
    out = []
    for d in kit_dirs():
        kit = load_kit(d)
        if models_only and not kit.build_model:
            continue
        reason = missing_reason(kit, model=models_only)
        marks = [pytest.mark.skip(reason=reason)] if reason else []
        out.append(pytest.param(kit.family, marks=marks, id=kit.family))
    return out


@functools.cache
def kit(family: str):
    return load_kit(next(d for d in kit_dirs() if d.name == family))


@functools.cache
def kit_folder(family: str) -> Path:
    """The assembled processor folder (real files + tokenizer), built once per session."""
    return assemble_kit(kit(family), _ROOT / "proc" / family)


@functools.cache
def kit_model_folder(family: str) -> Path:
    """The assembled folder plus a tiny random model in the real config's shape."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_kit_model(kit(family), _ROOT / "model" / family)


@functools.cache
def kit_processor(family: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_kit_processor(kit_folder(family), kit(family))


def end_of_turn(family: str) -> str:
    return kit(family).raw.get("end_of_turn") or END_OF_TURN[family]


def has_template(family: str) -> bool:
    proc = kit_processor(family)
    return bool(getattr(proc, "chat_template", None) or proc.tokenizer.chat_template)


def two_turn_chat(answers=ANSWERS, row: int = 3) -> Example:
    """A 2-turn chat with one image in EACH user turn (parts form, as vlmctl builds it)."""
    messages = []
    for k, answer in enumerate(answers):
        messages.append(
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": QUESTIONS[k]}],
            }
        )
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return Example(
        messages=messages, images=[image(i) for i in range(len(answers))], videos=[], row=row
    )


def template_messages(family: str, example: Example) -> list[dict]:
    """The chat in the form the kit's template documents (independent of vlmctl's code)."""
    form = kit(family).raw.get("content", "parts")
    if form == "parts":
        return example.messages
    tag = kit(family).raw["image_tag"]
    out, n = [], 0
    for m in example.messages:
        pieces = []
        for p in m["content"]:
            if p["type"] == "image":
                n += 1
                pieces.append(tag.format(n=n))
            else:
                pieces.append(p["text"])
        out.append({"role": m["role"], "content": "\n".join(pieces)})
    return out


def template_text(family: str, example: Example) -> str:
    """The template's own rendering of `example` (what inference would tokenize)."""
    proc = kit_processor(family)
    tok = proc.tokenizer
    template = getattr(proc, "chat_template", None) or tok.chat_template
    return tok.apply_chat_template(
        template_messages(family, example), chat_template=template, tokenize=False
    )


_JOB = Path(__file__).resolve().parent / "_realkit_job.py"


def run_job(*args: str, timeout: float = 900) -> dict:
    """Run `tests/_realkit_job.py ARGS` in a child python; its JSON result (last stdout line).

    A child process returns all its memory when it ends: the real-vocabulary logits of a kit
    model never accumulate in the pytest process."""
    import json
    import os
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[1])
    # (the caller's PYTHONPATH too: modules installed beside the venv, e.g. einops/timm)
    paths = [root, str(_JOB.parent), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.run(
        [sys.executable, str(_JOB), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=root,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"job {args} failed (rc {proc.returncode}):\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-6000:]}"
        )
    return json.loads(lines[-1])


_JOBS_LOCK = threading.RLock()  # the early start (conftest) and a test may ask at once


@functools.cache
def _built_folders_once() -> dict:
    families = [p.values[0] for p in kit_params(models_only=True) if not p.marks]
    return run_job("build-all", str(_ROOT / "model-sub"), *families)


def _built_folders() -> dict:
    """Every available model kit built by ONE child process (imports paid once)."""
    with _JOBS_LOCK:
        return _built_folders_once()


def built_model_folder(family: str) -> Path:
    """`kit_model_folder`, built in a child process (all kits at once, once per session)."""
    built = _built_folders()
    if family not in built["folders"]:
        raise AssertionError(f"{family}: building its kit model failed:\n{built['errors'][family]}")
    return Path(built["folders"][family])


TRAIN_TEST = "test_lora_step_merge_verify_and_generate"


def selected_families(items) -> tuple[str, ...]:
    """The families whose train test this session runs (-k, ids), in collection order."""
    out = []
    for item in items:
        if getattr(item, "originalname", None) == TRAIN_TEST:
            if not item.get_closest_marker("skip"):
                out.append(item.callspec.params["family"])
    return tuple(out)


def start_train_jobs_early(selected: tuple[str, ...]) -> None:
    """Start the selected families' build and train jobs in the background when collection
    ends (conftest): each job is one single-threaded child, so on a 2-core CI machine it runs
    beside the other tests instead of after them (the test then only waits for its result)."""
    threading.Thread(target=_train_pool, args=(selected,), daemon=True).start()


def _train_pool(selected: tuple[str, ...]):
    with _JOBS_LOCK:
        return _train_pool_once(selected)


@functools.cache
def _train_pool_once(selected: tuple[str, ...]):
    """Train jobs of the selected kits, queued together (VLMCTL_REALKIT_JOBS at a time, default
    1: one child can peak at ~10 GB), each in its own child process: a family's test waits only
    for its own result."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    workers = max(1, int(os.environ.get("VLMCTL_REALKIT_JOBS", "1")))
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="realkit")
    futures = {}
    for family in selected:
        if family not in _built_folders()["folders"]:
            continue
        work = _ROOT / "train" / family
        work.mkdir(parents=True, exist_ok=True)
        base = str(built_model_folder(family))
        futures[family] = pool.submit(run_job, "train", family, base, str(work))
    pool.shutdown(wait=False)
    return futures


def train_result(family: str, selected: tuple[str, ...]) -> dict:
    """The train job's JSON result for `family` (raises what the job raised); `selected` are
    the families this run's tests ask for (their jobs start together)."""
    built_model_folder(family)  # a build failure reports itself
    return _train_pool(tuple(selected))[family].result()
