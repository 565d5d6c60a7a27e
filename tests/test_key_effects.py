"""Every key of the four files has an observable effect, checked here and listed in docs/KEYS.md.

`EFFECTS` names, for each key, a change away from the base config set and what that change
must alter: a token's label, a tensor, an argument of SFTConfig / LoraConfig /
`from_pretrained`, the data loaded, or a validate finding (a refusal is an effect too: the
value cannot silently do nothing). Keys that cannot be observed on a CPU without the hub say
why. `test_every_key_changes_what_it_says` (slow: it builds batches on the tiny Qwen2-VL twin)
checks each row; the fast tests check that every key of the four files has a row and that
docs/KEYS.md is the table generated from `EFFECTS`
(`VLMCTL_WRITE_DOCS=1 pytest tests/test_key_effects.py -k doc` rewrites it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import typing
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from vlmctl.config import FILES, MODELS
from vlmctl.config.pydantic_errors import model_in

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "KEYS.md"


@dataclass(frozen=True)
class Effect:
    """A change of one key and the part of the result it must change."""

    base: str  # which base config set: img | entry | q4 | vid | both | chat | chatvid
    change: tuple[str, ...]  # --set overrides applied on top of the base (and of `extra`)
    probe: str  # batch | packed | data | load | proc | resolve | devmap | sft | lora | lora_model | findings
    field: str  # the part of the probe's result that must differ ("*" = anything)
    effect: str  # what the table says
    extra: tuple[str, ...] = ()  # overrides for both sides (a setting the change needs)
    unobservable: str = ""  # why it cannot be checked on a CPU without the hub


def E(base, change, probe, field, effect, extra=(), why=""):  # noqa: N802 - a table row
    return Effect(base, tuple(change), probe, field, effect, tuple(extra), why)


def U(why: str, effect: str) -> Effect:  # noqa: N802 - a table row
    return Effect("", (), "", "", effect, (), why)


C = "collator."
M = "model."
MSG = "collator.message_format.training_messages"
TINY = "<tiny>"  # replaced by the tiny model's path

EFFECTS: dict[str, Effect] = {
    # ---- vlm_model_config.yaml
    "model.model_name_or_path": E(
        "img",
        [f"{M}model_name_or_path=../tiny2"],
        "load",
        "path",
        "the folder/id `from_pretrained` loads",
    ),
    "model.revision": E(
        "img", [f"{M}revision=v1"], "load", "revision", "`from_pretrained(revision=...)`"
    ),
    "model.model_classes.<id>.model_class": E(
        "img",
        [f'{M}model_classes["{TINY}"].model_class=Qwen2VLForConditionalGeneration'],
        "resolve",
        "model_class",
        "the model class loaded (instead of the Auto class)",
    ),
    "model.model_classes.<id>.processor_class": E(
        "entry",
        [f'{M}model_classes["{TINY}"].processor_class=Qwen2VLProcessor'],
        "resolve",
        "processor_class",
        "the processor class loaded",
    ),
    "model.model_classes.<id>.import_path": E(
        "entry",
        [f'{M}model_classes["{TINY}"].import_path=transformers.models.qwen2_vl'],
        "resolve",
        "import_path",
        "the module the classes are taken from",
    ),
    "model.model_classes.<id>.trust_remote_code": E(
        "entry",
        [f'{M}model_classes["{TINY}"].trust_remote_code=true'],
        "load",
        "trust_remote_code",
        "`from_pretrained(trust_remote_code=...)` for this model only",
    ),
    "model.loading_params.torch_dtype": E(
        "img",
        [f"{M}loading_params.torch_dtype=float32"],
        "load",
        "dtype",
        "`from_pretrained(dtype=...)`",
    ),
    "model.loading_params.device_map": E(
        "img",
        [f"{M}loading_params.device_map=cuda"],
        "devmap",
        "device_map",
        "`from_pretrained(device_map=...)` with one CUDA process (checked with CUDA assumed; "
        "without CUDA the Trainer places the model on the CPU)",
    ),
    "model.loading_params.trust_remote_code": E(
        "img",
        [f"{M}loading_params.trust_remote_code=true"],
        "load",
        "trust_remote_code",
        "`from_pretrained(trust_remote_code=...)` for every model",
    ),
    "model.loading_params.attn_implementation": E(
        "img",
        [f"{M}loading_params.attn_implementation=eager"],
        "load",
        "attn_implementation",
        "`from_pretrained(attn_implementation=...)`",
    ),
    "model.processor_params.trust_remote_code": E(
        "img",
        [f"{M}processor_params.trust_remote_code=true"],
        "proc",
        "trust_remote_code",
        "the processor's `from_pretrained(trust_remote_code=...)`",
    ),
    "model.processor_params.<other>": E(
        "img",
        [f"{M}processor_params.use_fast=false"],
        "proc",
        "use_fast",
        "passed to the processor's `from_pretrained`",
    ),
    "model.quantization.load_in_4bit": E(
        "img",
        [f"{M}quantization.load_in_4bit=true"],
        "load",
        "quantization_config",
        "`BitsAndBytesConfig` 4-bit",
    ),
    "model.quantization.load_in_8bit": E(
        "img",
        [f"{M}quantization.load_in_8bit=true"],
        "load",
        "quantization_config",
        "`BitsAndBytesConfig` 8-bit",
    ),
    "model.quantization.bnb_4bit_quant_type": E(
        "q4",
        [f"{M}quantization.bnb_4bit_quant_type=fp4"],
        "load",
        "quantization_config",
        "`BitsAndBytesConfig.bnb_4bit_quant_type`",
    ),
    "model.quantization.bnb_4bit_compute_dtype": E(
        "q4",
        [f"{M}quantization.bnb_4bit_compute_dtype=float32"],
        "load",
        "quantization_config",
        "`BitsAndBytesConfig.bnb_4bit_compute_dtype`",
    ),
    "model.quantization.bnb_4bit_use_double_quant": E(
        "q4",
        [f"{M}quantization.bnb_4bit_use_double_quant=false"],
        "load",
        "quantization_config",
        "`BitsAndBytesConfig.bnb_4bit_use_double_quant`",
    ),
    # ---- vlm_collator_config.yaml
    "collator.dataset.path": E(
        "img", [f"{C}dataset.path=../data/train3.csv"], "data", "train_rows", "the rows trained on"
    ),
    "collator.dataset.format": E(
        "img",
        [f"{C}dataset.format=json"],
        "data",
        "*",
        "the reader (json on a csv file: refused, one line)",
    ),
    "collator.dataset.name": U(
        "a hub dataset's config name: needs the hub (offline here)",
        "passed to `datasets.load_dataset(name=...)`",
    ),
    "collator.dataset.train_split": E(
        "img",
        [f"{C}dataset.train_split=test"],
        "data",
        "*",
        "the split trained on (a missing split: refused)",
    ),
    "collator.dataset.eval_split": E(
        "img", [f"{C}dataset.eval_split=train"], "data", "eval_rows", "the split evaluated on"
    ),
    "collator.dataset.eval_size": E(
        "img",
        [f"{C}dataset.eval_size=0.5"],
        "data",
        "eval_rows",
        "rows held out of train for evaluation",
    ),
    "collator.dataset.eval_path": E(
        "img",
        [f"{C}dataset.eval_path=../data/train3.csv"],
        "data",
        "eval_rows",
        "a separate evaluation file",
    ),
    "collator.dataset.media_root": E(
        "img",
        [f"{C}dataset.media_root=../data/alt"],
        "batch",
        "pixel_values",
        "where image files are found (pixels)",
    ),
    "collator.dataset_columns.image_column": E(
        "img",
        [f"{C}dataset_columns.image_column=image2"],
        "batch",
        "pixel_values",
        "the images (pixels)",
    ),
    "collator.dataset_columns.question_column": E(
        "img",
        [f"{C}dataset_columns.question_column=question2"],
        "batch",
        "input_ids",
        "the prompt tokens",
    ),
    "collator.dataset_columns.answer_column": E(
        "img",
        [f"{C}dataset_columns.answer_column=answer2"],
        "batch",
        "labels",
        "the answer tokens (labels)",
    ),
    "collator.dataset_columns.video_column": E(
        "vid",
        [f"{C}dataset_columns.video_column=video2"],
        "batch",
        "pixel_values_videos",
        "the videos (frames)",
    ),
    "collator.dataset_columns.context_column": E(
        "img",
        [f"{C}dataset_columns.context_column=question2"],
        "batch",
        "input_ids",
        "the text of {context_column}",
    ),
    "collator.dataset_columns.<other>": E(
        "img",
        [f"{C}dataset_columns.hint_column=answer2", f"{MSG}[0].content[2].text={{hint_column}}"],
        "batch",
        "input_ids",
        "a new {variable} for the messages",
    ),
    "collator.data_processing.image_data": E(
        "img",
        [f"{C}data_processing.image_data=false"],
        "batch",
        "*",
        "images processed (false without video: refused, no media would reach the model)",
    ),
    "collator.data_processing.video_data": E(
        "both",
        [f"{C}data_processing.video_data=true"],
        "batch",
        "tensors",
        "videos processed (with image_data too, each row keeps both kinds on a processor "
        "that takes both: pixel_values_videos beside pixel_values)",
    ),
    "collator.conversation.column": E(
        "chat",
        [f"{C}conversation.column=conversations2"],
        "batch",
        "input_ids",
        "the column holding the turns",
    ),
    "collator.conversation.role_key": E(
        "chat", [f"{C}conversation.role_key=speaker"], "batch", "*", "which turn key holds the role"
    ),
    "collator.conversation.content_key": E(
        "chat",
        [f"{C}conversation.content_key=text"],
        "batch",
        "input_ids",
        "which turn key holds the text",
    ),
    "collator.conversation.role_map": E(
        "chat",
        [f"{C}conversation.role_map={{human: user, gpt: user}}"],
        "batch",
        "*",
        "dataset roles -> chat roles (no assistant left: refused)",
    ),
    "collator.conversation.images_column": E(
        "chat",
        [f"{C}conversation.images_column=images2"],
        "batch",
        "pixel_values",
        "each row's images",
    ),
    "collator.conversation.videos_column": E(
        "chatvid",
        [f"{C}conversation.videos_column=videos2"],
        "batch",
        "pixel_values_videos",
        "each row's videos",
    ),
    "collator.conversation.image_tag": E(
        "chat",
        [f"{C}conversation.image_tag=<img>"],
        "batch",
        "*",
        "the image placeholder matched in the text",
    ),
    "collator.conversation.video_tag": E(
        "chatvid",
        [f"{C}conversation.video_tag=<clip>"],
        "batch",
        "*",
        "the video placeholder matched in the text",
    ),
    "collator.conversation.system_column": E(
        "chat",
        [f"{C}conversation.system_column=sys"],
        "batch",
        "input_ids",
        "a per-row system prompt",
    ),
    "collator.conversation.system_prompt": E(
        "chat",
        [f"{C}conversation.system_prompt=Be exact."],
        "batch",
        "input_ids",
        "the system turn of chat rows without their own (default none: the template's own)",
    ),
    "collator.message_format.system_prompt": E(
        "img",
        [f"{C}message_format.system_prompt=Be verbose."],
        "batch",
        "input_ids",
        "the text of {system_prompt}",
    ),
    "collator.message_format.training_messages[].role": E(
        "img", [f"{MSG}[1].role=user"], "batch", "*", "who says the turn (no assistant: refused)"
    ),
    "collator.message_format.training_messages[].content": E(
        "img", [f"{MSG}[1].content=Always this."], "batch", "labels", "the turn's text"
    ),
    "collator.message_format.training_messages[].content[].type": E(
        "img",
        [f"{MSG}[0].content[1].type=video"],
        "batch",
        "*",
        "a media slot's kind (video while video is off: the part is dropped, refused)",
    ),
    "collator.message_format.training_messages[].content[].text": E(
        "img",
        [f"{MSG}[0].content[2].text=Q: {{question_column}}"],
        "batch",
        "input_ids",
        "a text part",
    ),
    "collator.image_processing.convert_to_rgb": E(
        "img",
        [f"{C}image_processing.convert_to_rgb=false"],
        "batch",
        "pixel_values",
        "vlmctl's RGB conversion (16-bit grey scaled, transparency on white) or the "
        "processor's own (Pillow's: 16-bit grey clips to white)",
    ),
    "collator.image_processing.resize_mode": E(
        "img",
        [f"{C}image_processing.resize_mode=stretch"],
        "batch",
        "pixel_values",
        "how images are fitted into max_size",
        extra=[f"{C}image_processing.max_size=28"],
    ),
    "collator.image_processing.max_size": E(
        "img",
        [f"{C}image_processing.max_size=28"],
        "batch",
        "pixel_values",
        "the image size (pixels, patches)",
    ),
    "collator.video_processing.enabled": E(
        "vid",
        [f"{C}video_processing.enabled=false"],
        "batch",
        "*",
        "videos decoded (false: refused)",
    ),
    "collator.video_processing.frame_extraction.library": E(
        "vid",
        [f"{C}video_processing.frame_extraction.library=decord"],
        "batch",
        "decoders",
        "the decoder that reads the clips (counted, said by train)",
    ),
    "collator.video_processing.frame_extraction.sampling_strategy": U(
        "one allowed value (uniform): there is nothing to change it to",
        "frames spread evenly over the clip",
    ),
    "collator.video_processing.frame_extraction.num_frames": E(
        "vid",
        [f"{C}video_processing.frame_extraction.num_frames=2"],
        "batch",
        "tensors",
        "frames per clip (video tensor shape)",
    ),
    "collator.video_processing.file_processing.convert_to_rgb": U(
        "no effect by design: every decoder returns RGB frames; validate warns when false",
        "none (validate: `no-effect` warning)",
    ),
    "collator.video_processing.file_processing.max_duration": E(
        "vid",
        [f"{C}video_processing.file_processing.max_duration=0.3"],
        "batch",
        "pixel_values_videos",
        "only the first N seconds are sampled (frames)",
    ),
    "collator.text_processing.padding": E(
        "img",
        [f"{C}text_processing.padding=max_length"],
        "batch",
        "tensors",
        "batch width (max_length: padded to max_length)",
    ),
    "collator.text_processing.truncation": E(
        "img",
        [f"{C}text_processing.truncation=false"],
        "batch",
        "tensors",
        "whether max_length applies (false: the long row is kept)",
        extra=[f"{C}text_processing.max_length=LIMIT"],
    ),
    "collator.text_processing.max_length": E(
        "img",
        [f"{C}text_processing.max_length=LIMIT"],
        "batch",
        "tensors",
        "rows longer than this are dropped/cut (batch rows)",
    ),
    "collator.text_processing.add_generation_prompt": E(
        "img",
        [f"{C}text_processing.add_generation_prompt=true"],
        "findings",
        "warnings",
        "an assistant header after a chat that does not end with the answer; training chats "
        "end with it, so validate says it has no effect (`no-effect`)",
    ),
    "collator.text_processing.truncation_policy": E(
        "img",
        [f"{C}text_processing.truncation_policy=truncate_text"],
        "batch",
        "tensors",
        "too-long rows dropped or their text cut",
        extra=[f"{C}text_processing.max_length=LIMIT"],
    ),
    "collator.label_masking.mask_pad_token": E(
        "img",
        [f"{C}label_masking.mask_pad_token=false"],
        "batch",
        "labels",
        "padding labels: -100 (true) or the pad id (trained)",
    ),
    "collator.label_masking.mask_image_token": E(
        "img",
        [f"{C}label_masking.mask_image_token=false"],
        "batch",
        "labels",
        "image/video token labels: -100 (true) or their ids (trained)",
    ),
    "collator.label_masking.mask_input_tokens": E(
        "img",
        [f"{C}label_masking.mask_input_tokens=true"],
        "batch",
        "labels",
        "prompt labels: -100 (true) or trained (false, the seed's default)",
    ),
    "collator.label_masking.ignore_index": E(
        "img",
        [f"{C}label_masking.ignore_index=-1"],
        "findings",
        "errors",
        "only -100: the loss ignores no other value, validate refuses others (`ignore-index`)",
    ),
    # ---- train_config.yaml (SFTConfig arguments, as the worker builds them)
    **{
        f"train.{k}": E("img", [f"train.{k}={v}"], "sft", arg, f"SFTConfig `{arg}`")
        for k, v, arg in [
            ("output_dir", "elsewhere", "output_dir"),
            ("per_device_train_batch_size", "3", "per_device_train_batch_size"),
            ("per_device_eval_batch_size", "3", "per_device_eval_batch_size"),
            ("gradient_accumulation_steps", "5", "gradient_accumulation_steps"),
            ("learning_rate", "0.001", "learning_rate"),
            ("num_train_epochs", "3", "num_train_epochs"),
            ("logging_steps", "7", "logging_steps"),
            ("eval_steps", "7", "eval_steps"),
            ("save_steps", "7", "save_steps"),
            ("save_total_limit", "5", "save_total_limit"),
            ("gradient_checkpointing", "false", "activation_checkpointing"),
            ("bf16", "false", "bf16"),
            ("group_by_length", "false", "train_sampling_strategy"),
            ("dataloader_pin_memory", "true", "dataloader_pin_memory"),
            ("report_to", "[wandb]", "report_to"),
            ("run_name", "other", "run_name"),
            ("seed", "7", "seed"),
            ("<other>", "max_steps=3", "max_steps"),
        ]
    },
    "train.fp16": E(
        "img",
        ["train.fp16=true"],
        "sft",
        "fp16",
        "SFTConfig `fp16` (checked with a CUDA GPU assumed; on a CPU train refuses it)",
        extra=["train.bf16=false"],
    ),
    # vlmctl's own key (not an SFTConfig field): its effect is answers generated during training
    **{
        f"train.generation_eval.{k}": U(
            "a training-time effect (answers generated at each evaluation), not a probe of this "
            "table: tests/test_eval.py checks generation-eval.jsonl on the demo run",
            what,
        )
        for k, what in [
            ("rows", "how many eval rows (the first N) are answered at each evaluation"),
            ("max_new_tokens", "the longest generated answer, in tokens"),
            ("batch_size", "rows generated together"),
        ]
    },
    # vlmctl's packing (SFTConfig's names, never passed to TRL: it refuses them for images)
    **{
        f"train.{k}": E(
            "img",
            [f"train.{k}=true"],
            "packed",
            "tensors",
            what,
        )
        for k, what in [
            (
                "packing",
                "rows go into bins of max_length tokens and each batch is ONE padding-free row "
                "(position_ids restart per row; the Trainer's items are bins)",
            ),
            ("padding_free", "each batch of rows is ONE padding-free row (position_ids per row)"),
        ]
    },
    "train.packing_strategy": U(
        "one allowed value (bfd): the others (TRL's bfd_split, wrapped) split rows, which media "
        "spans forbid, and are refused",
        "how rows are placed into bins: best-fit decreasing",
    ),
    "train.remove_unused_columns": E(
        "img",
        ["train.remove_unused_columns=true"],
        "findings",
        "warnings",
        "none: vlmctl forces false for VLMs and validate warns (`remove-unused`)",
    ),
    # ---- peft_config.yaml (LoraConfig fields)
    "peft.enabled": E(
        "img",
        ["peft.enabled=false"],
        "lora",
        "enabled",
        "LoRA adapter (true) or full fine-tuning (false)",
    ),
    "peft.task_type": U(
        "one allowed value (CAUSAL_LM): there is nothing to change it to", "LoraConfig `task_type`"
    ),
    **{
        f"peft.{k}": E("img", [f"peft.{k}={v}"], "lora", k, f"LoraConfig `{k}`")
        for k, v in [
            ("r", "4"),
            ("target_modules", "[q_proj]"),
            ("lora_alpha", "8"),
            ("lora_dropout", "0.2"),
            ("bias", "lora_only"),
            ("use_rslora", "true"),
            ("use_dora", "true"),
            ("modules_to_save", "[lm_head]"),
        ]
    },
    "peft.exclude_vision_modules": E(
        "img",
        ["peft.exclude_vision_modules=false"],
        "lora_model",
        "target_modules",
        "LoraConfig `target_modules`: the language model only (true) or every linear layer",
    ),
}
EFFECTS["train.<other>"] = E(
    "img",
    ["train.max_steps=3"],
    "sft",
    "max_steps",
    "any SFTConfig field, passed as is (type-checked by validate)",
)

# ---------------------------------------------------------------------------- keys


def _leaves(cls, prefix: str = ""):
    for name, info in cls.model_fields.items():
        key = f"{prefix}{name}"
        sub = model_in(info.annotation)
        if sub is None:
            yield key
            continue
        text = str(info.annotation)
        if sub.__name__ == "ContentPart":
            yield key
            yield from _leaves(sub, key + "[].")
        elif "dict[str" in text:
            yield from _leaves(sub, key + ".<id>.")
        elif "list[" in text:
            yield from _leaves(sub, key + "[].")
        else:
            yield from _leaves(sub, key + ".")
        if sub.model_config.get("extra") == "allow":
            yield key + ".<other>"


def all_keys() -> list[str]:
    """Every key a user can write in the four files (`<id>`/`<other>`: any name)."""
    out = []
    for file_key in FILES:
        cls = MODELS[file_key]
        out += [f"{file_key}.{k}" for k in _leaves(cls)]
        if cls.model_config.get("extra") == "allow":
            out.append(f"{file_key}.<other>")
    return out


def render_doc() -> str:
    """docs/KEYS.md, generated from EFFECTS."""
    lines = [
        "# What each key does, observably",
        "",
        "Generated by `tests/test_key_effects.py` (`VLMCTL_WRITE_DOCS=1 pytest "
        "tests/test_key_effects.py -k doc`); do not edit by hand. For every key of the four "
        "files, the test changes it away from a base config set on the tiny Qwen2-VL twin and "
        "checks that the named part of the result changes: the collated batch (`labels`, "
        "`input_ids`, tensor shapes, pixels), the data loaded, the arguments of `SFTConfig`, "
        "`LoraConfig` and `from_pretrained`, or `validate`'s findings. `<id>` is a model id, "
        "`<other>` any further key.",
        "",
    ]
    for file_key, name in FILES.items():
        lines += [
            f"## `{name}`",
            "",
            "| key | changed to | observed in | effect |",
            "|---|---|---|---|",
        ]
        for key in all_keys():
            if not key.startswith(file_key + "."):
                continue
            e = EFFECTS[key]
            short = key[len(file_key) + 1 :]
            if e.unobservable:
                lines.append(
                    f"| `{short}` | | not observable on a CPU: {e.unobservable} | {e.effect} |"
                )
                continue
            change = ", ".join(
                f"`{c.split('=', 1)[0].split('.')[-1]}={c.split('=', 1)[1]}`" for c in e.change
            )
            where = f"{e.probe}: `{e.field}`" if e.field != "*" else f"{e.probe}: any part"
            lines.append(
                f"| `{short}` | {change.replace('|', chr(92) + '|')} | {where} | {e.effect} |"
            )
        lines.append("")
    return "\n".join(lines)


def test_every_key_of_the_four_files_has_an_effect_row():
    keys = all_keys()
    assert len(keys) > 90
    missing = [k for k in keys if k not in EFFECTS]
    unknown = [k for k in EFFECTS if k not in keys]
    assert not missing and not unknown, (missing, unknown)


SEED = REPO.parent / "shared" / "seed"
SEED_DOCS = ("SEED-EN.md", "vlm-config-guide.original.txt")


def _named_leaves(prefix: str, value, keys: set[str]):
    """The table keys a YAML value's leaves fall under (`<id>` for a model id; a key the
    schema does not name comes out as it is written, so the caller sees it missing)."""

    def known(k: str) -> bool:
        return any(x == k or x.startswith(k + ".") or x.startswith(k + "[") for x in keys)

    if isinstance(value, dict) and any(k.startswith(prefix + ".") for k in keys):
        for name, sub in value.items():
            key = f"{prefix}.{name}"
            if not known(key) and known(f"{prefix}.<id>"):
                key = f"{prefix}.<id>"
            yield from _named_leaves(key, sub, keys)
    elif (
        isinstance(value, list)
        and value
        and all(isinstance(x, dict) for x in value)
        and known(prefix + "[]")
    ):
        for item in value:
            yield from _named_leaves(prefix + "[]", item, keys)
    else:
        yield prefix


def _file_keys_of(doc: dict, keys: set[str]) -> list[tuple[str, object]]:
    """(table key of each top-level YAML key, its value): a seed block may mix files (the
    worked scenarios), so each top-level key goes to the file whose schema names it."""
    out = []
    for name, value in doc.items():
        owners = [
            fk
            for fk in FILES
            if any(k == f"{fk}.{name}" or k.startswith((f"{fk}.{name}.", f"{fk}.{name}["))
                   for k in keys)
        ]  # fmt: skip
        out.append((f"{owners[0]}.{name}" if len(owners) == 1 else f"{owners}.{name}", value))
    return out


def _seed_and_template_keys() -> dict[str, set[str]]:
    """Table key -> where it is written, for every key of the seed's YAML blocks and of
    templates/ (each file parsed as a whole)."""
    import re

    from ruamel.yaml import YAML

    keys = set(all_keys())
    docs: list[tuple[str, dict]] = []
    for name in SEED_DOCS:
        text = (SEED / name).read_text(encoding="utf-8", errors="replace")
        for i, block in enumerate(re.findall(r"```yaml\n(.*?)```", text, re.S)):
            docs.append((f"{name} block {i + 1}", YAML(typ="safe").load(block)))
    seen: dict[str, set[str]] = {}
    for where, doc in docs:
        for top, value in _file_keys_of(doc, keys):
            for leaf in _named_leaves(top, value, keys):
                seen.setdefault(leaf, set()).add(where)
    for file_key, name in FILES.items():
        doc = YAML(typ="safe").load((REPO / "templates" / name).read_text(encoding="utf-8"))
        for top, value in doc.items():
            for leaf in _named_leaves(f"{file_key}.{top}", value, keys):
                seen.setdefault(leaf, set()).add(f"templates/{name}")
    return seen


@pytest.mark.skipif(not SEED.is_dir(), reason=f"the seed is not present at {SEED}")
def test_every_key_of_the_seed_and_the_templates_has_its_own_row():
    """The seed's four files and the templates: each key is a row of its own in docs/KEYS.md
    (never only covered by an `<other>` row, never a key the table does not know)."""
    seen = _seed_and_template_keys()
    assert len(seen) > 60, sorted(seen)
    assert "collator.label_masking.ignore_index" in seen and "train.run_name" in seen
    keys = set(all_keys())
    bad = {k: sorted(w) for k, w in seen.items() if k not in keys or "<other>" in k}
    assert not bad, bad
    doc = DOC.read_text(encoding="utf-8")
    for key in seen:
        short = key.split(".", 1)[1]
        assert f"| `{short}` |" in doc, key


def test_doc_table_is_generated_and_current():
    text = render_doc()
    if os.environ.get("VLMCTL_WRITE_DOCS"):
        DOC.write_text(text, encoding="utf-8")
    assert DOC.is_file() and DOC.read_text(encoding="utf-8") == text, (
        "docs/KEYS.md is stale: VLMCTL_WRITE_DOCS=1 pytest tests/test_key_effects.py -k doc"
    )


# ---------------------------------------------------------------------------- probes


def _png(path: Path, size: tuple[int, int], colour: tuple, mode: str = "RGB") -> None:
    from PIL import Image

    img = Image.new(mode, size, colour)
    if mode == "RGBA":  # half transparent: RGB conversion composites it
        for x in range(size[0] // 2):
            for y in range(size[1]):
                img.putpixel((x, y), (colour[0], colour[1], colour[2], 0))
    img.save(path)


LONG = " ".join(["many words here"] * 20)


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    """The datasets and base config sets the effects are measured on."""
    from test_validate_data import _video

    root = tmp_path_factory.mktemp("keys")
    tiny = tiny_model_dir("qwen2_vl")
    shutil.copytree(tiny, root / "tiny2")
    data = root / "data"
    (data / "alt").mkdir(parents=True)
    from PIL import Image

    Image.new("I;16", (32, 48), 30000).save(data / "a.png")  # 16-bit grey
    _png(data / "b.png", (48, 32), (30, 30, 200), "RGB")
    _png(data / "alt" / "a.png", (32, 48), (10, 200, 10, 255), "RGBA")
    _png(data / "alt" / "b.png", (48, 32), (10, 200, 10), "RGB")
    _video(data / "v1.mp4", 12)
    _video(data / "v2.mp4", 6)
    header = "image,image2,question,question2,answer,answer2,context,video,video2\n"
    rows = [
        "a.png,b.png,what colour,which hue,red,crimson,ctx one,v1.mp4,v2.mp4",
        f"b.png,a.png,what shape is it,{LONG},{LONG},blue,ctx two,v1.mp4,v2.mp4",
    ]
    (data / "train.csv").write_text(header + "\n".join(rows) + "\n")
    (data / "train3.csv").write_text(header + "\n".join(rows + rows[:1]) + "\n")
    chat = []
    for q, a in (("What colour?", "red"), ("What shape is it?", "a wide box")):
        turns = [{"from": "human", "speaker": "gpt", "value": f"<image>{q}", "text": f"<image>{q}?"},
                 {"from": "gpt", "speaker": "human", "value": a, "text": a + "!"}]  # fmt: skip
        vturns = [{"from": "human", "value": f"<video>{q}"}, {"from": "gpt", "value": a}]
        chat.append({"conversations": turns, "conversations2": [dict(t, value=t["value"] + " x") for t in turns],
                     "images": ["a.png"], "images2": ["b.png"], "sys": "Be exact.",
                     "vconv": vturns, "videos": ["v1.mp4"], "videos2": ["v2.mp4"]})  # fmt: skip
    (data / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chat))

    def config(name: str, collator: str, model: str = "") -> Path:
        d = root / name
        d.mkdir()
        (d / "vlm_model_config.yaml").write_text(f'model_name_or_path: "{tiny}"\n{model}')
        (d / "vlm_collator_config.yaml").write_text(collator)
        (d / "train_config.yaml").write_text("per_device_train_batch_size: 2\nreport_to: []\n")
        (d / "peft_config.yaml").write_text("r: 8\n")
        return d

    image_msgs = """message_format:
  system_prompt: "Be brief."
  training_messages:
    - role: user
      content:
        - {type: text, text: "{system_prompt} {context_column}"}
        - {type: image}
        - {type: text, text: "{question_column}"}
    - role: assistant
      content: "{answer_column}"
"""
    img = f"""dataset: {{path: ../data/train.csv}}
dataset_columns: {{context_column: context}}
{image_msgs}"""
    vid = img.replace("{type: image}", "{type: video}") + (
        "data_processing: {image_data: false, video_data: true}\n"
        "video_processing: {frame_extraction: {library: pyav, num_frames: 4}}\n"
    )
    both = img.replace("- {type: image}", "- {type: image}\n        - {type: video}")
    chat_cfg = """dataset: {path: ../data/chat.jsonl}
conversation: {column: conversations, role_key: from, content_key: value, images_column: images,
               videos_column: null}
"""
    chatvid = """dataset: {path: ../data/chat.jsonl}
data_processing: {image_data: false, video_data: true}
video_processing: {frame_extraction: {library: pyav, num_frames: 4}}
conversation: {column: vconv, images_column: null, videos_column: videos, role_key: from,
               content_key: value}
"""
    entry = f'model_classes:\n  "{tiny}":\n    model_class: Qwen2VLForConditionalGeneration\n'
    return SimpleNamespace(
        tiny=tiny,
        sets={
            "img": config("img", img),
            "entry": config("entry", img, entry),
            "q4": config("q4", img, "quantization: {load_in_4bit: true}\n"),
            "vid": config("vid", vid),
            "both": config("both", both),
            "chat": config("chat", chat_cfg),
            "chatvid": config("chatvid", chatvid),
        },
    )


def _digest(t) -> str:
    return hashlib.sha1(t.contiguous().numpy().tobytes()).hexdigest()[:12]


class Probes:
    """What each probe observes of a config set (a dict; an error becomes {'error': ...})."""

    def __init__(self, world, monkeypatch):
        self.world = world
        self.mp = monkeypatch
        self._proc = None
        self._model = None

    def processor(self):
        if self._proc is None:
            from transformers import AutoProcessor

            self._proc = AutoProcessor.from_pretrained(str(self.world.tiny))
        return self._proc

    def batch(self, cs):
        from vlmctl.collate import VLMCollator
        from vlmctl.data.dataset import load_splits

        data = load_splits(cs.collator, cs.dir)
        col = VLMCollator(self.processor(), cs.collator, data.media_dirs, model_type="qwen2_vl")
        b = col([data.train[i] for i in range(len(data.train))])
        out = {"tensors": {k: list(v.shape) for k, v in b.items()}}
        for k, v in b.items():
            out[k] = v.tolist() if k in ("input_ids", "labels") else _digest(v)
        out["decoders"] = sorted(k for k in col.stats if k.startswith("video_decoder_"))
        return out

    def packed(self, cs):
        """The batch the worker's data collator makes (packed when packing is on)."""
        from vlmctl.collate import VLMCollator
        from vlmctl.data.dataset import load_splits
        from vlmctl.packing import PackingCollator, spec_of

        data = load_splits(cs.collator, cs.dir)
        col = VLMCollator(self.processor(), cs.collator, data.media_dirs, model_type="qwen2_vl")
        if spec_of(cs.train).on:
            col = PackingCollator(col)
        b = col([data.train[i] for i in range(len(data.train))])
        return {"tensors": {k: list(v.shape) for k, v in b.items() if hasattr(v, "shape")}}

    def data(self, cs):
        from vlmctl.data.dataset import load_splits

        d = load_splits(cs.collator, cs.dir)
        return {"train_rows": len(d.train), "eval_rows": None if d.eval is None else len(d.eval)}

    def _capture(self, *classes) -> dict:
        seen: dict = {}

        def fake(cls, path, **kwargs):
            seen.update(kwargs, path=str(path))
            raise _Captured()

        for cls in classes:
            self.mp.setattr(cls, "from_pretrained", classmethod(fake))
        return seen

    def load(self, cs):
        import transformers

        from vlmctl.models.resolve import load_model, resolve_model

        seen = self._capture(
            transformers.AutoModelForImageTextToText, transformers.Qwen2VLForConditionalGeneration
        )
        try:
            load_model(resolve_model(cs.model), cs.model, cs.model_location())
        except _Captured:
            pass
        return {k: repr(v) for k, v in seen.items()}

    def proc(self, cs):
        import transformers

        from vlmctl.models.resolve import load_processor, resolve_model

        seen = self._capture(transformers.AutoProcessor, transformers.Qwen2VLProcessor)
        try:
            load_processor(resolve_model(cs.model), cs.model, cs.model_location())
        except _Captured:
            pass
        return {k: repr(v) for k, v in seen.items()}

    def resolve(self, cs):
        from dataclasses import asdict

        from vlmctl.models.resolve import resolve_model

        return asdict(resolve_model(cs.model))

    def devmap(self, cs):
        from vlmctl.training.model_prep import device_map_for

        target, _ = device_map_for(cs.model.loading_params.device_map, 1, 0, True, False)
        return {"device_map": repr(target)}

    def sft(self, cs):
        from vlmctl.training.model_prep import choose_precision
        from vlmctl.training.worker_steps import sft_kwargs

        precision = choose_precision(cs, cuda=True, bf16_supported=True)
        kw = sft_kwargs(cs, cs.output_dir, precision, True, bool(cs.train.group_by_length), env={})
        return {k: repr(v) for k, v in kw.items()}

    def lora(self, cs):
        kw = cs.peft.lora_kwargs() if cs.peft.enabled else {}
        return {"enabled": cs.peft.enabled, **{k: repr(v) for k, v in kw.items()}}

    def lora_model(self, cs):
        from vlmctl.training.model_prep import lora_config

        if self._model is None:
            from transformers import AutoModelForImageTextToText

            self._model = AutoModelForImageTextToText.from_pretrained(str(self.world.tiny))
        return {"target_modules": repr(lora_config(cs, self._model).target_modules)}

    def findings(self, cs):
        return {"warnings": sorted(f.code for f in cs.findings if f.severity == "warning")}


class _Captured(Exception):
    pass


def _observe(probes: Probes, world, base: str, overrides: list[str], probe: str) -> dict:
    from vlmctl.config.load import collect_config_set
    from vlmctl.errors import VlmctlError

    directory = world.sets[base]
    overrides = [o.replace(TINY, str(world.tiny)) for o in overrides]
    cs, findings = collect_config_set(directory, overrides)
    if cs is None:
        codes = sorted(f.code for f in findings if f.severity == "error")
        return {"error": codes, "errors": codes}
    try:
        return getattr(probes, probe)(cs)
    except VlmctlError as exc:
        return {"error": [f.code or f.message for f in exc.findings]}


def _limit(probes, world) -> str:
    """A max_length between the two rows' lengths (the second row is the long one)."""
    from vlmctl.config.load import load_config_set

    cs = load_config_set(world.sets["img"], ["collator.text_processing.truncation=false"])
    ids = probes.batch(cs)["input_ids"]
    pad = probes.processor().tokenizer.pad_token_id
    lengths = sorted(sum(1 for t in row if t != pad) for row in ids)
    return str((lengths[0] + lengths[1]) // 2)


@pytest.mark.slow
def test_every_key_changes_what_it_says(world, monkeypatch):
    probes = Probes(world, monkeypatch)
    limit = _limit(probes, world)
    failures = []
    for key, e in EFFECTS.items():
        if e.unobservable:
            continue
        extra = [x.replace("LIMIT", limit) for x in e.extra]
        change = [x.replace("LIMIT", limit) for x in e.change]
        before = _observe(probes, world, e.base, extra, e.probe)
        after = _observe(probes, world, e.base, extra + change, e.probe)
        monkeypatch.undo()
        if "error" in before:
            failures.append(f"{key}: the base itself fails: {before['error']}")
        elif e.field == "*":
            if before == after:
                failures.append(f"{key}: {change} changed nothing")
        elif before.get(e.field) == after.get(e.field):
            failures.append(f"{key}: {change} left {e.probe}.{e.field} unchanged "
                            f"({str(after.get(e.field))[:80]}; after={str(after)[:200]})")  # fmt: skip
    assert not failures, "\n".join(failures)


def test_effect_rows_are_well_formed():
    for key, e in EFFECTS.items():
        if e.unobservable:
            continue
        assert e.change and e.probe in {
            "batch", "data", "load", "proc", "resolve", "devmap", "sft", "lora", "lora_model",
            "findings", "packed",
        }, key  # fmt: skip
        assert typing.get_type_hints(Effect)  # the table's columns exist
