"""What every subcommand shares: user errors, atomic result files, progress bars, configs.

A subcommand module exposes ``add_parser(subparsers)`` and ``run(args) -> int``. Anything a user
can get wrong raises :class:`UserError` (or ``ValueError``/``TypeError``/``FileNotFoundError``
from the library), which ``main`` prints as one line on stderr with exit status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = ["UserError", "first_line", "atomic_write", "atomic_dir", "check_output_path", "check_result_folder",
           "work_folder", "remove_stale_work", "remove_stale_parts", "remove_stale_write", "write_json", "progress", "add_config_option",
           "config_values", "options_as_table", "RESULT_FILES", "RESULT_FOLDERS"]


class UserError(Exception):
    """An error caused by the user's input; shown as one line, no traceback."""


#: what ``savic simulate``, ``run`` and ``verify`` write into a result folder: a folder holding
#: ``config.toml`` and nothing but these (``plots/`` only ``.png`` files) is one they wrote
RESULT_FILES = frozenset({"config.toml", "history.csv", "drift.csv", "summary.json", "plot.png",
                          "report.json", "report.md"})
RESULT_FOLDERS = {"plots": ".png"}
#: one of these is in every result folder a command writes (simulate and run: summary.json,
#: verify: report.json); config.toml alone, or with a report.md, may be the user's own
RESULT_MARKS = frozenset({"summary.json", "report.json"})


def first_line(exc: BaseException, default: str = "") -> str:
    """The first line of ``exc``'s message (what a one-line report shows), ``default`` when empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else default


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Write ``path`` through a temporary file in the same folder, renamed on success only."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            os.chmod(tmp, 0o666 & ~_umask())  # as any file the user writes, not mkstemp's 0600
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, option: str = "--out") -> Iterator[Path]:
    """Build a result folder in a hidden sibling and move it into place only when complete.

    ``path`` is checked by :func:`check_result_folder` before anything is built and again
    before the move: only an empty folder or an earlier result folder is replaced (as a whole),
    anything else there is a :class:`UserError` naming ``option``. An interrupted run leaves
    the old folder (or none) and no partial one; what a killed one left (see
    :func:`remove_stale_parts`) is cleared before the new folder is built.
    """
    path = check_result_folder(path, option)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(path)
    check_result_folder(path, option)  # a restored folder is checked as any other
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # as any folder the user makes, not mkdtemp's 0700
        yield tmp
        check_result_folder(path, option)  # what is there may have changed during a long run
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            old.rmdir()  # a free name beside path, for the folder being replaced
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            _rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        _rmtree(tmp)
        raise


def remove_stale_write(path: str | os.PathLike) -> None:
    """Delete the temporary file that :func:`atomic_write` leaves for ``path`` when killed
    mid-write: ``.<name>.XXXXXXXX.part`` (``XXXXXXXX`` as :func:`tempfile.mkstemp` draws it), a
    plain file of exactly that form and nothing else."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    pattern = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}\.part")
    for e in os.scandir(path.parent):
        if pattern.fullmatch(e.name) and e.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(e.path)


def remove_stale_parts(path: str | os.PathLike) -> None:
    """Clear the hidden siblings that :func:`atomic_dir` leaves when killed (SIGKILL, power loss).

    ``.<name>.XXXXXXXX.part`` (a partial folder) is deleted. ``.<name>.XXXXXXXX.old`` (the
    previous folder, moved aside just before the new one took its place) is deleted when
    ``path`` exists, and moved back to ``path`` when the kill came between the two moves, so
    the earlier result is not lost. Only folders of exactly that form (``XXXXXXXX`` as
    :func:`tempfile.mkdtemp` draws it) are touched: not those of another result folder, such as
    ``.<name>.x.XXXXXXXX.part`` of ``<name>.x``.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return
    pattern = re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}\.(part|old)")
    stale = sorted((e for e in os.scandir(path.parent)
                    if pattern.fullmatch(e.name) and e.is_dir(follow_symlinks=False)),
                   key=lambda e: e.stat(follow_symlinks=False).st_mtime)
    olds = [Path(e.path) for e in stale if e.name.endswith(".old")]
    if olds and not os.path.lexists(path):
        os.replace(olds.pop(), path)  # the newest earlier result
    for e in stale:
        if e.name.endswith(".part") or Path(e.path) in olds:
            _rmtree(Path(e.path))


def check_output_path(path: str | os.PathLike, option: str, kind: str = "folder") -> Path:
    """``path`` checked as the name of a ``kind`` ("folder" or "file") to create or replace.

    A :class:`UserError` naming ``option`` when it names no entry of its own (``.``, ``..``,
    empty), lies under a file, or is a file where a folder is wanted or the other way round.
    Missing parent folders are fine: writing makes them, for every output option alike.
    """
    text = os.fspath(path)
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise UserError(f"{option} must name a {kind} to create, got {text!r}")
    for parent in path.parents:  # the nearest one that exists must be a folder
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"{option} {text}: {parent} is a file, not a folder")
            break
    if kind == "file" and path.is_dir():
        raise UserError(f"{option} {text} is a folder; name a file to write")
    if kind == "folder" and path.exists() and not path.is_dir():
        raise UserError(f"{option} {text} exists and is a file; choose another {option} or remove it")
    return path


def check_result_folder(path: str | os.PathLike, option: str = "--out") -> Path:
    """``path`` checked as a result folder that may be written or replaced.

    That is a new path, an empty folder or a folder savic wrote (``config.toml``, one of
    ``RESULT_MARKS``, and nothing but ``RESULT_FILES`` and ``RESULT_FOLDERS``); anything else, a file or link included, is a
    :class:`UserError` naming ``option`` and what is in the way, so no user data is replaced.
    """
    path = check_output_path(path, option)
    if path.is_symlink():  # replacing it would replace the link, not what it points to
        raise UserError(f"{option} {os.fspath(path)} is a symbolic link; choose another {option} or remove it")
    foreign = _not_a_result(path) if path.exists() else None
    if foreign is not None:
        raise UserError(f"{option} {os.fspath(path)} exists and is not a savic result folder ({foreign}); "
                        f"choose another {option} or remove it")
    return path


def _not_a_result(folder: Path) -> str | None:
    """Why ``folder`` is not an empty or savic result folder, or None when it is one."""
    entries = {e.name: e for e in os.scandir(folder)}
    if not entries:
        return None
    for name, entry in sorted(entries.items()):
        suffix = RESULT_FOLDERS.get(name)
        if suffix is not None and entry.is_dir(follow_symlinks=False):
            inner = [e.name for e in os.scandir(entry.path)
                     if not (e.name.endswith(suffix) and e.is_file(follow_symlinks=False))]
            if inner:
                return f"it holds {name}/{sorted(inner)[0]}"
        elif name not in RESULT_FILES or not entry.is_file(follow_symlinks=False):
            return f"it holds {name}"
    if "config.toml" not in entries:
        return "it has no config.toml"
    if not RESULT_MARKS & set(entries):  # a user's own config.toml (and notes), not what savic wrote
        return f"it holds config.toml but no {' or '.join(sorted(RESULT_MARKS))}"
    return None


def work_folder(out: str | os.PathLike) -> Path:
    """``.<name>.work`` beside the result folder ``<name>``: where a resumable command keeps what it finished."""
    out = Path(out)
    return out.with_name(f".{out.name}.work")


#: the stamp a command writes first into its work folder (``savic simulate``/``run``, ``savic verify``)
WORK_STAMPS = ("config.sha", "options.json")


def remove_stale_work(work: str | os.PathLike) -> None:
    """Delete a work folder left by an earlier run, but only one that savic made (or an empty one)."""
    work = Path(work)
    if not work.exists():
        return
    # a stamp, or the part-written stamp of a run killed as it began (see atomic_write)
    ours = work.is_dir() and (not any(work.iterdir()) or any((work / s).is_file() or any(work.glob(f".{s}.*.part"))
                                                             for s in WORK_STAMPS))
    if not ours:
        raise UserError(f"{work} exists and is not a work folder of savic (no {' or '.join(WORK_STAMPS)}); "
                        "remove it or choose another --out")
    shutil.rmtree(work)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _rmtree(p: Path) -> None:
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
    # a pseudo-terminal that reports no width or height would get an empty or hidden bar
    size = shutil.get_terminal_size((0, 0))
    sized = size.columns > 0 and size.lines > 0
    return tqdm(total=total, desc=desc, disable=not show, leave=False, file=sys.stderr,
                dynamic_ncols=sized, ncols=None if sized else (size.columns or 80),
                nrows=None if sized else 24)


# ----------------------------------------------------------------------------- config files
def add_config_option(parser: argparse.ArgumentParser, table: str, lists: tuple[str, ...] = ()) -> None:
    """Give a subcommand ``--config FILE``: a TOML file whose ``[table]`` sets any long option.

    Keys are the options' names with ``_`` for ``-`` (``no_progress = true``); flags given on the
    command line win over the file. ``lists`` names the comma-separated options that may also be
    given as TOML lists. :func:`savic_theory.cli.main` applies the file before the handler runs.
    """
    parser.add_argument("--config", metavar="FILE", default=None,
                        help=f"TOML config file with a [{table}] table; its keys are the long options "
                             "below with '_' for '-', and flags win over it (default: none)")
    parser.set_defaults(config_table=table, config_lists=tuple(lists), config_parser=parser)


def _options(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions
            if a.option_strings and a.dest not in ("help", "config")}


def config_values(path: str | os.PathLike, table: str, parser: argparse.ArgumentParser,
                  lists: tuple[str, ...] = ()) -> dict[str, Any]:
    """The ``[table]`` of the TOML file ``path`` as option values, each checked against its option."""
    from ..config import key_not_in_table, load_config, unknown_key

    data = load_config(path)
    other = sorted(set(data) - {table})
    loose = [k for k in other if not isinstance(data[k], dict)]
    actions = _options(parser)
    if loose:
        raise UserError(f"{path}: " + key_not_in_table(loose[0], {table: actions},
                                                       f"this command reads only [{table}]"))
    if other:
        raise UserError(f"{path}: unknown config table [{other[0]}]; this command reads only [{table}]")
    values = data.get(table, {})
    if not isinstance(values, dict):
        raise UserError(f"{path}: [{table}] must be a table of keys")
    out = {}
    for key, value in values.items():
        if key not in actions:
            raise UserError(unknown_key(f"{table}.{key}", actions))
        out[key] = _option_value(f"{table}.{key}", value, actions[key], key in lists)
    return out


def _option_value(name: str, value: Any, action: argparse.Action, listable: bool) -> Any:
    """``value`` from a config file converted and checked as the command line would."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise UserError(f"{name} must be true or false, got {value!r}")
        return value
    if isinstance(action, argparse._AppendAction):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
            raise UserError(f"{name} must be a string or a list of strings, got {value!r}")
        return [_option_value(name, v, argparse.Action([], action.dest, choices=action.choices), False)
                for v in items]
    if listable and isinstance(value, list):
        if not value or not all(isinstance(v, str) for v in value):
            raise UserError(f"{name} must be a non-empty list of strings, got {value!r}")
        value = ",".join(value)
    kind = action.type or str
    if kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise UserError(f"{name} must be of type {kind.__name__}, got {value!r}")
    value = kind(value)
    if action.choices is not None and value not in action.choices:
        raise UserError(f"{name} must be one of {', '.join(map(str, action.choices))}, got {value!r}")
    return value


def options_as_table(args: argparse.Namespace) -> dict[str, Any]:
    """The resolved options of a subcommand with ``--config`` support, as a TOML-ready table."""
    parser = args.config_parser
    return {dest: getattr(args, dest) for dest in _options(parser)
            if getattr(args, dest, None) is not None}
