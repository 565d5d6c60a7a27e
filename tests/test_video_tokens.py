"""Video tokens from frame shapes (`vlmctl.models.video_tokens`) against the real processors.

On every tiny twin and real-model kit that takes video: where the shape path is claimed exact,
its ids (and `video_grid_thw`, Qwen2.5-VL's `second_per_grid_ts`) equal the processor's real
output for several frame counts (odd ones too), frame sizes and frame rates; everywhere else the
family is detected and keeps the pixel path. Then the collator on generated video files
(several lengths, sizes, fps; a truncated and an empty file) and `validate --format json` give
the same results with the pixel path forced.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from pathlib import Path

import av
import numpy as np
import pytest
from _collate_util import cfg
from _mixed_util import MIXED_COLLATOR, write_config_set, write_image
from _realkit_util import kit, kit_params, kit_processor
from typer.testing import CliRunner

from vlmctl.cli import app
from vlmctl.collate import VLMCollator
from vlmctl.data.example import Example
from vlmctl.errors import DataError
from vlmctl.models import video_tokens
from vlmctl.models.media_tokens import PIXEL_ENV, count_media_from_sizes, fast_processor
from vlmctl.models.video_tokens import shape_only_video_processor, video_shapes_exact
from vlmctl.testing.realkit import missing_reason
from vlmctl.testing.tiny import FAMILIES

# Families whose video tokens come from shapes (the test fails when one drifts in or out).
SHAPE_TINY = {"qwen2_vl", "qwen2_5_vl"}
SHAPE_KITS = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl"}
# (frames, height, width): one frame, odd counts, odd and non-square sizes, a thin strip
# (aspect ratio > 200: the processor's own error), and a frame over the pixel limits.
SHAPES = [(1, 32, 32), (3, 33, 47), (4, 48, 64), (5, 17, 90), (7, 90, 17), (2, 3, 700)]
SHAPES += [(9, 200, 356), (6, 720, 1280)]


def _load(path: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, trust_remote_code=True)


def _metadata(t: int, h: int, w: int, fps: float):
    from transformers.video_utils import VideoMetadata

    total = 3 * t + 1  # frames picked out of a longer clip, as load_video_frames does
    indices = [((2 * k + 1) * total) // (2 * t) for k in range(t)]
    return VideoMetadata(
        total_num_frames=total, fps=fps, duration=total / fps, frames_indices=indices,
        width=w, height=h, video_backend="pyav",
    )  # fmt: skip


def _call(proc, shapes, fps: float):
    token = proc.video_token
    videos = [np.full((t, h, w, 3), 7 * i, np.uint8) for i, (t, h, w) in enumerate(shapes)]
    metas = [_metadata(*s, fps) for s in shapes]
    text = [" ".join(f"v{i} {token}" for i in range(len(shapes)))]
    out = proc(text=text, videos=[videos], video_metadata=metas)
    return {k: np.asarray(v).tolist() for k, v in out.items() if k != "pixel_values_videos"}


def _real_vs_shapes(proc) -> None:
    """The processor on real frames vs its shape-path copy: same outputs (or the same error)."""
    fast = copy.copy(proc)
    fast.video_processor = shape_only_video_processor(proc)
    assert fast.video_processor is not None
    for fps in (5.0, 29.97):
        for shape in SHAPES:
            try:
                real = _call(proc, [shape], fps)
            except ValueError as exc:  # the processor's own error: the shape path says the same
                with pytest.raises(type(exc), match=f"^{str(exc)[:40]}"):
                    _call(fast, [shape], fps)
                continue
            assert _call(fast, [shape], fps) == real, shape
        several = [(3, 33, 47), (8, 48, 64), (3, 33, 47)]  # each video keeps its own grid
        assert _call(fast, several, fps) == _call(proc, several, fps)


@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_twins_shapes_equal_pixels_or_fall_back(family, tiny_model_dir):
    proc = _load(tiny_model_dir(family))
    if family not in SHAPE_TINY:
        assert not video_shapes_exact(proc)
        fast = fast_processor(proc)
        vp = getattr(proc, "video_processor", None)
        assert fast is None or getattr(fast, "video_processor", None) is vp
        return
    assert video_shapes_exact(proc)
    _real_vs_shapes(proc)
    fast = fast_processor(proc)
    assert fast.video_processor is not proc.video_processor
    assert "_preprocess" not in vars(proc.video_processor)  # the caller's copy is untouched


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("cap", [True, False])
def test_per_frame_pixel_cap_either_way(family, cap, tiny_model_dir):
    proc = copy.deepcopy(_load(tiny_model_dir(family)))
    proc.video_processor.cap_pixels_per_frame = cap
    proc.video_processor.max_video_tokens = 40  # small, so the cap really bites
    _real_vs_shapes(proc)


@pytest.mark.parametrize("family", kit_params())
def test_real_kits_shapes_equal_pixels_or_fall_back(family):
    proc = kit_processor(family)
    if family not in SHAPE_KITS:
        assert not video_shapes_exact(proc), f"{family}: shape path claimed, not in SHAPE_KITS"
        return
    assert video_shapes_exact(proc), f"{family}: expected the shape path"
    _real_vs_shapes(proc)


@pytest.mark.parametrize("cap", [None, True])
def test_qwen3_video_processor_arithmetic(cap):
    """The Qwen3-VL kit ships Qwen2-VL's video processor; Qwen3-VL's own (smart_resize over
    frames too, its own pixel cap) is listed as well, so it is checked here on that kit."""
    from transformers import Qwen3VLVideoProcessor

    family = next((p.values[0] for p in kit_params() if p.values[0] == "qwen3_vl"), None)
    if family is None or missing_reason(kit("qwen3_vl")):
        pytest.skip("the qwen3_vl kit is absent")
    proc = copy.copy(kit_processor(family))
    # vlmctl hands over frames it sampled itself (its default also samples: from the metadata's
    # frame count, which the hand-over's frames do not have)
    proc.video_processor = Qwen3VLVideoProcessor(
        cap_pixels_per_frame=cap, max_video_tokens=300, do_sample_frames=False
    )
    assert video_shapes_exact(proc)
    _real_vs_shapes(proc)


def test_a_subclassed_video_processor_falls_back(tiny_model_dir):
    proc = copy.deepcopy(_load(tiny_model_dir("qwen2_vl")))
    vp = proc.video_processor
    proc.video_processor = type("Qwen2VLVideoProcessor", (type(vp),), {"_preprocess": None})()
    assert not video_shapes_exact(proc)


# ------------------------------------------------------------------------------ collator


def _mp4(path: Path, n: int, fps: float, size: tuple[int, int], faststart=False) -> Path:
    from fractions import Fraction

    w, h = size
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            arr = np.random.default_rng(i).integers(0, 255, (h, w, 3), dtype=np.uint8)
            for pkt in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(pkt)
        for pkt in stream.encode():
            out.mux(pkt)
    return path


# (file, frames, fps, width x height): odd frame counts, fewer frames than sampled, odd rates
CLIPS = [("a.mp4", 13, 5, (64, 48)), ("b.mp4", 1, 12, (32, 32)), ("c.mp4", 7, 29.97, (90, 34))]
CLIPS += [("d.mp4", 31, 7.5, (48, 96))]


def _clips(folder: Path) -> list[str]:
    """The CLIPS, then broken files that no metadata read tells from good ones: a truncated
    clip whose index (moov first) still promises all 31 frames while 18 decode (PyAV
    re-samples over those: other indices and times), one with zeroed packets (a decode
    error); then one cut before its index, a header's start only, an empty file."""
    names = [_mp4(folder / n, k, fps, size).name for n, k, fps, size in CLIPS]
    data = _mp4(folder / "fast.mp4", 31, 7.5, (48, 96), faststart=True).read_bytes()
    (folder / "fastcut.mp4").write_bytes(data[: len(data) * 2 // 3])
    n = len(data)
    (folder / "garbled.mp4").write_bytes(data[: n // 2] + bytes(n // 10) + data[n // 2 + n // 10 :])
    data = (folder / "a.mp4").read_bytes()
    (folder / "cut.mp4").write_bytes(data[: len(data) * 2 // 3])
    (folder / "head.mp4").write_bytes(data[:200])
    (folder / "empty.mp4").write_bytes(b"")
    return [*names, "fast.mp4", "fastcut.mp4", "garbled.mp4", "cut.mp4", "head.mp4", "empty.mp4"]


def _outcome(collator, ex: Example):
    try:
        (e,) = collator.encode_examples([ex], truncate=False)
    except DataError as exc:
        return [_without_times(f.one_line()) for f in exc.findings]
    return e.input_ids.tolist(), e.labels.tolist(), e.media_spans, e.num_supervised


@pytest.mark.parametrize("family", sorted(SHAPE_TINY))
@pytest.mark.parametrize("num_frames", [3, 8])
def test_collator_video_encodings_equal(family, num_frames, tiny_model_dir, tmp_path):
    proc = _load(tiny_model_dir(family))
    c = cfg(video_processing={"frame_extraction": {"num_frames": num_frames}})
    pixel = VLMCollator(proc, c, [tmp_path], model_type=family)
    sized = VLMCollator(proc, c, [tmp_path], model_type=family)
    assert count_media_from_sizes(sized)
    outcomes = set()
    for i, name in enumerate(_clips(tmp_path)):
        content = [{"type": "video"}, {"type": "text", "text": f"what {i}?"}]
        messages = [
            {"role": "user", "content": content},
            {"role": "assistant", "content": [{"type": "text", "text": f"clip {i}"}]},
        ]
        ex = Example(messages=messages, videos=[name], row=i)
        got = _outcome(sized, ex)
        assert got == _outcome(pixel, ex), name
        outcomes.add(isinstance(got, list))
    assert outcomes == {True, False}  # both errors and encodings were compared


# ------------------------------------------------------------------------------ validate


def _without_times(doc):
    """The document less durations and the wall-clock time decord writes into its errors."""
    if isinstance(doc, dict):
        return {k: _without_times(v) for k, v in doc.items() if "seconds" not in k}
    if isinstance(doc, list):
        return [_without_times(v) for v in doc]
    if isinstance(doc, str):
        return re.sub(r"\[\d\d:\d\d:\d\d\] ", "[time] ", doc)
    return doc


def _video_rows(folder: Path) -> Path:
    media = folder / "media"
    media.mkdir(parents=True)
    names = _clips(media)
    write_image(media / "a.jpg", 1)
    rows = []
    for i, name in enumerate(names + names[:2]):
        parts = [{"type": "video", "video": f"media/{name}"}, {"type": "text", "text": f"q{i}"}]
        if i % 3 == 0:
            parts.insert(0, {"type": "image", "image": "media/a.jpg"})
        answer = {"role": "assistant", "content": [{"type": "text", "text": f"a{i}"}]}
        rows.append({"messages": [{"role": "user", "content": parts}, answer]})
    path = folder / "mixed.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("family", sorted(SHAPE_TINY))
def test_validate_json_identical_with_pixel_path_forced(
    family, tiny_model_dir, tmp_path, monkeypatch
):
    _video_rows(tmp_path / "data")
    config = write_config_set(tmp_path / "config", tiny_model_dir(family), MIXED_COLLATOR)
    calls = []
    real = video_tokens._shape_only_preprocess

    def counting(fn):
        inner = real(fn)
        return lambda self, videos, **kw: calls.extend(videos) or inner(self, videos, **kw)

    monkeypatch.setattr(video_tokens, "_shape_only_preprocess", counting)
    docs = []
    for forced in ("0", "1"):
        monkeypatch.setenv(PIXEL_ENV, forced)
        r = CliRunner().invoke(app, ["validate", str(config), "--format", "json"])
        assert r.exit_code == 1, r.stdout[-2000:]  # the broken files are errors
        docs.append(_without_times(json.loads(r.stdout)))
        if forced == "0":
            assert len(calls) >= 6  # the shape path really ran (videos counted)
            calls.clear()
    assert not calls  # ... and the forced pixel path did not
    assert docs[0] == docs[1]
    codes = {(f["row"], f["code"]) for f in docs[0]["config_sets"][0]["findings"]}
    assert {(6, "media-decode"), (9, "media-empty")} <= codes, codes
