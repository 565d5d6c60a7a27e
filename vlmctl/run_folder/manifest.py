"""`vlmctl-run.json` and `configs/`: what a run was, enough to reproduce it, and no secrets.

`RunManifest` is its one shape: the worker writes through it and `merge`, `eval` and `demo`
read through it (base model, class, `model_type`, the typed configs); people read it to know
which data, code and library versions made an adapter. Credentials are dropped before anything
is written (`vlmctl.credentials`), so `configs/` given back to `vlmctl train` reproduces the run.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from vlmctl.credentials import strip_secrets

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

    def model_config(self) -> Any:
        """The run's `ModelConfig`, typed (None when the manifest holds none)."""
        from vlmctl.config.model import ModelConfig

        return self._typed("model", ModelConfig)

    def collator_config(self) -> Any:
        """The run's `CollatorConfig`, typed (None when the manifest holds none)."""
        from vlmctl.config.collator import CollatorConfig

        return self._typed("collator", CollatorConfig)

    def _typed(self, key: str, model: Any) -> Any:
        """A saved config through its config model: what train validated, merge reads; one
        line naming the manifest's key when it no longer validates."""
        data = self.config(key)
        if not data:
            return None
        from pydantic import ValidationError

        try:
            return model.model_validate(data)
        except ValidationError as exc:
            from vlmctl.errors import Finding, VlmctlError

            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ()))
            raise VlmctlError(
                Finding(
                    "error",
                    f"{MANIFEST}: configs.{key}.{where}: {first.get('msg', 'invalid')}",
                    hint="the run folder was written by another vlmctl version, or edited",
                    code="manifest-config",
                )
            ) from None


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
