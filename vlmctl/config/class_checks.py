"""`model_classes` entries against the installed transformers and the checkpoint, without loading.

A misspelled class (`NoSuchProcessor`) or a class of another architecture
(`LlavaForConditionalGeneration` on a Qwen2-VL checkpoint) otherwise passes `validate` and
fails after `train` launched. Both are answered from files: transformers' Auto mappings
(`("qwen2_vl", "Qwen2VLForConditionalGeneration")` pairs, read as text) and the checkpoint's
`config.json` (`model_type`, `architectures`, `auto_map`), from its local folder or the hub
cache. Nothing is imported or downloaded.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

_PAIR_RE = re.compile(r'\(\s*"([a-z0-9_-]+)"\s*,\s*"([A-Z][A-Za-z0-9_]*)"\s*\)')


@lru_cache(maxsize=1)
def class_model_types() -> dict[str, frozenset[str]]:
    """Class name -> the model types transformers' Auto mappings load with it."""
    from vlmctl.models.resolve import _transformers_dir

    root = _transformers_dir()
    out: dict[str, set[str]] = {}
    if root is None:  # the light install: the shipped snapshot of the mappings
        from vlmctl.config.snapshot import snapshot_class_model_types

        return snapshot_class_model_types()
    for path in sorted((root / "models" / "auto").glob("*.py")):
        for mtype, cls in _PAIR_RE.findall(path.read_text(encoding="utf-8")):
            out.setdefault(cls, set()).add(mtype)
    return {k: frozenset(v) for k, v in out.items()}


@lru_cache(maxsize=1)
def known_class_names() -> tuple[str, ...]:
    """Every class name the Auto mappings know (for "did you mean")."""
    return tuple(sorted(class_model_types()))


def _hub_cached(repo_id: str, revision: str | None, name: str) -> Path | None:
    """A file of a hub model in the local hub cache, by the cache's layout.

    Read without importing huggingface_hub (a third of a second that `validate` cannot spare):
    `<cache>/models--org--name/refs/<revision>` holds the commit whose snapshot has the file.
    """
    home = os.environ.get("HF_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache", "huggingface"
    )
    cache = Path(
        os.environ.get("HF_HUB_CACHE")
        or os.environ.get("HUGGINGFACE_HUB_CACHE")
        or Path(home) / "hub"
    )
    if not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", repo_id):
        return None
    folder = cache / ("models--" + repo_id.replace("/", "--"))
    rev = revision or "main"
    try:
        commit = (folder / "refs" / rev).read_text(encoding="utf-8").strip()
    except OSError:
        commit = rev  # a commit hash names its snapshot directly
    path = folder / "snapshots" / commit / name
    return path if path.is_file() else None


def checkpoint_config(location: str, revision: str | None = None) -> dict[str, Any] | None:
    """The checkpoint's config.json (local folder, else the hub cache), or None: no network."""
    path: Path | None = Path(location) / "config.json"
    if not path.is_file():
        path = _hub_cached(location, revision, "config.json")
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _model_types_of(name: str) -> frozenset[str]:
    types = class_model_types().get(name)
    if types:
        return types
    # A class outside the Auto mappings: the folder of the modeling file that defines it.
    from vlmctl.models.resolve import _transformers_dir

    root = _transformers_dir()
    if root is None:
        return frozenset()
    needle = f"class {name}(".encode()
    for path in root.glob("models/*/modeling_*.py"):
        if needle in path.read_bytes():
            return frozenset({path.parent.name})
    return frozenset()


def class_problems(cs: Any) -> list[Any]:
    """Located errors for the `model_classes` entry of the model being trained."""
    from vlmctl.errors import did_you_mean
    from vlmctl.models.resolve import AUTO_PROCESSOR, _entry_for, is_transformers_class

    m = cs.model
    if not m.model_name_or_path:
        return []
    key, entry = _entry_for(m, str(m.model_name_or_path))
    if entry is None or entry.import_path != "transformers":
        return []
    config = checkpoint_config(cs.model_location(), m.revision)
    remote = bool(config and config.get("auto_map"))
    out = []
    base = ("model_classes", key)
    proc = entry.processor_class
    # Remote code (declared by the checkpoint, or a model class transformers lacks while the
    # checkpoint is not readable here) brings its own processor.
    own_code = remote or (config is None and not is_transformers_class(entry.model_class))
    if proc and proc != AUTO_PROCESSOR and not is_transformers_class(proc) and not own_code:
        close = did_you_mean(proc, [n for n in known_class_names() if "Processor" in n])
        out.append(
            cs.finding(
                "error",
                "model",
                (*base, "processor_class"),
                f"processor_class {proc!r}: transformers has no such class"
                + ("" if config is None else " and the checkpoint ships no code of its own"),
                hint=f"did you mean {close!r}?"
                if close
                else "use null (AutoProcessor) or a "
                "processor class of transformers, e.g. Qwen2VLProcessor",
                code="unknown-class",
            )
        )
    name = entry.model_class
    if config is None:
        return out  # not readable here: resolve_model's own rules apply
    archs = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    mtype = config.get("model_type")
    if not is_transformers_class(name):
        if not remote:
            close = did_you_mean(name, [*archs, *known_class_names()])
            out.append(
                cs.finding(
                    "error",
                    "model",
                    (*base, "model_class"),
                    f"model_class {name!r}: transformers has no such class, and the checkpoint "
                    "ships no code of its own (its config.json has no auto_map)",
                    hint=f"did you mean {close!r}?"
                    if close
                    else f"use {archs[0]!r} (the checkpoint's architecture)"
                    if archs
                    else "remove the entry to use AutoModelForImageTextToText",
                    code="unknown-class",
                )
            )
        return out
    types = _model_types_of(name)
    if name not in archs and mtype and types and mtype not in types:
        want = f" ({', '.join(archs)})" if archs else ""
        out.append(
            cs.finding(
                "error",
                "model",
                (*base, "model_class"),
                f"model_class {name} is for {'/'.join(sorted(types))} models, but the "
                f"checkpoint is {mtype}{want}",
                hint=f"use {archs[0]!r}" if archs else "remove the entry to use the Auto class",
                code="class-mismatch",
            )
        )
    return out
