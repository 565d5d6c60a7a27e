"""CLI start-up: median wall time of light vlmctl commands beside `trl --help`, same run.

    python benchmarks/bench_cli.py [--runs N]

Each command runs N times in a fresh subprocess (cold interpreter, warm disk cache); the
table shows the median and the ratio to `trl --help`. Goal: each vlmctl command <= 0.3 s.

vlmctl's bytecode is compiled first (`compileall`), as `pip install` does for every
package it installs: an editable checkout under PYTHONDONTWRITEBYTECODE=1 (set on the dev
machine) would otherwise recompile vlmctl's own modules on every run (~+30 ms).
`--no-compile` measures that case instead.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _median_seconds(argv: list[str], runs: int, cwd: Path) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, cwd=cwd, capture_output=True)
        times.append(time.perf_counter() - start)
        if proc.returncode not in (0,):
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-500:]!r}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument(
        "--no-compile", action="store_true", help="do not compile vlmctl's bytecode first"
    )
    args = parser.parse_args()
    vlmctl = shutil.which("vlmctl") or sys.exit("vlmctl is not on PATH (pip install -e .)")
    trl = shutil.which("trl")
    bytecode = "as found (not compiled by this script)"
    if not args.no_compile:
        pkg = subprocess.run(
            [sys.executable, "-c", "import vlmctl, os; print(os.path.dirname(vlmctl.__file__))"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        subprocess.run([sys.executable, "-m", "compileall", "-q", pkg], check=True)
        bytecode = f"compiled ({pkg})"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run([vlmctl, "init", "cfg"], cwd=work, check=True, capture_output=True)
        cases = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("vlmctl --help", [vlmctl, "--help"]),
            ("vlmctl init", [vlmctl, "init", "again", "--force"]),
            ("vlmctl validate (config)", [vlmctl, "validate", "--config-only", "cfg"]),
        ]
        if trl:
            cases.append(("trl --help", [trl, "--help"]))
        probe = subprocess.run([vlmctl, "validate", "--help"], capture_output=True, text=True)
        if "--config-only" not in probe.stdout:
            cases[3] = ("vlmctl validate (config)", [vlmctl, "validate", "cfg"])
        results = [(name, _median_seconds(argv, args.runs, work)) for name, argv in cases]
    ref = dict(results).get("trl --help")
    print(f"median of {args.runs} runs, {sys.platform}, python {sys.version.split()[0]}")
    print(f"vlmctl bytecode: {bytecode}")
    print(f"{'command':<28}{'median s':>10}{'vs trl --help':>16}")
    for name, secs in results:
        ratio = f"{secs / ref:.2f}x" if ref else "-"
        print(f"{name:<28}{secs:>10.3f}{ratio:>16}")


if __name__ == "__main__":
    main()
