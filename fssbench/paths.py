"""Output folders and files checked *before* any work, so a bad ``--out`` costs nothing.

``writable_dir`` and ``writable_file`` turn every way an output path can be unusable (it is a file,
a parent is a file, it is not writable, the file system refuses) into one ``UserError`` line that
names the path and the fix. Writability is tested by really creating a temporary file inside the
folder, because permission bits do not tell the whole story (root ignores them, read-only mounts
and quotas do not show in them).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fssbench.errors import UserError


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def file_in_the_way(path: str | os.PathLike[str]) -> Path | None:
    """``path`` itself or its nearest existing ancestor when that is not a folder: then ``path``
    cannot be (or be created as) a folder. ``None`` otherwise."""
    path = Path(path)
    for candidate in (path, *path.parents):
        if candidate.exists():
            return None if candidate.is_dir() else candidate
    return None


def writable_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Create ``path`` (and its parents) when needed and prove a file can be written inside it.

    ``what`` names the folder in messages, e.g. ``"results folder (--results-dir)"``. Raises a
    one-line ``UserError`` when ``path`` is a file, a parent of it is a file, or it cannot be
    created or written; returns the path otherwise.
    """
    p = Path(path).expanduser()
    blocker = file_in_the_way(p)
    if blocker is not None:
        if blocker == p:
            raise UserError(f"{what} {p} is a file, not a folder; pass a folder path or move the file away")
        raise UserError(f"{what} {p} cannot be created: {blocker} is a file, not a folder; choose a path under a folder")
    if p.is_symlink() and not p.exists():
        raise UserError(f"{what} {p} is a broken symbolic link; remove it or pass another folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except PermissionError:
        raise UserError(
            f"cannot create {what} {p}: permission denied; choose a folder you can write to or fix the permissions"
        ) from None
    except OSError as exc:
        raise UserError(f"cannot create {what} {p}: {_reason(exc)}; choose another folder") from None
    try:
        fd, probe = tempfile.mkstemp(dir=p, prefix=".fssbench-write-test-")
    except PermissionError:
        raise UserError(
            f"{what} {p} is not writable (permission denied); choose a folder you can write to or fix its permissions"
        ) from None
    except OSError as exc:
        raise UserError(f"{what} {p} is not writable ({_reason(exc)}); choose another folder") from None
    os.close(fd)
    Path(probe).unlink(missing_ok=True)
    return p


def writable_file(path: str | os.PathLike[str], what: str = "output file", example: str = "out.json") -> Path:
    """Check that ``path`` can be written as a file: it is not a folder and its folder is writable
    (created when needed). ``example`` is the file name suggested when a folder was passed."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise UserError(f"{what} {p} is a folder, not a file; pass a file name such as {p / example}")
    writable_dir(p.parent, f"folder of the {what}")
    return p
