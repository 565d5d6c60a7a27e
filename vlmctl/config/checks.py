"""Cross-field rules of a config set: what each file alone cannot know.

Each rule returns findings placed at the key to change. Errors stop `train`; warnings are
things vlmctl works around or that probably are not meant; notes (info) say what the seed's
keys became and what a setting implies. The dataset-level pass (columns against the real data)
lives elsewhere: these rules read the configs only, and import nothing heavy.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Collection
from typing import TYPE_CHECKING

from vlmctl.config.collator import PLACEHOLDER_RE, placeholders
from vlmctl.config.report_to import report_to_findings
from vlmctl.errors import Finding, did_you_mean
from vlmctl.packing_checks import config_findings

if TYPE_CHECKING:
    from vlmctl.config.load import ConfigSet


def check_config_set(cs: ConfigSet, valid: Collection[str] | None = None) -> list[Finding]:
    """Every cross-field finding of a set; with `valid`, only rules whose files all validated.

    The loader passes the files that validated so that a type error in one file does not
    hide the cross-field problems of the others.
    """
    out: list[Finding] = []
    for needs, rule in _RULES:
        if valid is None or needs <= set(valid):
            out += rule(cs)
    return out


def _precision(cs: ConfigSet) -> list[Finding]:
    if cs.train.bf16 and cs.train.fp16:
        return [
            cs.finding(
                "error",
                "train",
                "fp16",
                "bf16 and fp16 are both true; they are exclusive",
                hint="keep bf16: true (recommended) and set fp16: false",
                code="precision-both",
            )
        ]
    return []


def _media(cs: ConfigSet) -> list[Finding]:
    c = cs.collator
    dp, cols, conv = c.data_processing, c.dataset_columns, c.conversation
    out: list[Finding] = []
    if not dp.image_data and not dp.video_data:
        out.append(
            cs.finding(
                "error",
                "collator",
                "data_processing",
                "image_data and video_data are both false: "
                "no media would reach a vision-language model",
                hint="set image_data: true (images) or video_data: true (video)",
                code="no-media",
            )
        )
        return out
    if dp.image_data and dp.video_data and c.video_processing.enabled:
        out.append(
            cs.finding(
                "info",
                "collator",
                "data_processing.video_data",
                "image_data and video_data are both true: each row keeps its images and videos "
                "when the processor takes both (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision, "
                "InternVL, ...); with a processor that takes one kind per row, video wins in "
                "rows that have both (validate lists those rows)",
                code="both-media",
            )
        )
    if dp.video_data and not c.video_processing.enabled:
        out.append(
            cs.finding(
                "warning",
                "collator",
                "video_processing.enabled",
                "video_data is true but "
                "video_processing.enabled is false: videos are not processed",
                hint="set video_processing.enabled: true",
                code="video-disabled",
            )
        )
    if conv is None:
        if c.use_images and cols.image_column is None:
            out.append(
                cs.finding(
                    "error",
                    "collator",
                    "dataset_columns.image_column",
                    "image_data is true but image_column is null",
                    hint="name the dataset's image column (e.g. image)",
                    code="media-column",
                )
            )
        if c.use_video and cols.video_column is None:
            out.append(
                cs.finding(
                    "error",
                    "collator",
                    "dataset_columns.video_column",
                    "video_data is true but video_column is null",
                    hint="name the dataset's video column (e.g. video_path)",
                    code="media-column",
                )
            )
    # Chat rows may carry their media inline in content parts ({"type": "video", "video":
    # "clip.mp4"}): a null images_column/videos_column is fine; validate's row pass counts
    # the media the rows really carry and warns when an enabled kind never occurs.
    lib = c.video_processing.frame_extraction.library
    module = {"decord": "decord", "pyav": "av", "cv2": "cv2"}[lib]
    if c.use_video and importlib.util.find_spec(module) is None:
        if module != "cv2" and importlib.util.find_spec("transformers") is None:
            # The light install (no extras) reads no video: nothing to check here.
            return out
        out.append(
            cs.finding(
                "error",
                "collator",
                "video_processing.frame_extraction.library",
                f"library: {lib} is not installed",
                hint="use decord or pyav (both ship with vlmctl)",
                code="video-library",
            )
        )
    return out


def _messages(cs: ConfigSet) -> list[Finding]:
    c = cs.collator
    if c.conversation is not None:
        out_conv = [
            cs.finding(
                "info",
                "collator",
                "conversation",
                "conversation is set: rows are "
                "read as chats; message_format.training_messages is not used",
                code="conversation",
            )
        ]
        prompt = c.message_format.system_prompt
        if prompt and prompt.strip() and not c.conversation.system_prompt:
            out_conv.append(
                cs.finding(
                    "info",
                    "collator",
                    "message_format.system_prompt",
                    f"message_format.system_prompt {prompt!r} is not used for chat rows: rows "
                    "without a system turn (or system_column value) get the chat template's "
                    "default",
                    hint="set conversation.system_prompt to give them one",
                    code="system-prompt",
                )
            )
        return out_conv
    variables = c.dataset_columns.mapping()
    known = sorted([*variables, "system_prompt"])
    out: list[Finding] = []
    msgs = c.message_format.training_messages
    kinds_seen: set[str] = set()
    for i, msg in enumerate(msgs):
        base = ("message_format", "training_messages", i)
        parts = msg.parts()
        for j, part in enumerate(parts):
            key = base + (("content",) if isinstance(msg.content, str) else ("content", j))
            if part.type != "text":
                kinds_seen.add(part.type)
                out += _media_part(cs, part.type, key)
                continue
            text_key = key if isinstance(msg.content, str) else key + ("text",)
            for name in placeholders(part.text or ""):
                out += _placeholder(cs, name, known, variables, text_key)
            out += _stray_brace(cs, part.text or "", text_key)
    if not any(m.role == "assistant" for m in msgs):
        out.append(
            cs.finding(
                "error",
                "collator",
                "message_format.training_messages",
                "no assistant turn: there is nothing to train on",
                hint="add a turn `- role: assistant` whose text "
                "is the answer, e.g. {answer_column}",
                code="no-assistant",
            )
        )
    elif msgs and msgs[-1].role != "assistant":
        out.append(
            cs.finding(
                "warning",
                "collator",
                ("message_format", "training_messages", len(msgs) - 1),
                "the last turn is not the assistant's: later turns are context only",
                code="assistant-last",
            )
        )
    if c.use_video and "video" not in kinds_seen:
        out.append(
            cs.finding(
                "error",
                "collator",
                "message_format.training_messages",
                "video_data is true but no "
                "message has a video part: the video would not reach the model",
                hint="put `- type: video` in the user turn (in place of `- type: image`)",
                code="media-part",
            )
        )
    elif c.use_images and "image" not in kinds_seen:
        out.append(
            cs.finding(
                "error",
                "collator",
                "message_format.training_messages",
                "image_data is true but no "
                "message has an image part: the image would not reach the model",
                hint="put `- type: image` in the user turn",
                code="media-part",
            )
        )
    return out


def _media_part(cs: ConfigSet, kind: str, key: tuple) -> list[Finding]:
    c = cs.collator
    if kind == "image" and not c.use_images:
        why = "image_data is false"
        return [
            cs.finding(
                "warning",
                "collator",
                key,
                f"image part dropped: {why}",
                hint="remove this part or change data_processing",
                code="part-off",
            )
        ]
    if kind == "video" and not c.use_video:
        return [
            cs.finding(
                "warning",
                "collator",
                key,
                "video part dropped: video is off "
                "(data_processing.video_data / video_processing.enabled)",
                hint="remove this part or set video_data: true",
                code="part-off",
            )
        ]
    return []


def _stray_brace(cs: ConfigSet, text: str, key: tuple) -> list[Finding]:
    """A `{` or `}` left over once `{name}`, `{{` and `}}` are taken out: `{question_column`
    would otherwise go to the model as literal text on every row."""
    rest = PLACEHOLDER_RE.sub("", text)
    if "{" not in rest and "}" not in rest:
        return []
    brace = "{" if "{" in rest else "}"
    return [
        cs.finding(
            "error",
            "collator",
            key,
            f"unclosed placeholder: a lone {brace!r} in {text[:60]!r}",
            hint="write {name} with both braces (e.g. {question_column}), or {{ and }} for "
            "literal braces",
            code="unclosed-placeholder",
        )
    ]


def _placeholder(
    cs: ConfigSet, name: str, known: list[str], variables: dict, key: tuple
) -> list[Finding]:
    if name not in known:
        close = did_you_mean(name, known)
        hint = (
            f"did you mean {{{close}}}?"
            if close
            else f"use one of {', '.join('{' + k + '}' for k in known)}; write {{{{ and }}}} "
            "for literal braces"
        )
        return [
            cs.finding(
                "error",
                "collator",
                key,
                f"{{{name}}} is not a key of dataset_columns nor system_prompt",
                hint=hint,
                code="unknown-placeholder",
            )
        ]
    if name == "system_prompt" and cs.collator.message_format.system_prompt is None:
        return [
            cs.finding(
                "warning",
                "collator",
                key,
                "{system_prompt} is used but system_prompt is null: it renders empty",
                code="empty-placeholder",
            )
        ]
    if name != "system_prompt" and variables.get(name) is None:
        return [
            cs.finding(
                "error",
                "collator",
                key,
                f"{{{name}}} is used but dataset_columns.{name} is null",
                hint=f"set dataset_columns.{name} to a column name, or remove the placeholder",
                code="null-placeholder",
            )
        ]
    return []


def _model(cs: ConfigSet) -> list[Finding]:
    m = cs.model
    out: list[Finding] = []
    if m.model_name_or_path is None:
        out.append(
            cs.finding(
                "warning",
                "model",
                "model_name_or_path",
                "model_name_or_path is not set: train cannot start",
                hint="set a hub id (e.g. "
                "Qwen/Qwen2-VL-2B-Instruct) or a local folder; or `vlmctl init "
                "--model ID`",
                code="no-model",
            )
        )
    if m.loading_params.trust_remote_code:
        out.append(
            cs.finding(
                "warning",
                "model",
                "loading_params.trust_remote_code",
                "trust_remote_code is on for every model: the checkpoint's own "
                "Python code runs on this machine",
                hint="set it per model (model_classes.<id>.trust_remote_code) only where needed",
                code="remote-code",
            )
        )
    if m.processor_params.trust_remote_code:
        out.append(
            cs.finding(
                "warning",
                "model",
                "processor_params.trust_remote_code",
                "processor trust_remote_code is on for every model",
                hint="set it per model (model_classes.<id>.trust_remote_code)",
                code="remote-code",
            )
        )
    if m.loading_params.device_map == "auto":
        out.append(
            cs.finding(
                "info",
                "model",
                "loading_params.device_map",
                "device_map: auto "
                "spreads one process's model over its GPUs; multi-process "
                "training (accelerate, DDP) overrides it with one device per "
                "process",
                code="device-map",
            )
        )
    if m.model_name_or_path and _looks_local(m.model_name_or_path):
        local = cs.resolve_path(m.model_name_or_path)
        if not local.exists():
            out.append(
                cs.finding(
                    "error",
                    "model",
                    "model_name_or_path",
                    f"model folder not found: {local.resolve()}",
                    hint="a local path is relative to the config folder; fix the path, or write "
                    "a hub id as owner/name",
                    code="model-not-found",
                )
            )
            return out
    if m.model_name_or_path:
        from vlmctl.config.class_checks import class_problems
        from vlmctl.errors import ConfigError
        from vlmctl.models.resolve import resolve_model

        wrong_class = class_problems(cs)
        if wrong_class:
            # resolve_model would add advice (trust_remote_code) that does not apply.
            return out + wrong_class
        try:
            res = resolve_model(m)
        except ConfigError as exc:
            for f in exc.findings:
                key = f.extra.get("path") or ("model_classes", m.model_name_or_path)
                out.append(
                    cs.finding(
                        "error", "model", key, f.message, hint=f.hint, code=f.code or "resolve"
                    )
                )
        else:
            out.append(
                cs.finding("info", "model", "model_name_or_path", res.reason, code="resolution")
            )
    return out


def _train(cs: ConfigSet) -> list[Finding]:
    t = cs.train
    out: list[Finding] = []
    for seed_key, becomes in t.mappings().items():
        key = seed_key.split(":")[0]
        out.append(
            cs.finding(
                "info",
                "train",
                key,
                f"{seed_key} -> {becomes} (installed transformers/TRL name)",
                code="mapping",
            )
        )
    if t.remove_unused_columns:
        out.append(
            cs.finding(
                "warning",
                "train",
                "remove_unused_columns",
                "remove_unused_columns"
                " must be false for VLMs (the collator needs the image/video "
                "columns): vlmctl forces false",
                hint="set it to false",
                code="remove-unused",
            )
        )
    if "wandb" in t.report_to_list():
        out.append(
            cs.finding(
                "info",
                "train",
                "report_to",
                "report_to includes wandb: log in "
                "(`wandb login`) or set WANDB_MODE=offline; vlmctl never prompts",
                code="wandb",
            )
        )
    return out


def _masking(cs: ConfigSet) -> list[Finding]:
    if not cs.collator.label_masking.mask_input_tokens:
        return [
            cs.finding(
                "info",
                "collator",
                "label_masking.mask_input_tokens",
                "mask_input_tokens: false: prompt tokens are trained too (the seed's default)",
                hint="set true to train on the answers only",
                code="prompt-trained",
            )
        ]
    return []


def _looks_local(name: str) -> bool:
    """A path, not a hub id (`owner/name`): starts with . / ~, has a backslash or 2+ slashes."""
    return name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1


def _media_roots(cs: ConfigSet) -> list[Finding]:
    """Each `media_root` must exist: an error when the dataset itself is here (then the folder
    should be too), a warning when the data is not on this machine (configs checked alone)."""
    ds = cs.collator.dataset
    roots = ds.media_root
    if roots is None:
        return []
    items = (
        [(("dataset", "media_root"), roots)]
        if isinstance(roots, str)
        else [(("dataset", "media_root", i), r) for i, r in enumerate(roots)]
    )
    data_here = bool(ds.path) and cs.resolve_path(ds.path).exists()
    out = []
    for key, root in items:
        folder = cs.resolve_path(root)
        if folder.is_dir():
            continue
        what = "not a folder" if folder.exists() else "folder not found"
        out.append(
            cs.finding(
                "error" if data_here else "warning",
                "collator",
                key,
                f"media_root {what}: {folder.resolve()}",
                hint="media_root is relative to the config folder; fix the path or set it to null",
                code="media-root-missing",
            )
        )
    return out


def _dataset(cs: ConfigSet) -> list[Finding]:
    roots = _media_roots(cs)
    if roots:
        return roots
    if cs.collator.dataset.path is None:
        return [
            cs.finding(
                "warning",
                "collator",
                "dataset.path",
                "dataset.path is not set: train and the dataset-level checks need it",
                hint="set dataset.path to a csv/json/jsonl/parquet file, a folder or a hub id",
                code="no-dataset",
            )
        ]
    return []


def _quantized_full(cs: ConfigSet) -> list[Finding]:
    out: list[Finding] = []
    m = cs.model
    if m.quantization.enabled and not cs.peft.enabled:
        out.append(
            cs.finding(
                "error",
                "model",
                "quantization",
                "a quantized model cannot be fully fine-tuned (peft.enabled is false)",
                hint="set peft.enabled: true (QLoRA) or turn quantization off",
                code="quant-full",
            )
        )
    return out


def _label_masking(cs: ConfigSet) -> list[Finding]:
    lm = cs.collator.label_masking
    if lm.ignore_index == -100:
        return []
    # transformers' loss functions (ForCausalLMLoss) and TRL's token accuracy ignore only
    # -100; any other value would be a real label: masked tokens trained towards that id.
    return [
        cs.finding(
            "error",
            "collator",
            "label_masking.ignore_index",
            f"ignore_index: {lm.ignore_index}: the model's loss ignores only -100; with any "
            "other value the masked (prompt, media, padding) tokens would be trained",
            hint="set ignore_index: -100",
            code="ignore-index",
        )
    ]


def _padding(cs: ConfigSet) -> list[Finding]:
    tp = cs.collator.text_processing
    if tp.padding is not False:
        return []
    sizes = [("per_device_train_batch_size", cs.train.per_device_train_batch_size)]
    ds = cs.collator.dataset
    if ds.eval_split or ds.eval_size or ds.eval_path:
        sizes.append(("per_device_eval_batch_size", cs.train.per_device_eval_batch_size))
    over = [f"{k}: {v}" for k, v in sizes if v > 1]
    if not over:
        return []
    return [
        cs.finding(
            "error",
            "collator",
            "text_processing.padding",
            f"padding: false cannot hold with {', '.join(over)}: rows of different lengths "
            "are stacked into one tensor only by padding them",
            hint="set padding: true (pad to the longest row of each batch) or "
            + " and ".join(f"{k}: 1" for k, _ in sizes),
            code="padding-false",
        )
    ]


def _no_effect(cs: ConfigSet) -> list[Finding]:
    c = cs.collator
    out: list[Finding] = []
    ip = c.image_processing
    if ip.resize_mode != "keep_aspect" and ip.max_size is None and c.use_images:
        out.append(
            cs.finding(
                "warning",
                "collator",
                "image_processing.resize_mode",
                f"resize_mode: {ip.resize_mode} has no effect while max_size is null "
                "(images are not resized)",
                hint="set max_size (pixels), or resize_mode: keep_aspect",
                code="no-effect",
            )
        )
    msgs = c.message_format.training_messages
    ends_with_answer = c.conversation is not None or (msgs and msgs[-1].role == "assistant")
    if c.text_processing.add_generation_prompt and ends_with_answer:
        out.append(
            cs.finding(
                "warning",
                "collator",
                "text_processing.add_generation_prompt",
                "add_generation_prompt: true has no effect here: a generation prompt is added "
                "only after a chat that does not end with the assistant's turn",
                hint="set it to false for training",
                code="no-effect",
            )
        )
    fp = c.video_processing.file_processing
    if not fp.convert_to_rgb and c.use_video:
        out.append(
            cs.finding(
                "warning",
                "collator",
                "video_processing.file_processing.convert_to_rgb",
                "convert_to_rgb: false has no effect on video: every decoder returns RGB frames",
                hint="remove the key or set it to true",
                code="no-effect",
            )
        )
    return out


def _peft(cs: ConfigSet) -> list[Finding]:
    p = cs.peft
    if p.enabled and p.bias == "all" and p.exclude_vision_modules:
        return [
            cs.finding(
                "error",
                "peft",
                "bias",
                "bias: all trains and saves every bias of the model, the vision tower's and "
                "the projector's too, although exclude_vision_modules: true keeps them frozen",
                hint="use bias: lora_only (biases of the adapted language-model layers) or "
                "none; or set exclude_vision_modules: false",
                code="bias-all-vision",
            )
        ]
    return []


_RULES = (
    ({"train"}, _precision),
    ({"collator"}, _media),
    ({"collator"}, _messages),
    ({"model"}, _model),
    ({"model", "peft"}, _quantized_full),
    ({"train"}, _train),
    ({"collator"}, _masking),
    ({"collator"}, _dataset),
    ({"collator"}, _label_masking),
    ({"collator", "train"}, _padding),
    ({"collator"}, _no_effect),
    ({"peft"}, _peft),
    ({"train"}, report_to_findings),
    ({"model", "collator", "train"}, config_findings),
)
