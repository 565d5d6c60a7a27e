"""vlmctl's SFTTrainer: exact resume with length grouping, whole-run loss, atomic checkpoints.

Imported by the worker only (it imports TRL). Three changes to the stock trainer, each because
a preempted run must end exactly where an uninterrupted one does:

- Length grouping (`train_sampling_strategy: group_by_length`, the seed's `group_by_length:
  true`): transformers' `LengthGroupedSampler` shuffles with the global torch RNG when an epoch
  starts. On resume in the middle of epoch e that RNG is the freshly seeded one, not the one
  the uninterrupted run had after e epochs of dropout, so the rest of the epoch came in another
  order. Here the order of epoch e is drawn from its own generator seeded with
  `(data_seed or seed) + e`: the same on every rank, in every run, whatever ran before; the
  Trainer's batch skipping (`ignore_data_skip: false`) then lands on the same position.
- The mean training loss of a resumed run covers every step, not only the resumed ones: the
  sum of the per-step losses so far travels in each checkpoint's `trainer_state.json`
  (a stateful callback).
- A checkpoint is written under `.vlmctl-staging/checkpoint-N` and renamed into place when
  every file (every rank's) is there, so a kill during a save never leaves a `checkpoint-N`
  folder that is not a whole checkpoint. `vlmctl train` removes a leftover staging folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_callback import ExportableState, TrainerCallback
from transformers.trainer_pt_utils import LengthGroupedSampler, get_length_grouped_indices
from trl import SFTTrainer

from vlmctl.training.rundir import STAGING

_TEST_KILL_IN_SAVE = "VLMCTL_TEST_KILL_IN_SAVE"


class EpochLengthGroupedSampler(LengthGroupedSampler):
    """`LengthGroupedSampler` whose order depends only on (seed, epoch), not on the global RNG."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by the Trainer (and vlmctl's trainer) before each epoch's iteration."""
        self.epoch = int(epoch)

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        return iter(get_length_grouped_indices(self.lengths, self.batch_size, generator=g))


class LossTotal(TrainerCallback, ExportableState):
    """Carries the sum of per-step losses of the steps before this `train()` call.

    Its state is saved in every checkpoint's trainer_state.json and restored on resume, so the
    run's mean loss covers the steps trained before the stop too.
    """

    def __init__(self, loss_sum: float = 0.0, steps: int = 0) -> None:
        self.loss_sum = float(loss_sum)
        self.steps = int(steps)

    def state(self) -> dict:
        return {"args": {"loss_sum": self.loss_sum, "steps": self.steps}, "attributes": {}}


class VlmctlTrainer(SFTTrainer):
    """SFTTrainer with a resumable length-grouped order, whole-run loss, atomic checkpoints."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.loss_total = LossTotal()
        callbacks = list(kwargs.pop("callbacks", None) or []) + [self.loss_total]
        super().__init__(*args, callbacks=callbacks, **kwargs)
        self._length_sampler: EpochLengthGroupedSampler | None = None

    # --- data order ---------------------------------------------------------------------------

    def _get_train_sampler(self, train_dataset=None):
        ds = self.train_dataset if train_dataset is None else train_dataset
        column = self.args.length_column_name
        if (
            self.args.train_sampling_strategy == "group_by_length"
            and ds is not None
            and column in getattr(ds, "column_names", ())
        ):
            seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
            self._length_sampler = EpochLengthGroupedSampler(
                self.args.train_batch_size * self.args.gradient_accumulation_steps,
                lengths=list(ds[column]),
                seed=seed,
            )
            return self._length_sampler
        return super()._get_train_sampler(train_dataset)

    def _run_epoch(self, *args: Any, **kwargs: Any):
        # accelerate's set_epoch does not reach a sampler under a skipped, sharded loader
        # (resume on several processes): set it here, before the epoch's iterator is made.
        epoch = kwargs.get("epoch", args[1] if len(args) > 1 else None)
        if self._length_sampler is not None and epoch is not None:
            self._length_sampler.set_epoch(epoch)
        return super()._run_epoch(*args, **kwargs)

    # --- packed batches (vlmctl/packing.py) ------------------------------------------------

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from vlmctl.packing import SEQ_LENS_KEY

        if SEQ_LENS_KEY not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        from vlmctl.packing import model_inputs

        inputs = model_inputs(model, inputs)  # M-RoPE positions per row, where the model has them
        out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        pos = inputs["position_ids"]
        if self.model.training and pos.dim() == 3:
            # TRL counts tokens as position_ids.size(1): 1 for the (4, 1, T) M-RoPE layout.
            missed = torch.tensor(pos.shape[-1] - pos.shape[1], device=pos.device)
            self._total_train_tokens += int(self.accelerator.gather_for_metrics(missed).sum())
            self._metrics["train"]["num_tokens"] = [self._total_train_tokens]
        return out

    # --- loss over the whole run --------------------------------------------------------------

    def _load_callback_state(self) -> None:
        super()._load_callback_state()
        # restore_callback_states_from_checkpoint may have swapped in a new instance.
        for cb in self.callback_handler.callbacks:
            if isinstance(cb, LossTotal):
                self.loss_total = cb
        saved = (self.state.stateful_callbacks or {}).get("LossTotal")
        if isinstance(saved, list):
            saved = saved[-1] if saved else None
        args = (saved or {}).get("args") or {}
        self.loss_total.loss_sum = float(args.get("loss_sum", 0.0))
        self.loss_total.steps = int(args.get("steps", 0))

    def _loss_so_far(self) -> tuple[float, int]:
        """(sum of per-step losses, steps) from step 0 to now, as the Trainer averages them."""
        this_call = self._total_loss_scalar + float(self._tr_loss.item())
        steps = self.state.global_step - self._initial_global_step
        return self.loss_total.loss_sum + this_call, self.loss_total.steps + steps

    def run_mean_loss(self) -> float | None:
        """Mean loss of every step of the run (after `train()`), resumed or not."""
        total, steps = self.loss_total.loss_sum, self.loss_total.steps
        steps_now = self.state.global_step - self._initial_global_step
        total += self._total_loss_scalar  # _finalize_training drained _tr_loss into it
        steps += steps_now
        return total / steps if steps else None

    # --- atomic checkpoints -------------------------------------------------------------------

    def _get_output_dir(self, trial):
        run_dir = super()._get_output_dir(trial)
        if getattr(self, "_staging", False):
            return os.path.join(run_dir, STAGING)
        return run_dir

    def _save_rng_state(self, output_dir: str) -> None:
        super()._save_rng_state(output_dir)
        if os.environ.get(_TEST_KILL_IN_SAVE):  # tests: a kill -9 half-way through a save
            import signal

            os.kill(os.getpid(), signal.SIGKILL)

    def _save_checkpoint(self, model, trial) -> None:
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        run_dir = Path(super()._get_output_dir(trial))
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged = run_dir / STAGING / name
        final = run_dir / name
        # What the checkpoint's LossTotal state says: the loss of every step up to this one.
        before = (self.loss_total.loss_sum, self.loss_total.steps)
        self.loss_total.loss_sum, self.loss_total.steps = self._loss_so_far()
        self.state.stateful_callbacks.setdefault("LossTotal", {})  # checkpoints of older runs
        self._staging = True
        try:
            if self.args.should_save and staged.exists():
                shutil.rmtree(staged)
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = False
            self.loss_total.loss_sum, self.loss_total.steps = before
        self.accelerator.wait_for_everyone()  # every rank's files are in the staged folder
        if self.args.should_save:
            if self.state.best_global_step:  # the Trainer looked for it in the staging folder
                best = run_dir / f"{PREFIX_CHECKPOINT_DIR}-{self.state.best_global_step}"
                if best == final or best.exists():
                    self.state.best_model_checkpoint = str(best)
            old = run_dir / STAGING / f"old-{name}"
            if final.exists():
                final.rename(old)
            staged.rename(final)
            shutil.rmtree(old, ignore_errors=True)
            try:
                (run_dir / STAGING).rmdir()
            except OSError:
                pass
            from transformers.trainer_utils import rotate_checkpoints

            rotate_checkpoints(
                output_dir=str(run_dir),
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()
