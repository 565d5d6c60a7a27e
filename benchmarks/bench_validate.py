"""Benchmark `vlmctl validate`'s row pass against a bare loop, and its memory at 1k vs 10k rows.

On ../shared/data/abo_vqa_csv (1000 rows, 200 JPEGs) with the tiny Qwen2-VL twin's REAL
processor class (Qwen2VLProcessor, small image limits):
- bare loop: open each row's image (`vlmctl.media.load_image`) and call the processor on the
  image plus the row's text — the least any length check must do;
- validate: `check_data` (columns, rows, media, encode via the collator, truncation policy),
  row-pass time only (`row_pass_seconds`), with --num-proc 1 and 2: image tokens counted from
  the image SIZES (file header, JPEG checked by a 1/8-scale decode, the processor's own
  arithmetic: `vlmctl.models.media_tokens`), and with the pixel path forced
  (`VLMCTL_PIXEL_COUNT=1`: every image decoded and run through the image processor); the two
  must give identical findings and counts (checked here);
- peak RSS of a whole `vlmctl validate --format json` process at 1,000 rows and at 10,000 rows
  (the same CSV rows repeated 10 times), each in its own process.
Each timing is the best of `--repeat` runs (the machine is shared; the best run is the least
disturbed). Prints a markdown table; `--append BENCHMARKS.md` appends it with the command.

    python benchmarks/bench_validate.py [--rows 1000] [--repeat 2] [--append BENCHMARKS.md]

`--video-only ROWS`: only validate's row pass on ROWS generated video rows, the shape path
(frames decoded, video tokens from their shapes: `vlmctl.models.video_tokens`) vs the pixel
path forced, with the same findings checked.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "abo_vqa_csv"


def write_set(folder: Path, csv_path: Path, model: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vlm_model_config.yaml").write_text(f'model_name_or_path: "{model}"\n')
    (folder / "vlm_collator_config.yaml").write_text(
        f"""dataset:
  path: "{csv_path}"
  media_root: "{SHARED / "curated_images"}"
dataset_columns:
  image_column: "image_name"
  question_column: "question"
  answer_column: "answer"
  video_column: null
message_format:
  system_prompt: "Answer with one word."
text_processing:
  max_length: 512
"""
    )
    (folder / "train_config.yaml").write_text("report_to: []\n")
    (folder / "peft_config.yaml").write_text("r: 8\n")
    return folder


def repeated_csv(dest: Path, times: int) -> Path:
    with open(SHARED / "vqa.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    with open(dest, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(rows[0])
        for _ in range(times):
            w.writerows(rows[1:])
    return dest


def bare_loop(config: Path, model: Path, limit: int, threads: int | None = None):
    """Seconds for: open each image, call the processor on it with the row's text."""
    import torch
    from transformers import AutoProcessor

    from vlmctl.config.load import load_config_set
    from vlmctl.data.dataset import iter_rows, load_splits
    from vlmctl.media.images import load_image

    cs = load_config_set(config)
    data = load_splits(cs.collator, cs.dir)
    processor = AutoProcessor.from_pretrained(model)
    image_text = "<|vision_start|><|image_pad|><|vision_end|>"
    n = 0
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    for _, row in iter_rows(data.train):
        image = load_image(row["image_name"], base_dirs=data.media_dirs)
        processor(text=[image_text + row["question"] + " " + row["answer"]], images=[image],
                  return_tensors="pt")  # fmt: skip
        n += 1
        if n >= limit:
            break
    secs = time.perf_counter() - t0
    torch.set_num_threads(saved)
    return secs, n


_OUTCOMES: dict[str, tuple] = {}  # path -> (findings, summary without timings)


def _untimed(doc):
    if isinstance(doc, dict):
        return {k: _untimed(v) for k, v in doc.items() if "seconds" not in k}
    return doc


def validate_pass(
    config: Path, num_proc: int, pixels: bool = False, key: str | None = None
) -> tuple[float, int, dict]:
    from vlmctl.config.load import load_config_set
    from vlmctl.models.media_tokens import PIXEL_ENV
    from vlmctl.validation.data_checks import DataCheckOptions, check_data

    cs = load_config_set(config)
    os.environ[PIXEL_ENV] = "1" if pixels else "0"
    try:
        result = check_data(cs, DataCheckOptions(num_proc=num_proc))
    finally:
        os.environ.pop(PIXEL_ENV, None)
    bad = [f.one_line() for f in result.findings if f.severity != "info"]
    assert not bad, bad
    s = result.summary
    outcome = ([f.one_line() for f in result.findings], _untimed(s))
    _OUTCOMES.setdefault(key or ("pixels" if pixels else "sizes"), outcome)
    return s["row_pass_seconds"], s["rows"]["checked"], s


def peak_rss_mb(config: Path) -> tuple[float, float]:
    """(peak RSS in MB, wall seconds) of a whole `vlmctl validate` process."""
    code = (
        "import resource, runpy, sys\n"
        f"sys.argv = ['vlmctl', 'validate', {str(config)!r}, '--format', 'json']\n"
        "try:\n    runpy.run_module('vlmctl', run_name='__main__')\n"
        "except SystemExit as e:\n    code = e.code\n"
        "print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
    )
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    line = [ln for ln in r.stderr.splitlines() if ln.startswith("RSS ")]
    if not line:
        raise RuntimeError(r.stderr[-2000:])
    doc = json.loads(r.stdout)
    assert doc["config_sets"][0]["counts"]["errors"] == 0, r.stdout[:2000]
    return int(line[-1].split()[1]) / 1024, wall


def write_video_set(folder: Path, model: Path, clips: int, rows: int) -> Path:
    """A content-parts JSONL of `rows` video rows over `clips` generated H.264 clips (48
    frames of 320x240 noise at 24 fps, 8 sampled per clip), and its config set."""
    import av
    import numpy as np

    media = folder / "media"
    media.mkdir(parents=True, exist_ok=True)
    for c in range(clips):
        with av.open(str(media / f"clip{c}.mp4"), "w") as out:
            stream = out.add_stream("libx264", rate=24)
            stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
            rng = np.random.default_rng(c)
            for _ in range(48):
                arr = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
                for pkt in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                    out.mux(pkt)
            for pkt in stream.encode():
                out.mux(pkt)
    with open(folder / "videos.jsonl", "w", encoding="utf-8") as f:
        for i in range(rows):
            user = [{"type": "video", "video": f"media/clip{i % clips}.mp4"}]
            user.append({"type": "text", "text": f"What happens in clip {i}?"})
            answer = [{"type": "text", "text": f"Noise, take {i}."}]
            msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
            f.write(json.dumps({"messages": msgs}) + "\n")
    cfg = folder / "set"
    cfg.mkdir()
    (cfg / "vlm_model_config.yaml").write_text(f'model_name_or_path: "{model}"\n')
    (cfg / "vlm_collator_config.yaml").write_text(
        f"""dataset:
  path: "{folder / "videos.jsonl"}"
data_processing:
  image_data: false
  video_data: true
conversation:
  column: messages
  images_column: null
  videos_column: null
video_processing:
  frame_extraction:
    num_frames: 8
text_processing:
  max_length: 2048
"""
    )
    (cfg / "train_config.yaml").write_text("report_to: []\n")
    (cfg / "peft_config.yaml").write_text("r: 8\n")
    return cfg


def video_case(tmp_path: Path, model: Path, repeat: int, rows: int) -> list[str]:
    """validate's row pass on video rows: shape path vs pixel path forced (same findings)."""
    cfg = write_video_set(tmp_path / "video", model, clips=20, rows=rows)
    best: dict[bool, tuple[float, int, dict]] = {}
    for _ in range(repeat):
        for pixels in (False, True):
            got = validate_pass(cfg, 1, pixels=pixels, key=f"video-{pixels}")
            if pixels not in best or got[0] < best[pixels][0]:
                best[pixels] = got
    same = _OUTCOMES["video-False"] == _OUTCOMES["video-True"]
    (fast, n, _), (slow, _, _) = best[False], best[True]
    return [
        "",
        "| video rows (20 clips, 48 frames 320x240, 8 sampled), --num-proc 1 | rows "
        f"| seconds (best of {repeat}) | rows/s | vs pixel path |",
        "|---|---:|---:|---:|---:|",
        f"| frames decoded, video processor on shapes (meta tensors) | {n} | {fast:.2f} "
        f"| {n / fast:.1f} | {slow / fast:.2f}x |",
        f"| pixel path forced | {n} | {slow:.2f} | {n / slow:.1f} | 1.00x |",
        "",
        f"Findings and summary counts, video rows, shape path vs pixel path forced: "
        f"{'identical' if same else 'DIFFERENT'}.",
    ]


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        a, b, c = os.getloadavg()
        return f"load average {a:.2f}, {b:.2f}, {c:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--skip-rss", action="store_true")
    ap.add_argument("--append", type=Path, help="append the results to this markdown file")
    ap.add_argument("--video-only", type=int, metavar="ROWS", help="only the video-row case")
    args = ap.parse_args()
    if not SHARED.is_dir():
        print(f"skipped: {SHARED} is not present", file=sys.stderr)
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from vlmctl.testing.tiny import build_tiny_model

    with tempfile.TemporaryDirectory(prefix="bench-validate-") as tmp:
        tmp_path = Path(tmp)
        model = build_tiny_model("qwen2_vl", tmp_path / "qwen2_vl")
        if args.video_only:
            text = "\n".join(video_case(tmp_path, model, args.repeat, args.video_only))
            text = f"`uptime`: {_uptime()}\n{text}\n"
            print(text)
            if args.append:
                with open(args.append, "a", encoding="utf-8") as f:
                    f.write("\n" + text)
            return 0
        cfg1k = write_set(tmp_path / "set1k", SHARED / "vqa.csv", model)
        cfg10k = write_set(tmp_path / "set10k", repeated_csv(tmp_path / "vqa10k.csv", 10), model)

        results: dict[str, tuple[float, int]] = {}
        for _ in range(args.repeat):
            for name, fn in (
                ("bare loop (open image + processor)", lambda: bare_loop(cfg1k, model, args.rows)),
                (
                    "bare loop, torch 1 thread",
                    lambda: bare_loop(cfg1k, model, args.rows, threads=1),
                ),
                ("validate --num-proc 1", lambda: validate_pass(cfg1k, 1)[:2]),
                ("validate --num-proc 2", lambda: validate_pass(cfg1k, 2)[:2]),
                (
                    "validate --num-proc 1, pixel path forced",
                    lambda: validate_pass(cfg1k, 1, pixels=True)[:2],
                ),
            ):
                secs, n = fn()
                if name not in results or secs < results[name][0]:
                    results[name] = (secs, n)
        base = results["bare loop (open image + processor)"]
        base_rate = base[1] / base[0]
        one = results["bare loop, torch 1 thread"]
        one_rate = one[1] / one[0]
        lines = [
            f"| run | rows | seconds (best of {args.repeat}) | rows/s | vs bare loop "
            "| vs 1-thread loop |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for name, (secs, n) in results.items():
            rate = n / secs
            lines.append(
                f"| {name} | {n} | {secs:.2f} | {rate:.1f} | {rate / base_rate:.2f}x "
                f"| {rate / one_rate:.2f}x |"
            )
        same = _OUTCOMES["sizes"] == _OUTCOMES["pixels"]
        lines += [
            "",
            f"Findings and summary counts, size path vs pixel path forced: "
            f"{'identical' if same else 'DIFFERENT'} ({len(_OUTCOMES['sizes'][0])} findings).",
        ]
        if not same:
            print("size path:", _OUTCOMES["sizes"], "\npixel path:", _OUTCOMES["pixels"])
        rss_lines = []
        if not args.skip_rss:
            rss1, wall1 = peak_rss_mb(cfg1k)
            rss10, wall10 = peak_rss_mb(cfg10k)
            rss_lines = [
                "",
                "| whole `vlmctl validate` process | rows | peak RSS (MB) | wall (s) |",
                "|---|---:|---:|---:|",
                f"| abo_vqa_csv | 1,000 | {rss1:.0f} | {wall1:.1f} |",
                f"| abo_vqa_csv x10 (same rows repeated) | 10,000 | {rss10:.0f} | {wall10:.1f} |",
                f"| difference | | {rss10 - rss1:+.0f} (goal: within 100) | |",
            ]
    load = os.getloadavg()
    header = [
        "## validate (dataset pass): rows/s vs a bare loop, peak RSS 1k vs 10k rows",
        "",
        f"`python benchmarks/bench_validate.py --rows {args.rows} --repeat {args.repeat}` on "
        f"{platform.node() or 'this machine'}: {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, load average at the end {load[0]:.1f} (a shared machine: "
        "compare ratios, not absolute times). Data: ../shared/data/abo_vqa_csv; processor: the "
        "tiny Qwen2-VL twin's Qwen2VLProcessor (16 image tokens per 256x256 image). "
        f"`uptime`: {_uptime()}",
        "",
        "Both sides, per row: the bare loop resolves the row's image, decodes it "
        "(`load_image`) and calls the processor (pixel pipeline + tokenizer) on one text; "
        "validate renders the chat template, finds the answer spans, reads the image size "
        "(1/8-scale JPEG decode) and computes its tokens (pixel path forced: full decode + "
        "image processor), tokenizes, classifies every token, masks labels, applies the length "
        "policy and checks the row.",
        "",
    ]
    text = "\n".join(header + lines + rss_lines) + "\n"
    print(text)
    if args.append:
        with open(args.append, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
