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

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vlmctl.errors import ConfigError, DataError, Finding
from vlmctl.media.paths import media_error, resolve_media_path, sniff_non_media
from vlmctl.media.video_readers import (
    READERS,
    NoFrames,
    NoVideoStream,
    Read,
    UnreliableSeek,
    backend_available,
    pyav_count,
    pyav_stream,
    quarter_turns,
)

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
    *,
    base_dirs: Sequence[str | os.PathLike[str]] = (),
    library: str = "decord",
    num_frames: int = 8,
    sampling_strategy: str = "uniform",
    max_duration: float | None = None,
    convert_to_rgb: bool = True,
    row: int | None = None,
) -> VideoClip:
    """Sample `num_frames` RGB frames uniformly; raise DataError naming the file on failure.

    The settings are the config's `video_processing` values, passed by keyword.
    """
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
        if not backend_available(backend):
            notes.append(f"{backend} is not installed; used PyAV")
            continue
        try:
            read = READERS[backend](file, num_frames, max_duration)
        except Exception as exc:  # any backend failure -> try the next one, report all
            failures.append((backend, exc))
            if isinstance(exc, UnreliableSeek):
                notes.append(f"{exc}; used PyAV")
            elif backend != order[-1]:
                notes.append(f"{backend} failed ({_describe(exc)}); used PyAV")
            continue
        return _make_clip(read, backend, file, num_frames, notes + read.notes)
    raise _video_error(name, head, failures, row)


def _make_clip(
    read: Read, backend: str, file: Path, num_frames: int, notes: list[str]
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
    if isinstance(exc, NoFrames):
        return "no frames"
    if isinstance(exc, NoVideoStream):
        return "no video stream"
    text = _DECORD_LOG_PREFIX.sub("", " ".join(str(exc).split())) or type(exc).__name__
    return text[:160]


# decord's C++ errors start with its log prefix: "[10:16:39] /github/workspace/src/video/
# video_reader.cc:83: ". The clock time would make the same failure read differently on each
# run (and in CI diffs), and the build path says nothing to the user: both are dropped.
_DECORD_LOG_PREFIX = re.compile(r"\[\d{1,2}:\d{2}:\d{2}\]\s*(?:\S+\.(?:cc|cpp|h):\d+:\s*)?")


def _video_error(
    name: str, head: bytes, failures: list[tuple[str, BaseException]], row: int | None
) -> DataError:
    excs = [e for _, e in failures]
    if any(isinstance(e, NoFrames) for e in excs):
        return media_error(
            f"{name}: video has no frames (zero-length video)",
            name=name,
            hint="re-encode the file or drop the row",
            row=row,
            code="media-no-frames",
        )
    if any(isinstance(e, NoVideoStream) for e in excs):
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
            stream, total, fps, duration = pyav_stream(container)
            first = next(iter(container.decode(stream)), None)
            if first is None:
                raise NoFrames()
            width, height = first.width, first.height
            if quarter_turns(first) % 2:  # shown sideways: what the model sees is turned
                width, height = height, width
        if total <= 0:
            total = pyav_count(file)
    except Exception as exc:
        raise _video_error(name, head, [("pyav", exc)], row) from None
    if fps <= 0 and duration > 0:
        fps = total / duration
    if duration <= 0 and fps > 0:
        duration = total / fps
    return total, fps, duration, width, height
