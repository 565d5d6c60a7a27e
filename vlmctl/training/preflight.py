"""`vlmctl train`'s checks before a worker may run: a dataset and a model to train, remote
code only when trusted, every row's media readable.

Why apart from parent.py: these are the cheap checks that make a run that cannot start cost
seconds, not a worker's start-up; `parent.train` calls them while the worker (started early)
imports its libraries. No heavy imports at module level.
"""

from __future__ import annotations

from pathlib import Path

from vlmctl.errors import Finding, VlmctlError
from vlmctl.runtime import hub_usable, in_hub_cache


def check_ready_to_train(cs) -> None:
    """What `validate` may only warn about, `train` needs: a dataset and a reachable model.

    Checked before the launch, so a run that cannot start costs seconds, not a worker start-up
    (imports, wandb, a process group) that ends in a library traceback.
    """
    from vlmctl.errors import ConfigError, DataError

    problems = []
    if not cs.collator.dataset.path:
        problems.append(
            cs.finding(
                "error",
                "collator",
                "dataset.path",
                "dataset.path is not set: there is nothing to train on",
                hint="set dataset.path to a csv/json/jsonl/parquet file, a folder or a hub id, "
                "or pass --dataset",
            )
        )
    else:
        from vlmctl.data.sources import resolve_source

        try:
            resolve_source(cs.collator, cs.dir)
        except DataError as exc:
            problems.extend(exc.findings)
    mid = cs.model.model_name_or_path
    if not mid:
        problems.append(
            cs.finding(
                "error",
                "model",
                "model_name_or_path",
                "model_name_or_path is not set: no model to train",
                hint="set it in vlm_model_config.yaml or pass --model",
            )
        )
    elif not Path(cs.model_location()).exists() and not in_hub_cache(str(mid), cs.model.revision):
        if not hub_usable():
            problems.append(
                cs.finding(
                    "error",
                    "model",
                    "model_name_or_path",
                    f"model {mid!r} is not a local folder (relative to the config folder), not "
                    "in the Hugging Face cache, and the hub is unreachable (offline)",
                    hint="download it once with network access (`hf download ID`), or point "
                    "model_name_or_path at a local folder",
                )
            )
    if problems:
        raise ConfigError(problems)


def _remote_code_finding(cs) -> Finding | None:
    """A model that needs its own code (auto_map, type unknown to transformers) while
    trust_remote_code is off: the worker would fail after start-up; say it now."""
    from vlmctl.models.resolve import resolve_model
    from vlmctl.runtime import read_config

    try:
        res = resolve_model(cs.model)
    except VlmctlError as exc:
        return exc.findings[0]
    if res.source == "remote_code" or res.trust_remote_code:
        return None
    loc = Path(cs.model_location())
    # An unreadable config is the loader's to report, in its own words.
    config = read_config(loc if loc.is_dir() else str(res.model_id), cs.model.revision) or {}
    if not config.get("auto_map"):
        return None
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    if config.get("model_type") in CONFIG_MAPPING_NAMES:
        return None  # native in transformers: its auto_map is not needed
    return cs.finding(
        "error",
        "model",
        "model_name_or_path",
        f"model {cs.model.model_name_or_path!r} ships its own Python code (auto_map, model_type "
        f"{config.get('model_type')!r} unknown to transformers) and trust_remote_code is off",
        hint="set loading_params.trust_remote_code: true (and processor_params) if you trust "
        "that code, or pick a transformers-native model",
        code="remote-code-off",
    )


def preflight(cs) -> None:
    """What `validate` can find cheaply, checked before a worker starts (and before any
    folder is made): remote code without trust, and every row's media (reusing validate's
    row checks without the processor). Raises with every problem, each with its row."""
    from vlmctl.checks.media_pass import check_media
    from vlmctl.errors import ConfigError, DataError

    remote = _remote_code_finding(cs)
    if remote is not None:
        raise ConfigError([remote])
    problems = check_media(cs)
    if problems:
        raise DataError(problems)
