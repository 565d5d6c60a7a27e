"""The steps of one worker process's training run, in order (`train_in_this_process`):

set up (config set + overrides, log filters, precision for this hardware, wandb without a
prompt) -> the model (the runtime assembly's model site and processor; device_map per process,
optional 4/8-bit) -> the splits and the ONE collator (+ a length column for group_by_length, or
packed bins) -> LoRA on the language model only, unless told otherwise -> SFTTrainer -> the
manifest and `configs/` -> train -> adapter (or weights), processor, the finished manifest
(rank 0 writes). `vlmctl.training.worker` is the process around them (arguments, status
folder, exit codes, signals).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmctl.errors import ConfigError
from vlmctl.proc import debug_enabled
from vlmctl.training.wandb_setup import prepare_wandb

IS_MAIN = int(os.environ.get("RANK", "0")) == 0  # rank 0 speaks and writes


def say(text: str) -> None:
    """A line for people (stderr; rank 0 only)."""
    if IS_MAIN:
        print(f"vlmctl: {text}", file=sys.stderr, flush=True)


def sft_kwargs(
    cs: Any,
    output_dir: Path,
    precision: Any,
    has_eval: bool,
    group_by_length: bool,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """SFTConfig kwargs: the user's train config plus what a VLM run with this collator needs.

    `hub_token` goes to the environment (`HF_TOKEN`, which huggingface_hub reads) instead:
    the Trainer pickles its arguments into `training_args.bin` of the run and every checkpoint.
    """
    from vlmctl.training.lengths import LENGTH_COLUMN

    env = os.environ if env is None else env
    kw = cs.train.to_sft_kwargs()
    token = kw.pop("hub_token", None)
    if token:
        env["HF_TOKEN"] = str(token)
    user = cs.train.extra_keys()
    kw["output_dir"] = str(output_dir)
    kw["remove_unused_columns"] = False  # the collator needs the raw columns
    kw["dataset_kwargs"] = {**(kw.get("dataset_kwargs") or {}), "skip_prepare_dataset": True}
    kw["bf16"], kw["fp16"] = precision.bf16, precision.fp16
    if precision.use_cpu:
        # Also what makes torchrun-launched CPU processes join one gloo group.
        kw["use_cpu"] = True
    kw["disable_tqdm"] = True  # StepLog prints readable lines instead
    if group_by_length:
        kw["length_column_name"] = LENGTH_COLUMN
    if "eval_strategy" not in user:
        kw["eval_strategy"] = "steps" if has_eval and cs.train.eval_steps else "no"
    if kw.get("eval_strategy", "no") == "no":
        kw.pop("eval_steps", None)
    kw.setdefault("include_num_input_tokens_seen", "non_padding")
    kw.setdefault("run_name", output_dir.name)
    if kw.get("activation_checkpointing"):
        # Non-reentrant: works with frozen inputs (LoRA) and DDP without find_unused tricks.
        kw.setdefault("activation_checkpointing_kwargs", {"use_reentrant": False})
    return kw


@dataclass
class _Run:
    """What the steps of one process's run hand on to each other."""

    args: argparse.Namespace
    cs: Any
    output_dir: Path
    world: int
    local_rank: int
    cuda: bool
    precision: Any
    offline_dir: Path | None
    t_start: float
    site: Any = None  # runtime.ModelSite
    processor: Any = None
    model: Any = None
    model_class: str = ""
    data: Any = None  # LoadedData
    collator: Any = None
    peft_cfg: Any = None
    trainer: Any = None
    manifest: dict = field(default_factory=dict)
    foreign: list[str] = field(default_factory=list)


def train_in_this_process(
    args: argparse.Namespace, overrides: list[str], stop: Any, status: Any
) -> int:
    """The training run of one launched process, step by step. Returns the exit code.

    `overrides`: the run's `--set` texts (the command line's, then the private file's);
    `status`: the worker's status folder (`worker.Status`), told the step reached."""
    from vlmctl.training import startup_profile as prof
    from vlmctl.training.callbacks import GracefulStop

    assert isinstance(stop, GracefulStop)
    r = _set_up(args, overrides)
    from trl import SFTConfig  # noqa: F401 - timed here, with the rest of TRL's import

    prof.mark("worker: import trl, vlmctl training modules")
    prof.wait_at_gate()  # started early: `vlmctl train` may still be checking the run
    _load_model(r)
    _load_data(r)
    _build_trainer(r, stop)
    _write_start_manifest(r)
    return _train_and_save(r, stop, status)


def _set_up(args: argparse.Namespace, overrides: list[str]) -> _Run:
    """Config set (+ overrides), log filters, precision for this hardware, wandb (never a
    prompt: offline without credentials)."""
    t_start = time.monotonic()
    from vlmctl.training import startup_profile as prof

    prof.mark_process_start("worker: process started (launcher before it)")
    prof.mark("worker: python + vlmctl worker module imported")
    from vlmctl.config.load import check_unchanged, load_config_set
    from vlmctl.training.callbacks import rank_env

    _rank, local_rank, world = rank_env()
    output_dir = Path(args.output_dir).resolve()
    if args.config_digest:
        check_unchanged(args.config_dir, args.config_digest)
    cs = load_config_set(args.config_dir, overrides)
    from vlmctl.quiet import quiet_bitsandbytes

    quiet_bitsandbytes(cs.model.quantization.enabled)  # before PEFT/transformers import it
    prof.mark("worker: config set loaded")

    import torch
    import transformers  # noqa: F401 - imported (and timed) with torch, before the rest

    if not debug_enabled():
        from vlmctl.quiet import quiet_process

        quiet_process(warnings=(FutureWarning, DeprecationWarning))
    cuda = torch.cuda.is_available()
    from vlmctl.training.model_prep import choose_precision

    precision = choose_precision(cs, cuda, cuda and torch.cuda.is_bf16_supported())
    for note in precision.notes:
        say(note)
    if world > 1:
        say(f"{world} processes ({'CUDA' if cuda else 'CPU, gloo'})")
    offline_dir = _set_up_wandb(cs, output_dir)
    return _Run(args, cs, output_dir, world, local_rank, cuda, precision, offline_dir, t_start)


def _set_up_wandb(cs: Any, output_dir: Path) -> Path | None:
    """wandb's offline folder when it logs offline (said once), else None."""
    offline_dir = prepare_wandb(cs.train.report_to_list(), output_dir)
    if "wandb" in cs.train.report_to_list() and (
        offline_dir or os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun")
    ):
        from vlmctl.quiet import quiet_wandb_offline_url

        quiet_wandb_offline_url()  # the offline folder is named once, above and at the end
    if offline_dir:
        say(
            f"wandb: no credentials found, logging offline under {offline_dir}/wandb "
            f"(upload later: wandb sync {offline_dir}/wandb/offline-run-*)"
        )
    return offline_dir


def _load_model(r: _Run) -> None:
    """The runtime assembly's model site and processor, then the model (device_map per
    process, optional 4/8-bit)."""
    from vlmctl import runtime
    from vlmctl.models.resolve import load_model
    from vlmctl.training import startup_profile as prof
    from vlmctl.training.model_prep import device_map_for

    cs = r.cs
    r.site = runtime.locate(cs)
    r.processor = runtime.load_processor(cs, r.site)
    prof.mark("worker: processor loaded")
    device_map, note = device_map_for(
        cs.model.loading_params.device_map,
        r.world,
        r.local_rank,
        r.cuda,
        cs.model.quantization.enabled,
    )
    if note:
        say(note)
    r.model = load_model(r.site.resolution, cs.model, r.site.path, device_map=device_map)
    r.model.config.use_cache = False
    r.model_class = type(r.model).__name__
    prof.mark("worker: model loaded")


def _load_data(r: _Run) -> None:
    """The splits (each row carrying its file index) and the ONE collator."""
    from vlmctl import runtime
    from vlmctl.collate import ROW_INDEX_KEY
    from vlmctl.training import startup_profile as prof

    cs = r.cs
    # Each row carries its file index: a bad row found mid-run is named like validate does.
    r.data = runtime.load_data(cs, seed=cs.train.seed, row_index_column=ROW_INDEX_KEY)
    say(f"data: {r.data.description}")
    model_type = r.site.model_type or getattr(r.model.config, "model_type", None)
    r.collator = runtime.build_collator(r.processor, cs.collator, r.data.media_dirs, model_type)
    prof.mark("worker: dataset loaded, collator built")


def _adapt_model(r: _Run) -> None:
    """k-bit preparation, then LoRA on the language model only (unless told otherwise), or a
    full fine-tune with the vision side frozen."""
    from vlmctl.training.model_prep import freeze_outside_language_model, lora_config

    cs = r.cs
    quantized = cs.model.quantization.enabled
    if quantized:
        from peft import prepare_model_for_kbit_training

        act_ckpt = bool(cs.train.to_sft_kwargs().get("activation_checkpointing"))
        r.model = prepare_model_for_kbit_training(
            r.model,
            use_gradient_checkpointing=act_ckpt,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    if cs.peft.enabled:
        r.peft_cfg = lora_config(cs, r.model)
        return
    if quantized:
        raise ConfigError(
            cs.finding(
                "error",
                "peft",
                "enabled",
                "a 4/8-bit model cannot be fully fine-tuned",
                hint="set peft.enabled: true (QLoRA) or turn quantization off",
            )
        )
    if cs.peft.exclude_vision_modules:
        frozen = freeze_outside_language_model(r.model)
        say(f"full fine-tune: vision tower and projector frozen ({frozen:,} parameters)")


def _build_trainer(r: _Run, stop: Any) -> None:
    """SFTTrainer over the collator's data (packed or grouped), with vlmctl's callbacks."""
    from transformers.trainer_callback import PrinterCallback
    from trl import SFTConfig

    from vlmctl.run_folder import manifest as mf
    from vlmctl.training import startup_profile as prof
    from vlmctl.training.callbacks import StepLog, WandbConfig
    from vlmctl.training.lengths import trainer_data
    from vlmctl.training.model_prep import trainable_summary
    from vlmctl.training.trainer import VlmctlTrainer

    cs, data = r.cs, r.data
    fed_collator, fed_train, fed_eval, group = trainer_data(
        cs, r.model, r.collator, data.train, data.eval, say
    )
    _adapt_model(r)
    kwargs = sft_kwargs(cs, r.output_dir, r.precision, data.eval is not None, group)
    callbacks = [stop, StepLog(_console())] + prof.callbacks()
    if "wandb" in cs.train.report_to_list():
        callbacks.append(WandbConfig(mf.resolved_configs(cs)))
    callbacks += _generation_eval(cs, data.eval, kwargs, r.collator, data, r.output_dir)
    r.trainer = VlmctlTrainer(
        model=r.model,
        args=SFTConfig(**kwargs),
        data_collator=fed_collator,  # packed: bins; the manifest still counts the rows
        train_dataset=fed_train,
        eval_dataset=fed_eval,
        processing_class=r.processor,
        peft_config=r.peft_cfg,
        callbacks=callbacks,
    )
    r.trainer.remove_callback(PrinterCallback)  # raw dicts; StepLog prints readable lines
    prof.mark("worker: SFTTrainer built (PEFT applied)")
    trainable, total = trainable_summary(r.trainer.model)
    what = "LoRA" if r.peft_cfg is not None else "full fine-tune"
    say(
        f"model: {r.site.resolution.model_id} ({r.model_class}), {what}: "
        f"{trainable:,} of {total:,} parameters train"
    )


def _write_start_manifest(r: _Run) -> None:
    """`vlmctl-run.json` (unfinished) and `configs/`, rank 0 only, before the first step."""
    from vlmctl import credentials
    from vlmctl.run_folder import manifest as mf
    from vlmctl.training import rundir
    from vlmctl.training import startup_profile as prof

    cs, data = r.cs, r.data
    r.manifest = {
        "vlmctl_version": mf.package_versions().get("vlmctl"),
        "model_name_or_path": r.site.path,
        "revision": cs.model.revision,
        # The concrete class loaded (merge reloads the base with it), not "AutoModel...".
        "model_class": r.model_class,
        # The family the collator was built for: merge's verify builds the same one.
        "model_type": r.collator.model_type,
        "processor_class": type(r.processor).__name__,
        "resolution": r.site.resolution.reason,
        "peft": r.peft_cfg is not None,
        "config_dir": str(cs.dir.resolve()),
        "configs": mf.resolved_configs(cs),
        "overrides": credentials.strip_secret_overrides(list(r.args.overrides)),
        "versions": mf.package_versions(),
        "dataset": data.description,
        "dataset_fingerprint": mf.dataset_fingerprint(data.train, data.eval),
        "git_commit": mf.git_commit(cs.dir),
        "world_size": r.world,
        "global_step": 0,
        "finished": False,
        "resumed_from": r.args.resume,
    }
    if r.trainer.is_world_process_zero():
        r.output_dir.mkdir(parents=True, exist_ok=True)
        # What was here before (a user's notes): never listed as this run's, never deleted.
        r.foreign = rundir.foreign_at_start(r.output_dir)
        mf.write_configs(r.output_dir, r.manifest["configs"])
        _write_manifest(r)
    prof.mark("worker: manifest written")


def _write_manifest(r: _Run) -> None:
    """The manifest as it stands, with the files this run wrote so far."""
    from vlmctl.run_folder import manifest as mf
    from vlmctl.training import rundir

    r.manifest["files"] = rundir.files_written(r.output_dir, r.foreign)
    mf.write_manifest(r.output_dir, r.manifest)


def _train_and_save(r: _Run, stop: Any, status: Any) -> int:
    """Train (or resume); on a signal: checkpoint kept, resume hint; else save the adapter (or
    weights) and the processor, and finish the manifest."""
    import torch

    from vlmctl.training import startup_profile as prof

    trainer, manifest, output_dir = r.trainer, r.manifest, r.output_dir
    cpu0 = time.process_time()
    result = trainer.train(resume_from_checkpoint=r.args.resume)
    # CPU seconds of the loop: a cost that stays comparable on a shared, loaded machine.
    manifest["train_cpu_seconds"] = round(time.process_time() - cpu0, 2)
    step = trainer.state.global_step
    manifest["global_step"] = step
    manifest["train_seconds"] = round(float(result.metrics.get("train_runtime", 0.0)), 2)
    manifest["wall_seconds"] = round(time.monotonic() - r.t_start, 2)
    if result.metrics.get("train_tokens_per_second") is not None:
        manifest["train_tokens_per_second"] = round(
            float(result.metrics["train_tokens_per_second"]), 1
        )
    if r.cuda:
        manifest["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    _say_collator_stats(r.collator, r.cs)
    if stop.signum is not None:
        if trainer.is_world_process_zero():
            _write_manifest(r)
        hint = r.args.resume_hint or (
            f"vlmctl train {r.cs.dir} --output-dir {output_dir} --resume auto"
        )
        say(
            f"stopped by signal {stop.signum} at step {step}; checkpoint saved in "
            f"{output_dir}/checkpoint-{step}. Resume with: {hint}"
        )
        status.info.update(global_step=step, stopped=True)
        return stop.exit_code

    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        r.processor.save_pretrained(str(output_dir))
        manifest["finished"] = True
        prof.mark("worker: adapter and processor saved")
        # Every step of the run, also those before a resume (the Trainer's covers this call's).
        manifest["train_loss"] = trainer.run_mean_loss()
        _write_manifest(r)
        what = "adapter" if r.peft_cfg is not None else "model"
        say(f"done: {what} and processor saved in {output_dir}")
        if r.peft_cfg is not None:
            say(f"next: vlmctl merge {output_dir}")
        if r.offline_dir:
            say(f"wandb: upload this run with: wandb sync {r.offline_dir}/wandb/offline-run-*")
        prof.report()
    status.info.update(global_step=step, stopped=False)
    return 0


def _generation_eval(cs, eval_ds, kwargs, collator, data, output_dir) -> list:
    """[the GenerationEval callback] when asked for and possible; else [] (said why)."""
    if cs.train.generation_eval is None:
        return []
    if eval_ds is None or kwargs.get("eval_strategy", "no") == "no":
        say("generation_eval: skipped (no eval split or no evaluation: set eval_steps)")
        return []
    from vlmctl.training.generation_eval import GenerationEval

    return [
        GenerationEval(
            collator,
            data.eval,
            cs.train.generation_eval,
            output_dir,
            data.media_dirs,
            collator.model_type,
            say=say,
        )
    ]


def _say_collator_stats(collator, cs) -> None:
    """Which video decoders ran, and how many rows the collator dropped (and why)."""
    decoders = {
        k.removeprefix("video_decoder_"): v
        for k, v in collator.stats.items()
        if k.startswith("video_decoder_")
    }
    if decoders:
        say(
            f"video decoded with {', '.join(f'{k} ({v} clips)' for k, v in decoders.items())}"
            f" (library: {cs.collator.video_processing.frame_extraction.library})"
        )
    if collator.stats.get("dropped"):
        say(f"collator dropped {collator.stats['dropped']} rows ({collator.drop_summary()})")


def _console():
    if not IS_MAIN:
        return None
    from rich.console import Console

    return Console(stderr=True)
