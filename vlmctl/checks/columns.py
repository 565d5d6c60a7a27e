"""Column checks: every column the config uses exists in the data (did-you-mean over the real
names); chat datasets: the conversation column, role/content keys, roles and media tags."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from vlmctl.errors import Finding, did_you_mean

_CHAT_PROBE_ROWS = 50  # rows read to check role/content keys, roles and tags
_KNOWN_TAGS = ("<image>", "<video>", "<ImageHere>", "<img>", "<|image|>", "<|video|>")


def _template_has(cfg: Any, kind: str) -> bool:
    return any(p.type == kind for m in cfg.message_format.training_messages for p in m.parts())


def column_findings(cs: Any, columns: list[str]) -> list[Finding]:
    """Every column the config uses must exist in the dataset (did-you-mean over real names)."""
    from vlmctl.data.messages import template_variables

    c = cs.collator
    out: list[Finding] = []

    def missing(file_key_path: str, column: str, severity: str = "error", why: str = "") -> None:
        close = did_you_mean(column, columns)
        hint = f"did you mean {close!r}?" if close else f"columns: {', '.join(columns)}"
        out.append(
            cs.finding(
                severity,
                "collator",
                file_key_path,
                f"column {column!r} is not in the dataset{why}",
                hint=hint,
                code="column-missing",
            )
        )

    if c.conversation is None:
        mapping = c.dataset_columns.mapping()
        needed = [v for v in template_variables(c) if v in mapping]
        if c.use_images and _template_has(c, "image"):
            needed.append("image_column")
        if c.use_video and (_template_has(c, "video") or _template_has(c, "image")):
            needed.append("video_column")
        if mapping.get("context_column"):
            needed.append("context_column")
        for var in dict.fromkeys(needed):
            col = mapping.get(var)
            if col is not None and col not in columns:
                missing(f"dataset_columns.{var}", col)
        return out
    conv = c.conversation
    if conv.column not in columns:
        missing("conversation.column", conv.column)
    if conv.system_column and conv.system_column not in columns:
        # Optional per row: rows without it use message_format.system_prompt.
        missing(
            "conversation.system_column",
            conv.system_column,
            "info",
            ": every row falls back to message_format.system_prompt",
        )
    for kind, col, on in (
        ("images", conv.images_column, c.use_images),
        ("videos", conv.videos_column, c.use_video),
    ):
        if col and on and col not in columns:
            missing(
                f"conversation.{kind}_column",
                col,
                "warning",
                f": {kind} come only from inline content parts (a {kind[:-1]} tag without "
                f"one is then an error; set {kind}_column: null when that is meant)",
            )
    return out


def _scan_turns(conv: Any, ds: Any) -> tuple[Counter, Counter, list[str], int]:
    """Turn keys, roles and texts of the first rows: (key counts, role counts, texts, turns)."""
    from vlmctl.data.chat import _parse_json_text
    from vlmctl.data.dataset import iter_rows

    key_counts: Counter = Counter()
    roles: Counter = Counter()
    texts: list[str] = []
    turns_seen = 0
    for _, row in _take(iter_rows(ds), _CHAT_PROBE_ROWS):
        turns = _parse_json_text(row.get(conv.column))
        if not isinstance(turns, list):
            continue
        for turn in turns:
            if not isinstance(turn, dict):
                continue
            turns_seen += 1
            key_counts.update(turn.keys())
            if conv.role_key in turn:
                roles[str(turn[conv.role_key])] += 1
            content = turn.get(conv.content_key)
            if isinstance(content, str):
                texts.append(content)
            elif isinstance(content, list):
                texts += [
                    str(p.get("text") or p.get("value") or "")
                    for p in content
                    if isinstance(p, dict)
                ]
    return key_counts, roles, texts, turns_seen


def _key_findings(cs: Any, conv: Any, key_counts: Counter) -> list[Finding]:
    """role_key / content_key missing from the turns (did-you-mean over the real keys)."""
    out = []
    keys = sorted(key_counts)
    for name, attr in ((conv.role_key, "role_key"), (conv.content_key, "content_key")):
        if name not in key_counts:
            close = did_you_mean(name, keys) or next(
                (
                    k
                    for k in (("from", "role") if attr == "role_key" else ("value", "content"))
                    if k in key_counts
                ),
                None,
            )
            hint = f"did you mean {close!r}?" if close else f"turn keys: {', '.join(keys)}"
            out.append(
                cs.finding(
                    "error",
                    "collator",
                    f"conversation.{attr}",
                    f"the turns have no key {name!r} (keys: {', '.join(keys)})",
                    hint=hint,
                    code="conversation-key",
                )
            )
    return out


def _role_findings(cs: Any, conv: Any, roles: Counter) -> list[Finding]:
    """Roles outside role_map, and no role that maps to assistant."""
    out = []
    known = set(conv.role_map) | {"system", "user", "assistant"}
    for role in sorted(r for r in roles if r not in known):
        out.append(
            cs.finding(
                "error",
                "collator",
                "conversation.role_map",
                f"role {role!r} ({roles[role]} turns in the first "
                f"{_CHAT_PROBE_ROWS} rows) is not in role_map",
                hint=f"add `{role}: user` or `{role}: assistant` to role_map",
                code="conversation-role",
            )
        )
    mapped = {conv.role_map.get(r, r) for r in roles}
    if roles and "assistant" not in mapped:
        out.append(
            cs.finding(
                "error",
                "collator",
                "conversation.role_map",
                f"no role maps to 'assistant' (roles seen: {', '.join(sorted(roles))})",
                hint="map the answering role to assistant",
                code="conversation-role",
            )
        )
    return out


def _tag_findings(cs: Any, conv: Any, texts: list[str]) -> list[Finding]:
    """Media tags the text uses that the config does not (they would stay literal text)."""
    out = []
    joined = "\n".join(texts)
    for tag in _KNOWN_TAGS:
        if tag in (conv.image_tag, conv.video_tag) or tag not in joined:
            continue
        kind = "video" if "video" in tag else "image"
        configured = conv.video_tag if kind == "video" else conv.image_tag
        if configured not in joined:
            out.append(
                cs.finding(
                    "warning",
                    "collator",
                    f"conversation.{kind}_tag",
                    f"the text uses {tag!r} but {kind}_tag is {configured!r}: "
                    f"{tag} stays literal text",
                    hint=f"set {kind}_tag: {tag!r}",
                    code="conversation-tag",
                )
            )
    return out


def conversation_findings(cs: Any, ds: Any) -> list[Finding]:
    """Chat datasets: role/content keys, roles outside role_map, tags the config does not use."""
    conv = cs.collator.conversation
    key_counts, roles, texts, turns_seen = _scan_turns(conv, ds)
    if not turns_seen:
        return []
    out = _key_findings(cs, conv, key_counts)
    out += _role_findings(cs, conv, roles)
    return out + _tag_findings(cs, conv, texts)


def _take(it: Iterator, n: int) -> Iterator:
    for i, item in enumerate(it):
        if i >= n:
            return
        yield item
