"""The video decoders (decord, PyAV, OpenCV), each returning the frames `sample_indices` picks.

Every backend computes the clip's frame count the same way, so all pick the SAME indices;
decord is not trusted with files its random access gets wrong (see `video.py`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class NoFrames(Exception):
    """The container opened but holds no decodable video frame."""


class UnreliableSeek(Exception):
    """decord would return wrong frames for this file."""


class NoVideoStream(Exception):
    """The container has no video stream (an audio file?)."""


@dataclass
class Read:
    frames: np.ndarray
    timestamps: list[float] | None
    fps: float
    total: int
    indices: list[int]
    notes: list[str] = field(default_factory=list)


def sample_indices(
    total: int, fps: float, num_frames: int, max_duration: float | None = None
) -> list[int]:
    """Uniform frame indices (segment centres); shared by all backends so they agree."""
    if total <= 0:
        raise NoFrames()
    n = total
    if max_duration is not None and fps > 0:
        n = min(total, max(1, math.ceil(max_duration * fps - 1e-6)))
    return [min(n - 1, ((2 * k + 1) * n) // (2 * num_frames)) for k in range(num_frames)]


def _read_decord(path: Path, num_frames: int, max_duration: float | None) -> Read:
    import decord

    reason = _decord_distrust(path)
    if reason:
        raise UnreliableSeek(reason)
    vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
    total = len(vr)
    if total <= 0:
        raise NoFrames()
    fps = float(vr.get_avg_fps())
    # decord seeks by presentation time. Without usable times (H.264 with B-frames in AVI)
    # get_batch returns the WRONG frames silently (measured: index 50 gave frame 3), so such
    # files go to PyAV, which decodes in order.
    starts = np.asarray(vr.get_frame_timestamp(list(range(total))), dtype=float)[:, 0]
    if not np.all(np.isfinite(starts)) or starts[0] < -1e3 or np.any(np.diff(starts) <= 0):
        raise UnreliableSeek(
            "no usable frame timestamps, so decord's seeking would return wrong frames"
        )
    indices = sample_indices(total, fps, num_frames, max_duration)
    uniq = sorted(set(indices))
    batch = vr.get_batch(uniq).asnumpy()
    pos = {i: k for k, i in enumerate(uniq)}
    frames = batch[[pos[i] for i in indices]]
    ts = [float(starts[i] - starts[0]) for i in indices]
    return Read(frames, ts, fps, total, indices)


def _decord_distrust(path: Path) -> str | None:
    """Why decord would give wrong frames for this file (None: trust it); cached per file
    version, because the rotation check decodes one frame and training reads a clip per epoch.
    """
    try:
        st = path.stat()
    except OSError:
        return None  # decord reports it
    return _decord_distrust_for(str(path), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=4096)
def _decord_distrust_for(path: str, size: int, mtime_ns: int) -> str | None:
    """Why decord's random access would give wrong frames for this file (None: trust it).

    Measured with decord 0.6: AVI (no presentation times) and B-frames in any codec but H.264
    (MPEG-4 Part 2, HEVC) make `get_batch` return neighbouring frames, silently; a display
    rotation (phone video) is ignored and the frames come back mangled.
    """
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                return None
            stream = container.streams.video[0]
            ctx = stream.codec_context
            if "avi" in container.format.name.split(","):
                return "decord seeks inaccurately in AVI files"
            if ctx.name != "h264" and ctx.has_b_frames:
                return f"decord seeks inaccurately in {ctx.name} video with B-frames"
            first = next(iter(container.decode(stream)), None)
            if first is not None and quarter_turns(first):
                return "decord ignores the video's display rotation (a phone video?)"
    except Exception:  # let decord try; PyAV reports the real problem if it fails too
        return None
    return None


def quarter_turns(frame: Any) -> int:
    """Counter-clockwise quarter turns a player applies to this frame (its display matrix).

    `VideoFrame.rotation` (PyAV >= 14) is in degrees, counter-clockwise; older PyAV: 0.
    """
    return round(float(getattr(frame, "rotation", 0) or 0) / 90) % 4


def pyav_count(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size > 0)


def _read_pyav(path: Path, num_frames: int, max_duration: float | None) -> Read:
    import av

    notes: list[str] = []
    with av.open(str(path)) as container:
        _, total, fps, duration = pyav_stream(container)
        # AVI stores no presentation times (ffmpeg invents them from decode order, wrongly with
        # B-frames); its frames are index / fps by definition.
        is_avi = "avi" in container.format.name.split(",")
    if total <= 0:
        total = pyav_count(path)
    if fps <= 0 and duration > 0:
        fps = total / duration
    indices = sample_indices(total, fps, num_frames, max_duration)
    got, times, decoded, turns = _pyav_decode(path, set(indices))
    if len(got) < len(set(indices)):
        # The container promised more frames than decode: re-sample over what really exists.
        if decoded == 0:
            raise NoFrames()
        notes.append(f"container says {total} frames, {decoded} decode; sampled over {decoded}")
        total = decoded
        indices = sample_indices(total, fps, num_frames, max_duration)
        got, times, decoded, turns = _pyav_decode(path, set(indices))
    if turns:
        notes.append(f"turned {90 * turns} degrees counter-clockwise, as the file's rotation says")
    t0 = times.get(0)
    ts: list[float] | None
    if is_avi or t0 is None or any(times.get(i) is None for i in indices):
        ts = None
    else:
        ts = [times[i] - t0 for i in indices]
    frames = np.stack([got[i] for i in indices])
    return Read(frames, ts, fps, total, indices, notes)


def pyav_stream(container: Any) -> tuple[Any, int, float, float]:
    """The first video stream and what its metadata says: (stream, frames, fps, duration_s).

    Zeros where the container does not say; callers fill them from each other or by counting.
    """
    if not container.streams.video:
        raise NoVideoStream()
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else 0.0
    return stream, int(stream.frames or 0), fps, _pyav_duration(container, stream)


def _pyav_duration(container: Any, stream: Any) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return 0.0


def _pyav_decode(path: Path, wanted: set[int]) -> tuple[dict[int, np.ndarray], dict, int, int]:
    """Decode in order up to the last wanted index (frame 0's time is kept as the origin).

    Returns (frames by index, times, frames decoded, quarter turns applied to frame 0).
    """
    import av

    got: dict[int, np.ndarray] = {}
    times: dict[int, float | None] = {}
    last = max(wanted)
    decoded = 0
    turns0 = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            decoded = i + 1
            if i == 0:
                turns0 = quarter_turns(frame)
            if i == 0 or i in wanted:
                times[i] = frame.time
            if i in wanted:
                rgb = frame.to_ndarray(format="rgb24")
                turns = quarter_turns(frame)
                got[i] = np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
            if i >= last:
                break
    return got, times, decoded, turns0


def _read_cv2(path: Path, num_frames: int, max_duration: float | None) -> Read:
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise OSError("OpenCV cannot open the file")
        if hasattr(cv2, "CAP_PROP_ORIENTATION_AUTO"):  # its default; say it (phone videos)
            cap.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        indices = sample_indices(total, fps, num_frames, max_duration)
        wanted, last = set(indices), max(indices)
        got: dict[int, np.ndarray] = {}
        times: dict[int, float] = {}
        for i in range(last + 1):
            ok = cap.grab()
            if not ok:
                break
            if i == 0 or i in wanted:
                times[i] = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
            if i in wanted:
                ok, bgr = cap.retrieve()
                if not ok:
                    break
                got[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
    if len(got) < len(wanted):
        raise OSError(f"OpenCV decoded {len(got)} of the {len(wanted)} frames it needed")
    ts = [times[i] - times[0] for i in indices]
    return Read(np.stack([got[i] for i in indices]), ts, fps, total, indices)


READERS: dict[str, Callable[[Path, int, float | None], Read]] = {
    "decord": _read_decord,
    "pyav": _read_pyav,
    "cv2": _read_cv2,
}


_MODULES = {"decord": "decord", "pyav": "av", "cv2": "cv2"}


def backend_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(_MODULES[name]) is not None
