"""Conformance kits of REAL model files: real tokenizer/template/processor, tiny random weights.

Why: the tiny twins (`vlmctl.testing.tiny`) imitate each family's template and tokenizer; a
masking bug that only the released files show (llava-1.5's trailing space inside its
`{% generation %}` markers, OneVision's end-of-turn outside them, Phi-3-vision's string-only
template) passes there. A kit folder `tests/realkit/<family>/` holds byte copies of the
released small files and a `kit.yaml`:

- `family`, `hub_id`, `model_type`, `remote_code` (bool), `notes`;
- `tokenizer`: `files` (the real tokenizer files are in the folder), `shared:<name>` (the
  vocabulary files come from `<repo>/../shared/real-models/<name>`), or `synthetic` (the real
  vocabulary of `synthetic_base` plus `special_tokens` at their real ids, where the family's
  own tokenizer file is too big or not redistributable);
- optional `added_tokens` / `extra_special_tokens` (media tokens the checkpoint adds to a
  shared vocabulary), `tokenizer_settings`, `image_processor` (class, when the folder has no
  preprocessor config), `model: false` (no model class to build: processor checks only),
  `model_needs` (modules only the model's remote code imports: the model tests skip without
  them, the processor tests do not), and `shrink` overrides (`text`, `vision`,
  `image_processor`).

`assemble_kit` copies the real files (plus the tokenizer) into a folder that
`AutoProcessor.from_pretrained` loads exactly as it loads a user's download;
`build_kit_model` adds a tiny random model in the real config's shape (hidden sizes, layers and
vision depth shrunk; token ids, vocabulary, patch and image sizes kept).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmctl.testing.realkit_shrink import (
    _TEXT_SHRINK,
    _VISION_SHRINK,
    _make_consistent,
    _match_token_ids,
    _shrink,
    _text_key,
    check_tiny,
)

KIT_FILE = "kit.yaml"
_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


@dataclass
class Kit:
    """One kit folder's `kit.yaml`, parsed."""

    path: Path
    family: str
    hub_id: str
    model_type: str
    tokenizer: str
    remote_code: bool = False
    build_model: bool = True
    notes: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def shared_name(self) -> str | None:
        """The shared real-models folder the tokenizer comes from, if any."""
        spec = self.raw.get("synthetic_base") if self.tokenizer == "synthetic" else self.tokenizer
        if isinstance(spec, str) and spec.startswith("shared:"):
            return spec.split(":", 1)[1]
        return None


def repo_root() -> Path:
    """The checkout this module belongs to (kits live under its tests/)."""
    return Path(__file__).resolve().parents[2]


def shared_models_dir() -> Path:
    """`<repo>/../shared/real-models`: large real files kept outside the repository."""
    return repo_root().parent / "shared" / "real-models"


def kit_dirs(root: Path | None = None) -> list[Path]:
    """Every kit folder (one with a kit.yaml) under tests/realkit, sorted by name."""
    root = root or repo_root() / "tests" / "realkit"
    return sorted(p.parent for p in root.glob(f"*/{KIT_FILE}"))


def load_kit(path: str | Path) -> Kit:
    """Parse `<path>/kit.yaml` (safe YAML)."""
    from ruamel.yaml import YAML

    path = Path(path)
    raw = YAML(typ="safe").load((path / KIT_FILE).read_text(encoding="utf-8")) or {}
    return Kit(
        path=path,
        family=str(raw["family"]),
        hub_id=str(raw.get("hub_id", "")),
        model_type=str(raw.get("model_type", raw["family"])),
        tokenizer=str(raw.get("tokenizer", "files")),
        remote_code=bool(raw.get("remote_code", False)),
        build_model=bool(raw.get("model", True)),
        notes=str(raw.get("notes", "")),
        raw=dict(raw),
    )


def missing_reason(kit: Kit, model: bool = False) -> str | None:
    """Why this kit cannot be assembled here (shared folder or a needed module absent);
    with `model`, also the modules only its model code imports (`model_needs`)."""
    import importlib.util

    needs = list(kit.raw.get("needs") or [])
    if model:
        needs += list(kit.raw.get("model_needs") or [])
    for module in needs:
        if importlib.util.find_spec(str(module)) is None:
            return f"{kit.family}: needs the Python module {module!r}, not installed here"
    name = kit.shared_name
    if name and not (shared_models_dir() / name).is_dir():
        return f"{kit.family}: needs {shared_models_dir() / name} (shared real files absent)"
    return None


def assemble_kit(kit: Kit, out_dir: str | Path) -> Path:
    """Real files + tokenizer -> a folder `AutoProcessor.from_pretrained` loads (no model)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for f in kit.path.iterdir():
        if f.is_file() and f.name != KIT_FILE:
            shutil.copyfile(f, out / f.name)
    name = kit.shared_name
    if name:
        src = shared_models_dir() / name
        for fname in _TOKENIZER_FILES:
            if (src / fname).is_file() and not (out / fname).exists():
                shutil.copyfile(src / fname, out / fname)
    for old, new in (kit.raw.get("code_fixes") or {}).items():
        # A vendored copy that differs from the released file in a known way (SOURCES.md).
        for f in out.glob("*.py"):
            text = f.read_text(encoding="utf-8")
            if old in text:
                f.write_text(text.replace(old, new), encoding="utf-8")
    _finish_tokenizer(kit, out)
    _finish_processor(kit, out)
    return out


def _finish_tokenizer(kit: Kit, out: Path) -> None:
    """Apply the kit's token additions to the copied tokenizer files (JSON level, exact ids)."""
    raw = kit.raw
    specials = {int(k): str(v) for k, v in (raw.get("special_tokens") or {}).items()}
    added: list = list(raw.get("added_tokens") or [])
    extra: dict = dict(raw.get("extra_special_tokens") or {})
    settings: dict = dict(raw.get("tokenizer_settings") or {})
    if not (specials or added or extra or settings):
        return
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
    decoder = cfg.setdefault("added_tokens_decoder", {})
    tj_path = out / "tokenizer.json"
    tj = json.loads(tj_path.read_text()) if tj_path.exists() else None
    if tj is not None and kit.tokenizer == "synthetic":
        # The base vocabulary only: the base model's own added tokens above it go.
        base = len(tj["model"]["vocab"])
        tj["added_tokens"] = [t for t in tj["added_tokens"] if t["id"] < base]
        decoder = cfg["added_tokens_decoder"] = {k: v for k, v in decoder.items() if int(k) < base}
        for key in ("extra_special_tokens", "image_token", "processor_class", "chat_template"):
            cfg.pop(key, None)
        for f in ("added_tokens.json", "special_tokens_map.json"):
            (out / f).unlink(missing_ok=True)
    used = {int(k) for k in decoder}
    if tj is not None:
        used |= {t["id"] for t in tj["added_tokens"]} | set(tj["model"]["vocab"].values())
    nxt = max(used) + 1 if used else 0
    for content in added:
        specials.setdefault(nxt, content)
        nxt += 1
    for idx, content in sorted(specials.items()):
        entry = {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        decoder[str(idx)] = entry
        if tj is not None:
            tj["added_tokens"].append({"id": idx, **entry})
    if extra:
        cfg["extra_special_tokens"] = extra
    cfg.update(settings)
    template = out / "chat_template.json"
    if raw.get("template_in_tokenizer_config") and template.exists():
        # Where the release keeps it (older remote-code processors take no chat_template).
        cfg["chat_template"] = json.loads(template.read_text())["chat_template"]
        template.unlink()
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False))
    if tj is not None:
        tj_path.write_text(json.dumps(tj, ensure_ascii=False))


def _finish_processor(kit: Kit, out: Path) -> None:
    """Write what the kit's processor needs beyond the real files (class names, settings).

    Only where the release's own file is missing from the kit: `processor_class` and
    `processor_settings` go to processor_config.json; `image_processor` (a class name) with
    `image_processor_settings` builds preprocessor_config.json; `shrink.image_processor`
    overrides image processor values (kept small where a test must stay fast).
    """
    raw = kit.raw
    shrink = (raw.get("shrink") or {}).get("image_processor") or {}
    settings = {**(raw.get("image_processor_settings") or {}), **shrink}
    proc_cfg = out / "processor_config.json"
    proc_data = json.loads(proc_cfg.read_text()) if proc_cfg.exists() else {}
    if raw.get("processor_class") and "processor_class" not in proc_data:
        proc_data = {"processor_class": raw["processor_class"], **proc_data}
    for key, value in (raw.get("processor_settings") or {}).items():
        proc_data.setdefault(key, value)
    if proc_data and not kit.remote_code:
        proc_cfg.write_text(json.dumps(proc_data, indent=2))
    cls = raw.get("image_processor")
    pre = out / "preprocessor_config.json"
    if cls and not pre.exists():
        import transformers

        image_proc = getattr(transformers, cls)(**settings)
        image_proc.save_pretrained(str(out))
        data = json.loads(pre.read_text())
        if proc_data.get("processor_class"):
            data.setdefault("processor_class", proc_data["processor_class"])
        pre.write_text(json.dumps(data, indent=2))
    elif shrink and pre.exists():
        data = json.loads(pre.read_text())
        data.update(shrink)
        pre.write_text(json.dumps(data, indent=2))


def load_kit_processor(folder: str | Path, kit: Kit):
    """`AutoProcessor.from_pretrained` of an assembled kit, the way a user's model loads."""
    from transformers import AutoProcessor

    from vlmctl.models.internvl_chat import wrap_processor

    proc = AutoProcessor.from_pretrained(str(folder), trust_remote_code=kit.remote_code)
    return wrap_processor(proc, folder)


def load_kit_model(folder: str | Path, kit: Kit):
    """The kit's saved tiny model, loaded by the Auto class a user's checkpoint resolves to."""
    import transformers as tf

    from vlmctl.models.remote_compat import load_remote_model

    if kit.remote_code:  # with vlmctl's compatibility steps for 4.x-era remote code
        return load_remote_model(tf.AutoModelForCausalLM, folder)
    return tf.AutoModelForImageTextToText.from_pretrained(str(folder))


def _image_side(image_processor) -> int | None:
    """The square side the image processor crops/resizes to (None when it tiles freely)."""
    for attr in ("crop_size", "size"):
        size = getattr(image_processor, attr, None)
        if size is not None and not isinstance(size, Mapping) and hasattr(size, "height"):
            # transformers' SizeDict
            size = {k: getattr(size, k, None) for k in ("height", "width", "shortest_edge")}
        if isinstance(size, Mapping):
            side = size.get("height") or size.get("shortest_edge")
            if isinstance(side, int) and (size.get("width") in (None, side)):
                return side
    return None


def build_kit_model(kit: Kit, out_dir: str | Path, seed: int = 0) -> Path:
    """`assemble_kit` plus a tiny random model in the real config's shape (saved weights)."""
    import torch

    out = assemble_kit(kit, out_dir)
    if not kit.build_model:
        return out
    config, model_cls = kit_model_config(kit, out)
    check_tiny(config, model_cls, kit)
    torch.manual_seed(seed)
    if kit.remote_code:  # 4.x-era remote code: vlmctl's compatibility steps, as when loading
        from vlmctl.models.remote_compat import prepare_remote_model, remote_class

        remote_class(model_cls, out)
        model = prepare_remote_model(model_cls.from_config(config, trust_remote_code=True), out)
    else:
        model = model_cls.from_config(config)
    model.save_pretrained(str(out))
    return out


def kit_model_config(kit: Kit, out: Path):
    """The shrunk config of an assembled kit folder, and the Auto class that builds it."""
    import transformers as tf

    shrink = kit.raw.get("shrink") or {}
    cfg_path = out / "config.json"
    released = (kit.path / "config.json").is_file()  # the kit's own copy, not a saved build
    if released:
        data = json.loads(cfg_path.read_text())
    else:  # no released config in the kit: the config class's defaults (the reference model)
        data = tf.AutoConfig.for_model(kit.model_type).to_dict()
    text_key = _text_key(data)
    for key, sizes, part in (
        (text_key, _TEXT_SHRINK, "text"),
        ("vision_config", _VISION_SHRINK, "vision"),
    ):
        if key is None:  # a flat config (Qwen2.5-VL's release): the text keys are top-level
            data = _shrink(data, sizes, shrink.get(part) or {})
        elif isinstance(data.get(key), dict):
            data[key] = _shrink(data[key], sizes, shrink.get(part) or {})
    processor = load_kit_processor(out, kit)
    tok = getattr(processor, "tokenizer", processor)
    vision = data.get("vision_config")
    side = _image_side(getattr(processor, "image_processor", None))
    if not released and isinstance(vision, dict) and side and "image_size" in vision:
        # Defaults of a config class may describe another checkpoint's tower (224 px CLIP):
        # the vision tower takes what the kit's real image processor produces.
        if "image_size" not in (shrink.get("vision") or {}):
            vision["image_size"] = side
    _make_consistent(data, shrink)
    _match_token_ids(data, processor, tok)
    text = data.get(text_key) if text_key else data
    # A released config keeps its (padded) vocabulary; a config class's defaults carry the
    # reference checkpoint's (PaliGemma's 257k, Gemma 3's 262k), which the kit tokenizer does
    # not have: the logits of one step over 257k entries cost gigabytes.
    vocab = max(int(text.get("vocab_size") or 0), len(tok)) if released else len(tok)
    text["vocab_size"] = vocab
    if "vocab_size" in data:
        data["vocab_size"] = vocab
    for holder in (data, text):
        holder.pop("torch_dtype", None)
        holder.pop("dtype", None)
    if kit.remote_code:
        cfg_path.write_text(json.dumps(data, indent=2))
        config = tf.AutoConfig.from_pretrained(str(out), trust_remote_code=True)
        model_cls = tf.AutoModelForCausalLM
    else:
        config = tf.AutoConfig.for_model(
            **{**data, "model_type": data.get("model_type", kit.model_type)}
        )
        model_cls = tf.AutoModelForImageTextToText
    return config, model_cls
