"""vlmctl/proc.py: one debug switch for every process, one pid check."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlmctl.proc import DEBUG_ENV, debug_enabled, pid_alive

PACKAGE = Path(__file__).resolve().parents[1] / "vlmctl"


@pytest.mark.parametrize(
    ("value", "on"),
    [(None, False), ("", False), ("0", False), ("false", False), ("No", False), ("1", True),
     ("yes", True), ("true", True)],
)  # fmt: skip
def test_debug_switch_reads_the_same_everywhere(monkeypatch, value, on):
    if value is None:
        monkeypatch.delenv(DEBUG_ENV, raising=False)
    else:
        monkeypatch.setenv(DEBUG_ENV, value)
    assert debug_enabled() is on


def test_only_proc_reads_the_debug_variable():
    """`VLMCTL_DEBUG=0` once meant off in the CLI and on in the training worker (each read the
    variable its own way): every module asks `debug_enabled()` instead."""
    readers = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "proc.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and node.value == DEBUG_ENV:
                readers.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}")
    assert not readers, readers


def test_pid_alive():
    assert pid_alive(os.getpid())
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not pid_alive(proc.pid)


def test_a_new_status_dir_removes_what_a_killed_run_left(tmp_path, monkeypatch):
    """The credentials file of a `kill -9`ed train (its status folder) is removed by the next
    train; a folder of a process still alive, and other files, are kept."""
    import subprocess
    import sys
    import tempfile

    from vlmctl.proc import new_status_dir

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"vlmctl-run-{dead.pid}-abc"
    stale.mkdir()
    (stale / "secret-overrides.json").write_text('["train.hub_token=hf_x"]')
    alive = tmp_path / f"vlmctl-run-{os.getppid()}-def"
    alive.mkdir()
    other = tmp_path / f"vlmctl-runner-{dead.pid}-x"
    other.mkdir()
    new = new_status_dir()
    assert not stale.exists()
    assert alive.is_dir() and other.is_dir()
    assert new.parent == tmp_path and new.name.startswith(f"vlmctl-run-{os.getpid()}-")
    assert new.stat().st_mode & 0o777 == 0o700
