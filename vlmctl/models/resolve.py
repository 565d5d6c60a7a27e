"""Model id -> the classes that load it: a `model_classes` entry, the Auto classes, or remote code.

`resolve_model` is pure and cheap (validate runs it in well under a second): whether a class
name belongs to transformers is answered by reading transformers' source files, never by
importing it (that would pull torch). Only `load_processor` / `load_model` import the heavy
libraries.

Rules:
1. An entry in `model_classes` for the id wins.
   - Its classes are attributes of `import_path` -> loaded from there (source "entry").
   - `import_path: transformers` but the class is not in transformers (InternVL2's
     InternVLChatModel, Phi-3-vision's Phi3VForCausalLM: the checkpoint's own code) -> loaded
     through the checkpoint's `auto_map` with trust_remote_code (source "remote_code"); refused
     with a clear error unless the entry (or loading_params) sets trust_remote_code.
2. No entry -> AutoModelForImageTextToText + AutoProcessor (source "auto").

Security (a config set may come from a pull request that CI validates): an `import_path` other
than `transformers` names Python code that would run on import. It is accepted only when the
person running vlmctl allows it (`VLMCTL_ALLOW_IMPORTS=pkg[,pkg2]`, never the config itself),
and only from an installed location, never from the working folder. Resolving never imports it
(only its location is looked up), and `validate` never imports it at all: it measures token
lengths with `AutoProcessor`. Only `train`/`merge`/`demo` import an allowed module.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from vlmctl.config.model import ModelConfig
from vlmctl.errors import ConfigError, Finding

AUTO_MODEL = "AutoModelForImageTextToText"
AUTO_PROCESSOR = "AutoProcessor"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
ALLOW_IMPORTS_ENV = "VLMCTL_ALLOW_IMPORTS"


@dataclass(frozen=True)
class Resolution:
    """How a model id will be loaded, and why (shown by `validate`)."""

    model_id: str
    model_class: str
    processor_class: str
    import_path: str
    source: Literal["entry", "auto", "remote_code"]
    trust_remote_code: bool
    reason: str
    processor_trust_remote_code: bool = False


@lru_cache(maxsize=1)
def _transformers_dir() -> Path | None:
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


@lru_cache(maxsize=1)
def _auto_mapped_names() -> frozenset[str]:
    """Every class name the Auto mappings know (quoted strings in models/auto/*.py)."""
    root = _transformers_dir()
    if root is None:
        return frozenset()
    names: set[str] = set()
    for path in (root / "models" / "auto").glob("*.py"):
        names.update(re.findall(r'"([A-Z][A-Za-z0-9_]*)"', path.read_text(encoding="utf-8")))
    return frozenset(names)


@lru_cache(maxsize=64)
def is_transformers_class(name: str) -> bool:
    """Whether transformers defines `name`, answered from its source files without importing it."""
    if not _IDENT.match(name):
        return False
    if name in _auto_mapped_names():
        return True
    root = _transformers_dir()
    if root is None:  # the light install: the shipped snapshot of transformers' class names
        from vlmctl.config.snapshot import snapshot_transformers_classes

        return name in snapshot_transformers_classes()
    needle = f"class {name}(".encode()
    for pattern in ("models/*/modeling_*.py", "models/*/processing_*.py", "*.py"):
        for path in root.glob(pattern):
            if needle in path.read_bytes():
                return True
    return False


def allowed_imports() -> frozenset[str]:
    """Top-level packages an `import_path` may name: transformers, plus what the person running
    vlmctl lists in VLMCTL_ALLOW_IMPORTS (comma-separated). A config cannot widen this."""
    raw = os.environ.get(ALLOW_IMPORTS_ENV, "")
    return frozenset({"transformers"} | {p.strip() for p in raw.split(",") if p.strip()})


def _untrusted_dirs() -> set[Path]:
    """The working folder (and `python -m`'s copy of it at sys.path[0]): never code sources."""
    out = set()
    for entry in ("", ".", os.getcwd()):
        try:
            out.add(Path(entry or ".").resolve())
        except OSError:
            pass
    return out


def _trusted_path() -> list[str]:
    """sys.path without the working folder (`_untrusted_dirs`) and unresolvable entries."""
    bad = _untrusted_dirs()
    search = []
    for entry in sys.path:
        try:
            if Path(entry or ".").resolve() in bad:
                continue
        except OSError:
            continue
        search.append(entry)
    return search


def installed_location(top: str) -> str | None:
    """Where the top-level package `top` is installed, looked up WITHOUT importing it and
    skipping the working folder; None when it is not installed elsewhere."""
    spec = importlib.machinery.PathFinder.find_spec(top, _trusted_path())
    if spec is None:
        return None
    return spec.origin or next(iter(spec.submodule_search_locations or []), None) or top


def check_import_path(import_path: str, key: str) -> None:
    """Raise ConfigError unless `import_path` is an allowed, installed module (never imported)."""
    path = ("model_classes", key, "import_path")
    where = f"model_classes.{key}.import_path"
    if import_path == "transformers" or import_path.startswith("transformers."):
        return
    if not _MODULE.match(import_path):
        raise ConfigError(
            Finding(
                "error",
                f"import_path {import_path!r} is not a module name",
                hint="write a dotted module name such as `transformers`",
                key=where,
                code="import-path",
                extra={"path": path},
            )
        )
    top = import_path.split(".")[0]
    if top not in allowed_imports():
        raise ConfigError(
            Finding(
                "error",
                f"import_path {import_path!r} is not allowed: importing a module runs its code, "
                "so vlmctl imports model classes only from transformers",
                hint="use `import_path: transformers`; to use another installed package, the "
                f"person running vlmctl sets {ALLOW_IMPORTS_ENV}={top} (a config cannot)",
                key=where,
                code="import-not-allowed",
                extra={"path": path},
            )
        )
    if installed_location(top) is None:
        raise ConfigError(
            Finding(
                "error",
                f"import_path {import_path!r} is not an installed module (a module in the "
                "working folder does not count)",
                hint="install the package that provides it (pip install ...), or use "
                "import_path: transformers",
                key=where,
                code="import-path",
                extra={"path": path},
            )
        )


def _entry_for(cfg: ModelConfig, model_id: str):
    if model_id in cfg.model_classes:
        return model_id, cfg.model_classes[model_id]
    stripped = model_id.rstrip("/")
    for key, entry in cfg.model_classes.items():
        if key.rstrip("/") == stripped:
            return key, entry
    return None, None


def resolve_model(cfg: ModelConfig, model_id: str | None = None) -> Resolution:
    """Which classes load `model_id` (default `cfg.model_name_or_path`). Pure: no heavy import."""
    model_id = model_id or cfg.model_name_or_path
    if not model_id:
        raise ConfigError(
            Finding(
                "error",
                "model_name_or_path is not set",
                hint="set it to a hub id or a local folder",
                key="model_name_or_path",
                code="no-model",
            )
        )
    global_trust = cfg.loading_params.trust_remote_code
    proc_trust = cfg.processor_params.trust_remote_code
    key, entry = _entry_for(cfg, model_id)
    if entry is None:
        return Resolution(
            model_id=model_id,
            model_class=AUTO_MODEL,
            processor_class=AUTO_PROCESSOR,
            import_path="transformers",
            source="auto",
            trust_remote_code=global_trust,
            processor_trust_remote_code=proc_trust,
            reason=f"{model_id}: no model_classes entry -> {AUTO_MODEL} + {AUTO_PROCESSOR}",
        )
    trust = entry.trust_remote_code or global_trust
    processor_class = entry.processor_class or AUTO_PROCESSOR
    _check_class_names(key, entry.model_class, processor_class)
    if entry.import_path != "transformers":
        check_import_path(entry.import_path, key)
    elif not is_transformers_class(entry.model_class):
        if not trust:
            raise ConfigError(
                Finding(
                    "error",
                    f"{entry.model_class} is not a transformers class: {model_id} ships its own "
                    "Python code (a remote-code model), and trust_remote_code is off",
                    hint=f'set `trust_remote_code: true` in the model_classes entry "{key}" if '
                    "you trust that code, or pick a transformers-native model",
                    key=f"model_classes.{key}",
                    code="remote-code-off",
                )
            )
        return Resolution(
            model_id=model_id,
            model_class=entry.model_class,
            processor_class=processor_class,
            import_path="transformers",
            source="remote_code",
            trust_remote_code=True,
            processor_trust_remote_code=True,
            reason=f"{model_id}: {entry.model_class} is the checkpoint's own code -> loaded "
            "through its auto_map with trust_remote_code",
        )
    elif processor_class != AUTO_PROCESSOR and not is_transformers_class(processor_class):
        # A native model with a remote processor is unusual; AutoProcessor finds whatever
        # the checkpoint declares.
        processor_class = AUTO_PROCESSOR
    return Resolution(
        model_id=model_id,
        model_class=entry.model_class,
        processor_class=processor_class,
        import_path=entry.import_path,
        source="entry",
        trust_remote_code=trust,
        processor_trust_remote_code=entry.trust_remote_code or proc_trust,
        reason=f"{model_id}: model_classes entry -> {entry.import_path}."
        f"{entry.model_class} + {processor_class}",
    )


def _check_class_names(key: str, model_class: str, processor_class: str) -> None:
    """A model_classes entry names classes, not expressions (nothing is ever evaluated)."""
    for label, name in (("model_class", model_class), ("processor_class", processor_class)):
        if not _IDENT.match(name):
            raise ConfigError(
                Finding(
                    "error",
                    f"{label} {name!r} is not a class name",
                    hint="write the class name only, e.g. Qwen2VLForConditionalGeneration",
                    key=f"model_classes.{key}.{label}",
                    code="class-name",
                )
            )


def _dtype(cfg: ModelConfig) -> Any:
    """The torch dtype from the fixed table (a canonical name only; never evaluated)."""
    import torch

    name = cfg.dtype_name
    return "auto" if name == "auto" else getattr(torch, name)


def _quantization_config(cfg: ModelConfig) -> Any:
    q = cfg.quantization
    if not q.enabled:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    from vlmctl.config.model import DTYPE_TABLE

    return BitsAndBytesConfig(
        load_in_4bit=q.load_in_4bit,
        load_in_8bit=q.load_in_8bit,
        bnb_4bit_quant_type=q.bnb_4bit_quant_type,
        bnb_4bit_compute_dtype=getattr(torch, DTYPE_TABLE[q.bnb_4bit_compute_dtype.lower()]),
        bnb_4bit_use_double_quant=q.bnb_4bit_use_double_quant,
    )


def _import_installed(import_path: str) -> Any:
    """Import an allowed module with the working folder off sys.path for the import, so a
    same-named file there (PYTHONPATH=., a script run from that folder) is never the one run."""
    import importlib

    saved = list(sys.path)
    sys.path[:] = _trusted_path()
    try:
        return importlib.import_module(import_path)
    finally:
        sys.path[:] = saved


def _class(import_path: str, name: str) -> Any:
    import importlib

    if import_path != "transformers":
        check_import_path(import_path, "?")  # the environment may differ from resolve time
        module = _import_installed(import_path)
    else:
        module = importlib.import_module(import_path)
    cls = getattr(module, name, None)
    if cls is None:
        raise ConfigError(
            Finding(
                "error",
                f"{import_path} has no class {name}",
                hint="check the class name on the model's page",
                code="class-missing",
            )
        )
    return cls


def _remote_auto_class(res: Resolution, path: str, revision: str | None) -> Any:
    """The Auto class whose auto_map entry names the remote model class."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(
        path, trust_remote_code=True, revision=revision
    )
    auto_map = getattr(config, "auto_map", None) or {}
    for auto_name, target in auto_map.items():
        target = target[0] if isinstance(target, (list, tuple)) else target
        if str(target).split(".")[-1] == res.model_class and auto_name.startswith("AutoModel"):
            return getattr(transformers, auto_name)
    raise ConfigError(
        Finding(
            "error",
            f"{res.model_id}'s auto_map does not name {res.model_class} "
            f"(it has: {', '.join(f'{k}={v}' for k, v in auto_map.items()) or 'nothing'})",
            hint="check model_class against the checkpoint's config.json auto_map",
            code="auto-map",
        )
    )


def load_processor(
    res: Resolution,
    cfg: ModelConfig,
    model_path: str | Path | None = None,
    *,
    import_modules: bool = True,
):
    """The processor, with `processor_params` passed to `from_pretrained`.

    `import_modules=False` (validate) never imports an `import_path` other than transformers:
    AutoProcessor reads the processor the checkpoint declares instead.
    """
    kwargs = cfg.processor_params.model_dump()
    kwargs["trust_remote_code"] = res.processor_trust_remote_code
    if cfg.revision:
        kwargs.setdefault("revision", cfg.revision)
    path = str(model_path or res.model_id)
    foreign = res.import_path != "transformers" and not import_modules
    if res.source == "remote_code" or res.processor_class == AUTO_PROCESSOR or foreign:
        from transformers import AutoProcessor

        from vlmctl.models.internvl_chat import wrap_processor

        # InternVL2 ships no processor (AutoProcessor gives its tokenizer): vlmctl's adapter.
        return wrap_processor(AutoProcessor.from_pretrained(path, **kwargs), path)
    return _class(res.import_path, res.processor_class).from_pretrained(path, **kwargs)


def load_model(
    res: Resolution, cfg: ModelConfig, model_path: str | Path | None = None, **overrides: Any
):
    """The model, loaded with `loading_params`, the dtype table and quantization.

    `overrides` replace loading kwargs (e.g. `device_map=None` under multi-process training).
    """
    lp = cfg.loading_params
    kwargs: dict[str, Any] = {"dtype": _dtype(cfg), "trust_remote_code": res.trust_remote_code}
    if lp.device_map is not None:
        kwargs["device_map"] = lp.device_map
    if lp.attn_implementation:
        kwargs["attn_implementation"] = lp.attn_implementation
    if cfg.revision:
        kwargs["revision"] = cfg.revision
    quant = _quantization_config(cfg)
    if quant is not None:
        kwargs["quantization_config"] = quant
    kwargs.update(overrides)
    path = str(model_path or res.model_id)
    if res.source == "remote_code":
        from vlmctl.models.remote_compat import load_remote_model

        # 4.x-era remote code needs a few compatibility steps under transformers 5 (that
        # module's doc); a module its code imports but is not installed: one line.
        return load_remote_model(_remote_auto_class(res, path, cfg.revision), path, **kwargs)
    if res.source == "auto":
        from transformers import AutoModelForImageTextToText as cls
    else:
        cls = _class(res.import_path, res.model_class)
    return cls.from_pretrained(path, **kwargs)
