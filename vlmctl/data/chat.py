"""Chat-shaped rows (`collator.conversation` set) -> `Example`.

No heavy imports: `validate` runs this on every row before any model exists.

Shapes accepted in the conversation column (a list of turns, or JSON text of one):
- `role`/`content` (OpenAI, LLaMA-Factory) or `from`/`value` (ShareGPT, LLaVA): the keys are
  `conversation.role_key`/`content_key`; role names go through `conversation.role_map`
  (`system`/`user`/`assistant` are always understood).
- content as a string with placeholder tags (`<image>`, `<video>`, or custom tags such as
  `<ImageHere>` via `image_tag`/`video_tag`), or as a list of typed parts:
  `{"type": "text", "text"|"value": ...}`, `{"type": "image"}` (takes the next item of the
  images list), `{"type": "image", "image"|"path"|"url": ref}`,
  `{"type": "image_url", "image_url": "ref" | {"url": ref}}` (OpenAI),
  `{"type": "image_url", "value": ref}` (LLaMA-Factory v1), and the same for video.
  Text parts are split around tags as well.

Rules decided here:
- Tags are matched IN ORDER to the row's media list (`images_column`/`videos_column`, a list or
  a single value, or JSON text of a list). Text is split around each tag into typed parts;
  whitespace touching a tag is dropped ("<image>\\nWho?" -> image, "Who?").
- A tag count that differs from the media count is a DataError naming the row and both counts.
  Exception (the LLaVA convention): when a row has media but NO tag of that kind anywhere, the
  media are placed, in order, at the start of the first user turn (images before videos).
- Inline references (`{"type": "video", "video": "clip.mp4"}`) are a media source of their own:
  no column is needed, and they are counted and checked like column media.
- `data_processing` decides which kinds are kept (`cfg.use_images`/`cfg.use_video`; both on
  keeps both, per row): media of a disabled kind are dropped with their tags (and are not
  count-checked); the Example's `notes` says how many were dropped so `validate` can warn.
  "Video wins" for processors that take one kind per row is applied by the collator.
- System prompt: a system turn in the conversation wins; else `conversation.system_column`
  when the row has a non-empty value; else `conversation.system_prompt`; else none is added,
  so the chat template's own default applies. `message_format.system_prompt` belongs to flat
  rows' `{system_prompt}` and is never used here (a scaffold must not invent training
  content). `Example.system_source` says which applied.
- An unknown role is a DataError naming the row and the role (hint: add it to role_map).
  A conversation with no assistant turn, an empty turn, or a missing column is a DataError.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from vlmctl.errors import DataError, Finding, did_you_mean

CANONICAL_ROLES = ("system", "user", "assistant")
_TEXT_TYPES = {"text", "input_text", "output_text"}
_IMAGE_TYPES = {"image", "image_url", "input_image"}
_VIDEO_TYPES = {"video", "video_url", "input_video"}
_FROM_LIST = object()  # a media slot whose reference comes from the row's media list


def _error(message: str, row: int | None, key: str | None = None, hint: str | None = None):
    return DataError(Finding("error", message, hint=hint, row=row, key=key, code="conversation"))


def _parse_json_text(value: Any) -> Any:
    """JSON text of a list (CSV cells, mixed-type JSON columns) -> the list; else unchanged."""
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("[") and s.endswith("]"):
            try:
                return json.loads(s)
            except json.JSONDecodeError:
                return value
    return value


def _is_media_ref(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    if isinstance(value, Mapping):
        return value.get("bytes") is not None or bool(value.get("path"))
    return hasattr(value, "size") and hasattr(value, "mode")  # PIL image


def media_list(row: Mapping[str, Any], column: str | None, kind: str, row_index: int | None):
    """The row's media references for `column` as a list (single value, list, or JSON text)."""
    if not column or column not in row:
        return []
    value = _parse_json_text(row[column])
    if value is None:
        return []
    if isinstance(value, str) and not value.strip():
        return []
    if isinstance(value, Mapping) and not _is_media_ref(value):
        return []  # an Image feature null: {"bytes": None, "path": None}
    if not isinstance(value, (list, tuple)):
        value = [value]
    out = []
    for i, item in enumerate(value):
        if not _is_media_ref(item):
            raise _error(
                f"item {i} of column {column!r} is not a {kind} reference: {item!r:.60}",
                row_index,
                f"conversation.{kind}s_column",
                f"each {kind} item must be a path, a {{bytes, path}} dict or an image",
            )
        out.append(item)
    return out


def _tag_splitter(image_tag: str, video_tag: str) -> re.Pattern:
    tags = sorted({t for t in (image_tag, video_tag) if t}, key=len, reverse=True)
    return re.compile("(" + "|".join(re.escape(t) for t in tags) + ")")


class _Parser:
    def __init__(self, cfg, row_index: int | None):
        self.conv = cfg.conversation
        self.row_index = row_index
        self.splitter = _tag_splitter(self.conv.image_tag, self.conv.video_tag)

    def split_text(self, text: str) -> list[tuple[str, Any]]:
        """Text -> [("text", str) | ("image"/"video", _FROM_LIST)] around the tags."""
        pieces = self.splitter.split(text)
        if len(pieces) == 1:
            return [("text", text)] if text.strip() else []
        out: list[tuple[str, Any]] = []
        for i, piece in enumerate(pieces):
            if i % 2 == 1:
                kind = "image" if piece == self.conv.image_tag else "video"
                out.append((kind, _FROM_LIST))
                continue
            if i > 0:
                piece = piece.lstrip()
            if i < len(pieces) - 1:
                piece = piece.rstrip()
            if piece:
                out.append(("text", piece))
        return out

    def parts(self, content: Any, turn: int) -> list[tuple[str, Any]]:
        content = _parse_json_text(content)
        if isinstance(content, str):
            return self.split_text(content)
        if isinstance(content, Mapping):
            content = [content]
        if not isinstance(content, (list, tuple)):
            raise _error(
                f"turn {turn}: content is a {type(content).__name__}, expected text or a list "
                "of parts",
                self.row_index,
                "conversation.content_key",
            )
        out: list[tuple[str, Any]] = []
        for part in content:
            if isinstance(part, str):
                out.extend(self.split_text(part))
                continue
            if not isinstance(part, Mapping):
                raise _error(
                    f"turn {turn}: content part {part!r:.60} is not text or a typed part",
                    self.row_index,
                )
            ptype = str(part.get("type") or "").lower()
            if not ptype:
                ptype = "text" if _first(part, "text", "value") is not None else ""
            if ptype in _TEXT_TYPES:
                text = _first(part, "text", "value", "content")
                out.extend(self.split_text(str(text or "")))
            elif ptype in _IMAGE_TYPES or ptype in _VIDEO_TYPES:
                kind = "image" if ptype in _IMAGE_TYPES else "video"
                ref = _first(part, kind, ptype, "path", "url", "value")
                if isinstance(ref, Mapping) and "url" in ref and not _is_media_ref(ref):
                    ref = ref["url"]
                out.append((kind, ref if ref is not None and _is_media_ref(ref) else _FROM_LIST))
            else:
                raise _error(
                    f"turn {turn}: unknown content part type {part.get('type')!r}",
                    self.row_index,
                    hint="part types: text, image, image_url, video, video_url",
                )
        return out


def _first(part: Mapping[str, Any], *keys: str) -> Any:
    for k in keys:
        v = part.get(k)
        if v is not None:
            return v
    return None


def _role(raw: Any, cfg, row_index: int | None, turn: int) -> str:
    conv = cfg.conversation
    name = "" if raw is None else str(raw).strip()
    for candidate in (name, name.lower()):
        if candidate in conv.role_map:
            return conv.role_map[candidate]
    if name.lower() in CANONICAL_ROLES:
        return name.lower()
    if not name:
        raise _error(
            f"turn {turn} has no role (key {conv.role_key!r})",
            row_index,
            "conversation.role_key",
            "set conversation.role_key to the key holding the speaker ('from' for ShareGPT/LLaVA)",
        )
    close = did_you_mean(name, list(conv.role_map))
    hint = f"add it to conversation.role_map, e.g. role_map: {{{name}: user}}"
    if close:
        hint += f" (or did you mean {close!r}?)"
    raise _error(f"turn {turn}: unknown role {name!r}", row_index, "conversation.role_map", hint)


def _turns(row: Mapping[str, Any], cfg, row_index: int | None) -> list[Mapping[str, Any]]:
    conv = cfg.conversation
    if conv.column not in row:
        close = did_you_mean(conv.column, list(row))
        hint = f"did you mean {close!r}?" if close else f"columns: {', '.join(map(str, row))}"
        raise _error(f"no column {conv.column!r}", row_index, "conversation.column", hint)
    turns = _parse_json_text(row[conv.column])
    if isinstance(turns, str):
        raise _error(
            f"column {conv.column!r} holds text, not a list of turns",
            row_index,
            "conversation.column",
            "a conversation is a list of {role, content} turns (or JSON text of one)",
        )
    if not turns:
        raise _error(f"empty conversation in column {conv.column!r}", row_index)
    if not isinstance(turns, (list, tuple)) or not all(isinstance(t, Mapping) for t in turns):
        raise _error(
            f"column {conv.column!r} must hold a list of turns (objects)",
            row_index,
            "conversation.column",
        )
    return list(turns)


def _system_text(row: Mapping[str, Any], cfg) -> tuple[str | None, str]:
    """(system text to add, where it comes from) for a row without a system turn."""
    conv = cfg.conversation
    if conv.system_column and conv.system_column in row:
        value = row[conv.system_column]
        if isinstance(value, str) and value.strip():
            return value, "system_column"
    prompt = conv.system_prompt
    if prompt and prompt.strip():
        return prompt, "conversation.system_prompt"
    return None, "template default"


def conversation_to_example(row: Mapping[str, Any], cfg, row_index: int | None = None) -> Any:
    """Turn one chat-shaped row into an `Example` (messages + media refs in part order).

    Media are not decoded; see the module docstring for the rules (tags, counts, roles,
    system prompt, disabled media kinds).
    """
    from vlmctl.data.example import Example

    conv = cfg.conversation
    parsed = _parse_turns(row, cfg, row_index)
    enabled = {"image": cfg.use_images, "video": cfg.use_video}
    columns = {"image": conv.images_column, "video": conv.videos_column}
    refs = {k: media_list(row, columns[k], k, row_index) for k in ("image", "video")}
    notes: list[str] = []
    _match_media(row, cfg, parsed, refs, notes, row_index)
    messages, images, videos = _build_messages(parsed, refs, enabled, notes, row_index)

    source = "system turn"
    if not any(m["role"] == "system" for m in messages):
        system, source = _system_text(row, cfg)
        if system:
            messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
    if not any(m["role"] == "assistant" for m in messages):
        raise _error(
            "the conversation has no assistant turn (nothing to train on)",
            row_index,
            "conversation.role_map",
            "check role_map: the answering role must map to 'assistant'",
        )
    return Example(
        messages=messages,
        images=images,
        videos=videos,
        row=row_index,
        notes=notes,
        system_source=source,
    )


def _parse_turns(row: Mapping[str, Any], cfg, row_index: int | None):
    """[(role, [(kind, text or media ref)])] per turn, roles mapped, content parts parsed."""
    conv = cfg.conversation
    parser = _Parser(cfg, row_index)
    turns = _turns(row, cfg, row_index)

    parsed: list[tuple[str, list[tuple[str, Any]]]] = []
    for i, turn in enumerate(turns):
        role = _role(turn.get(conv.role_key), cfg, row_index, i)
        if conv.content_key not in turn:
            keys = ", ".join(map(str, turn))
            raise _error(
                f"turn {i} has no {conv.content_key!r} key (keys: {keys})",
                row_index,
                "conversation.content_key",
                "set conversation.content_key ('value' for ShareGPT/LLaVA)",
            )
        content = turn.get(conv.content_key)
        if content is None:
            raise _error(f"turn {i} ({role}) has no content", row_index)
        parsed.append((role, parser.parts(content, i)))

    return parsed


def _match_media(row, cfg, parsed, refs, notes: list[str], row_index: int | None) -> None:
    """Tags against the media lists: untagged media open the first user turn (LLaVA's
    convention); a count that does not match is an error while that kind is enabled."""
    conv = cfg.conversation
    enabled = {"image": cfg.use_images, "video": cfg.use_video}
    columns = {"image": conv.images_column, "video": conv.videos_column}
    for kind in ("image", "video"):
        slots = sum(1 for _, parts in parsed for k, r in parts if k == kind and r is _FROM_LIST)
        given = len(refs[kind])
        if slots == 0 and given:
            # LLaVA convention: untagged media open the first user turn.
            first_user = next((p for role, p in parsed if role == "user"), None)
            if first_user is None:
                raise _error(f"{given} {kind}(s) but no user turn to place them in", row_index)
            at = sum(1 for k, _ in first_user if k == "image") if kind == "video" else 0
            first_user[at:at] = [(kind, _FROM_LIST)] * given
            if enabled[kind]:
                notes.append(
                    f"{given} {kind}(s) without a {_tag(conv, kind)} tag placed at the "
                    "start of the first user turn"
                )
        elif slots != given and enabled[kind]:
            col = columns[kind]
            hint = f"each {kind} needs one {_tag(conv, kind)} tag in the text, in order"
            if given == 0 and (not col or col not in row):
                hint = (
                    f"column {col!r} is not in the row: set conversation.{kind}s_column "
                    f"(columns: {', '.join(map(str, row))})"
                )
            raise _error(
                f"{slots} {_tag(conv, kind)} tag(s) but {given} {kind}(s) in column {col!r}",
                row_index,
                f"conversation.{kind}s_column",
                hint,
            )


def _build_messages(parsed, refs, enabled, notes: list[str], row_index: int | None):
    """(messages, images, videos): media refs in part order; parts of a disabled kind dropped."""
    messages: list[dict] = []
    images: list[Any] = []
    videos: list[Any] = []
    dropped = {"image": 0, "video": 0}
    pending = {k: list(v) for k, v in refs.items()}
    for i, (role, parts) in enumerate(parsed):
        content: list[dict] = []
        for kind, ref in parts:
            if kind == "text":
                content.append({"type": "text", "text": ref})
                continue
            if ref is _FROM_LIST:
                ref = pending[kind].pop(0) if pending[kind] else None
            if not enabled[kind] or ref is None:
                dropped[kind] += 1
                continue
            (images if kind == "image" else videos).append(ref)
            content.append({"type": kind})
        if not content:
            if any(k != "text" for k, _ in parts):
                continue  # only media of a disabled kind: drop the turn (noted below)
            raise _error(f"turn {i} ({role}) is empty", row_index)
        messages.append({"role": role, "content": content})
    for kind, n in dropped.items():
        if n:
            notes.append(f"{n} {kind}(s) dropped ({kind} data is off: data_processing)")

    return messages, images, videos


def _tag(conv, kind: str) -> str:
    return conv.image_tag if kind == "image" else conv.video_tag
