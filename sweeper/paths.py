"""Keep a path that comes from outside (an MLflow artifact listing) inside its root folder."""

from __future__ import annotations

from pathlib import Path, PurePosixPath


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
