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
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator

__all__ = ["UserError", "atomic_write", "atomic_dir", "write_json", "progress", "add_config_option",
           "config_values", "options_as_table"]


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
    from ..config import load_config

    data = load_config(path)
    other = sorted(set(data) - {table})
    if other:
        raise UserError(f"{path}: unknown config table [{other[0]}]; this command reads only [{table}]")
    values = data.get(table, {})
    if not isinstance(values, dict):
        raise UserError(f"{path}: [{table}] must be a table of keys")
    actions = _options(parser)
    out = {}
    for key, value in values.items():
        if key not in actions:
            raise UserError(f"unknown key {table}.{key}; known keys: {', '.join(actions)}")
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
