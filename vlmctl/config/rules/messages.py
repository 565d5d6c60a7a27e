"""Cross-field rules of the message template and of what is trained (label masking)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vlmctl.config.collator import PLACEHOLDER_RE, placeholders
from vlmctl.config.rules.media import media_part_findings
from vlmctl.errors import Finding, did_you_mean

if TYPE_CHECKING:
    from vlmctl.config.load import ConfigSet


def check_messages(cs: ConfigSet) -> list[Finding]:
    """The template's turns and parts: placeholders, media parts, an answer to train on."""
    if cs.collator.conversation is not None:
        return _chat_rows(cs)
    out, kinds_seen = _parts(cs)
    return out + _turn_order(cs) + _media_parts_present(cs, kinds_seen)


def _chat_rows(cs: ConfigSet) -> list[Finding]:
    c = cs.collator
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


def _parts(cs: ConfigSet) -> tuple[list[Finding], set[str]]:
    """Findings of every part of every turn, and the media kinds the parts name."""
    c = cs.collator
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
                out += media_part_findings(cs, part.type, key)
                continue
            text_key = key if isinstance(msg.content, str) else key + ("text",)
            for name in placeholders(part.text or ""):
                out += _placeholder(cs, name, known, variables, text_key)
            out += _stray_brace(cs, part.text or "", text_key)
    return out, kinds_seen


def _turn_order(cs: ConfigSet) -> list[Finding]:
    msgs = cs.collator.message_format.training_messages
    out: list[Finding] = []
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
    return out


def _media_parts_present(cs: ConfigSet, kinds_seen: set[str]) -> list[Finding]:
    c = cs.collator
    out: list[Finding] = []
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


def check_masking(cs: ConfigSet) -> list[Finding]:
    """A note when prompt tokens are trained too."""
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


def check_label_masking(cs: ConfigSet) -> list[Finding]:
    """The loss ignores only -100: any other ignore_index would train masked tokens."""
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
