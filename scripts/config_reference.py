"""Regenerate the README's config reference from the pydantic models (descriptions, defaults).

python scripts/config_reference.py          # rewrite the block in README.md
python scripts/config_reference.py --check  # exit 1 when README.md is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pydantic import BaseModel

from vlmctl.config import FILES, MODELS
from vlmctl.config.pydantic_errors import describe_type, model_in

README = Path(__file__).resolve().parent.parent / "README.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"

# Meanings from the seed guide for keys whose models carry no description.
NOTES = {
    "quantization.load_in_4bit": "Load the base model in 4 bit (QLoRA; needs peft enabled).",
    "quantization.load_in_8bit": "Load the base model in 8 bit. Exclusive with load_in_4bit.",
    "quantization.bnb_4bit_quant_type": "4-bit quantization type.",
    "quantization.bnb_4bit_compute_dtype": "Compute dtype of 4-bit layers.",
    "quantization.bnb_4bit_use_double_quant": "Quantize the quantization constants too.",
    "dataset.train_split": "Split trained on.",
    "dataset_columns.image_column": "The dataset's image column (variable {image_column}).",
    "dataset_columns.question_column": "The dataset's question column.",
    "dataset_columns.answer_column": "The dataset's answer column.",
    "dataset_columns.video_column": "The dataset's video column (optional).",
    "dataset_columns.context_column": "An extra context column (optional).",
    "data_processing.image_data": "Process images.",
    "data_processing.video_data": "Process videos (both on: each row keeps its images and "
    "videos; video wins only for processors that take one kind per row).",
    "conversation": "Chat-shaped datasets (column, role_key, content_key, role_map, "
    "images_column, videos_column, image_tag, video_tag, system_column, system_prompt); "
    "replaces training_messages.",
    "message_format.system_prompt": "Text of {system_prompt} (flat rows only; chat rows use "
    "conversation.system_prompt).",
    "message_format.training_messages": "Turns: role system/user/assistant; content a string "
    "or parts {type: text, text} / {type: image} / {type: video}; {variables} are "
    "dataset_columns keys or system_prompt; {{ }} literal braces.",
    "image_processing.convert_to_rgb": "Convert to RGB (recommended).",
    "image_processing.resize_mode": "keep_aspect: longest side <= max_size; crop: centre "
    "square then max_size x max_size; stretch: max_size x max_size.",
    "image_processing.max_size": "Longest side in pixels; null = no resize.",
    "video_processing.enabled": "Decode videos.",
    "video_processing.frame_extraction.library": "decord (recommended), pyav or cv2.",
    "video_processing.frame_extraction.sampling_strategy": "Frames spread evenly.",
    "video_processing.frame_extraction.num_frames": "Frames per video.",
    "video_processing.file_processing.convert_to_rgb": "No effect: frames are always RGB "
    "(validate warns when false).",
    "text_processing.padding": "true/longest: pad to the longest row; max_length: pad to "
    "max_length; false: no padding (needs batch size 1).",
    "text_processing.truncation": "Enforce max_length (false = no limit).",
    "text_processing.max_length": "Tokens per row, media tokens included.",
    "text_processing.add_generation_prompt": "false for training (no effect after an "
    "assistant turn; validate warns).",
    "label_masking.mask_pad_token": "No loss on padding.",
    "label_masking.mask_image_token": "No loss on image/video tokens.",
    "label_masking.mask_input_tokens": "No loss on the prompt (false: the seed's default, the "
    "prompt is trained too).",
    "label_masking.ignore_index": "Label value of masked tokens: -100 only (the loss ignores "
    "no other value; validate refuses others).",
    "per_device_train_batch_size": "Lower it to fit GPU memory.",
    "gradient_accumulation_steps": "Effective batch = batch x accumulation x GPUs.",
    "learning_rate": "VLMs usually take a low learning rate.",
    "save_total_limit": "Checkpoints kept.",
    "gradient_checkpointing": "Saves memory; becomes `activation_checkpointing`.",
    "bf16": "Recommended. Exclusive with fp16.",
    "fp16": "Exclusive with bf16.",
    "group_by_length": "Becomes `train_sampling_strategy: group_by_length` (transformers 5.x "
    "removed the key).",
    "remove_unused_columns": "Must be false for VLMs; vlmctl forces false and warns.",
    "dataloader_pin_memory": "Pin host memory in the data loader.",
    "report_to": "wandb, tensorboard, none, or a list.",
    "run_name": "Name of the run (wandb).",
    "seed": "Random seed.",
    "per_device_eval_batch_size": "Eval batch size per device.",
    "num_train_epochs": "Epochs.",
    "bias": "LoRA bias: none, all, lora_only (all trains vision biases too: refused with "
    "exclude_vision_modules).",
    "lora_dropout": "Dropout on the LoRA path.",
}


def _default(info) -> str:
    if info.default_factory is not None:
        value = info.default_factory()
        if isinstance(value, BaseModel):
            return "(section)"
        if isinstance(value, list) and value and isinstance(value[0], BaseModel):
            return "(see template)"
    else:
        value = info.default
    text = json.dumps(value, default=str)
    return f"`{text}`"


def _rows(cls: type[BaseModel], prefix: str = ""):
    for name, info in cls.model_fields.items():
        key = f"{prefix}{name}"
        sub = model_in(info.annotation)
        desc = info.description or NOTES.get(key, "")
        if sub is not None and _default(info) == "(section)":
            yield key, "section", "", (desc or sub.__doc__ or "").strip().splitlines()[0]
            yield from _rows(sub, key + ".")
            continue
        typ = describe_type(info.annotation, info.metadata)
        yield key, typ, _default(info), desc.replace("|", "\\|")


def render() -> str:
    """The markdown block."""
    out = [START, ""]
    for file_key, name in FILES.items():
        out += [f"#### `{name}`", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, typ, default, desc in _rows(MODELS[file_key]):
            out.append(f"| `{key}` | {typ.replace('|', chr(92) + '|')} | {default} | {desc} |")
        if file_key == "train":
            out.append("| *any other key* | | | must be a field of the installed TRL `SFTConfig` |")
        out.append("")
    out.append(END)
    return "\n".join(out)


def main() -> int:
    text = README.read_text(encoding="utf-8")
    if START not in text or END not in text:
        print(f"{README}: markers {START} ... {END} not found", file=sys.stderr)
        return 1
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = head + render() + tail
    if "--check" in sys.argv:
        if new != text:
            print("README.md config reference is stale: run scripts/config_reference.py")
            return 1
        return 0
    README.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
