"""Chat rendering and the answer spans (THE span rule): the chat in the form the template
takes, rendered with the processor's chat template, and the character span of each assistant
turn found from the template itself (its `{% generation %}` markers when they check out,
otherwise incremental renders), trimmed and closed at the turn's end-of-turn marker."""

from __future__ import annotations

import operator
import os
from collections.abc import Mapping, Sequence
from itertools import accumulate
from typing import Any

from vlmctl.data.example import Example
from vlmctl.errors import DataError, Finding, VlmctlError


class ChatRenderer:
    """Renders chats with one processor's template and finds their answer spans.

    Template compilation, the content form probe and the closers are computed once and kept.
    """

    def __init__(self, processor: Any, cfg: Any, chat_template: str | None, **facts: Any):
        self.processor = processor
        self.cfg = cfg
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.chat_template = chat_template
        self.eos_token = facts["eos_token"]
        self.special_strings = facts["special_strings"]
        self._special_tokens_map = facts["special_tokens_map"]
        self._has_generation_markers = facts["has_generation_markers"]

    def render_many(
        self, convs: list[list[dict]], add_generation_prompt: bool, plain: bool | None = None
    ) -> list[str]:
        """Render several chats in one call (the template is compiled once and cached).

        `plain`: whether every chat is `_is_plain` when the caller already knows it.
        """
        if not convs:
            return []
        compiled = self._compiled_template()
        if plain is None:
            plain = all(_is_plain(c) for c in convs)
        if compiled is not None and plain:
            # Plain str/dict/list chats (what row_to_example builds) need none of HF's
            # per-call sanitising copies; the template runs in jinja's immutable sandbox.
            # What `compiled.render(messages=c, tools=None, documents=None,
            # add_generation_prompt=..., **special_tokens)` does, with the template globals
            # copied once instead of per call (jinja's `new_context(shared=True)` takes
            # the dict as is; the default path rebuilds it from a ChainMap every time).
            env = compiled.environment
            base = self._render_vars
            out = []
            for c in convs:
                ctx = compiled.new_context(
                    {**base, "messages": c, "add_generation_prompt": add_generation_prompt},
                    shared=True,
                )
                try:
                    out.append(env.concat(compiled.root_render_func(ctx)))
                except Exception:  # noqa: BLE001 - what Template.render does with errors
                    env.handle_exception()
            return out
        from transformers.utils.chat_template_utils import render_jinja_template

        prompts, _ = render_jinja_template(
            conversations=convs,
            chat_template=self.chat_template,
            add_generation_prompt=add_generation_prompt,
            **self._special_tokens_map,
        )
        return list(prompts)

    def _compiled_template(self):
        if not hasattr(self, "_compiled"):
            try:  # private helper (cached compile); the public path below is the fallback
                from transformers.utils.chat_template_utils import _compile_jinja_template

                self._compiled = _compile_jinja_template(self.chat_template)
                if self._compiled.environment.is_async:
                    raise TypeError("async environment")
                # Template globals, then the call's variables (they win, as in `render`).
                self._render_vars = {
                    **dict(self._compiled.globals),
                    "tools": None,
                    "documents": None,
                    **self._special_tokens_map,
                }
            except Exception:  # noqa: BLE001 - any failure: use render_jinja_template
                self._compiled = None
        return self._compiled

    def assistant_char_spans_many(
        self, chats: list[list[dict]]
    ) -> list[tuple[str, list[list[int]]]]:
        """Rendered chat and the [start, end) character span of each assistant turn, per chat.

        Without `{% generation %}` markers: the chat through turn k must render as a prefix of
        the whole chat; the answer starts where the chat before turn k, rendered WITH the
        generation prompt, ends (without it when that is not a prefix), and ends at the end of
        turn k minus trailing whitespace. All renders of a batch go in two template calls.
        """
        tp = self.cfg.text_processing
        gen = [tp.add_generation_prompt and bool(m) and m[-1]["role"] != "assistant" for m in chats]
        marked = self._marked_spans(chats, gen) if self._has_generation_markers else {}
        if marked and len(marked) == len(chats):
            return [marked[i] for i in range(len(chats))]
        rendered = self._prefix_renders(chats, gen, marked)
        out = []
        for i, (messages, flag) in enumerate(zip(chats, gen, strict=True)):
            if i in marked:
                out.append(marked[i])
                continue
            full = rendered[flag][(i, len(messages))]
            out.append((full, self._spans_from_prefixes(i, messages, full, rendered)))
        return out

    def _marked_spans(
        self, chats: list[list[dict]], gen: list[bool]
    ) -> dict[int, tuple[str, list[list[int]]]]:
        """Chats whose `{% generation %}` spans check out: index -> (rendered, spans)."""
        from transformers.utils.chat_template_utils import render_jinja_template

        marked: dict[int, tuple[str, list[list[int]]]] = {}
        for i, (messages, flag) in enumerate(zip(chats, gen, strict=True)):
            prompts, indices = render_jinja_template(
                conversations=[messages],
                chat_template=self.chat_template,
                add_generation_prompt=flag,
                return_assistant_tokens_mask=True,
                **self._special_tokens_map,
            )
            spans = _checked_marker_spans(messages, prompts[0], indices[0])
            if spans is not None:  # markers not trusted blindly: else render incrementally
                marked[i] = (prompts[0], spans)
        return marked

    def _prefix_renders(
        self, chats: list[list[dict]], gen: list[bool], marked: Mapping[int, Any]
    ) -> dict[bool, dict[tuple[int, int], str]]:
        """Every prefix the span rule needs, rendered in one template call per prompt flag:
        [flag][(chat i, messages through n)] -> text."""
        wanted: dict[bool, dict[tuple[int, int], list[dict]]] = {True: {}, False: {}}
        for i, (messages, flag) in enumerate(zip(chats, gen, strict=True)):
            if i in marked:
                continue
            wanted[flag][(i, len(messages))] = messages
            for k, msg in enumerate(messages):
                if msg["role"] == "assistant":
                    wanted[False][(i, k + 1)] = messages[: k + 1]
                    if k:
                        wanted[True][(i, k)] = messages[:k]
        # Each message is checked once: a request (chat i through message n) is plain when
        # chat i is a list and its first n messages are plain (what `_is_plain` of it says).
        msg_plain = [
            list(accumulate((_is_plain(m) for m in msgs), operator.and_))
            if type(msgs) is list
            else None
            for msgs in chats
        ]
        rendered: dict[bool, dict[tuple[int, int], str]] = {}
        for flag, reqs in wanted.items():
            plain = all(
                msg_plain[i] is not None and (upto == 0 or msg_plain[i][upto - 1])
                for i, upto in reqs
            )
            rendered[flag] = dict(
                zip(reqs, self.render_many(list(reqs.values()), flag, plain), strict=True)
            )
            # (an empty request set renders nothing)
        return rendered

    def _spans_from_prefixes(
        self, i: int, messages: list[dict], full: str, rendered: dict
    ) -> list[list[int]]:
        """Chat i's answer spans from its prefix renders (see `assistant_char_spans_many`)."""
        spans: list[list[int]] = []
        for k, msg in enumerate(messages):
            if msg["role"] != "assistant":
                continue
            through = rendered[False][(i, k + 1)]
            if not full.startswith(through):
                raise self._template_error("a chat prefix does not render as a prefix")
            if k == 0:
                start = self._leading_answer_start(msg, through)
            else:
                head = rendered[True][(i, k)]
                start = len(head)
                if not through.startswith(head):
                    # The generation prompt differs from what the template renders for
                    # a past answer: the answer starts where the two diverge, never
                    # before the end of the chat without the prompt.
                    bare = self.render_many([messages[:k]], False)[0]
                    if not through.startswith(bare):
                        raise self._template_error("a chat prefix does not render as a prefix")
                    start = max(len(bare), len(os.path.commonprefix([head, through])))
            end = len(through.rstrip())
            if end > start:
                spans.append([start, end])
        return spans

    def _leading_answer_start(self, msg: dict, through: str) -> int:
        """Where a chat's FIRST message, an answer, starts in `through` (its render).

        Nothing renders before it to measure against, yet the template may put a default system
        prompt and the turn's header there (Qwen2-VL: "<|im_start|>system\nYou are a helpful
        assistant.<|im_end|>\n<|im_start|>assistant\n"): the answer starts where the render of
        the same turn with no content departs from it. An answer that opens with the template's
        own closing text would carry that point into the answer: the last place its first text
        part appears whole caps it. A template that refuses the empty turn: the whole turn.
        """
        content = msg.get("content")
        # One empty text part, not an empty list: templates that read content[0] (Idefics3,
        # SmolVLM) refuse [] but render the header for this.
        empty = [{"type": "text", "text": ""}] if isinstance(content, list) else ""
        try:
            bare = self.render_many([[{**msg, "content": empty}]], False)[0]
        except Exception:  # noqa: BLE001 - a template that refuses an empty turn
            bare = ""
        start = len(os.path.commonprefix([bare, through]))
        first = first_text(content)
        at = through.rfind(first) if first else -1
        return at if 0 <= at < start else start

    def _template_error(self, what: str) -> VlmctlError:
        return VlmctlError(
            Finding(
                "error",
                f"cannot find the assistant turns in this chat template: {what}",
                hint="add {% generation %} markers around assistant content in the template",
                code="template-spans",
            )
        )

    def close_turns(self, text: str, spans: list[list[int]]) -> tuple[str, list[list[int]]]:
        """Trim each answer span and end it at the turn's end-of-turn marker (THE span rule).

        - whitespace the template puts around an answer (llava-1.5's `text + ' '`,
          OneVision's `'\\n' + text` inside its markers) is not part of the answer;
        - the end-of-turn marker is the first special token the template emits after the
          answer, inside or outside the markers, whitespace allowed in between (`<|im_end|>`,
          `<|end|>`, `<end_of_turn>`, `<|eot_id|>`, `</s>`): it is trained, once;
        - only when the template emits NO special token there (llava-1.5) the tokenizer's eos
          is inserted right after the answer, so the model learns to stop; nothing the
          template emits is ever added a second time;
        - what follows the marker (the newline of ChatML, Gemma, Phi-3) is not trained: the
          model stops at the marker and never generates it.
        """
        closers = self._closers
        eos = self.eos_token
        out, new_spans, shift, prev = [], [], 0, 0
        for start, end in spans:
            while start < end and text[start].isspace():
                start += 1
            while end > start and text[end - 1].isspace():
                end -= 1
            if end <= start:
                continue
            if not text[start:end].endswith(closers):
                j = end
                while j < len(text) and text[j].isspace():
                    j += 1
                closer = next((c for c in closers if text.startswith(c, j)), None)
                if closer is not None:
                    end = j + len(closer)
                elif eos:
                    out.append(text[prev:end])
                    out.append(eos)
                    prev = end
                    new_spans.append([start + shift, end + shift + len(eos)])
                    shift += len(eos)
                    continue
            new_spans.append([start + shift, end + shift])
        out.append(text[prev:])
        return "".join(out), new_spans

    @property
    def _closers(self) -> tuple[str, ...]:
        """Special tokens that can end a turn, longest first (bos/unk and media never do)."""
        if not hasattr(self, "_closers_cache"):
            skip = {
                getattr(self.tokenizer, "bos_token", None),
                getattr(self.tokenizer, "unk_token", None),
            }
            self._closers_cache = tuple(
                sorted((c for c in self.special_strings if c not in skip), key=len, reverse=True)
            )
        return self._closers_cache

    # -- the form the template takes messages in

    def content_form(self) -> str:
        """`parts` (typed content lists) or `string` (text with the processor's image tags).

        Decided from the template itself: a probe chat rendered with content parts must show
        its text; a template that concatenates `message['content']` as a string raises
        (Phi-3-vision) or prints the list's repr, and then takes strings instead.
        """
        if hasattr(self, "_form"):
            return self._form
        probe_u, probe_a = "vlmctl-probe-question", "vlmctl-probe-answer"

        def shows(messages) -> bool:
            try:
                text = self.render_many([messages], False, plain=True)[0]
            except Exception:  # noqa: BLE001 - the template refuses this form
                return False
            return probe_u in text and probe_a in text and "'type'" not in text

        parts = [
            {"role": "user", "content": [{"type": "text", "text": probe_u}]},
            {"role": "assistant", "content": [{"type": "text", "text": probe_a}]},
        ]
        strings = [{"role": "user", "content": probe_u}, {"role": "assistant", "content": probe_a}]
        self._form = "parts" if shows(parts) or not shows(strings) else "string"
        return self._form

    def media_tag(self, kind: str, n: int) -> str:
        """The text a processor expands into the n-th (1-based) image/video of a row."""
        proc = self.processor
        token = getattr(proc, f"{kind}_token", None)
        if isinstance(token, str) and token:
            return token
        numbered = getattr(proc, "img_tokens", None) if kind == "image" else None
        if isinstance(numbered, Sequence) and len(numbered) >= n:  # Phi-3-vision's <|image_N|>
            return str(numbered[n - 1])
        token = getattr(self.tokenizer, f"{kind}_token", None)
        if isinstance(token, str) and token:
            return token
        raise VlmctlError(
            Finding(
                "error",
                f"the chat template takes text content, and the processor "
                f"{type(proc).__name__} names no {kind} tag to put in it",
                hint="use a processor with an image_token, or a template that takes content parts",
                code="template-media-tag",
            )
        )

    def template_messages(self, messages: list[dict]) -> tuple[list[dict], list[str]]:
        """Messages in the template's form, and the media tags put in the text (in order)."""
        if self.content_form() == "parts":
            return messages, []
        out, tags, counts = [], [], {"image": 0, "video": 0}
        for m in messages:
            content = m.get("content")
            if isinstance(content, str):
                out.append(m)
                continue
            pieces = []
            for part in content or []:
                kind = part.get("type")
                if kind in counts:
                    counts[kind] += 1
                    tag = self.media_tag(kind, counts[kind])
                    tags.append(tag)
                    pieces.append(tag)
                elif part.get("text"):
                    pieces.append(str(part["text"]))
            out.append({**m, "content": "\n".join(pieces)})
        return out, tags

    def render_spans(self, chats: list[list[dict]], examples: Sequence[Example]):
        """`assistant_char_spans_many`, with any template failure as a one-line finding."""
        try:
            return self.assistant_char_spans_many(chats)
        except VlmctlError:
            raise
        except Exception as exc:  # noqa: BLE001 - a user's template can raise anything
            if len(chats) > 1:  # name the row
                for chat, ex in zip(chats, examples, strict=True):
                    self.render_spans([chat], [ex])
            raise DataError(
                Finding(
                    "error",
                    f"the chat template failed on this row: {type(exc).__name__}: {exc}",
                    row=examples[0].row if len(examples) == 1 else None,
                    hint="check the row's turns (roles, order, content) against what the "
                    "model's chat template accepts",
                    code="template-error",
                )
            ) from None


# ---------------------------------------------------------------------- helpers


def _text_parts(msg: dict) -> list[str]:
    content = msg.get("content")
    if isinstance(content, str):
        return [content.strip()] if content.strip() else []
    return [
        str(p["text"]).strip()
        for p in content or []
        if isinstance(p, Mapping) and p.get("type") == "text" and str(p.get("text") or "").strip()
    ]


def _checked_marker_spans(messages: list[dict], text: str, indices) -> list[list[int]] | None:
    """`{% generation %}` spans merged per assistant turn, or None when they do not hold.

    Checked, not trusted: one span (after merging blocks separated only by whitespace) per
    assistant turn with text, each containing every text part of its message.
    """
    merged: list[list[int]] = []
    for start, end in sorted((int(a), int(b)) for a, b in indices or []):
        if merged and not text[merged[-1][1] : start].strip():
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    answers = [m for m in messages if m.get("role") == "assistant" and _text_parts(m)]
    if len(merged) != len(answers):
        return None
    for (start, end), msg in zip(merged, answers, strict=True):
        if any(part not in text[start:end] for part in _text_parts(msg)):
            return None
    return merged


def message_text(msg: dict) -> str:
    content = msg.get("content")
    if isinstance(content, str):
        return content.strip()
    return " ".join(
        p["text"].strip() for p in content or [] if p.get("type") == "text" and p.get("text")
    ).strip()


def first_text(content: Any) -> str:
    """The first non-blank text of a message's content (a string or a list of parts), stripped."""
    if isinstance(content, str):
        return content.strip()
    for part in content or []:
        text = (
            part.get("text") if isinstance(part, Mapping) and part.get("type") == "text" else None
        )
        if isinstance(text, str) and text.strip():
            return text.strip()
    return ""


def count_parts(msg: dict, kind: str) -> int:
    content = msg.get("content")
    if isinstance(content, str):
        return 0
    return sum(1 for p in content or [] if isinstance(p, Mapping) and p.get("type") == kind)


_PLAIN_SCALARS = frozenset((str, int, float, bool, type(None)))


def _is_plain(value: Any) -> bool:
    """Only exact str/int/float/bool/None, lists and str-keyed dicts of them."""
    # Iterative (no generator or call per node): this runs on every chat of every batch.
    scalars = _PLAIN_SCALARS
    stack = [value]
    pop, push = stack.pop, stack.append
    seen = 0
    while stack:
        v = pop()
        t = type(v)
        if t in scalars:
            continue
        seen += 1
        if seen > 100_000:  # a cycle (or absurd nesting): let HF's path deal with it
            return False
        if t is dict:
            for k, x in v.items():
                if type(k) is not str:
                    return False
                if type(x) not in scalars:
                    push(x)
        elif t is list:
            stack.extend(v)
        else:
            return False
    return True
