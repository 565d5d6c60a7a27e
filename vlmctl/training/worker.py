"""What `accelerate launch` runs in every process: config set -> model + PEFT -> SFTTrainer.

    python -m vlmctl.training.worker CONFIG_DIR --output-dir D [--set k=v ...]
        [--resume CHECKPOINT] [--status-dir S]

`vlmctl train` builds this command line (it has already checked the config set and the output
folder). Steps, in order: load the config set (+ overrides) -> pick precision for this hardware
-> wandb never prompts (offline without credentials) -> processor, model (device_map per
process, optional 4/8-bit) -> dataset splits and the project's collator (+ a length column for
group_by_length) -> LoRA on the language model only, unless told otherwise -> SFTTrainer ->
train -> adapter (or weights), processor, `vlmctl-run.json`, `configs/` (rank 0 only).

Exit codes: 0 done; 1 a user error (one line per finding) or a crash; 143 / 130 stopped by
SIGTERM / SIGINT after saving a checkpoint (resume with `vlmctl train DIR --resume auto`).
The code is also written to `<status-dir>/exit.json`, because accelerate's launchers replace
every non-zero code with 1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from vlmctl.errors import ConfigError, VlmctlError
from vlmctl.proc import debug_enabled
from vlmctl.training.wandb_setup import prepare_wandb, wandb_has_credentials  # noqa: F401

_MAIN = int(os.environ.get("RANK", "0")) == 0


def say(text: str) -> None:
    """A line for people (stderr; rank 0 only)."""
    if _MAIN:
        print(f"vlmctl: {text}", file=sys.stderr, flush=True)


# --- arguments and status ----------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The worker's own flags, as `vlmctl train` builds them into the accelerate argv."""
    p = argparse.ArgumentParser(prog="vlmctl.training.worker")
    p.add_argument("config_dir")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--resume", default=None, help="checkpoint folder to resume from")
    p.add_argument("--status-dir", default=None)
    p.add_argument("--resume-hint", default=None, help="command that resumes this run")
    p.add_argument(
        "--secret-overrides", default=None, help="private JSON file of credential overrides"
    )
    return p.parse_args(argv)


def worker_overrides(args: argparse.Namespace) -> list[str]:
    """The `--set` overrides of the run: the command line's, then the private file's."""
    out = list(args.overrides)
    if args.secret_overrides:
        out += json.loads(Path(args.secret_overrides).read_text(encoding="utf-8"))
    return out


class Status:
    """The status folder shared with `vlmctl train`: worker pids, and the exit code."""

    def __init__(self, folder: str | None) -> None:
        self.folder = Path(folder) if folder else None
        self.info: dict[str, Any] = {}

    def write_rank(self, rank: int, local_rank: int, world: int) -> None:
        """Record this process (pid, host, rank) so `vlmctl train` can signal every worker."""
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        info = {
            "pid": os.getpid(),
            "rank": rank,
            "local_rank": local_rank,
            "world_size": world,
            "host": socket.gethostname(),
        }
        (self.folder / f"rank{rank}.json").write_text(json.dumps(info))

    def write_exit(self, code: int, **extra: Any) -> None:
        """Main process only: the exit code and details, written atomically for `vlmctl train`."""
        if self.folder is None or not _MAIN:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "exit.json.tmp"
        tmp.write_text(json.dumps({"exit_code": code, **extra}, default=str))
        tmp.replace(self.folder / "exit.json")


# --- the run -------------------------------------------------------------------------------------


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


def run(args: argparse.Namespace, stop: Any, status: Status) -> int:
    """The training run of one process. Returns the exit code."""
    t_start = time.monotonic()
    from vlmctl.training import startup_profile as prof

    prof.mark_process_start("worker: process started (launcher before it)")
    prof.mark("worker: python + vlmctl worker module imported")
    from vlmctl.config.load import load_config_set
    from vlmctl.training.callbacks import rank_env

    rank, local_rank, world = rank_env()
    output_dir = Path(args.output_dir).resolve()
    cs = load_config_set(args.config_dir, worker_overrides(args))
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

    from trl import SFTConfig

    from vlmctl import runtime
    from vlmctl.models.resolve import load_model
    from vlmctl.training import manifest as mf
    from vlmctl.training.callbacks import GracefulStop, StepLog, WandbConfig
    from vlmctl.training.lengths import trainer_data
    from vlmctl.training.model_prep import (
        device_map_for,
        freeze_outside_language_model,
        lora_config,
        trainable_summary,
    )
    from vlmctl.training.trainer import VlmctlTrainer

    assert isinstance(stop, GracefulStop)
    prof.mark("worker: import trl, vlmctl training modules")
    prof.wait_at_gate()  # started early: `vlmctl train` may still be checking the run
    site = runtime.locate(cs)
    res, model_path = site.resolution, site.path
    processor = runtime.load_processor(cs, site)
    prof.mark("worker: processor loaded")
    quantized = cs.model.quantization.enabled
    device_map, note = device_map_for(
        cs.model.loading_params.device_map, world, local_rank, cuda, quantized
    )
    if note:
        say(note)
    model = load_model(res, cs.model, model_path, device_map=device_map)
    model.config.use_cache = False
    model_class = type(model).__name__
    prof.mark("worker: model loaded")

    from vlmctl.collate import ROW_INDEX_KEY

    # Each row carries its file index: a bad row found mid-run is named like validate does.
    data = runtime.load_data(cs, seed=cs.train.seed, row_index_column=ROW_INDEX_KEY)
    say(f"data: {data.description}")
    model_type = site.model_type or getattr(model.config, "model_type", None)
    collator = runtime.build_collator(processor, cs.collator, data.media_dirs, model_type)
    train_ds, eval_ds = data.train, data.eval
    prof.mark("worker: dataset loaded, collator built")
    fed_collator, fed_train, fed_eval, group = trainer_data(
        cs, model, collator, train_ds, eval_ds, say
    )

    act_ckpt = bool(cs.train.to_sft_kwargs().get("activation_checkpointing"))
    if quantized:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=act_ckpt,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    peft_cfg = None
    if cs.peft.enabled:
        peft_cfg = lora_config(cs, model)
    else:
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
            frozen = freeze_outside_language_model(model)
            say(f"full fine-tune: vision tower and projector frozen ({frozen:,} parameters)")

    kwargs = sft_kwargs(cs, output_dir, precision, eval_ds is not None, group)
    configs = mf.resolved_configs(cs)
    stop_log = StepLog(_console())
    callbacks = [stop, stop_log]
    callbacks += prof.callbacks()
    if "wandb" in cs.train.report_to_list():
        callbacks.append(WandbConfig(configs))
    callbacks += _generation_eval(cs, eval_ds, kwargs, collator, data, output_dir, model)
    trainer = VlmctlTrainer(
        model=model,
        args=SFTConfig(**kwargs),
        data_collator=fed_collator,  # packed: bins; the manifest still counts the rows
        train_dataset=fed_train,
        eval_dataset=fed_eval,
        processing_class=processor,
        peft_config=peft_cfg,
        callbacks=callbacks,
    )
    from transformers.trainer_callback import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # raw dicts; StepLog prints readable lines
    prof.mark("worker: SFTTrainer built (PEFT applied)")
    trainable, total = trainable_summary(trainer.model)
    what = "LoRA" if peft_cfg is not None else "full fine-tune"
    say(
        f"model: {res.model_id} ({model_class}), {what}: {trainable:,} of {total:,} "
        f"parameters train"
    )

    manifest = {
        "vlmctl_version": mf.package_versions().get("vlmctl"),
        "model_name_or_path": model_path,
        "revision": cs.model.revision,
        # The concrete class loaded (merge reloads the base with it), not "AutoModel...".
        "model_class": model_class,
        "model_type": model_type,
        "processor_class": type(processor).__name__,
        "resolution": res.reason,
        "peft": peft_cfg is not None,
        "config_dir": str(cs.dir.resolve()),
        "configs": configs,
        "overrides": mf.strip_secret_overrides(list(args.overrides)),
        "versions": mf.package_versions(),
        "dataset": data.description,
        "dataset_fingerprint": mf.dataset_fingerprint(train_ds, eval_ds),
        "git_commit": mf.git_commit(cs.dir),
        "world_size": world,
        "global_step": 0,
        "finished": False,
        "resumed_from": args.resume,
    }
    from vlmctl.training import rundir

    foreign: list[str] = []
    if trainer.is_world_process_zero():
        output_dir.mkdir(parents=True, exist_ok=True)
        # What was here before (a user's notes): never listed as this run's, never deleted.
        foreign = rundir.foreign_at_start(output_dir)
        mf.write_configs(output_dir, configs)
        manifest["files"] = rundir.files_written(output_dir, foreign)
        mf.write_manifest(output_dir, manifest)

    prof.mark("worker: manifest written")
    cpu0 = time.process_time()
    result = trainer.train(resume_from_checkpoint=args.resume)
    # CPU seconds of the loop: a cost that stays comparable on a shared, loaded machine.
    manifest["train_cpu_seconds"] = round(time.process_time() - cpu0, 2)
    step = trainer.state.global_step
    manifest["global_step"] = step
    manifest["train_seconds"] = round(float(result.metrics.get("train_runtime", 0.0)), 2)
    manifest["wall_seconds"] = round(time.monotonic() - t_start, 2)
    if result.metrics.get("train_tokens_per_second") is not None:
        manifest["train_tokens_per_second"] = round(
            float(result.metrics["train_tokens_per_second"]), 1
        )
    if cuda:
        manifest["peak_gpu_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 3)
    _say_collator_stats(collator, cs)
    if stop.signum is not None:
        if trainer.is_world_process_zero():
            manifest["files"] = rundir.files_written(output_dir, foreign)
            mf.write_manifest(output_dir, manifest)
        hint = args.resume_hint or f"vlmctl train {cs.dir} --output-dir {output_dir} --resume auto"
        say(
            f"stopped by signal {stop.signum} at step {step}; checkpoint saved in "
            f"{output_dir}/checkpoint-{step}. Resume with: {hint}"
        )
        status.info.update(global_step=step, stopped=True)
        return stop.exit_code

    trainer.save_model(str(output_dir))
    if trainer.is_world_process_zero():
        processor.save_pretrained(str(output_dir))
        manifest["finished"] = True
        prof.mark("worker: adapter and processor saved")
        # Every step of the run, also those before a resume (the Trainer's covers this call's).
        manifest["train_loss"] = trainer.run_mean_loss()
        manifest["files"] = rundir.files_written(output_dir, foreign)
        mf.write_manifest(output_dir, manifest)
        what = "adapter" if peft_cfg is not None else "model"
        say(f"done: {what} and processor saved in {output_dir}")
        if peft_cfg is not None:
            say(f"next: vlmctl merge {output_dir}")
        if offline_dir:
            say(f"wandb: upload this run with: wandb sync {offline_dir}/wandb/offline-run-*")
        prof.report()
    status.info.update(global_step=step, stopped=False)
    return 0


def _generation_eval(cs, eval_ds, kwargs, collator, data, output_dir, model) -> list:
    """[the GenerationEval callback] when asked for and possible; else [] (said why)."""
    if cs.train.generation_eval is None:
        return []
    if eval_ds is None or kwargs.get("eval_strategy", "no") == "no":
        say("generation_eval: skipped (no eval split or no evaluation: set eval_steps)")
        return []
    from vlmctl.evaluation.callback import GenerationEval

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
    if not _MAIN:
        return None
    from rich.console import Console

    return Console(stderr=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point of each launched process."""
    from vlmctl.training.callbacks import GracefulStop, rank_env

    _die_with_vlmctl()
    args = parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    rank, local_rank, world = rank_env()
    status = Status(args.status_dir)
    status.write_rank(rank, local_rank, world)
    stop = GracefulStop()
    stop.install()
    try:
        code = run(args, stop, status)
    except VlmctlError as exc:
        if _MAIN:
            for f in exc.findings:
                print(f"{f.severity}: {f.one_line()}", file=sys.stderr, flush=True)
        code = 1
    except SystemExit as exc:  # a signal before training started, or a second signal
        code = exc.code if isinstance(exc.code, int) else 1
        say(f"stopped (exit {code}) before a checkpoint could be saved")
    except Exception as exc:  # noqa: BLE001 - the boundary of the process
        if debug_enabled() or not _MAIN:
            traceback.print_exc()
        else:
            first = (str(exc).strip().splitlines() or [""])[0]
            print(f"error: {type(exc).__name__}: {first}", file=sys.stderr)
            print("set VLMCTL_DEBUG=1 for the traceback", file=sys.stderr, flush=True)
        code = 1
    status.write_exit(code, **status.info)
    if stop.stopped_at is not None:
        _leave_together()
    return code


def _die_with_vlmctl() -> None:
    """Stop with the launcher (kernel parent-death signal), and at once if `vlmctl train`
    is already gone (killed while this process started)."""
    from vlmctl.training.launch import PARENT_ENV, die_with_parent

    die_with_parent()
    vlmctl_pid = os.environ.get(PARENT_ENV, "")
    if vlmctl_pid.isdigit():
        from vlmctl.proc import pid_alive

        if not pid_alive(int(vlmctl_pid)):
            os._exit(137)


def _leave_together() -> None:
    """Wait for every rank after a graceful stop (no-op in a single process).

    Why: a non-zero exit makes the launcher's agent kill the other ranks at once. Every rank
    stopped at the same step (the stop flag is all-reduced), so each reaches this barrier;
    without it, a rank that leaves first can kill rank 0 before it has written the manifest
    and said where the checkpoint is.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


if __name__ == "__main__":
    from vlmctl.training.startup_profile import exit_now

    exit_now(main())
