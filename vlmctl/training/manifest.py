"""`vlmctl-run.json` and `configs/`: what a run was, enough to reproduce it, and no secrets.

`RunManifest` is its one shape: the worker writes through it and `merge` reads through it
(base model, class, `model_type`, configs); people read it to know which data, code and
library versions made an adapter. Credentials (`hub_token`, `api_key`, a
processor's `token`, a value shaped like `hf_...`) are dropped before anything is written,
wherever they sit; settings whose names merely contain such a word (`mask_pad_token`) stay, so
`configs/` given back to `vlmctl train` reproduces the run.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST = "vlmctl-run.json"
CONFIGS_DIR = "configs"
PACKAGES = (
    "vlmctl",
    "torch",
    "torchvision",
    "transformers",
    "trl",
    "peft",
    "accelerate",
    "datasets",
    "tokenizers",
    "bitsandbytes",
    "wandb",
    "pillow",
)
# Credentials by what they are: the names libraries and people give them (compared whole,
# after lower-casing and `-` -> `_`), never a word inside a longer name (`mask_pad_token`,
# `role_key` and `include_num_input_tokens_seen` are settings).
SECRET_KEY_NAMES = frozenset(
    {
        "token",
        "hub_token",
        "hf_token",
        "push_to_hub_token",
        "use_auth_token",
        "auth_token",
        "access_token",
        "api_token",
        "bearer_token",
        "refresh_token",
        "api_key",
        "apikey",
        "secret",
        "secret_key",
        "client_secret",
        "private_key",
        "password",
        "passwd",
        "credentials",
    }
)
# Name endings that only credentials have (WANDB_API_KEY, db_password, client_secret).
_SECRET_ENDINGS = ("_api_key", "_apikey", "_password", "_passwd", "_secret", "_access_token",
                   "_auth_token", "_hub_token", "_hf_token", "_private_key")  # fmt: skip
# Values shaped like well-known tokens, wherever they sit (a run name, a list item).
_SECRET_VALUE_RE = re.compile(
    r"(?<![A-Za-z0-9])(?:hf_[A-Za-z0-9]{20,}|api_org_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_-]{20,}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}|xox[abprs]-[A-Za-z0-9-]{10,}"
    r"|AKIA[0-9A-Z]{16}|glpat-[A-Za-z0-9_-]{20,})"
)
_DROP = object()


def is_secret_key(name: Any) -> bool:
    """A key that names a credential (`hub_token`, `token`, `WANDB_API_KEY`), by its whole name."""
    low = re.sub(r"[-.\s]+", "_", str(name).strip().lower())
    return low in SECRET_KEY_NAMES or low.endswith(_SECRET_ENDINGS)


def is_secret_value(value: Any) -> bool:
    """A string that contains something shaped like a hub/API token (`hf_...`, `sk-...`)."""
    return isinstance(value, str) and _SECRET_VALUE_RE.search(value) is not None


def _strip(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if is_secret_key(k):
                continue
            v = _strip(v)
            if v is not _DROP:
                out[k] = v
        return out
    if isinstance(value, (list, tuple)):
        return [v for v in (_strip(x) for x in value) if v is not _DROP]
    return _DROP if is_secret_value(value) else value


def strip_secrets(value: Any) -> Any:
    """A copy of a JSON-like value without credentials: secret-named keys and token-shaped
    values are removed, recursively (lists included); every other key is kept as it is."""
    out = _strip(value)
    return None if out is _DROP else out


def is_secret_override(text: str) -> bool:
    """A `--set key=value` that sets a credential (by the key's name or the value's shape)."""
    key, _, raw = text.partition("=")
    return any(is_secret_key(part) for part in key.split(".")) or is_secret_value(raw)


def strip_secret_overrides(overrides: list[str]) -> list[str]:
    """`--set` texts, without those that set a credential."""
    return [text for text in overrides if not is_secret_override(text)]


def _absolute(cs: Any, value: Any) -> Any:
    """A local path written relative to the config folder, made absolute (hub ids unchanged)."""
    if isinstance(value, list):
        return [_absolute(cs, v) for v in value]
    if not isinstance(value, str) or not value:
        return value
    local = cs.resolve_path(value)
    return str(local.resolve()) if local.exists() else value


def resolved_configs(cs: Any) -> dict[str, dict]:
    """The four configs as plain dicts, credentials removed, local paths absolute.

    Absolute paths, because `configs/` lives in the run folder: a path relative to the
    original config folder would point elsewhere when the saved set is trained again.
    """
    out = {
        key: strip_secrets(getattr(cs, key).model_dump(mode="json"))
        for key in ("model", "collator", "train", "peft")
    }
    out["model"]["model_name_or_path"] = _absolute(cs, out["model"].get("model_name_or_path"))
    # An entry keyed by the same relative path must follow it, or the saved set would load
    # the model through the Auto classes instead of the entry's.
    classes = out["model"].get("model_classes")
    if isinstance(classes, dict):
        out["model"]["model_classes"] = {_absolute(cs, k): v for k, v in classes.items()}
    dataset = out["collator"].get("dataset") or {}
    for key in ("path", "eval_path", "media_root"):
        if dataset.get(key) is not None:
            dataset[key] = _absolute(cs, dataset[key])
    return out


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that decide what a run computes."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def git_commit(folder: Path) -> dict | None:
    """{commit, dirty} of the git repository holding `folder`, or None."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--", "."],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": bool(dirty)} if commit else None


def dataset_fingerprint(train: Any, eval_ds: Any | None) -> dict:
    """`datasets` fingerprints and row counts of the splits trained and evaluated on."""
    out = {"train": getattr(train, "_fingerprint", None), "train_rows": len(train)}
    if eval_ds is not None:
        out["eval"] = getattr(eval_ds, "_fingerprint", None)
        out["eval_rows"] = len(eval_ds)
    return out


def write_configs(output_dir: Path, configs: dict[str, dict]) -> None:
    """`configs/<the four file names>`: the resolved YAML, so the run can be repeated."""
    from ruamel.yaml import YAML

    from vlmctl.config import FILES

    folder = output_dir / CONFIGS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.sort_base_mapping_type_on_output = False
    for key, name in FILES.items():
        with (folder / name).open("w", encoding="utf-8") as f:
            yaml.dump(configs[key], f)


# Figures known only once training ran: left out of the file while unknown.
_LATER = ("train_cpu_seconds", "train_seconds", "wall_seconds", "train_tokens_per_second",
          "peak_gpu_memory_gb", "train_loss")  # fmt: skip


@dataclass
class RunManifest:
    """`vlmctl-run.json`: written by the training worker, read by `merge` and `demo`."""

    vlmctl_version: str | None = None
    model_name_or_path: str | None = None
    revision: str | None = None
    # The concrete class loaded (merge reloads the base with it), not "AutoModel...".
    model_class: str | None = None
    # config.json's model_type of the base: the collator's family switch (merge's probes).
    model_type: str | None = None
    processor_class: str | None = None
    resolution: str | None = None
    peft: bool = False
    config_dir: str | None = None
    configs: dict[str, dict] = field(default_factory=dict)  # resolved_configs()
    overrides: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    dataset: str | None = None
    dataset_fingerprint: dict | None = None
    git_commit: dict | None = None
    world_size: int = 1
    global_step: int = 0
    finished: bool = False
    resumed_from: str | None = None
    files: list[str] | None = None
    train_cpu_seconds: float | None = None
    train_seconds: float | None = None
    wall_seconds: float | None = None
    train_tokens_per_second: float | None = None
    peak_gpu_memory_gb: float | None = None
    train_loss: float | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any], strict: bool = False) -> RunManifest:
        """The manifest from its JSON object. `strict` (writing) refuses a key the type does
        not know, so a new key is added here first; reading ignores keys of other versions."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if strict and unknown:
            raise KeyError(f"RunManifest has no field {unknown[0]!r}: add it to the type first")
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        """The JSON object written (figures not measured yet are left out)."""
        out = dataclasses.asdict(self)
        return {k: v for k, v in out.items() if not (k in _LATER and v is None)}

    def config(self, key: str) -> dict:
        """One of the four saved configs (`model`, `collator`, `train`, `peft`), or {}."""
        return (self.configs or {}).get(key) or {}


def read_manifest(path: Path) -> RunManifest:
    """`vlmctl-run.json` read back (ValueError/OSError when it is not one)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name} holds {type(data).__name__}, not an object")
    return RunManifest.from_dict(data)


def write_manifest(output_dir: Path, data: RunManifest | dict) -> Path:
    """Write `vlmctl-run.json` atomically (a reader never sees half a file), through
    `RunManifest` so that what is written is what `read_manifest` reads."""
    manifest = data if isinstance(data, RunManifest) else RunManifest.from_dict(data, strict=True)
    path = output_dir / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    text = json.dumps(strip_secrets(manifest.to_dict()), indent=2, default=str) + "\n"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
