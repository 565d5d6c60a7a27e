"""The install layers and the one-line answer when a verb's layer is missing.

`pip install vlmctl` is the light layer: the CLI and config-level validation (`init`,
`validate --config-only`, `schema`, the pre-commit hook), with typer, rich, pydantic and
ruamel.yaml only, so a CI job installs it in seconds. The heavy libraries come in extras:

- `vlmctl[data]`: the dataset pass of `validate` and `preview` (a processor, datasets, images,
  video). torch and torchvision are in it: transformers 5 needs torchvision for every video
  processor and to build Qwen2-VL's, InternVL's, SmolVLM's and LLaVA-OneVision's processors,
  and the collator returns torch tensors (see BENCHMARKS.md, "Install layers").
- `vlmctl[data]` also runs `eval` of model folders; `eval` of a run folder (an adapter on
  its base) needs peft, from the train extra.
- `vlmctl[train]`: `train`, `merge` and `demo` (the data extra plus peft, trl, accelerate,
  bitsandbytes, wandb, decord).
- `vlmctl[all]`: everything (`train` already includes `data`).

A verb checks its layer up front (`require`); the CLI's error boundary also turns any
`ModuleNotFoundError` for a module of an extra into the same one line (`missing_extra_error`),
so a verb that forgets to check never shows an ImportError traceback.
"""

from __future__ import annotations

import importlib.util

from vlmctl.errors import Finding, VlmctlError

# Import name -> the extra that installs it. The first extra that brings a module is named.
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "data": (
        "transformers",
        "tokenizers",
        "datasets",
        "PIL",
        "numpy",
        "av",
        "torch",
        "torchvision",
        "num2words",
        "safetensors",
    ),
    "train": (
        "peft",
        "trl",
        "accelerate",
        "bitsandbytes",
        "wandb",
        "decord",
        "psutil",
    ),
}

# What each verb needs; `validate` needs `data` only for its dataset pass.
VERB_EXTRA: dict[str, str] = {
    "validate": "data",
    "preview": "data",
    "eval": "data",  # and `train` (peft) for a run folder's adapter: vlmctl.evaluation.generate
    "train": "train",
    "merge": "train",
    "demo": "train",
}

# The modules a verb imports at its start, checked before any work (a subset of its extra's:
# decord and bitsandbytes are x86_64-only, so their absence is not a missing extra).
_REQUIRED: dict[str, tuple[str, ...]] = {
    "data": ("transformers", "tokenizers", "datasets", "PIL", "numpy", "torch"),
    "train": (
        "transformers",
        "tokenizers",
        "datasets",
        "PIL",
        "numpy",
        "torch",
        "peft",
        "trl",
        "accelerate",
    ),
}


def extra_of(module: str) -> str | None:
    """The extra that installs `module` (a dotted name counts by its top package), or None."""
    top = module.split(".")[0]
    for extra, modules in EXTRA_MODULES.items():
        if top in modules:
            return extra
    return None


def missing(extra: str) -> list[str]:
    """The import names `extra`'s verbs need that are not installed (no import is executed)."""
    return [m for m in _REQUIRED[extra] if importlib.util.find_spec(m) is None]


def message(verb: str, extra: str, modules: list[str], also: str = "") -> Finding:
    """`vlmctl train needs the train extra (not installed: torch) (fix: pip install ...)`."""
    what = f"vlmctl {verb}" if verb else "this command"
    return Finding(
        "error",
        f"{what} needs the {extra} extra (not installed: {', '.join(modules)})",
        hint=f'pip install "vlmctl[{extra}]"{also}',
        code="missing-extra",
    )


def require(verb: str, extra: str | None = None, also: str = "") -> None:
    """Raise one `missing-extra` finding when the layer `verb` needs is not installed.

    `also` extends the fix (e.g. validate's `, or pass --config-only`).
    """
    extra = extra or VERB_EXTRA[verb]
    absent = missing(extra)
    if absent:
        raise VlmctlError(message(verb, extra, absent, also))


def missing_extra_error(exc: BaseException, verb: str = "") -> VlmctlError | None:
    """The one-line error for an ImportError of an extra's module that is truly not installed.

    None for anything else (a module that is installed but fails to import is a real bug, and
    keeps its own message).
    """
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.split(".")[0]
    extra = extra_of(top)
    if extra is None or importlib.util.find_spec(top) is not None:
        return None
    return VlmctlError(message(verb, extra, [top]))
