"""Flat dataset row -> chat `Example`, by rendering `message_format.training_messages`.

No heavy imports: `validate` renders every row with this module before any model exists.

Semantics (the seed's, plus the decisions it leaves open):
- `{name}` in a text part is a key of `dataset_columns` (value: `row[column]`) or
  `system_prompt`; `{{` / `}}` are literal braces. An unknown name, or a variable whose column
  is mapped to null, is a ConfigError (the template is wrong, not the row).
- A missing column, a None value or an empty/blank string raises DataError naming the row and
  the column: nothing is ever trained on an empty string by accident. Numbers and booleans
  are written with `str()`; lists/dicts in a text variable are refused (ambiguous).
- A text part that renders to whitespace only (e.g. `{system_prompt}` with `system_prompt:
  null`) is dropped, and a message left with no parts is dropped too.
- Media: `{type: image}` parts take references from `image_column`. A single template image
  part takes the WHOLE column value in order (one part per item when the value is a list), so
  multi-image rows need no template change; several image parts in the template are matched
  one-to-one, in order, to the items of the list (a count mismatch is a DataError). Video parts
  work the same way with `video_column`.
- Images off and video on (the seed's scenario 2 only flips the flags): when the template has
  no video part at all, each image part becomes a video part. When video is off, video parts
  are dropped; when images are off, image parts are dropped.
- Both on: each row keeps what it has, as the row says: a blank image or video value means
  "none of that kind in this row" (a row with neither is a DataError). Whether a processor can
  take both in one row is the collator's business (`VLMCollator.fit_media`: video wins there
  only for processors that take one kind per row).
- A media column holding JSON text of a list (mixed-type JSON files) is parsed.
- `context_column`: a template that mentions `{context_column}` places it itself; otherwise a
  set context column is prepended as its own text part (`"<context>\\n"`) at the start of the
  first user message, so configuring the column is enough to use it.
- `cfg.conversation` set: delegated to `vlmctl.data.chat.conversation_to_example`.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from vlmctl.config.collator import PLACEHOLDER_RE, CollatorConfig, placeholders
from vlmctl.data.example import Example
from vlmctl.errors import ConfigError, DataError, Finding, did_you_mean

__all__ = ["Example", "row_to_example", "template_variables"]

_CONTEXT = "context_column"


def template_variables(cfg: CollatorConfig) -> list[str]:
    """Every `{variable}` the message template uses, in order of first use (for validate)."""
    seen: dict[str, None] = {}
    for msg in cfg.message_format.training_messages:
        for part in msg.parts():
            if part.type == "text":
                for name in placeholders(part.text or ""):
                    seen.setdefault(name, None)
    return list(seen)


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple)):
        return len(value) == 0
    return False


def _row_error(message: str, row_index: int | None, key: str, hint: str | None = None):
    return DataError(Finding("error", message, hint=hint, row=row_index, key=key, code="row-value"))


def _column_value(
    row: Mapping[str, Any], var: str, column: str | None, row_index: int | None
) -> Any:
    """`row[column]` for template variable `var`; DataError when missing or empty."""
    key = f"dataset_columns.{var}"
    if column is None:
        raise ConfigError(
            Finding(
                "error",
                f"the message template uses {{{var}}} but {key} is null",
                hint=f"set {key} to a column name, or remove {{{var}}} from the template",
                key=key,
                code="template-null-column",
            )
        )
    if column not in row:
        close = did_you_mean(column, list(row))
        hint = f"did you mean {close!r}?" if close else f"columns: {', '.join(map(str, row))}"
        raise _row_error(f"no column {column!r} (from {key})", row_index, key, hint)
    value = row[column]
    if _is_blank(value):
        raise _row_error(
            f"empty value in column {column!r} (from {key})",
            row_index,
            key,
            "fill or filter out rows with an empty value",
        )
    return value


def _as_text(value: Any, column: str, var: str, row_index: int | None) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (bool, int, float)):
        return str(value)
    raise _row_error(
        f"column {column!r} holds a {type(value).__name__}, not text",
        row_index,
        f"dataset_columns.{var}",
        "map a text column, or use `conversation:` for structured rows",
    )


class _Renderer:
    """Renders text parts of one row; values are looked up once per variable."""

    def __init__(self, row: Mapping[str, Any], cfg: CollatorConfig, row_index: int | None):
        self.row = row
        self.cfg = cfg
        self.row_index = row_index
        self.mapping = cfg.dataset_columns.mapping()
        self.cache: dict[str, str] = {}

    def value(self, name: str) -> str:
        if name in self.cache:
            return self.cache[name]
        if name == "system_prompt":
            text = self.cfg.message_format.system_prompt or ""
        elif name in self.mapping:
            column = self.mapping[name]
            raw = _column_value(self.row, name, column, self.row_index)
            text = _as_text(raw, str(column), name, self.row_index)
        else:
            known = ["system_prompt", *self.mapping]
            close = did_you_mean(name, known)
            hint = f"did you mean {{{close}}}?" if close else f"known: {', '.join(known)}"
            raise ConfigError(
                Finding(
                    "error",
                    f"unknown template variable {{{name}}}",
                    hint=hint + "; write {{ and }} for literal braces",
                    key="message_format.training_messages",
                    code="template-unknown-variable",
                )
            )
        self.cache[name] = text
        return text

    def render(self, template: str) -> str:
        pieces = _text_pieces(template)
        if len(pieces) == 1:  # the usual "{question_column}" or plain text
            is_var, text = pieces[0]
            return self.value(text) if is_var else text
        return "".join(self.value(text) if is_var else text for is_var, text in pieces)


@functools.lru_cache(maxsize=1024)
def _text_pieces(template: str) -> tuple[tuple[bool, str], ...]:
    """`template` as (is_variable, text) pieces, left to right: what `PLACEHOLDER_RE.sub` visits.

    Parsed once per distinct template text (every row renders the same few).
    """
    pieces: list[tuple[bool, str]] = []
    pos = 0
    for m in PLACEHOLDER_RE.finditer(template):
        if m.start() > pos:
            pieces.append((False, template[pos : m.start()]))
        if m.group(1) is not None:
            pieces.append((True, m.group(1).strip()))
        else:
            pieces.append((False, m.group(0)[0]))  # "{{" -> "{", "}}" -> "}"
        pos = m.end()
    if pos < len(template):
        pieces.append((False, template[pos:]))
    return tuple(pieces)


def _media_refs(
    row: Mapping[str, Any],
    var: str,
    column: str | None,
    row_index: int | None,
    optional: bool = False,
) -> list[Any]:
    """The row's media for `var`; `optional`: a blank value is no media (mixed datasets)."""
    from vlmctl.data.chat import _parse_json_text

    if optional and column is not None and column in row:
        value = _parse_json_text(row[column])
        if _is_blank(value):
            return []
    value = _parse_json_text(_column_value(row, var, column, row_index))
    if isinstance(value, (list, tuple)):
        items = list(value)
        for i, item in enumerate(items):
            if _is_blank(item):
                raise _row_error(
                    f"item {i} of column {column!r} is empty (from dataset_columns.{var})",
                    row_index,
                    f"dataset_columns.{var}",
                )
        return items
    return [value]


def _assign_media(
    refs: list[Any], n_parts: int, kind: str, column: str | None, row_index: int | None
) -> list[list[Any]]:
    """Split a row's media list over the template's `n_parts` parts of that kind."""
    if n_parts == 1 or not refs:
        if not refs:
            return [[] for _ in range(n_parts)]
        return [refs]
    if len(refs) != n_parts:
        raise _row_error(
            f"the template has {n_parts} {kind} parts but column {column!r} holds {len(refs)} "
            f"{kind}(s)",
            row_index,
            f"dataset_columns.{kind}_column",
            f"give each row {n_parts} {kind}s, or use one {{type: {kind}}} part (it takes them all)",
        )
    return [[r] for r in refs]


def row_to_example(
    row: Mapping[str, Any], cfg: CollatorConfig, row_index: int | None = None
) -> Example:
    """Render one raw dataset row into chat messages plus media references (not decoded)."""
    if cfg.conversation is not None:
        from vlmctl.data.chat import conversation_to_example

        return conversation_to_example(row, cfg, row_index)

    renderer = _Renderer(row, cfg, row_index)
    templates = cfg.message_format.training_messages
    use_images, use_video = cfg.use_images, cfg.use_video

    parts_per_msg = [m.parts() for m in templates]
    n_image = sum(p.type == "image" for parts in parts_per_msg for p in parts)
    n_video = sum(p.type == "video" for parts in parts_per_msg for p in parts)
    # Images off, video on, and the template has only image slots: they carry the video.
    image_as_video = use_video and not use_images and n_video == 0 and n_image > 0
    if image_as_video:
        n_video, n_image = n_image, 0

    mapping = renderer.mapping
    image_groups: list[list[Any]] = []
    video_groups: list[list[Any]] = []
    # Both kinds in the template: a row may hold either or both (mixed datasets).
    mixed = bool(use_images and n_image and use_video and n_video)
    if use_images and n_image:
        col = mapping.get("image_column")
        refs = _media_refs(row, "image_column", col, row_index, optional=mixed)
        image_groups = _assign_media(refs, n_image, "image", col, row_index)
    if use_video and n_video:
        col = mapping.get("video_column")
        refs = _media_refs(row, "video_column", col, row_index, optional=mixed)
        video_groups = _assign_media(refs, n_video, "video", col, row_index)
    if mixed and not any(image_groups) and not any(video_groups):
        raise _row_error(
            f"neither an image (column {mapping.get('image_column')!r}) nor a video (column "
            f"{mapping.get('video_column')!r})",
            row_index,
            "dataset_columns.image_column",
            "give each row an image or a video, or filter out rows without media",
        )

    context_text = None
    context_col = mapping.get(_CONTEXT)
    if context_col is not None and _CONTEXT not in template_variables(cfg):
        context_text = renderer.value(_CONTEXT)

    messages: list[dict] = []
    images: list[Any] = []
    videos: list[Any] = []
    for tmpl, parts in zip(templates, parts_per_msg, strict=True):
        content: list[dict] = []
        if context_text is not None and tmpl.role == "user":
            content.append({"type": "text", "text": context_text + "\n"})
            context_text = None
        for part in parts:
            kind = part.type
            if kind == "image" and image_as_video:
                kind = "video"
            if kind == "text":
                text = renderer.render(part.text or "")
                if text.strip():
                    content.append({"type": "text", "text": text})
            elif kind == "image":
                if use_images and image_groups:
                    group = image_groups.pop(0)
                    images.extend(group)
                    content.extend({"type": "image"} for _ in group)
            elif kind == "video":
                if use_video and video_groups:
                    group = video_groups.pop(0)
                    videos.extend(group)
                    content.extend({"type": "video"} for _ in group)
        if content:
            messages.append({"role": tmpl.role, "content": content})

    if context_text is not None:  # no user turn: the context opens the chat
        messages.insert(0, {"role": "user", "content": [{"type": "text", "text": context_text}]})
    return Example(messages=messages, images=images, videos=videos, row=row_index)
