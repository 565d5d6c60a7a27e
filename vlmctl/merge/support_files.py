"""The non-weight files of a merged model: processor, chat template, generation config, remote
code and config.json (with the output dtype)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from vlmctl.merge.plan import MergePlan
from vlmctl.run_folder.adapter import read_json

# Files that make up a processor (tokenizer, image/video processor, chat template).
PROCESSOR_FILES = (
    "processor_config.json",
    "preprocessor_config.json",
    "video_preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
PROCESSOR_DIRS = ("additional_chat_templates",)


def copy_support_files(plan: MergePlan, dest: Path, *, with_config: bool) -> None:
    """Processor (the training one when the run saved it), chat template, generation config,
    remote code; with `with_config`, also the base's config.json with the output dtype."""
    base = plan.base_dir
    for src in sorted(base.glob("*.py")):
        shutil.copy2(src, dest / src.name)
    if (base / "generation_config.json").is_file():
        shutil.copy2(base / "generation_config.json", dest / "generation_config.json")
    if with_config:
        cfg = read_json(base / "config.json")
        cfg.pop("torch_dtype", None)
        cfg["dtype"] = plan.dtype
        if isinstance(cfg.get("text_config"), dict) and "dtype" in cfg["text_config"]:
            cfg["text_config"]["dtype"] = plan.dtype
        (dest / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")

    if plan.processor_dir is not None:
        _copy_processor_files(plan.processor_dir, dest)
        return
    model_cfg = plan.manifest.model_config() if plan.manifest else None
    params = model_cfg.processor_params.model_dump() if model_cfg is not None else {}
    params.pop("trust_remote_code", None)
    if params:
        # No processor saved in the run, but training set processor options: rebuild it so.
        from transformers import AutoProcessor

        proc = AutoProcessor.from_pretrained(
            str(base), trust_remote_code=plan.trust_remote_code, **params
        )
        proc.save_pretrained(str(dest))
        plan.notes.append("processor rebuilt from the base with the run's processor_params")
    else:
        _copy_processor_files(base, dest)
        plan.notes.append("run folder has no processor files: copied the base's processor")


def _copy_processor_files(src: Path, dest: Path) -> None:
    for name in PROCESSOR_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    for name in PROCESSOR_DIRS:
        if (src / name).is_dir():
            shutil.copytree(src / name, dest / name, dirs_exist_ok=True)
    for src_py in sorted(src.glob("processing_*.py")):
        shutil.copy2(src_py, dest / src_py.name)
