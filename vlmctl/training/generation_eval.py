"""Generation metrics during training (`train_config.yaml` `generation_eval:`, opt-in).

At every evaluation (`eval_steps`) the main process answers a fixed sample (the first `rows`
eval rows) with the model being trained, through the training collator's prompt path, and
records the same metrics as `vlmctl eval`: one JSON line per evaluation in
`<output_dir>/generation-eval.jsonl` (metrics and every answer), and, when wandb is active,
`generation_eval/<metric>` values plus a table with the images.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

LOG_NAME = "generation-eval.jsonl"


class GenerationEval(TrainerCallback):
    """Score generated answers on a fixed eval sample after each evaluation."""

    def __init__(
        self,
        collator: Any,
        eval_dataset: Any,
        settings: Any,
        output_dir: Path,
        media_dirs: list[Path],
        model_type: str | None,
        say: Any = print,
    ) -> None:
        from vlmctl.data.dataset import iter_rows

        n = min(int(settings.rows), len(eval_dataset))
        self.rows = list(iter_rows(eval_dataset.select(range(n))))
        self.collator = collator
        self.settings = settings
        self.path = Path(output_dir) / LOG_NAME
        self.media_dirs = media_dirs
        self.model_type = model_type
        self.say = say

    def on_evaluate(self, args, state, control, model=None, **kwargs):
        """Generate, score, write a line (and log to wandb) on the main process only."""
        if not state.is_world_process_zero or model is None or not self.rows:
            return
        from vlmctl import metrics as M
        from vlmctl.generation import LoadedModel, generate_rows

        was_training = model.training
        model.eval()
        try:
            answers = generate_rows(
                LoadedModel(None, model, self.collator.processor, self.model_type),
                self.collator,
                self.rows,
                batch_size=self.settings.batch_size,
                max_new_tokens=self.settings.max_new_tokens,
                use_cache=True,
            )
        finally:
            model.train(was_training)
        boxes = M.answers_are_boxes(a["reference"] for a in answers)
        for a in answers:
            a["metrics"] = M.score_row(a["prediction"], a["reference"], boxes)
        agg = M.aggregate([a["metrics"] for a in answers])
        record = {"step": state.global_step, "n": len(answers), "metrics": agg, "rows": answers}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
        shown = ", ".join(f"{k} {v:.3f}" for k, v in agg.items())
        self.say(f"generation eval (step {state.global_step}, {len(answers)} rows): {shown}")
        if "wandb" in (args.report_to or []):
            self._wandb(state.global_step, agg, answers)

    def _wandb(self, step: int, agg: dict, answers: list[dict]) -> None:
        try:
            import wandb
        except ImportError:
            return
        if wandb.run is None:
            return
        from vlmctl.data.messages import row_to_example
        from vlmctl.media.images import load_image

        table = wandb.Table(
            columns=["row", "image", "question", "reference", "prediction", "exact_match"]
        )
        by_row = dict(self.rows)
        for a in answers:
            ex = row_to_example(by_row[a["row"]], self.collator.cfg, a["row"])
            image = None
            if ex.images:
                pil = load_image(ex.images[0], base_dirs=self.media_dirs, row=a["row"])
                image = wandb.Image(pil)
            table.add_data(
                a["row"],
                image,
                a["question"],
                a["reference"],
                a["prediction"],
                a["metrics"]["exact_match"],
            )
        logged = {f"generation_eval/{k}": v for k, v in agg.items()}
        logged["generation_eval/samples"] = table
        logged["train/global_step"] = step
        wandb.log(logged)
