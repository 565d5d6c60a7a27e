"""An absent ../shared (real datasets, real model files) cannot pass for a green run: the
skips are counted in the summary, and VLMCTL_REQUIRE_REALDATA=1 makes the absence an error."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

PROBE = """
from pathlib import Path
import pytest
DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

@pytest.mark.skipif(not DATA.is_dir(), reason=f"real datasets not present at {DATA}")
@pytest.mark.parametrize("k", [1, 2, 3])
def test_real(k):
    assert DATA.is_dir()

def test_plain():
    assert True
"""


def _run(root: Path, require: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "VLMCTL_REQUIRE_REALDATA"}
    if require:
        env["VLMCTL_REQUIRE_REALDATA"] = "1"
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(root / "main" / "tests"),
        ],
        cwd=root / "main",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _layout(tmp_path: Path, with_shared: bool) -> Path:
    tests = tmp_path / "main" / "tests"
    tests.mkdir(parents=True)
    shutil.copy(HERE / "conftest.py", tests / "conftest.py")
    (tests / "test_probe.py").write_text(PROBE)
    if with_shared:
        (tmp_path / "shared" / "data").mkdir(parents=True)
        (tmp_path / "shared" / "real-models").mkdir(parents=True)
    return tmp_path


def test_absent_shared_is_counted_in_the_summary(tmp_path):
    r = _run(_layout(tmp_path, with_shared=False), require=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 passed, 3 skipped" in r.stdout
    assert (
        f"real-file tier: 3 tests skipped because {tmp_path / 'shared' / 'data'} is absent"
        in r.stdout
    )


def test_absent_shared_is_an_error_when_required(tmp_path):
    r = _run(_layout(tmp_path, with_shared=False), require=True)
    assert r.returncode == 4, r.stdout + r.stderr  # pytest's usage error: nothing ran
    assert "VLMCTL_REQUIRE_REALDATA=1 but" in r.stdout + r.stderr
    assert "passed" not in r.stdout


def test_present_shared_runs_the_tier(tmp_path):
    r = _run(_layout(tmp_path, with_shared=True), require=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 passed" in r.stdout and "real-file tier" not in r.stdout
