"""Merge's atomic output folder, without a model: the target is only ever absent, the old folder
or the new one; a failure leaves nothing beside it; a killed merge's hidden folder is swept once
its process is gone, and never while it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlmctl.errors import VlmctlError
from vlmctl.merge import output
from vlmctl.merge.output import MERGE_MARKER, atomic_folder


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_success_renames_the_hidden_folder_into_place(tmp_path):
    target = tmp_path / "a" / "b" / "merged"  # the parents are made
    with atomic_folder(target, force=False) as tmp:
        assert tmp.parent == target.parent and tmp.name.startswith(".merged.tmp-")
        assert (tmp / ".vlmctl-merge.pid").read_text() == str(os.getpid())
        (tmp / "model.safetensors").write_text("w")
        assert not target.exists()  # nothing at the target until the end
    assert _names(target.parent) == ["merged"]
    assert _names(target) == [MERGE_MARKER, "model.safetensors"]  # the pid file is gone
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask  # a normal folder, not mkdtemp's 0700


def test_an_exception_leaves_no_folder_and_propagates(tmp_path):
    target = tmp_path / "merged"
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_folder(target, force=False) as tmp:
            (tmp / "part").write_text("half")
            raise RuntimeError("disk full")
    assert _names(tmp_path) == []


def test_force_replaces_the_old_folder_and_leaves_no_old_copy(tmp_path):
    target = tmp_path / "merged"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with atomic_folder(target, force=True) as tmp:
        (tmp / "new.bin").write_text("new")
        assert (target / "old.bin").is_file()  # the old output stays until the new one is whole
    assert _names(tmp_path) == ["merged"]
    assert _names(target) == [MERGE_MARKER, "new.bin"]


def test_an_output_that_appears_during_the_merge_is_not_replaced_without_force(tmp_path):
    target = tmp_path / "merged"
    with pytest.raises(VlmctlError, match="appeared during the merge"):
        with atomic_folder(target, force=False) as tmp:
            (tmp / "new.bin").write_text("new")
            target.mkdir()
            (target / "theirs").write_text("x")
    assert _names(tmp_path) == ["merged"]
    assert _names(target) == ["theirs"]


def test_a_failed_swap_puts_the_old_folder_back(tmp_path, monkeypatch):
    target = tmp_path / "merged"
    target.mkdir()
    (target / "old.bin").write_text("old")
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the new folder into place
            raise OSError("rename failed")
        return real(src, dst)

    monkeypatch.setattr(output.os, "replace", replace)
    with pytest.raises(OSError, match="rename failed"):
        with atomic_folder(target, force=True) as tmp:
            (tmp / "new.bin").write_text("new")
    assert _names(tmp_path) == ["merged"]
    assert _names(target) == ["old.bin"]


def _hidden(parent, name: str, pid: str | None):
    folder = parent / name
    folder.mkdir()
    (folder / "model.safetensors").write_text("half")
    if pid is not None:
        (folder / ".vlmctl-merge.pid").write_text(pid)
    return folder


class _SortedGlob(type(Path())):
    """A path whose glob lists in name order, so the sweep meets the folders in a known order."""

    def glob(self, pattern):
        return iter(sorted(super().glob(pattern)))


def test_a_dead_merges_hidden_folder_is_swept_a_live_ones_is_kept(tmp_path):
    root = _SortedGlob(tmp_path)
    # Met first: folders whose pid cannot be read are skipped, and the sweep goes on.
    no_pid = _hidden(root, ".merged.tmp-1-nopid", None)
    garbled = _hidden(root, ".merged.tmp-2-garbled", "not a pid")
    dead = _hidden(root, ".merged.tmp-3-dead", str(_dead_pid()))
    live = _hidden(root, ".merged.tmp-4-live", str(os.getpid()))
    other = _hidden(root, ".other.tmp-dead", str(_dead_pid()))  # another target's
    with atomic_folder(root / "merged", force=False):
        pass
    assert not dead.exists()
    assert live.is_dir() and no_pid.is_dir() and garbled.is_dir() and other.is_dir()
    assert (tmp_path / "merged").is_dir()


def test_a_stale_folder_another_merge_sweeps_first_is_no_error(tmp_path, monkeypatch):
    """Two merges to one target start together and both sweep the same dead merge's folder:
    the one that finds it gone carries on."""
    import shutil

    dead = _hidden(tmp_path, ".merged.tmp-dead", str(_dead_pid()))

    def other_merge_swept_it(pid):
        shutil.rmtree(dead)
        return False

    monkeypatch.setattr(output, "pid_alive", other_merge_swept_it)
    with atomic_folder(tmp_path / "merged", force=False) as tmp:
        (tmp / "model.safetensors").write_text("w")
    assert _names(tmp_path) == ["merged"]
