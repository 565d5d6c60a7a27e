"""Run the bad-input corpus (`tests/bad_inputs.py`, issue #18) in-process through
`vlmctl.cli.run`: every case exits non-zero with exactly ONE `error:` line that says where, what
and how to fix it; no traceback; nothing written. And docs/BAD_INPUTS.md is the current table.
"""

from __future__ import annotations

import builtins
import csv
import io
import os
import shutil
import sys
from pathlib import Path

import pytest
from _config_util import edit, write_set
from _validate_util import generated_rows, write_config_set, write_csv
from bad_inputs import CASES, DOC, Case, render_markdown

from vlmctl.cli import run


@pytest.fixture(scope="module")
def data_base(tmp_path_factory, tiny_model_dir) -> Path:
    """A clean 'data' base: tiny model (outside), CSV + two images, relative paths."""
    root = tmp_path_factory.mktemp("corpus-data-base")
    rows = generated_rows(root / "data" / "images", n=4, n_images=2)
    write_csv(root / "data" / "data.csv", rows)
    write_config_set(
        root / "set",
        Path("../data/data.csv"),
        tiny_model_dir("qwen2_vl"),
        media_root=Path("../data/images"),
    )
    return root


@pytest.fixture(scope="module")
def config_base(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus-config-base")
    write_set(root / "set")
    return root


def _snapshot(folder: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        elif p.is_file():
            out[rel] = p.read_bytes()
    return out


def _set_row(csv_path: Path, row: int, column: str, value: str) -> None:
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    rows[row][column] = value
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _bomb_png(path: Path) -> None:
    """A valid PNG header claiming 100000 x 100000 pixels (a few hundred bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _prepare(case: Case, root: Path, config_base: Path, request) -> None:
    if case.base == "config":
        shutil.copytree(config_base, root, dirs_exist_ok=True)
    elif case.base == "data":
        shutil.copytree(
            request.getfixturevalue("data_base"), root, dirs_exist_ok=True, symlinks=True
        )
    for rel in case.remove:
        (root / rel).unlink()
    for rel in case.dirs:
        (root / rel).mkdir(parents=True, exist_ok=True)
    for rel, content in case.files:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content, encoding="utf-8")
    for rel, dest in case.links:
        (root / rel).symlink_to(dest)
    for name, old, new in case.edits:
        edit(root / "set" / name, old, new)
    for row, column, value in case.rows:
        _set_row(root / "data" / "data.csv", row, column, value)
    if "truncate" in case.extra:
        src = root / "data" / "images" / "img1.jpg"
        data = src.read_bytes()
        (root / case.extra["truncate"]).write_bytes(data[: len(data) // 2])
    if "copy" in case.extra:
        src, dst = case.extra["copy"]
        shutil.copyfile(root / src, root / dst)
    if "bomb" in case.extra:
        _bomb_png(root / case.extra["bomb"])


def _deny(paths: list[Path], monkeypatch) -> None:
    """open() of these paths fails with EACCES, as it would for a non-root user."""
    denied = {os.path.realpath(p) for p in paths}
    real_open = builtins.open

    def guarded(file, *args, **kwargs):
        if isinstance(file, (str, os.PathLike)) and os.path.realpath(os.fspath(file)) in denied:
            raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded)
    monkeypatch.setattr(io, "open", guarded)


def test_the_corpus_is_large_and_ids_are_unique():
    assert len(CASES) >= 100
    assert len({c.id for c in CASES}) == len(CASES)
    kinds = {c.kind for c in CASES}
    assert kinds == {"config", "dataset", "media", "path", "permission", "cli"}
    # Each case pins the line's where (first) and its what (then): not a bare file name.
    vague = [c.id for c in CASES if len(c.expect) < 2]
    assert not vague, vague


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, config_base, request, monkeypatch, capsys):
    root = tmp_path / "case"
    root.mkdir()
    _prepare(case, root, config_base, request)
    monkeypatch.chdir(root)  # a module planted in the working folder must not be imported
    for key in [k for k in os.environ if k.startswith("VLMCTL_")]:
        monkeypatch.delenv(key)
    for key, value in case.env:
        monkeypatch.setenv(key, value)
    before = _snapshot(root)
    if case.deny:
        _deny([root / rel for rel in case.deny], monkeypatch)
    args = [a.replace("{set}", str(root / "set")).replace("{root}", str(root)) for a in case.args]
    modules = set(sys.modules)
    code = run(args)
    monkeypatch.undo()  # open() back before reading what was written
    out = capsys.readouterr()
    text = out.out + out.err
    errors = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("error:")]
    assert code == case.exit, text
    assert len(errors) == 1, text
    line = errors[0]
    for expected in case.expect:
        assert expected in line, (expected, line)
    where, what = case.expect[0], case.expect[1]
    assert line.index(where) <= line.rindex(what), ("the where comes first", line)
    assert "(fix: " in line or case.exit == 2, line  # usage lines end with `see --help`
    assert "see `" in line or "(fix: " in line
    assert "Traceback" not in text
    for secret in case.forbid:
        assert secret not in text, secret
    assert "evilmod" not in set(sys.modules) - modules and "this" not in set(sys.modules) - modules
    assert _snapshot(root) == before, "something was written"


def test_the_docs_table_is_current():
    assert DOC.is_file(), "run `python tests/bad_inputs.py`"
    assert DOC.read_text(encoding="utf-8") == render_markdown(), (
        "docs/BAD_INPUTS.md is stale: run `python tests/bad_inputs.py`"
    )
