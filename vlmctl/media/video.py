"""Sample a fixed number of RGB frames from a video file, the same way with every backend.

Backends: decord first when `library="decord"` (the seed's choice); PyAV when decord is not
installed or fails on the file; cv2 only when `library="cv2"` and OpenCV is installed (otherwise
PyAV, with a note). `library="pyav"` uses PyAV only. Decoding is by content, not by extension.

Frame choice (`sampling_strategy="uniform"`, the only strategy): with N frames in the clip, or
only the first ceil(max_duration * fps) frames when `max_duration` is set, frame k of
`num_frames` is index floor((2k + 1) * N / (2 * num_frames)), the centre of the k-th of
`num_frames` equal segments. Every backend computes N from the container's frame count (PyAV
counts packets when the container has none), so decord and PyAV pick the SAME indices.

Short clips (N < num_frames): frames are repeated, still in time order and spread uniformly
(3 frames, 8 wanted -> indices 0 0 0 1 1 2 2 2), so exactly `num_frames` always come back —
processors expect a fixed count. `VideoClip.repeated` is True then.

Timestamps are seconds from the first frame, from the stream's presentation times; AVI has
none, so there (and when a backend's times are unusable) they are index / fps.

decord's random access silently returns neighbouring frames for AVI and for B-frames in codecs
other than H.264 (MPEG-4 Part 2, HEVC; measured with decord 0.6), so those files are read with
PyAV even when `library="decord"` (a probe of the header and the first frame decides, once
per file version; `VideoClip.notes` says so).

Phone videos store the picture sideways plus a display rotation. Frames come back the way a
player shows them: PyAV's frames are turned by the rotation they carry (the same result as
OpenCV's own auto-orientation, which the cv2 backend keeps on); decord ignores the rotation
(0.6 returns a mangled array), so such files go to PyAV too.

Frames are always RGB uint8 (T, H, W, 3): `convert_to_rgb` is
accepted for config symmetry; grey or alpha video is decoded straight to RGB.

A missing, empty, zero-frame or undecodable file raises `vlmctl.errors.DataError` naming the
file (never an empty array); pass `row=` so the finding names the dataset row.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vlmctl.errors import ConfigError, DataError, Finding
from vlmctl.media.images import media_error, resolve_media_path, setting, sniff_non_media

LIBRARIES = ("decord", "pyav", "cv2")
SAMPLING_STRATEGIES = ("uniform",)


@dataclass
class VideoClip:
    """Sampled frames (T x H x W x 3, uint8 RGB) with their times and where they came from."""

    frames: np.ndarray
    timestamps: list[float]
    fps: float
    backend: str
    path: Path
    indices: list[int] = field(default_factory=list)
    total_frames: int = 0
    duration: float = 0.0
    repeated: bool = False
    notes: list[str] = field(default_factory=list)


class _NoFrames(Exception):
    """The container opened but holds no decodable video frame."""


class _UnreliableSeek(Exception):
    """decord would return wrong frames for this file."""


class _NoVideoStream(Exception):
    """The container has no video stream (an audio file?)."""


@dataclass
class _Read:
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
        raise _NoFrames()
    n = total
    if max_duration is not None and fps > 0:
        n = min(total, max(1, math.ceil(max_duration * fps - 1e-6)))
    return [min(n - 1, ((2 * k + 1) * n) // (2 * num_frames)) for k in range(num_frames)]


def _sane_timestamps(ts: list[float] | None, indices: list[int], fps: float) -> bool:
    """Times must be finite, strictly increasing over distinct indices and near index / fps."""
    if ts is None or len(ts) != len(indices):
        return False
    pairs = sorted(set(zip(indices, ts, strict=True)))
    if len({i for i, _ in pairs}) != len(pairs):
        return False  # one index, two times
    frame = 1.0 / fps if fps > 0 else 0.0
    for (i0, t0), (i1, t1) in zip(pairs, pairs[1:], strict=False):
        if i1 > i0 and not t1 > t0:
            return False
    for i, t in pairs:
        if not math.isfinite(t):
            return False
        # pts may drift from index / fps (variable frame rate), but not wildly.
        if fps > 0 and (t < -frame or t > 2 * (i + 1) * frame + 10):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# backends: each returns frames for the indices computed by `sample_indices`


def _read_decord(path: Path, num_frames: int, max_duration: float | None) -> _Read:
    import decord

    reason = _decord_distrust(path)
    if reason:
        raise _UnreliableSeek(reason)
    vr = decord.VideoReader(str(path), ctx=decord.cpu(0))
    total = len(vr)
    if total <= 0:
        raise _NoFrames()
    fps = float(vr.get_avg_fps())
    # decord seeks by presentation time. Without usable times (H.264 with B-frames in AVI)
    # get_batch returns the WRONG frames silently (measured: index 50 gave frame 3), so such
    # files go to PyAV, which decodes in order.
    starts = np.asarray(vr.get_frame_timestamp(list(range(total))), dtype=float)[:, 0]
    if not np.all(np.isfinite(starts)) or starts[0] < -1e3 or np.any(np.diff(starts) <= 0):
        raise _UnreliableSeek(
            "no usable frame timestamps, so decord's seeking would return wrong frames"
        )
    indices = sample_indices(total, fps, num_frames, max_duration)
    uniq = sorted(set(indices))
    batch = vr.get_batch(uniq).asnumpy()
    pos = {i: k for k, i in enumerate(uniq)}
    frames = batch[[pos[i] for i in indices]]
    ts = [float(starts[i] - starts[0]) for i in indices]
    return _Read(frames, ts, fps, total, indices)


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
            if first is not None and _quarter_turns(first):
                return "decord ignores the video's display rotation (a phone video?)"
    except Exception:  # let decord try; PyAV reports the real problem if it fails too
        return None
    return None


def _quarter_turns(frame: Any) -> int:
    """Counter-clockwise quarter turns a player applies to this frame (its display matrix).

    `VideoFrame.rotation` (PyAV >= 14) is in degrees, counter-clockwise; older PyAV: 0.
    """
    return round(float(getattr(frame, "rotation", 0) or 0) / 90) % 4


def _pyav_count(path: Path) -> int:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for p in container.demux(stream) if p.size > 0)


def _read_pyav(path: Path, num_frames: int, max_duration: float | None) -> _Read:
    import av

    notes: list[str] = []
    with av.open(str(path)) as container:
        _, total, fps, duration = _pyav_stream(container)
        # AVI stores no presentation times (ffmpeg invents them from decode order, wrongly with
        # B-frames); its frames are index / fps by definition.
        is_avi = "avi" in container.format.name.split(",")
    if total <= 0:
        total = _pyav_count(path)
    if fps <= 0 and duration > 0:
        fps = total / duration
    indices = sample_indices(total, fps, num_frames, max_duration)
    got, times, decoded, turns = _pyav_decode(path, set(indices))
    if len(got) < len(set(indices)):
        # The container promised more frames than decode: re-sample over what really exists.
        if decoded == 0:
            raise _NoFrames()
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
    return _Read(frames, ts, fps, total, indices, notes)


def _pyav_stream(container: Any) -> tuple[Any, int, float, float]:
    """The first video stream and what its metadata says: (stream, frames, fps, duration_s).

    Zeros where the container does not say; callers fill them from each other or by counting.
    """
    if not container.streams.video:
        raise _NoVideoStream()
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
                turns0 = _quarter_turns(frame)
            if i == 0 or i in wanted:
                times[i] = frame.time
            if i in wanted:
                rgb = frame.to_ndarray(format="rgb24")
                turns = _quarter_turns(frame)
                got[i] = np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb
            if i >= last:
                break
    return got, times, decoded, turns0


def _read_cv2(path: Path, num_frames: int, max_duration: float | None) -> _Read:
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
    return _Read(np.stack([got[i] for i in indices]), ts, fps, total, indices)


_READERS: dict[str, Callable[[Path, int, float | None], _Read]] = {
    "decord": _read_decord,
    "pyav": _read_pyav,
    "cv2": _read_cv2,
}
_MODULES = {"decord": "decord", "pyav": "av", "cv2": "cv2"}


def _backend_available(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(_MODULES[name]) is not None


# ---------------------------------------------------------------------------------------------
# settings


def _from_settings(settings: Any, name: str, group: str, default: Any) -> Any:
    """Read a flat attribute, or the nested `frame_extraction`/`file_processing` one."""
    value = setting(settings, name, None)
    if value is None:
        value = setting(setting(settings, group, None), name, None)
    return default if value is None else value


def _config_error(key: str, message: str, hint: str | None = None) -> ConfigError:
    return ConfigError(
        Finding("error", message, hint=hint, key=f"video_processing.{key}", code="config-value")
    )


# ---------------------------------------------------------------------------------------------
# public API


def _open_clip(path: str | os.PathLike, base_dirs, row: int | None) -> tuple[Path, str, bytes]:
    """(resolved file, name as the user wrote it, first 512 bytes); an empty file is an error.

    The head lets a failed decode say what the file really is (text, HTML, an LFS pointer).
    """
    file = resolve_media_path(path, base_dirs, row=row)
    name = os.fspath(path)
    with open(file, "rb") as f:
        head = f.read(512)
    if not head:
        raise media_error(f"{name}: empty file (0 bytes)", name=name, row=row, code="media-empty")
    return file, name, head


def load_video_frames(
    path: str | os.PathLike[str],
    settings: Any = None,
    *,
    base_dirs: Sequence[str | os.PathLike[str]] = (),
    library: str | None = None,
    num_frames: int | None = None,
    sampling_strategy: str | None = None,
    max_duration: float | None = None,
    convert_to_rgb: bool | None = None,
    row: int | None = None,
) -> VideoClip:
    """Sample `num_frames` RGB frames uniformly; raise DataError naming the file on failure.

    `settings` may be the config's `video_processing` section (nested `frame_extraction` /
    `file_processing`) or any object/dict with the flat names; explicit keywords win.
    """
    if library is None:
        library = _from_settings(settings, "library", "frame_extraction", "decord")
    if num_frames is None:
        num_frames = _from_settings(settings, "num_frames", "frame_extraction", 8)
    if sampling_strategy is None:
        sampling_strategy = _from_settings(
            settings, "sampling_strategy", "frame_extraction", "uniform"
        )
    if max_duration is None:
        max_duration = _from_settings(settings, "max_duration", "file_processing", None)
    # Frames are decoded straight to RGB; the flag is read only so a bad value is not silent.
    _ = convert_to_rgb

    library = str(library).lower()
    if library == "av":
        library = "pyav"
    if library not in LIBRARIES:
        raise _config_error(
            "frame_extraction.library",
            f"unknown video library {library!r}",
            f"use one of {', '.join(LIBRARIES)}",
        )
    if sampling_strategy not in SAMPLING_STRATEGIES:
        raise _config_error(
            "frame_extraction.sampling_strategy",
            f"unknown sampling_strategy {sampling_strategy!r}",
            "use uniform",
        )
    if isinstance(num_frames, bool) or not isinstance(num_frames, int) or num_frames < 1:
        raise _config_error(
            "frame_extraction.num_frames", f"num_frames must be >= 1, got {num_frames!r}"
        )
    if max_duration is not None and not (max_duration > 0):
        raise _config_error(
            "file_processing.max_duration",
            f"max_duration must be > 0 seconds or null, got {max_duration!r}",
        )

    file, name, head = _open_clip(path, base_dirs, row)

    order = {"decord": ["decord", "pyav"], "pyav": ["pyav"], "cv2": ["cv2", "pyav"]}[library]
    notes: list[str] = []
    failures: list[tuple[str, BaseException]] = []
    for backend in order:
        if not _backend_available(backend):
            notes.append(f"{backend} is not installed; used PyAV")
            continue
        try:
            read = _READERS[backend](file, num_frames, max_duration)
        except Exception as exc:  # any backend failure -> try the next one, report all
            failures.append((backend, exc))
            if isinstance(exc, _UnreliableSeek):
                notes.append(f"{exc}; used PyAV")
            elif backend != order[-1]:
                notes.append(f"{backend} failed ({_describe(exc)}); used PyAV")
            continue
        return _make_clip(read, backend, file, num_frames, notes + read.notes)
    raise _video_error(name, head, failures, row)


def _make_clip(
    read: _Read, backend: str, file: Path, num_frames: int, notes: list[str]
) -> VideoClip:
    fps = read.fps
    ts = read.timestamps
    if not _sane_timestamps(ts, read.indices, fps):
        if ts is not None:
            notes.append(f"{backend} gave unusable timestamps; using index / fps")
        ts = [i / fps if fps > 0 else 0.0 for i in read.indices]
    frames = np.ascontiguousarray(read.frames, dtype=np.uint8)
    duration = read.total / fps if fps > 0 else 0.0
    return VideoClip(
        frames=frames,
        timestamps=[float(t) for t in ts],
        fps=fps,
        backend=backend,
        path=file,
        indices=list(read.indices),
        total_frames=read.total,
        duration=duration,
        repeated=len(set(read.indices)) < num_frames,
        notes=notes,
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, _NoFrames):
        return "no frames"
    if isinstance(exc, _NoVideoStream):
        return "no video stream"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:160]


def _video_error(
    name: str, head: bytes, failures: list[tuple[str, BaseException]], row: int | None
) -> DataError:
    excs = [e for _, e in failures]
    if any(isinstance(e, _NoFrames) for e in excs):
        return media_error(
            f"{name}: video has no frames (zero-length video)",
            name=name,
            hint="re-encode the file or drop the row",
            row=row,
            code="media-no-frames",
        )
    if any(isinstance(e, _NoVideoStream) for e in excs):
        return media_error(
            f"{name}: no video stream (an audio-only file?)",
            name=name,
            row=row,
            code="media-no-video",
        )
    what = sniff_non_media(head)
    if what:
        hint = "run `git lfs pull`" if "LFS" in what else "check that the column points at videos"
        return media_error(
            f"{name}: not a video ({what})", name=name, hint=hint, row=row, code="media-not-video"
        )
    detail = "; ".join(f"{b}: {_describe(e)}" for b, e in failures) or "no backend available"
    return media_error(
        f"{name}: cannot decode video ({detail})",
        name=name,
        hint="check the file plays (e.g. with ffprobe) or re-encode it",
        row=row,
        code="media-decode",
    )


def probe_video(
    path: str | os.PathLike[str],
    base_dirs: Sequence[str | os.PathLike[str]] = (),
    *,
    row: int | None = None,
) -> tuple[int, float, float, int, int]:
    """(num_frames, fps, duration_s, width, height) from metadata plus one decoded frame.

    Width and height are as displayed (after the file's rotation), like the frames.

    Cheap enough for `validate`: no full decode, but a file whose first frame does not decode
    fails here.
    """
    import av

    file, name, head = _open_clip(path, base_dirs, row)
    try:
        with av.open(str(file)) as container:
            stream, total, fps, duration = _pyav_stream(container)
            first = next(iter(container.decode(stream)), None)
            if first is None:
                raise _NoFrames()
            width, height = first.width, first.height
            if _quarter_turns(first) % 2:  # shown sideways: what the model sees is turned
                width, height = height, width
        if total <= 0:
            total = _pyav_count(file)
    except Exception as exc:
        raise _video_error(name, head, [("pyav", exc)], row) from None
    if fps <= 0 and duration > 0:
        fps = total / duration
    if duration <= 0 and fps > 0:
        duration = total / fps
    return total, fps, duration, width, height
