"""The processor call and its output: one call over prepared rows (offsets and the text
replacement map asked for), the per-row prefix calls of a processor without offsets
(Phi3VProcessor), and the output turned into `EncodedExample`s whose tensors are views of the
call's padded arrays (`GroupTokens`)."""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain
from typing import Any

import numpy as np
import torch

from vlmctl.collate.encoded import EncodedExample, GroupTokens, MediaGroup, Prepared
from vlmctl.collate.labels import isin, kinds_np, labels_np, mark_offsets, mm_types, row_runs
from vlmctl.errors import DataError, Finding, VlmctlError


class ProcessorEncoder:
    """Runs the processor over prepared rows and encodes what it returns.

    `narrow`: the processor's `__call__` takes no **kwargs (one text per call, no offsets);
    `offsets_unmappable` turns on at the first output without a replacement map.
    """

    def __init__(self, processor: Any, cfg: Any, media_tag: Callable[[str, int], str], **facts):
        self.processor = processor
        self.cfg = cfg
        self.media_tag = media_tag
        self.prefix_suffix: bool = facts["prefix_suffix"]
        self.narrow: bool = facts["narrow"]
        self.mm_type_ids = facts["mm_type_ids"]
        self.bos_token: str | None = facts["bos_token"]
        self.media_ids_np: np.ndarray = facts["media_ids_np"]
        self.offsets_unmappable = False  # set when the processor returns no replacement map

    def process_prepared(self, prepared: list[Prepared]) -> list[EncodedExample]:
        """One processor call over `prepared` -> one EncodedExample each (media batched)."""
        if (self.prefix_suffix and len({p.suffix is None for p in prepared}) > 1) or (
            (self.narrow or self.offsets_unmappable) and len(prepared) > 1
        ):
            return [enc for p in prepared for enc in self.process_prepared([p])]
        if self.narrow or self.offsets_unmappable:
            return self._process_narrow(prepared[0])
        # Token outputs come back as lists (numpy converts them much faster than the
        # processor's own tensor conversion); media outputs go through BatchFeature below.
        kwargs: dict[str, Any] = {"text": [p.text for p in prepared]}
        if len(prepared) > 1:
            kwargs.update(padding=True, padding_side="right")
        if any(p.images for p in prepared):
            kwargs["images"] = [p.images for p in prepared]
        if self.prefix_suffix:
            if prepared[0].suffix is not None:
                kwargs["suffix"] = [p.suffix for p in prepared]
        else:
            kwargs.update(return_offsets_mapping=True, return_text_replacement_offsets=True)
            if self.mm_type_ids is not None:  # built below for the whole batch at once
                kwargs["return_mm_token_type_ids"] = False
            if self.bos_token and prepared[0].text.startswith(self.bos_token):
                kwargs["add_special_tokens"] = False
            if any(p.videos for p in prepared):
                kwargs["videos"] = [p.videos for p in prepared]
                metas = [_video_metadata(p.metas, p.videos) for p in prepared if p.videos]
                if all(m is not None for m in metas):
                    kwargs["video_metadata"] = [m for group in metas for m in group]
        out = dict(self.process(kwargs, prepared))
        if (
            not self.prefix_suffix
            and out.get("text_replacement_offsets") is None
            and any(p.images for p in prepared)
        ):
            # Offsets of the EXPANDED text with no map back to the template's text
            # (Idefics2Processor): find the spans exactly by prefix calls instead.
            self.offsets_unmappable = True
            return [enc for p in prepared for enc in self._process_narrow(p)]
        return self.encode_output(prepared, out, None)

    def encode_output(
        self,
        prepared: list[Prepared],
        out: dict,
        narrow_answer: np.ndarray | None,
    ) -> list[EncodedExample]:
        """The processor's output -> EncodedExamples (kinds, labels, per-row views)."""
        ids_np = _int_array(out.pop("input_ids"))
        if ids_np.ndim == 1:  # some processors return a flat list for one text
            ids_np = ids_np[None, :]
        out.pop("labels", None)
        mask = out.pop("attention_mask", None)
        offsets_b = out.pop("offset_mapping", None)
        repl_b = out.pop("text_replacement_offsets", None)
        n, width = ids_np.shape
        token_arrays, media_raw = self._split_outputs(ids_np, out)
        if mask is not None:
            token_arrays["attention_mask"] = mask = _int_array(mask).reshape(n, width)
        lengths = mask.sum(1).tolist() if mask is not None and n > 1 else [width] * n
        group = MediaGroup(_media_tensors(media_raw), n)
        # Kinds and labels for the whole padded batch at once (numpy: no per-token Python).
        is_media = isin(ids_np, self.media_ids_np) | (ids_np < 0)  # < 0: Phi-3-vision's images
        if narrow_answer is not None:
            answer = narrow_answer
        elif self.prefix_suffix:
            tt = token_arrays.get("token_type_ids")
            answer = tt == 1 if tt is not None else np.zeros_like(is_media)
        else:
            offsets = _int_array(offsets_b)
            answer = mark_offsets(is_media, offsets, repl_b, [p.spans for p in prepared])
        kinds = kinds_np(is_media, answer)
        labels = labels_np(ids_np, kinds, self.cfg.label_masking)
        valid = np.arange(width)[None, :] < np.asarray(lengths, dtype=np.int64)[:, None]
        encoded = self._rows(prepared, group, lengths, ids_np, labels, kinds, token_arrays)
        num_supervised = ((labels != self.cfg.label_masking.ignore_index) & valid).sum(1)
        for enc, spans, sup in zip(
            encoded, row_runs(is_media & valid), num_supervised.tolist(), strict=True
        ):
            enc.media_spans, enc.num_supervised = spans, int(sup)
        from_np = torch.from_numpy
        group.tokens = GroupTokens(
            from_np(ids_np),
            from_np(labels),
            {k: from_np(v) for k, v in token_arrays.items()},
            from_np(~valid),
            [(e.input_ids, e.labels, tuple(e.token_extras.values())) for e in encoded],
        )
        return encoded

    def _split_outputs(self, ids_np: np.ndarray, out: dict) -> tuple[dict, dict]:
        """The remaining outputs as per-token arrays (`mm_token_type_ids` first, built here
        when vlmctl may) and media values, in the processor's order."""
        n, width = ids_np.shape
        token_arrays: dict[str, np.ndarray] = {}  # per-token outputs, attention_mask last
        if self.mm_type_ids is not None:  # None for prefix/suffix processors
            token_arrays["mm_token_type_ids"] = mm_types(ids_np, self.mm_type_ids)
        media_raw: dict[str, Any] = {}
        for key, value in out.items():
            arr = _token_array(value, n, width)
            if arr is not None:
                token_arrays[key] = arr
            else:
                media_raw[key] = value
        return token_arrays, media_raw

    def _rows(self, prepared, group, lengths, ids_np, labels, kinds, token_arrays):
        """One EncodedExample per row; its tensors share the batch arrays' memory (rows [:L]
        are contiguous)."""
        from_np = torch.from_numpy
        n = len(prepared)
        encoded = []
        for i, p in enumerate(prepared):
            L = int(lengths[i])
            text = p.text
            if self.prefix_suffix and p.suffix is not None:
                text += "\n" + p.suffix
            enc = EncodedExample(
                input_ids=from_np(ids_np[i, :L]),
                labels=from_np(labels[i, :L]),
                kinds=from_np(kinds[i, :L]),
                token_extras={k: from_np(v[i, :L]) for k, v in token_arrays.items()},
                media_extras=group.media if n == 1 else {},
                row=p.example.row,
                text=text,
            )
            enc._prepared, enc._group, enc._pos = p, group, i
            encoded.append(enc)
        return encoded

    def _narrow_call(self, p: Prepared, text: str, n_images: int):
        """The processor with only what its narrow signature takes (one text, flat images)."""
        kwargs: dict[str, Any] = {"text": text}
        if n_images:
            kwargs["images"] = list(p.images[:n_images])
        if not self.narrow and self.bos_token and p.text.startswith(self.bos_token):
            kwargs["add_special_tokens"] = False
        out = dict(self.process(kwargs, [p]))
        ids = _int_array(out["input_ids"])
        return out, ids.reshape(-1)

    def _process_narrow(self, p: Prepared) -> list[EncodedExample]:
        """A processor that takes no offsets (Phi3VProcessor): exact spans by prefix calls.

        The token index of a character boundary b is found by processing `text[:b]` (with the
        images whose tags it holds) and comparing its ids with the full row's: when they are
        a prefix of the full ids, b falls between tokens; otherwise the first differing token
        straddles b and counts as overlapping the answer (the rule the offset path uses).
        """
        if p.videos:
            raise DataError(
                Finding(
                    "error",
                    f"the processor {type(self.processor).__name__} takes no videos",
                    row=p.example.row,
                    hint="set data_processing.use_video: false for this model",
                    code="processor-no-video",
                )
            )
        out, full = self._narrow_call(p, p.text, len(p.images))
        tags = p.media_tags
        if not tags and p.images:  # content parts: the template wrote the processor's tag
            tags = [self.media_tag("image", 1)] * len(p.images)

        def images_in(prefix: str) -> int:
            if not tags:
                return 0
            if len(set(tags)) == len(tags):  # numbered tags
                return sum(1 for t in tags if t in prefix)
            return min(prefix.count(tags[0]), len(tags))

        def boundary(b: int, is_end: bool) -> int:
            prefix = p.text[:b]
            _, ids = self._narrow_call(p, prefix, images_in(prefix))
            m = min(len(ids), len(full))
            diff = np.nonzero(ids[:m] != full[:m])[0]
            if not diff.size and len(ids) <= len(full):
                return len(ids)
            c = int(diff[0]) if diff.size else m
            return min(c + 1, len(full)) if is_end else c

        answer = np.zeros((1, len(full)), dtype=bool)
        for start, end in p.spans:
            a, b = boundary(start, False), boundary(end, True)
            answer[0, a:b] = True
        return self.encode_output([p], out, answer)

    def process(self, kwargs: dict, prepared: list[Prepared]):
        try:
            return self.processor(**kwargs)
        except VlmctlError:
            raise
        except Exception as exc:  # noqa: BLE001 - remote code raises anything (AssertionError)
            if len(prepared) > 1:  # find the row the processor refuses, to name it
                for p in prepared:
                    self.process_prepared([p])
            raise DataError(
                Finding(
                    "error",
                    f"the processor refused this row: {type(exc).__name__}: {exc}",
                    row=prepared[0].example.row if len(prepared) == 1 else None,
                    hint="check the row's media and the message template",
                    code="processor-error",
                )
            ) from exc


# ---------------------------------------------------------------------- helpers


def _int_array(value: Any) -> np.ndarray:
    """The tokenizer's nested int lists (ids, mask, offsets) as an int64 array.

    Rectangular lists go through `np.fromiter` (several times faster than `np.asarray` on
    lists of tuples); anything else (ragged, tensors, arrays) through `np.asarray`.
    """
    if type(value) is list and value and type(value[0]) is list:
        width = len(value[0])
        if all(type(v) is list and len(v) == width for v in value):
            first = value[0][0] if width else None
            flat = chain.from_iterable(value)
            shape: tuple[int, ...] = (len(value), width)
            if type(first) in (list, tuple):  # offsets: (start, end) pairs
                if set(map(len, chain.from_iterable(value))) != {len(first)}:
                    return np.asarray(value, dtype=np.int64)
                flat = chain.from_iterable(chain.from_iterable(value))
                shape = (len(value), width, len(first))
            elif first is not None and type(first) is not int:
                return np.asarray(value, dtype=np.int64)
            try:
                return np.fromiter(flat, dtype=np.int64, count=int(np.prod(shape))).reshape(shape)
            except (TypeError, ValueError):
                return np.asarray(value, dtype=np.int64)
    return np.asarray(value, dtype=np.int64)


def _token_array(value: Any, n: int, width: int) -> np.ndarray | None:
    """A per-token output (n rows of `width` numbers) as an int64 array, else None."""
    if torch.is_tensor(value) or isinstance(value, np.ndarray):
        arr = np.asarray(value)
    elif (
        isinstance(value, list)
        and len(value) == n
        and all(isinstance(v, list) and len(v) == width for v in value)
    ):
        arr = np.asarray(value)
    else:
        return None
    if arr.shape != (n, width) or not np.issubdtype(arr.dtype, np.integer):
        return None
    return arr.astype(np.int64, copy=False)


def _media_tensors(raw: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Media outputs as tensors, converted the way the processor's `return_tensors="pt"` does."""
    if not raw:
        return {}
    from transformers import BatchFeature

    out: dict[str, torch.Tensor] = {}
    try:
        converted = BatchFeature(data=raw, tensor_type="pt")
    except (ValueError, TypeError, RuntimeError):
        converted = raw
    for key, value in converted.items():
        tensor = _as_tensor(value)
        if tensor is not None:
            out[key] = tensor
    return out


def _as_tensor(value: Any) -> torch.Tensor | None:
    if torch.is_tensor(value):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value)
    if isinstance(value, (list, tuple)) and value and isinstance(value[0], (int, float)):
        return torch.tensor(value)
    return None


def _video_metadata(clips: list, videos: list):
    """VideoMetadata for the processor (Qwen2.5-VL derives time positions from the fps)."""
    if not clips or any(c is None for c in clips):
        return None
    try:
        from transformers.video_utils import VideoMetadata
    except ImportError:  # pragma: no cover
        return None
    metas = []
    for clip, frames in zip(clips, videos, strict=True):
        metas.append(
            VideoMetadata(
                total_num_frames=int(clip.total_frames or len(frames)),
                fps=float(clip.fps) if clip.fps else None,
                duration=float(clip.duration) if clip.duration else None,
                frames_indices=list(clip.indices) if clip.indices else None,
                video_backend=clip.backend,
                width=int(frames.shape[2]),
                height=int(frames.shape[1]),
            )
        )
    return metas
