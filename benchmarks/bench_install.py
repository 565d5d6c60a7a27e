"""Installed size and wall time: the light install beside the full install, in one run.

    python benchmarks/bench_install.py            # both (the full one needs ~7 GB free, minutes)
    python benchmarks/bench_install.py --light    # the light one only

Each install goes into a fresh venv in a temporary folder (removed at the end):
- light: `pip install <checkout>` (no extras): what a CI job or the pre-commit hook installs;
- full:  README command 1 without the dev tools: `pip install torch==2.14.1 torchvision==0.29.1`
  then `pip install "<checkout>[all]"`.
Size = bytes of the files the install added to the venv (an empty venv with pip is measured
first and subtracted), and the whole venv beside it. pip's cache is used as it is (warm after
the first run), as it would be in CI with a pip cache. Goal (#16): light <= 100 MB and <= 1/20
of the full install.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]  # the pinned builds (see FACTS.md)


def tree_bytes(root: Path) -> int:
    """Apparent size of every regular file under `root` (symlinks not followed)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if not os.path.islink(os.path.join(dirpath, name)):
                total += st.st_size
    return total


def fresh_venv(path: Path) -> Path:
    """A new venv at `path` (with pip); returns its python."""
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
    return path / "bin" / "python"


def pip(py: Path, *args: str) -> None:
    """`pip install -q ARGS` in the venv of `py`; raises with pip's last lines on failure."""
    r = subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
    )
    if r.returncode != 0:
        raise SystemExit(f"pip install {' '.join(args)} failed:\n{r.stderr[-2000:]}")


def measure(name: str, work: Path, steps: list[list[str]], baseline: int) -> dict:
    """Time the pip steps into a fresh venv; return its sizes; delete it."""
    venv = work / name
    py = fresh_venv(venv)
    t0 = time.perf_counter()
    for args in steps:
        pip(py, *args)
    wall = time.perf_counter() - t0
    total = tree_bytes(venv)
    heavy = subprocess.run(
        [str(py), "-c", "import importlib.util as u; print(bool(u.find_spec('torch')))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    shutil.rmtree(venv)
    return {
        "install": name,
        "command": " && ".join("pip install " + " ".join(a) for a in steps),
        "wall_s": round(wall, 1),
        "added_mb": round((total - baseline) / 1e6, 1),
        "venv_mb": round(total / 1e6, 1),
        "torch": heavy == "True",
    }


def main() -> int:
    """Measure the light install and (unless --light) the full install; print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--light", action="store_true", help="measure the light install only")
    ap.add_argument("--json", action="store_true", help="print the results as JSON too")
    args = ap.parse_args()
    free = shutil.disk_usage(tempfile.gettempdir()).free / 1e9
    if not args.light and free < 8:
        print(f"only {free:.1f} GB free in {tempfile.gettempdir()}: the full install needs ~7 GB")
        return 1
    results = []
    with tempfile.TemporaryDirectory(prefix="vlmctl-bench-install.") as tmp:
        work = Path(tmp)
        empty = work / "empty"
        fresh_venv(empty)
        baseline = tree_bytes(empty)
        shutil.rmtree(empty)
        results.append(measure("light", work, [[str(REPO)]], baseline))
        if not args.light:
            results.append(measure("full", work, [TORCH, [f"{REPO}[all]"]], baseline))
    print(f"empty venv (python + pip): {baseline / 1e6:.1f} MB, not counted below")
    print(f"{'install':<7} {'wall s':>7} {'added MB':>9} {'venv MB':>8}  torch  command")
    for r in results:
        print(
            f"{r['install']:<7} {r['wall_s']:>7.1f} {r['added_mb']:>9.1f} {r['venv_mb']:>8.1f}  "
            f"{'yes' if r['torch'] else 'no ':<5}  {r['command'].replace(str(REPO), '<checkout>')}"
        )
    if len(results) == 2:
        light, full = results
        ratio = full["added_mb"] / max(light["added_mb"], 0.1)
        ok = light["added_mb"] <= 100 and light["added_mb"] * 20 <= full["added_mb"]
        print(
            f"light is 1/{ratio:.0f} of full by size, {full['wall_s'] / light['wall_s']:.0f}x "
            f"faster to install; goal (<= 100 MB and <= 1/20): {'met' if ok else 'NOT met'}"
        )
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
