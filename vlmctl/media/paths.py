"""Where a media reference leads: one local file, or one clear error naming the row.

Shared by images and video: the DataError helper, what a non-media file looks like, and the
lookup of a path against the dataset's folders (optionally confined to them).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from vlmctl.errors import DataError, Finding

CONFINE_ENV = "VLMCTL_CONFINE_MEDIA"


def media_error(
    message: str,
    *,
    name: str | None = None,
    hint: str | None = None,
    row: int | None = None,
    code: str = "media",
) -> DataError:
    """A DataError with one finding: the message names the file; the row is the caller's."""
    extra = {"media": name} if name else {}
    return DataError(Finding("error", message, hint=hint, row=row, code=code, extra=extra))


def sniff_non_media(head: bytes) -> str | None:
    """Say what a non-media file looks like, from its first bytes (for error messages).

    Never quotes the bytes: a row pointing at `../secrets.env` must not put a token in CI logs.
    """
    if not head:
        return "empty file (0 bytes)"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the file itself"
    stripped = head.lstrip().lower()
    if stripped.startswith((b"<!doctype html", b"<html")):
        return "an HTML page (a failed download?)"
    if b"\x00" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # A multi-byte character cut at the end of the sample is still text.
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return None
    printable = sum(ch.isprintable() or ch in "\r\n\t" for ch in text)
    if text and printable / len(text) > 0.95:
        return "a text file"
    return None


def media_confined() -> bool:
    """Whether media paths must stay inside the dataset folders (VLMCTL_CONFINE_MEDIA=1).

    Off by default: datasets often name absolute paths or share an image folder. A CI job that
    validates config sets it did not write turns it on, so a row cannot make vlmctl open
    `/etc/passwd` or `../secrets.env` (symlinks are followed before the check).
    """
    return os.environ.get(CONFINE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def resolve_media_path(
    value: str | os.PathLike[str],
    base_dirs: Iterable[str | os.PathLike[str]] = (),
    *,
    row: int | None = None,
) -> Path:
    """Find a media file: absolute as is, relative against each base dir in order (cwd if none).

    Raises DataError listing every place searched, so a wrong `media_root` is obvious.
    """
    raw = os.fspath(value)
    if not raw.strip():
        raise media_error(
            "empty media path",
            hint="check the image/video column: this row has an empty string",
            row=row,
            code="media-empty-path",
        )
    if raw.startswith(("http://", "https://", "s3://", "gs://")):
        raise media_error(
            f"remote media is not fetched: {raw}",
            name=raw,
            hint="download the files and use local paths",
            row=row,
            code="media-remote",
        )
    if raw.startswith("file://"):
        raw = raw[len("file://") :]
    candidates, searched = _candidates(Path(raw).expanduser(), base_dirs)
    roots = [Path(d).expanduser().resolve() for d in base_dirs] or [Path.cwd().resolve()]
    confined = media_confined()
    outside = None
    for cand in candidates:
        if confined and not any(cand.resolve().is_relative_to(r) for r in roots):
            outside = cand
            continue
        if _is_media_file(cand, row):
            return cand
    if outside is not None:
        raise media_error(
            f"media path {raw} leads outside the dataset folders ({', '.join(map(str, roots))})",
            name=raw,
            hint=f"{CONFINE_ENV}=1 is set (media must stay inside dataset.media_root and the "
            "dataset's folder): move the file inside, or fix the path",
            row=row,
            code="media-outside",
        )
    where = f" (searched: {', '.join(searched)})" if searched else ""
    raise media_error(
        f"file not found: {raw}{where}",
        name=raw,
        hint="check the path column and dataset.media_root",
        row=row,
        code="media-not-found",
    )


def _candidates(path: Path, base_dirs: Iterable[str | os.PathLike[str]]):
    """(places to try, in order; the folders searched, for the error) for one path."""
    if path.is_absolute():
        return [path], []
    dirs = [Path(d).expanduser() for d in base_dirs] or [Path.cwd()]
    return [d / path for d in dirs], [str(d) for d in dirs]


def _is_media_file(cand: Path, row: int | None) -> bool:
    """True for a regular file; False when absent; a DataError when it is there but unusable."""
    try:
        st = cand.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except PermissionError:
        raise media_error(
            f"permission denied: {cand}",
            name=str(cand),
            hint="let this user read the file and the folders above it",
            row=row,
            code="media-permission",
        ) from None
    except OSError as exc:
        raise media_error(
            f"cannot read {cand}: {exc.strerror or type(exc).__name__}",
            name=str(cand),
            row=row,
            code="media-unreadable",
        ) from None
    if stat.S_ISDIR(st.st_mode):
        raise media_error(
            f"expected a file, found a directory: {cand}",
            name=str(cand),
            hint="point the row at an image or video file inside that folder",
            row=row,
            code="media-is-dir",
        )
    if not stat.S_ISREG(st.st_mode):
        target = f" (-> {cand.resolve()})" if cand.is_symlink() else ""
        raise media_error(
            f"not a regular file: {cand}{target} is a device, pipe or socket",
            name=str(cand),
            hint="point the row at an image or video file",
            row=row,
            code="media-not-file",
        )
    return True
