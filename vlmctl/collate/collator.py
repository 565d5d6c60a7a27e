"""`VLMCollator`: raw rows -> model batch, composed of the package's parts (rendering and
spans: `render`; the processor call: `encode`; kinds and labels: `labels`; the length policy:
`length_policy`; padding: `batching`; media decoding: `media`; processor facts:
`introspect`). The whole pipeline is described in the package docstring."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vlmctl.collate import batching
from vlmctl.collate.encode import ProcessorEncoder
from vlmctl.collate.encoded import ROW_INDEX_KEY, EncodedExample, Prepared
from vlmctl.collate.introspect import (
    GENERATION_RE,
    ROW_BATCHED_PIXELS,
    call_params,
    first_id,
    media_token_ids,
    own_mm_type_ids,
    special_strings,
    takes_any_kwargs,
    takes_images_and_videos,
)
from vlmctl.collate.length_policy import CUT, ERROR, KEEP, decide_for
from vlmctl.collate.media import fit_media, load_media
from vlmctl.collate.render import ChatRenderer, count_parts, message_text
from vlmctl.config.collator import CollatorConfig
from vlmctl.data.example import Example
from vlmctl.errors import DataError, Finding, VlmctlError


class VLMCollator:
    """Raw dataset rows -> a padded batch for the model; also per-row encodings for tools.

    `stats` (a Counter) counts rows seen/encoded/truncated/dropped (by reason) and batches;
    the trainer logs it.
    """

    def __init__(
        self,
        processor: Any,
        cfg: CollatorConfig,
        media_dirs: Sequence[str | Path] = (),
        *,
        model_type: str | None = None,
    ):
        self._processor = processor
        self.cfg = cfg
        self.media_dirs = [Path(d) for d in media_dirs]
        self.model_type = model_type
        self.tokenizer = tok = getattr(processor, "tokenizer", processor)
        self.stats: Counter = Counter()
        self._notes: set[str] = set()
        self.pad_token_id = first_id(tok, ("pad_token_id", "eos_token_id")) or 0
        self.eos_token = getattr(tok, "eos_token", None)
        self.bos_token = getattr(tok, "bos_token", None)
        self.media_token_ids = media_token_ids(processor, tok)
        self.chat_template = _chat_template(processor, tok)
        self.prefix_suffix = (model_type or "").startswith("paligemma") or (
            not self.chat_template and "suffix" in call_params(processor)
        )
        if not self.chat_template and not self.prefix_suffix:
            raise VlmctlError(
                Finding(
                    "error",
                    f"the processor {type(processor).__name__} has no chat template",
                    hint="use a model whose processor ships a chat_template, or add one to its "
                    "processor folder (chat_template.jinja)",
                    code="no-chat-template",
                )
            )
        mro = {c.__name__ for c in type(processor).__mro__}
        self._row_batched_pixels = bool(mro & set(ROW_BATCHED_PIXELS))
        self.takes_both_media = takes_images_and_videos(processor)
        self.renderer = ChatRenderer(
            processor,
            cfg,
            self.chat_template,
            eos_token=self.eos_token,
            special_strings=special_strings(tok),
            special_tokens_map=dict(getattr(tok, "special_tokens_map", {}) or {}),
            has_generation_markers=bool(
                self.chat_template and GENERATION_RE.search(self.chat_template)
            ),
        )
        # A processor whose __call__ takes no **kwargs (remote code such as Phi3VProcessor)
        # gets one text per call, no offsets: spans are found by prefix calls.
        self.encoder = ProcessorEncoder(
            processor,
            cfg,
            self.renderer.media_tag,
            prefix_suffix=self.prefix_suffix,
            narrow=not self.prefix_suffix and not takes_any_kwargs(processor),
            mm_type_ids=own_mm_type_ids(processor) if not self.prefix_suffix else None,
            bos_token=self.bos_token,
            media_ids_np=np.array(sorted(self.media_token_ids), dtype=np.int64),
        )

    @property
    def processor(self) -> Any:
        """The processor every call goes through."""
        return self._processor

    @processor.setter
    def processor(self, value: Any) -> None:
        # Swapped in by validate's size arithmetic (`models.media_tokens`): the parts that
        # call the processor follow.
        self._processor = self.encoder.processor = self.renderer.processor = value

    @property
    def _narrow(self) -> bool:
        """Whether the processor takes one text per call and no offsets (Phi3VProcessor)."""
        return self.encoder.narrow

    # ------------------------------------------------------------------ public API

    def __call__(self, rows: list[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        """Raw rows -> batch (input_ids, attention_mask, labels, media tensors, ...)."""
        from vlmctl.data.messages import row_to_example

        examples = [
            row_to_example(
                row, self.cfg, row.get(ROW_INDEX_KEY) if isinstance(row, Mapping) else None
            )
            for row in rows
        ]
        encoded = [e for e in self.encode_examples(examples) if not e.drop_reason]
        self.stats["batches"] += 1
        if not encoded:
            self.stats["all_dropped_batches"] += 1
            raise DataError(
                Finding(
                    "error",
                    f"every row of this batch ({len(rows)}) was dropped "
                    f"(dropped so far: {self.drop_summary()})",
                    hint="raise text_processing.max_length, use truncation_policy: "
                    "truncate_text, or filter long rows (vlmctl validate lists them)",
                    key="text_processing.max_length",
                    code="all-rows-dropped",
                )
            )
        return self.collate_encoded(encoded)

    def encode_example(self, example: Example, *, truncate: bool = True) -> EncodedExample:
        """Render, process, classify tokens, mask and (when `truncate`) apply the length policy.

        `truncate=False` measures only (validate/preview): nothing is cut or dropped for length,
        `stats` is not touched, `original_length` is the full length. Dropped rows come back
        with `drop_reason` set and are counted in `stats`; the policy `error` raises DataError.
        """
        return self.encode_examples([example], truncate=truncate)[0]

    def encode_examples(
        self, examples: Sequence[Example], *, truncate: bool = True
    ) -> list[EncodedExample]:
        """`encode_example` for several rows with ONE processor call (what `__call__` uses).

        Media tensors then stay batched (`collate_encoded` of exactly these encodings, in this
        order, reuses them); a subset is re-processed as one call when collated.
        """
        prepared = self._prepare_many([self.fit_media(ex) for ex in examples])
        encoded = self.encoder.process_prepared(prepared)
        for enc in encoded:
            enc.original_length = enc.length
            self._apply_length_policy(enc, truncate)
            if truncate:  # measuring (validate, length estimates) leaves training stats alone
                self.stats["rows"] += 1
                if enc.drop_reason:
                    self.stats[f"dropped_{enc.drop_reason}"] += 1
                    self.stats["dropped"] += 1
        return encoded

    def fits(self, enc: EncodedExample) -> bool:
        """Whether an (untruncated) encoding survives the length policy without being dropped."""
        return decide_for(enc, self.cfg).fits

    def drop_summary(self) -> str:
        """Dropped rows by reason (`no_labels=1, too_long=3` or `none`): says why rows went missing."""
        parts = [
            f"{k[len('dropped_') :]}={v}"
            for k, v in sorted(self.stats.items())
            if k.startswith("dropped_")
        ]
        return ", ".join(parts) or "none"

    def collate_encoded(self, encoded: Sequence[EncodedExample]) -> dict[str, torch.Tensor]:
        """Pad and stack encodings into the batch the model takes (labels included)."""
        encoded = [e for e in encoded if not e.drop_reason]
        if not encoded:
            raise DataError(
                Finding("error", "no rows to collate", code="all-rows-dropped"),
            )
        tp = self.cfg.text_processing
        lm = self.cfg.label_masking
        longest = max(e.length for e in encoded)
        if tp.padding == "max_length":
            target = max(longest, tp.max_length)
        else:
            if tp.padding is False and any(e.length != longest for e in encoded):
                self._note("padding: false with rows of different lengths: padded to the longest")
            target = longest
        pad_label = lm.ignore_index if lm.mask_pad_token else self.pad_token_id
        return batching.pad_batch(encoded, target, self.pad_token_id, pad_label, self._media)

    def kinds_batch(
        self, encoded: Sequence[EncodedExample], width: int | None = None
    ) -> torch.Tensor:
        """Token kinds padded like `collate_encoded` pads ids (PAD where padded).

        `width`: the batch's width (`padding: max_length` pads past the longest row).
        """
        return batching.kinds_batch(encoded, width)

    # ------------------------------------------------------------------ generation prompts

    def encode_prompts(self, examples: Sequence[Example]) -> list[tuple[EncodedExample, str]]:
        """Each example up to its LAST assistant turn, as the model sees it before answering.

        Why here: `vlmctl eval` (and the training-time eval) must feed the model exactly what
        training taught it to continue: the same row rendering, media decoding, chat template
        and processor call, with the template's generation prompt in place of the answer
        (PaliGemma: the prefix without a suffix). Returns (encoding, reference answer) per
        example; the reference is the removed turn's text ("" when there is none). No length
        policy applies: a prompt is never cut.
        """
        prepared, refs = [], []
        for ex in examples:
            msgs = list(ex.messages)
            last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
            ref = message_text(msgs[last]) if last is not None else ""
            kept = msgs[:last] if last is not None else msgs
            n_img = sum(count_parts(m, "image") for m in kept)
            n_vid = sum(count_parts(m, "video") for m in kept)
            prompt_ex = Example(
                messages=kept, images=ex.images[:n_img], videos=ex.videos[:n_vid], row=ex.row
            )
            p = self._prepare(prompt_ex)
            if not self.prefix_suffix:
                p.text = self.renderer.render_many([kept], True)[0]
            prepared.append(p)
            refs.append(ref)
        encoded = self.encoder.process_prepared(prepared) if prepared else []
        return list(zip(encoded, refs, strict=True))

    def collate_prompts(self, encoded: Sequence[EncodedExample]) -> dict[str, torch.Tensor]:
        """Left-pad prompt encodings into a batch for `model.generate` (no labels).

        Left padding keeps every row's last prompt token at the end, where generation appends.
        """
        if not encoded:
            raise DataError(Finding("error", "no prompts to collate", code="all-rows-dropped"))
        return batching.left_pad_prompts(encoded, self.pad_token_id, self._media)

    def fit_media(self, example: Example) -> Example:
        """The example as this processor can take it: "video wins" in a row with images AND
        videos only when the processor takes one kind per row (noted in `example.notes`).

        Rows keep both kinds for processors that take both (Qwen2-VL, LLaVA-OneVision, ...).
        """
        return fit_media(example, self.takes_both_media, type(self.processor).__name__)

    # ------------------------------------------------------------------ internals

    def _prepare(self, example: Example) -> Prepared:
        """Decode one example's media (and build PaliGemma's prefix/suffix); no processor yet."""
        images, videos, metas = self._load_media(example)
        if not self.prefix_suffix:
            return Prepared(example, "", [], images, videos, metas)
        if not images:
            raise DataError(
                Finding(
                    "error",
                    f"{type(self.processor).__name__} needs an image in every row",
                    row=example.row,
                    hint="filter out rows without images",
                    code="row-needs-image",
                )
            )
        msgs = example.messages
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        if last is None:
            prefix_msgs, suffix = msgs, None
        else:
            prefix_msgs, suffix = msgs[:last], message_text(msgs[last])
        prefix = "\n".join(t for t in (message_text(m) for m in prefix_msgs) if t)
        image_token = getattr(self.processor, "image_token", "<image>")
        text = image_token * len(images) + prefix
        return Prepared(example, text, [], images, videos, metas, suffix)

    def _load_media(self, example: Example):
        """(images, video frames, clips) of one example; validate's size arithmetic
        (`models.media_tokens`) replaces it on its own collator."""
        return load_media(example, self.cfg, self.media_dirs, self.stats)

    def _prepare_many(self, examples: Sequence[Example]) -> list[Prepared]:
        prepared = [self._prepare(ex) for ex in examples]
        if not self.prefix_suffix:
            r = self.renderer
            forms = [r.template_messages(ex.messages) for ex in examples]
            rendered = r.render_spans([m for m, _ in forms], examples)
            for p, (text, spans), (_, tags) in zip(prepared, rendered, forms, strict=True):
                p.text, p.spans = r.close_turns(text, spans)
                p.media_tags = tags
        return prepared

    def _apply_length_policy(self, enc: EncodedExample, truncate: bool = True) -> None:
        """Act on the length policy's decision (`length_policy.decide`) for one encoding."""
        decision = decide_for(enc, self.cfg, truncate=truncate)
        if decision.action == ERROR:
            tp = self.cfg.text_processing
            raise DataError(
                Finding(
                    "error",
                    f"row is {enc.length} tokens ({enc.num_media_tokens} media), longer than "
                    f"text_processing.max_length={tp.max_length}",
                    row=enc.row,
                    key="text_processing.max_length",
                    hint="raise max_length, or set truncation_policy: drop or truncate_text",
                    code="row-too-long",
                )
            )
        cut = decision.cut_at
        if cut is not None:
            enc.input_ids = enc.input_ids[:cut]
            enc.labels = enc.labels[:cut]
            enc.kinds = enc.kinds[:cut]
            enc.token_extras = {k: v[:cut] for k, v in enc.token_extras.items()}
            enc.truncated = True
            enc.num_supervised = decision.supervised
            self.stats["truncated"] += 1
        enc.drop_reason = None if decision.action in (CUT, KEEP) else decision.reason

    def _media(self, encoded: Sequence[EncodedExample]) -> dict[str, torch.Tensor]:
        return batching.collate_media(
            encoded, self.encoder.process_prepared, self._row_batched_pixels
        )

    def _note(self, text: str) -> None:
        if text not in self._notes:
            self._notes.add(text)
            self.stats[f"note: {text}"] += 1


def _chat_template(processor: Any, tok: Any) -> str | None:
    """The processor's chat template (its `default` entry when it ships several)."""
    template = getattr(processor, "chat_template", None) or getattr(tok, "chat_template", None)
    if isinstance(template, dict):
        template = template.get("default") or next(iter(template.values()))
    return template
