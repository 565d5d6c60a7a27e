"""`Example`: one dataset row as a chat plus its media references (not decoded).

Lives in its own tiny module so `data/chat.py` and `data/messages.py` can both use it without
importing each other; `messages.py` re-exports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Example:
    """A rendered row: HF chat messages and the media they point to, in part order.

    `messages` content parts are `{"type": "text", "text": ...}`, `{"type": "image"}` or
    `{"type": "video"}`; `images`/`videos` hold references (path str, `{"bytes","path"}` dict,
    PIL image) in the order of their parts. Media are decoded later by the collator.
    """

    messages: list[dict] = field(default_factory=list)
    images: list = field(default_factory=list)
    videos: list = field(default_factory=list)
    row: int | None = None
    # Non-fatal things the renderer did to the row (e.g. media of a disabled kind dropped),
    # for `validate` to report as warnings.
    notes: list[str] = field(default_factory=list)
    # Chat rows: where the system turn came from (system turn | system_column |
    # conversation.system_prompt | template default), for `validate`'s note; None for flat rows.
    system_source: str | None = None
