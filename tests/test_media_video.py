"""vlmctl.media.video: the same frames from decord and PyAV, short clips, errors, real clips."""

from __future__ import annotations

import importlib.util
import json
import platform
import sys
from pathlib import Path

import av  # a hard dependency of vlmctl: a missing PyAV must fail here, not skip
import numpy as np
import pytest

from vlmctl.errors import ConfigError, DataError
from vlmctl.media import video as video_mod
from vlmctl.media.video import VideoClip, load_video_frames, probe_video
from vlmctl.media.video_readers import sample_indices

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HAS_DECORD = importlib.util.find_spec("decord") is not None
# decord is in the train extra on x86_64 Linux only: skip there only when the train extra is
# absent; with it installed, a missing decord is a broken install and its tests fail.
DECORD_EXPECTED = (
    platform.machine() == "x86_64"
    and sys.platform == "linux"
    and importlib.util.find_spec("trl") is not None
)
needs_decord = pytest.mark.skipif(
    not HAS_DECORD and not DECORD_EXPECTED,
    reason="decord is a dependency only of the train extra on x86_64 Linux",
)
BACKENDS = [pytest.param("decord", marks=needs_decord), "pyav"]

STEP = 4  # frame i is a flat grey of level 16 + 4 * i, so a decoded frame says its own index


def make_video(
    path: Path,
    *,
    n_frames: int = 24,
    fps: int = 12,
    size: tuple[int, int] = (64, 48),
    codec: str = "libx264",
    fmt: str | None = None,
    audio: bool = False,
    gop: int | None = None,
    b_frames: int | None = None,
) -> Path:
    """Write a clip whose frame i is grey level 16 + 4i (H.264 by default, with B-frames)."""
    assert n_frames <= 59
    w, h = size
    with av.open(str(path), "w", format=fmt) as out:
        vs = out.add_stream(codec, rate=fps)
        vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
        vs.bit_rate = 2_000_000
        if gop is not None:
            vs.codec_context.gop_size = gop
        if b_frames is not None:
            vs.codec_context.max_b_frames = b_frames
        aus = out.add_stream("aac", rate=16000, layout="mono") if audio else None
        for i in range(n_frames):
            arr = np.full((h, w, 3), 16 + STEP * i, np.uint8)
            for pkt in vs.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(pkt)
            if aus is not None:
                n = 16000 // fps
                samples = np.sin(np.arange(n) / 10.0).astype(np.float32)[None, :] * 0.1
                af = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                af.sample_rate, af.pts = 16000, i * n
                for pkt in aus.encode(af):
                    out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
        if aus is not None:
            for pkt in aus.encode(None):
                out.mux(pkt)
    return path


def frame_ids(clip: VideoClip) -> list[int]:
    means = clip.frames.reshape(len(clip.frames), -1).mean(axis=1)
    return [int(round((m - 16) / STEP)) for m in means]


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    out = {
        "h264_mp4": make_video(d / "h264.mp4"),
        "h264_avi": make_video(d / "h264.avi"),  # B-frames in AVI: no usable pts
        "mpeg4_avi": make_video(d / "mpeg4.avi", codec="mpeg4"),
        "mpeg4_mp4": make_video(d / "mpeg4.mp4", codec="mpeg4"),
        "audio_mp4": make_video(d / "audio.mp4", audio=True),
        "short": make_video(d / "short.mp4", n_frames=3),
        "long": make_video(d / "long.mp4", n_frames=48),
        "odd_size": make_video(d / "odd.mkv", size=(80, 30), fps=25, fmt="matroska"),
        # decord 0.6 returns neighbouring frames for these three (measured):
        "h264_avi_gops": make_video(d / "gops.avi", n_frames=48, gop=8),
        "mpeg4_bframes": make_video(d / "m4b.mp4", n_frames=48, codec="mpeg4", gop=8, b_frames=2),
    }
    if "libx265" in av.codecs_available:
        out["hevc_bframes"] = make_video(d / "hevc.mp4", n_frames=48, codec="libx265", gop=8)
    return out


# ---------------------------------------------------------------------------------------------
# index policy


def test_sample_indices_policy():
    assert sample_indices(24, 12.0, 8) == [1, 4, 7, 10, 13, 16, 19, 22]
    assert sample_indices(3, 12.0, 8) == [0, 0, 0, 1, 1, 2, 2, 2]
    assert sample_indices(1, 12.0, 4) == [0, 0, 0, 0]
    assert sample_indices(48, 12.0, 4, max_duration=1.0) == [1, 4, 7, 10]
    assert sample_indices(48, 12.0, 4, max_duration=100.0) == sample_indices(48, 12.0, 4)
    assert sample_indices(10, 10.0, 4, max_duration=0.01) == [0, 0, 0, 0]


# ---------------------------------------------------------------------------------------------
# decord and PyAV agree


@needs_decord
@pytest.mark.parametrize("name", ["h264_mp4", "mpeg4_mp4", "audio_mp4", "odd_size"])
def test_decord_and_pyav_agree(clips, name):
    a = load_video_frames(clips[name], library="decord", num_frames=8)
    b = load_video_frames(clips[name], library="pyav", num_frames=8)
    assert (a.backend, b.backend) == ("decord", "pyav")
    assert a.frames.shape == b.frames.shape
    assert a.frames.dtype == b.frames.dtype == np.uint8
    assert a.indices == b.indices
    assert frame_ids(a) == frame_ids(b) == a.indices
    assert np.abs(a.frames.astype(int) - b.frames.astype(int)).max() <= 2
    frame = 1.0 / a.fps
    assert a.fps == pytest.approx(b.fps)
    for ta, tb, i in zip(a.timestamps, b.timestamps, a.indices, strict=True):
        assert abs(ta - tb) < frame
        assert abs(ta - i * frame) < frame


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("h264_mp4", (8, 48, 64, 3)),
        ("h264_avi", (8, 48, 64, 3)),
        ("mpeg4_avi", (8, 48, 64, 3)),
        ("mpeg4_mp4", (8, 48, 64, 3)),
        ("audio_mp4", (8, 48, 64, 3)),
        ("odd_size", (8, 30, 80, 3)),
    ],
)
def test_formats_each_backend(clips, name, shape, backend):
    clip = load_video_frames(clips[name], library=backend)
    assert clip.backend == ("pyav" if name.endswith("_avi") else backend)
    assert clip.frames.shape == shape
    assert clip.indices == [1, 4, 7, 10, 13, 16, 19, 22]
    assert frame_ids(clip) == clip.indices
    assert clip.total_frames == 24 and not clip.repeated
    fps = 25.0 if name == "odd_size" else 12.0
    assert clip.fps == pytest.approx(fps)
    assert clip.duration == pytest.approx(24 / fps)
    assert all(
        abs(t - i / fps) < 1 / fps for t, i in zip(clip.timestamps, clip.indices, strict=True)
    )
    assert clip.path == clips[name]


@pytest.mark.parametrize("name", ["h264_avi", "h264_avi_gops", "mpeg4_avi"])
def test_avi_times_are_index_over_fps(clips, name):
    # AVI has no presentation times; ffmpeg's invented ones are off by frames with B-frames.
    clip = load_video_frames(clips[name], library="pyav")
    assert clip.timestamps == [i / 12.0 for i in clip.indices]
    assert frame_ids(clip) == clip.indices


@needs_decord
@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("h264_avi_gops", "decord seeks inaccurately in AVI files"),
        ("mpeg4_bframes", "decord seeks inaccurately in mpeg4 video with B-frames"),
        ("hevc_bframes", "decord seeks inaccurately in hevc video with B-frames"),
    ],
)
def test_decord_is_not_trusted_where_it_returns_wrong_frames(clips, name, why):
    if name not in clips:
        pytest.skip("this PyAV build has no libx265 encoder to make the HEVC clip")
    clip = load_video_frames(clips[name], library="decord", num_frames=8)
    assert clip.backend == "pyav"
    assert clip.notes == [f"{why}; used PyAV"]
    assert clip.indices == [3, 9, 15, 21, 27, 33, 39, 45]
    assert frame_ids(clip) == clip.indices  # raw decord gave e.g. [3, 9, 18, 24, ...] here


HAS_CV2 = importlib.util.find_spec("cv2") is not None
ALL_BACKENDS = [
    *BACKENDS,
    pytest.param("cv2", marks=pytest.mark.skipif(not HAS_CV2, reason="no cv2")),
]


def make_rotated(path: Path, degrees: int) -> tuple[Path, np.ndarray]:
    """A phone-style clip: a 64x48 picture stored as is, with a display rotation of `degrees`
    counter-clockwise. Returns the path and the stored picture (white block top-left)."""
    if not hasattr(av.video.stream.VideoStream, "set_display_rotation"):
        pytest.skip("this PyAV cannot write a display rotation (set_display_rotation: PyAV 18)")
    picture = np.zeros((48, 64, 3), np.uint8)
    picture[:16, :24] = 255
    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=12)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        vs.set_display_rotation(degrees)
        for _ in range(12):
            for pkt in vs.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")):
                out.mux(pkt)
        for pkt in vs.encode(None):
            out.mux(pkt)
    return path, picture


@pytest.mark.parametrize(("degrees", "turns"), [(90, 1), (180, 2), (270, 3)])
@pytest.mark.parametrize("backend", ALL_BACKENDS)
def test_phone_video_frames_come_back_upright(tmp_path, degrees, turns, backend):
    """Frames are what a player shows (OpenCV's auto-orientation agrees); decord, which
    ignores the rotation, is not used for such files."""
    path, picture = make_rotated(tmp_path / f"phone{degrees}.mp4", degrees)
    clip = load_video_frames(path, library=backend, num_frames=4)
    shown = np.rot90(picture, turns)
    assert clip.frames.shape == (4, *shown.shape)
    white = clip.frames[..., 0] > 128
    assert (white == (shown[..., 0] > 128)[None]).mean() > 0.98
    if backend == "decord":
        assert clip.backend == "pyav"
        assert (
            clip.notes[0]
            == "decord ignores the video's display rotation (a phone video?); used PyAV"
        )
    if clip.backend == "pyav":
        assert clip.notes[-1] == (
            f"turned {90 * turns} degrees counter-clockwise, as the file's rotation says"
        )
    total, _, _, width, height = probe_video(path)
    assert total == 12 and (height, width) == shown.shape[:2]


@pytest.mark.parametrize("backend", BACKENDS)
def test_short_clip_repeats_frames(clips, backend):
    clip = load_video_frames(clips["short"], library=backend, num_frames=8)
    assert clip.frames.shape == (8, 48, 64, 3)
    assert clip.indices == [0, 0, 0, 1, 1, 2, 2, 2]
    assert frame_ids(clip) == clip.indices
    assert clip.repeated and clip.total_frames == 3
    assert clip.timestamps == pytest.approx([i / 12 for i in clip.indices], abs=1e-3)


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_duration(clips, backend):
    full = load_video_frames(clips["long"], library=backend, num_frames=4)
    assert full.indices == [6, 18, 30, 42]
    clip = load_video_frames(clips["long"], library=backend, num_frames=4, max_duration=1.0)
    assert clip.indices == [1, 4, 7, 10]
    assert frame_ids(clip) == clip.indices
    assert max(clip.timestamps) < 1.0
    assert clip.total_frames == 48


def test_num_frames_and_max_duration_pick_the_indices(clips):
    clip = load_video_frames(clips["long"], library="pyav", num_frames=4, max_duration=1.0)
    assert clip.backend == "pyav" and clip.indices == [1, 4, 7, 10]
    assert load_video_frames(clips["long"], library="pyav", num_frames=2).indices == [12, 36]
    assert load_video_frames(clips["long"], library="pyav", num_frames=3).indices == [8, 24, 40]


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"library": "ffmpeg"}, "frame_extraction.library"),
        ({"sampling_strategy": "random"}, "frame_extraction.sampling_strategy"),
        ({"num_frames": 0}, "frame_extraction.num_frames"),
        ({"max_duration": -1}, "file_processing.max_duration"),
    ],
)
def test_bad_settings_are_config_errors(clips, kwargs, key):
    with pytest.raises(ConfigError) as exc:
        load_video_frames(clips["h264_mp4"], **kwargs)
    assert exc.value.findings[0].key == f"video_processing.{key}"


# ---------------------------------------------------------------------------------------------
# backend fallbacks


def test_cv2_missing_falls_back_to_pyav(clips, monkeypatch):
    real = video_mod.backend_available
    monkeypatch.setattr(video_mod, "backend_available", lambda b: b != "cv2" and real(b))
    clip = load_video_frames(clips["h264_mp4"], library="cv2")
    assert clip.backend == "pyav"
    assert clip.notes == ["cv2 is not installed; used PyAV"]
    assert frame_ids(clip) == clip.indices


def test_decord_missing_falls_back_to_pyav(clips, monkeypatch):
    real = video_mod.backend_available
    monkeypatch.setattr(video_mod, "backend_available", lambda b: b != "decord" and real(b))
    clip = load_video_frames(clips["h264_mp4"], library="decord")
    assert clip.backend == "pyav" and clip.notes == ["decord is not installed; used PyAV"]


def test_decord_failure_falls_back_to_pyav(clips, monkeypatch):
    def broken(*_a, **_k):
        raise RuntimeError("decord exploded")

    monkeypatch.setattr(video_mod, "backend_available", lambda b: True)
    monkeypatch.setitem(video_mod.READERS, "decord", broken)
    clip = load_video_frames(clips["h264_mp4"], library="decord")
    assert clip.backend == "pyav"
    assert clip.notes == ["decord failed (decord exploded); used PyAV"]


def test_a_decord_error_reads_the_same_at_any_time_of_day(clips, monkeypatch):
    """decord's C++ errors carry its log prefix (clock time, build path): the note keeps
    only what went wrong, so the same failure reads the same in every run."""

    def broken(*_a, **_k):
        raise RuntimeError(
            "[10:16:39] /github/workspace/src/video/video_reader.cc:83: ERROR opening: "
            "x.mp4, Invalid data found when processing input"
        )

    monkeypatch.setattr(video_mod, "backend_available", lambda b: True)
    monkeypatch.setitem(video_mod.READERS, "decord", broken)
    clip = load_video_frames(clips["h264_mp4"], library="decord")
    assert clip.notes == [
        "decord failed (ERROR opening: x.mp4, Invalid data found when processing input); used PyAV"
    ]


@pytest.mark.skipif(importlib.util.find_spec("cv2") is None, reason="OpenCV is not installed")
def test_cv2_backend(clips):
    clip = load_video_frames(clips["h264_mp4"], library="cv2")
    assert clip.backend == "cv2" and frame_ids(clip) == clip.indices


# ---------------------------------------------------------------------------------------------
# errors name the file, never an empty array


@pytest.mark.parametrize("backend", BACKENDS)
def test_empty_file(tmp_path, backend):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with pytest.raises(DataError) as exc:
        load_video_frames(path, library=backend, row=3)
    f = exc.value.findings[0]
    assert f.message == f"{path}: empty file (0 bytes)" and f.row == 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_frame_video(tmp_path, backend):
    path = tmp_path / "zero.mkv"
    with av.open(str(path), "w", format="matroska") as out:
        vs = out.add_stream("libx264", rate=12)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        aus = out.add_stream("aac", rate=16000, layout="mono")
        for i in range(4):
            af = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            af.sample_rate, af.pts = 16000, i * 1024
            for pkt in aus.encode(af):
                out.mux(pkt)
        for pkt in aus.encode(None):
            out.mux(pkt)
    with pytest.raises(DataError, match=r"zero\.mkv: video has no frames"):
        load_video_frames(path, library=backend)
    with pytest.raises(DataError, match="video has no frames"):
        probe_video(path)


def test_audio_only_file(tmp_path):
    path = tmp_path / "sound.mp4"
    with av.open(str(path), "w") as out:
        aus = out.add_stream("aac", rate=16000, layout="mono")
        af = av.AudioFrame.from_ndarray(
            np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
        )
        af.sample_rate, af.pts = 16000, 0
        for pkt in [*aus.encode(af), *aus.encode(None)]:
            out.mux(pkt)
    with pytest.raises(DataError, match=r"sound\.mp4: no video stream"):
        load_video_frames(path)


@pytest.mark.parametrize("backend", BACKENDS)
def test_text_file_named_mp4(tmp_path, backend):
    path = tmp_path / "clip.mp4"
    path.write_text("this is a caption file, not a video\n")
    with pytest.raises(DataError) as exc:
        load_video_frames(path, library=backend, row=5)
    f = exc.value.findings[0]
    assert f.message.startswith(f"{path}: not a video (a text file)")
    assert "caption" not in f.one_line()  # a file's contents never reach the message
    assert f.row == 5
    with pytest.raises(DataError, match="not a video"):
        probe_video(path)


def test_garbage_binary_named_mp4(tmp_path):
    path = tmp_path / "noise.mp4"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(DataError, match=r"noise\.mp4: cannot decode video \(decord: .*pyav: "):
        load_video_frames(path)


def test_missing_video_lists_searched_dirs(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    with pytest.raises(DataError) as exc:
        load_video_frames("v.mp4", base_dirs=[a, b], row=9)
    f = exc.value.findings[0]
    assert f.message == f"file not found: v.mp4 (searched: {a}, {b})" and f.row == 9
    with pytest.raises(DataError, match="file not found"):
        probe_video("v.mp4", [a])


def test_relative_path_resolves_in_base_dirs(clips):
    p = clips["h264_mp4"]
    clip = load_video_frames(p.name, base_dirs=[p.parent.parent, p.parent], library="pyav")
    assert clip.path == p


def test_probe_video(clips):
    assert probe_video(clips["h264_mp4"]) == (24, 12.0, pytest.approx(2.0), 64, 48)
    assert probe_video(clips["mpeg4_avi"]) == (24, 12.0, pytest.approx(2.0), 64, 48)
    n, fps, dur, w, h = probe_video(clips["odd_size"])  # mkv: frame count from packets
    assert (n, fps, w, h) == (24, 25.0, 80, 30) and dur == pytest.approx(0.96, abs=0.05)


# ---------------------------------------------------------------------------------------------
# real third-party clips (../shared/data)

realdata = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real data folder {SHARED_DATA} is absent"
)

# name -> (frames, width, height) from each dataset's SUMMARY.md and the files themselves
REAL_VIDEOS = {
    "mllm_demo_data/1.mp4": (243, 640, 360),
    "mllm_demo_data/2.avi": (270, 320, 240),
    "mllm_demo_data/3.mp4": (146, 640, 360),
    "bm_teaser.mp4": (408, 1280, 720),
    "curry_vs_thunder.mp4": (1016, 640, 360),
}


def _real_video_refs() -> list[tuple[str, Path]]:
    lf = SHARED_DATA / "llamafactory" / "data"
    refs = [
        (v, lf) for r in json.loads((lf / "mllm_video_demo.json").read_text()) for v in r["videos"]
    ]
    lm = SHARED_DATA / "lmms_finetune" / "example_data"
    for f in sorted(lm.glob("*.json")):
        for rec in json.loads(f.read_text()):
            v = rec.get("video")
            for ref in [] if v is None else [v] if isinstance(v, str) else v:
                refs.append((ref, lm / "videos"))
    return refs


@pytest.mark.realdata
@realdata
def test_realdata_videos_decode_the_same_with_each_backend():
    refs = _real_video_refs()
    assert sorted({r for r, _ in refs}) == sorted(REAL_VIDEOS)
    for ref, base in sorted(set(refs)):
        total, w, h = REAL_VIDEOS[ref]
        n, fps, dur, pw, ph = probe_video(ref, [base])
        assert (n, pw, ph) == (total, w, h), ref
        clips = [load_video_frames(ref, base_dirs=[base], library="pyav", num_frames=8)]
        if HAS_DECORD or DECORD_EXPECTED:
            clips.append(load_video_frames(ref, base_dirs=[base], library="decord", num_frames=8))
        for clip in clips:
            assert clip.frames.shape == (8, h, w, 3), (ref, clip.backend)
            assert clip.frames.dtype == np.uint8
            assert clip.total_frames == total
            assert clip.indices == sample_indices(total, fps, 8)
            assert clip.frames.std() > 5  # real pictures, not a blank buffer
        if len(clips) == 2:
            a, b = clips
            # decord is not trusted with AVI (it returned frame 3 for index 50 in 2.avi).
            assert b.backend == ("pyav" if ref.endswith(".avi") else "decord"), ref
            assert a.indices == b.indices
            assert (
                max(abs(x - y) for x, y in zip(a.timestamps, b.timestamps, strict=True)) < 1 / fps
            )
            diff = np.abs(a.frames.astype(np.int16) - b.frames.astype(np.int16))
            assert diff.mean() < 1.0, ref


@pytest.mark.realdata
@realdata
def test_realdata_max_duration_on_long_clip():
    base = SHARED_DATA / "lmms_finetune" / "example_data" / "videos"
    clip = load_video_frames(
        "curry_vs_thunder.mp4", base_dirs=[base], library="pyav", max_duration=5
    )
    assert clip.frames.shape == (8, 360, 640, 3)
    assert max(clip.indices) < 150 and max(clip.timestamps) < 5.0
