"""Paths from outside: one kept inside its root folder (an MLflow artifact listing), and a
folder or file a job will write checked before anything is created (`SpecError` naming the
field). Nothing here writes: writability is tried with a temporary folder removed at once."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path, PurePosixPath

from sweeper.errors import SpecError

NAME_MAX = 255  # bytes in one path component (Linux, macOS)


def confined(root: str | Path, relative: str) -> Path:
    """`root / relative`, resolved; ValueError when it would land anywhere outside `root`.

    `relative` is a POSIX artifact path as MLflow lists them. Refused: absolute paths, `..` that
    climbs out, NUL bytes, and a symlink under `root` that points out (resolving follows it).
    """
    if "\x00" in relative:
        raise ValueError(f"artifact path {relative!r} holds a NUL byte")
    if PurePosixPath(relative).is_absolute():
        raise ValueError(f"artifact path {relative!r} is absolute; it must be relative to {root}")
    base = Path(root).resolve()
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise ValueError(f"artifact path {relative!r} leads outside {base}")
    return target


def check_folder(path: Path, field: str) -> None:
    """`path` is a folder this process can write in, or one it can create."""
    _check_path_form(path, field)
    existing = path
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            raise SpecError(field, f"{existing} is a broken symbolic link")
        existing = existing.parent
    if not existing.is_dir():
        where = "" if existing == path else f" (in {path})"
        raise SpecError(field, f"{existing}{where} is a file, not a folder; give a folder path")
    _check_writable(existing, path, field)


def check_file(
    path: Path, field: str, magic: bytes | None = None, make_folder: bool = True
) -> None:
    """`path` is a regular file this process may overwrite (its folder writable), or one it can
    create; `magic`: an existing non-empty file must start with these bytes; `make_folder`:
    the writer creates missing folders on the way (else the folder must exist)."""
    _check_path_form(path, field)
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise SpecError(field, f"{path} exists and is not a regular file")
        if magic is not None and path.stat().st_size:
            with open(path, "rb") as f:
                if f.read(len(magic)) != magic:
                    raise SpecError(field, f"{path} exists and is not a SQLite database")
        if not os.access(path, os.R_OK | os.W_OK):
            raise SpecError(field, f"{path} is not writable by this user")
    if not make_folder and not path.parent.is_dir():
        raise SpecError(field, f"folder {path.parent} does not exist; create it first")
    check_folder(path.parent, field)


def _check_path_form(path: Path, field: str) -> None:
    text = str(path)
    if "\x00" in text:
        raise SpecError(field, "holds a NUL byte, which no path can")
    if len(os.fsencode(text)) >= 4096:
        raise SpecError(field, "longer than the 4,096 bytes a path may have")
    for part in path.parts:
        if len(os.fsencode(part)) > NAME_MAX:
            raise SpecError(field, f"a folder or file name over {NAME_MAX} bytes ({part[:20]}…)")


def _check_writable(existing: Path, wanted: Path, field: str) -> None:
    """Try it: permissions, read-only mounts and pseudo file systems (/proc, /sys, where even
    root cannot create) all show up as a folder that cannot be made. The try is removed."""
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".sweeper-write-check-", dir=existing))
    except OSError as e:
        why = e.strerror or str(e)
        raise SpecError(field, f"cannot write in {existing} (for {wanted}): {why}") from None
