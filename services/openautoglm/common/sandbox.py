"""Where the mesh reads and writes files on a client's behalf.

A path a client sends is read only inside the configured read roots (`OPENAUTOGLM_DATA_ROOTS`,
separated like PATH; by default the data dir and the built-in datasets). The check is made before
the file is touched: first on the path as written (absolute, `..` folded), so a path outside the
roots is refused without looking at the file system (the answer cannot tell whether a file
exists), then again after symlinks are resolved, so a link inside a root cannot lead out of it.
Nothing a client sends is ever a path to write: writers choose their own names under their own
root (`inside`).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from openautoglm.common import datasets

DATA_ROOTS_VARIABLE = "OPENAUTOGLM_DATA_ROOTS"


class OutsideRoots(ValueError):
    """A client-supplied path that the mesh will not use; the message names the allowed roots."""


def read_roots(data_dir: Path) -> tuple[Path, ...]:
    """The configured read roots, or the data dir and the built-in datasets."""
    configured = [p for p in os.environ.get(DATA_ROOTS_VARIABLE, "").split(os.pathsep) if p.strip()]
    roots = [Path(p).expanduser() for p in configured] or [data_dir, datasets.DATA_DIR]
    return tuple(Path(os.path.abspath(r)) for r in roots)


def _within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def readable(path: str, roots: Sequence[Path]) -> Path:
    """`path` resolved, if it lies inside one of `roots` both as written and after symlinks are
    resolved; raises OutsideRoots otherwise. Does not check that the file exists."""
    if "\0" in path:
        raise OutsideRoots("contains a NUL byte")
    if not os.path.isabs(path):
        raise OutsideRoots("must be an absolute path")
    allowed = ", ".join(str(r) for r in roots)
    written = Path(os.path.normpath(path))
    if not any(_within(written, root) for root in roots):
        raise OutsideRoots(f"outside the allowed read roots ({allowed})")
    real = Path(os.path.realpath(written))
    if not any(_within(real, Path(os.path.realpath(root))) for root in roots):
        raise OutsideRoots(f"leads outside the allowed read roots ({allowed}) through a symbolic link")
    return real


def inside(path: str, root: Path) -> Path:
    """`path` resolved, if it names something inside `root` (a server-side directory such as the
    trainer's artifacts); raises OutsideRoots otherwise, before anything is created."""
    return readable(path, (root,))
