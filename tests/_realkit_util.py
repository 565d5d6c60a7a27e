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
PACK_TEST = "test_packed_equals_rows_alone"


def kit_job(item) -> tuple[str, str] | None:
    """(kind, family) of the kit job a test waits for: "train" for a train test, "pack" for a
    kit packing-exactness case; None for any other test and for a skipped one."""
    name = getattr(item, "originalname", None)
    if name not in (TRAIN_TEST, PACK_TEST) or item.get_closest_marker("skip"):
        return None
    family = item.callspec.params["family"]
    if name == TRAIN_TEST:
        return ("train", family)
    return ("pack", family[4:]) if family.startswith("kit:") else None


def kit_jobs(items) -> list[tuple[str, str]]:
    """(kind, family) of each kit job this session's tests ask for, in the order the tests come
    (conftest runs them after the rest of the suite, before the demo's tests)."""
    return [job for job in map(kit_job, items) if job is not None]


_JOBS: dict = {}


def start_jobs(items) -> dict:
    """Queue this session's kit jobs once (train/merge, packing exactness), one
    child process at a time (VLMCTL_REALKIT_JOBS; a child can peak at ~10 GB, returned to the
    system when it ends). conftest calls it when collection ends, so on a 2-core CI machine the
    jobs run beside the rest of the suite; a test only waits for its own result."""
    import os
    from concurrent.futures import ThreadPoolExecutor

    with _JOBS_LOCK:
        if _JOBS:
            return _JOBS
        workers = max(1, int(os.environ.get("VLMCTL_REALKIT_JOBS", "1")))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="realkit")
        for kind, family in kit_jobs(items):
            _JOBS[(kind, family)] = pool.submit(_run_kit_job, kind, family)
        pool.shutdown(wait=False)
        return _JOBS


def _run_kit_job(kind: str, family: str) -> dict:
    base = str(built_model_folder(family))  # a build failure reports itself
    if kind == "pack":
        return run_job("pack", family, base)
    work = _ROOT / "train" / family
    work.mkdir(parents=True, exist_ok=True)
    return run_job("train", family, base, str(work))


def start_jobs_early(items) -> None:
    """`start_jobs` from a background thread, when collection ends (conftest)."""
    threading.Thread(target=start_jobs, args=(items,), daemon=True).start()


def kit_job_result(kind: str, family: str, items) -> dict:
    """The JSON result of this session's `kind` job ("train" or "pack") for `family` (raises
    what the job raised)."""
    return start_jobs(items)[(kind, family)].result()
