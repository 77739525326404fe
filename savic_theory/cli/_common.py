"""What every subcommand shares: user errors, atomic result files, progress bars, configs.

A subcommand module exposes ``add_parser(subparsers)`` and ``run(args) -> int``. Anything a user
can get wrong raises :class:`UserError` (or ``ValueError``/``TypeError``/``FileNotFoundError``
from the library), which ``main`` prints as one line on stderr with exit status 2.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = ["UserError", "atomic_write", "atomic_dir", "write_json", "progress"]


class UserError(Exception):
    """An error caused by the user's input; shown as one line, no traceback."""


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Write ``path`` through a temporary file in the same folder, renamed on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Build a result folder in a hidden sibling and move it into place only when complete.

    An existing folder at ``path`` is replaced as a whole; an interrupted run leaves the old
    folder (or none) and no partial one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            _rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            _rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _rmtree(tmp)
        raise


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (NumPy scalars and arrays converted)."""
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=2, default=_json_default, allow_nan=True)
        fh.write("\n")


def _json_default(o):
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def progress(total: int | None, desc: str, enabled: bool = True):
    """A tqdm progress bar on stderr (disabled when not wanted or stderr is not a terminal
    and ``SAVIC_PROGRESS`` is not set)."""
    from tqdm.auto import tqdm

    show = enabled and (sys.stderr.isatty() or os.environ.get("SAVIC_PROGRESS") == "1")
    return tqdm(total=total, desc=desc, disable=not show, leave=False, file=sys.stderr,
                dynamic_ncols=True)
