"""`vlmctl-run.json` and `configs/`: what a run was, enough to reproduce it, and no secrets.

`merge` reads the manifest (base model, classes, configs); people read it to know which data,
code and library versions made an adapter. Any key that looks like a credential (`hub_token`,
`api_key`, a processor's `token`...) is dropped before anything is written, wherever it sits.
"""

from __future__ import annotations

import json
import re
import subprocess
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
_SECRET_PARTS = {
    "token",
    "key",
    "secret",
    "password",
    "passwd",
    "apikey",
    "credential",
    "credentials",
    "auth",
}
# Schema keys that contain a secret-looking word but are not secrets.
_NOT_SECRET = {
    "role_key",
    "content_key",
    "pad_token",
    "eos_token",
    "bos_token",
    "unk_token",
    "image_token",
    "video_token",
}


def is_secret_key(name: str) -> bool:
    """A key named like a credential: *token*, *key*, *secret*, *password* (word parts)."""
    low = str(name).lower()
    if low in _NOT_SECRET:
        return False
    parts = set(re.split(r"[_\-.\s]+", low))
    return bool(parts & _SECRET_PARTS) or any(w in low for w in ("secret", "password", "apikey"))


def strip_secrets(value: Any) -> Any:
    """A copy of a JSON-like value with every credential-named key removed."""
    if isinstance(value, dict):
        return {k: strip_secrets(v) for k, v in value.items() if not is_secret_key(k)}
    if isinstance(value, (list, tuple)):
        return [strip_secrets(v) for v in value]
    return value


def strip_secret_overrides(overrides: list[str]) -> list[str]:
    """`--set` texts, without those that set a credential-named key."""
    out = []
    for text in overrides:
        key = text.partition("=")[0]
        if any(is_secret_key(part) for part in key.split(".")):
            continue
        out.append(text)
    return out


def resolved_configs(cs: Any) -> dict[str, dict]:
    """The four configs as plain dicts, credentials removed."""
    return {
        key: strip_secrets(getattr(cs, key).model_dump(mode="json"))
        for key in ("model", "collator", "train", "peft")
    }


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


def write_manifest(output_dir: Path, data: dict) -> Path:
    """Write `vlmctl-run.json` atomically (a reader never sees half a file)."""
    path = output_dir / MANIFEST
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(strip_secrets(data), indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path
