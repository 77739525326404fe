"""The ``savic`` command line: one subcommand module each, errors as one line.

Subcommands are listed in ``SUBCOMMANDS`` (module names under ``savic_theory.cli``); a module
that cannot be imported because an optional dependency is missing (``nn`` without PyTorch)
still gets a subcommand that explains what to install.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import re
import shutil
import signal
import sys
import threading
import traceback
from pathlib import Path

from ._common import WORK_STAMPS, UserError, first_line, work_folder

SUBCOMMANDS = ("simulate", "verify", "bench", "nn", "run")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``savic CMD: error: ...``), exit status 2."""

    commands = None  # the subparsers action of the top-level parser

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse, but an unknown argument after a subcommand is reported by that subcommand."""
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(ns, "command", None)
            owner = self.commands.choices.get(command, self) if self.commands and command else self
            owner.error(f"unrecognized arguments: {' '.join(extras)}")
        return ns


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = _Parser(
        prog="savic",
        description="Simulate SAVIC (Local SGD with adaptive scaling) and verify its theory.",
    )
    parser.add_argument("--version", action="version", version=f"savic {__version__}",
                        help="print the version of savic-theory and exit")
    sub = parser.commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(__name__):
                continue  # subcommand not part of this build
            raise
        module.add_parser(sub)
    return parser


def _apply_config(parser: argparse.ArgumentParser, args: argparse.Namespace, argv) -> argparse.Namespace:
    """Options from ``--config`` for subcommands that take one (see ``add_config_option``)."""
    from ._common import config_values

    table = getattr(args, "config_table", None)
    if not table or not getattr(args, "config", None):
        return args
    values = config_values(args.config, table, args.config_parser, args.config_lists)
    appended = {k: v for k, v in values.items() if isinstance(v, list)}
    args.config_parser.set_defaults(**{k: v for k, v in values.items() if k not in appended})
    args = parser.parse_args(argv)  # flags on the command line win over the file
    for key, value in appended.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def _result_folder(args: argparse.Namespace) -> str | None:
    """The folder ``simulate``, ``run`` or ``verify`` will replace atomically (``None`` for others)."""
    if args.command == "run":
        from .run import result_folder

        return result_folder(args)
    return args.out if args.command in ("simulate", "run", "verify") else None


def _finished_work(args: argparse.Namespace) -> Path | None:
    """The work folder of ``simulate``/``run``/``verify`` when it holds finished blocks or cases.

    One holding no file but its stamp (and empty folders, and the ``.part`` of a write that was
    cut short) has nothing to resume from: it is removed when this invocation made or opened it,
    and left alone otherwise (another command's, or an earlier run's), but in neither case
    offered for ``--resume``.
    """
    out = _result_folder(args)
    if out is None or Path(out).name in ("", ".", ".."):
        return None
    kept = work_folder(out)
    try:
        if not kept.is_dir():
            return None
        if not any(p.is_file() and p.name not in WORK_STAMPS and p.suffix != ".part" for p in kept.rglob("*")):
            if getattr(args, "_work_fresh", False) or _stamped_since(kept, args):
                shutil.rmtree(kept, ignore_errors=True)
            return None
    except OSError:
        return None
    return kept


def _kept_after_error(args: argparse.Namespace) -> str:
    """After an error, `` (the finished ... are kept in ...)`` when this invocation left finished
    work to resume from, else ``""``."""
    kept = _finished_work(args)
    if kept is None or not _stamped_since(kept, args):
        return ""  # a folder this invocation did not open: another config's, or another command's
    return f" (the finished {_pieces(args.command)} are kept in {kept}/; --resume reuses them)"


def _stamps(work: Path) -> dict[str, tuple[int, int]]:
    """The identity (inode, modification time in ns) of each stamp in the work folder ``work``."""
    found = {}
    for name in WORK_STAMPS:
        try:
            st = os.stat(work / name)
        except OSError:
            continue
        found[name] = (st.st_ino, st.st_mtime_ns)
    return found


def _stamped_since(work: Path, args: argparse.Namespace) -> bool:
    """Whether this invocation opened ``work``: starting or resuming a run rewrites its stamp, so
    a stamp other than the one seen when the command started (``args._stamps``) is this
    invocation's. (On a file system with coarse times a rewrite may go unseen: then nothing is
    offered, which is the safe side.)"""
    before = getattr(args, "_stamps", None)
    if before is None:
        return False
    now = _stamps(work)
    return any(before.get(name) != ident for name, ident in now.items())


def _pieces(command: str) -> str:
    """What a resumable command keeps in its work folder."""
    return "cases and searches" if command == "verify" else "blocks"


def _interrupted(args: argparse.Namespace) -> str:
    """What an interrupted command left behind and how to go on, for its one-line message."""
    out = _result_folder(args)
    out = Path(out) if out is not None else None
    if out is not None and out.name not in ("", ".", ".."):
        kept = _finished_work(args)
        if kept is None:
            return f"no result folder was written to {out} and nothing was kept"
        if not _stamped_since(kept, args):  # interrupted before this invocation opened it
            return f"no result folder was written to {out}; {kept}/ from an earlier run is left as it was"
        return (f"no result folder was written to {out}; the finished {_pieces(args.command)} are kept in {kept}/ "
                "(rerun with --resume to reuse them)")
    if args.command == "nn":  # the result folder is written as the runs go (savic_theory.nn.runner)
        out = Path(args.out)
        if args.report:
            return f"the tables and figures in {out}/ may be incomplete (rerun with --report)"
        if (out / "config.toml").is_file():
            return f"the checkpoints written so far are kept in {out}/ (rerun with --resume to continue)"
        return "nothing was kept"
    if args.command == "bench" and args.suite:
        return f"the results finished so far are in {args.out}/"
    return "nothing was written"


#: what to make smaller when a command runs out of memory
_SMALLER = {"simulate": "reduce runs, clients or dim", "run": "reduce runs, clients, dim or the grid",
            "bench": "reduce --runs, --clients or --dim", "verify": "check fewer theorems (--theorem)",
            "nn": "reduce data.batch_size, train.eval_batch or model.width"}


def _out_of_memory() -> tuple[type[BaseException], ...]:
    """The errors that mean out of memory: ``MemoryError`` and, once imported, PyTorch's
    (on the GPU; on the CPU see :func:`_cpu_allocation_failure`)."""
    torch = sys.modules.get("torch")
    return (MemoryError,) + ((torch.OutOfMemoryError,) if hasattr(torch, "OutOfMemoryError") else ())


#: PyTorch's CPU allocator failing, raised as a plain RuntimeError ("[enforce fail at
#: alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to
#: allocate 154618822656 bytes. Error code 12 (Cannot allocate memory)"); "not enough memory" on Windows
_CPU_ALLOCATOR = re.compile(r"DefaultCPUAllocator: ((?:can't allocate|not enough) memory[^.]*)")


def _cpu_allocation_failure(exc: BaseException) -> str | None:
    """The gist of ``exc`` when it is PyTorch's CPU allocator failing (``"can't allocate memory:
    you tried to allocate N bytes"``), else ``None``."""
    found = _CPU_ALLOCATOR.search(str(exc)) if isinstance(exc, RuntimeError) else None
    return found.group(1) if found else None


def _speaker(command: str, errors_alike: bool) -> str | None:
    """Who reports an error of this process, or ``None`` to stay quiet.

    Under torchrun (``WORLD_SIZE > 1``) every process runs the same checks on the same files,
    so an error in the input (``errors_alike``) is reported once per machine, by its first
    process (``LOCAL_RANK`` 0); errors that may differ between processes (out of memory) are
    reported by each. A process other than process 0 names itself. A launcher that does not
    say which process is a machine's first (no ``LOCAL_RANK``) gets the report from every one.
    """
    try:
        world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        world = 1
    if world <= 1:
        return f"savic {command}"
    if errors_alike and local != 0:
        return None
    return f"savic {command}" + (f" (process {rank} of {world})" if rank else "")


def _report(command: str, message: str, errors_alike: bool = True) -> None:
    who = _speaker(command, errors_alike)
    if who is not None:
        print(f"{who}: {message}", file=sys.stderr)


def _report_out_of_memory(args: argparse.Namespace, detail: str) -> int:
    """Say that the command ran out of memory (``detail``: the allocator's words), what to make
    smaller and what was kept; the exit status."""
    msg = f"out of memory ({detail})" if detail else "out of memory"
    advice = _SMALLER.get(args.command)
    _report(args.command, f"error: {msg}" + (f": {advice}" if advice else "") + _kept_after_error(args),
            errors_alike=False)
    return 2


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled as an interruption: what finished is kept, nothing half-written is left."""


@contextlib.contextmanager
def _terminate_as_interrupt():
    """While a command runs in the main thread, SIGTERM (``timeout``, a batch system) raises
    :class:`_Terminated`, so it ends like Ctrl-C instead of killing the process mid-write."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Terminated()
    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    try:  # the subcommands' imports (NumPy, ...) take a moment: an interrupt there is one line too
        parser = build_parser()
        args = parser.parse_args(argv)
    except KeyboardInterrupt:
        print("savic: interrupted before the command started; nothing was written", file=sys.stderr)
        return 130
    with _terminate_as_interrupt():
        return _run(parser, args, argv)


def _run(parser, args, argv) -> int:
    try:
        args = _apply_config(parser, args, argv)
        out = _result_folder(args)
        if out is not None:
            from ._common import check_result_folder

            check_result_folder(out)  # before the run, not after it
            args._work_fresh = not os.path.lexists(work_folder(out))
            args._stamps = _stamps(work_folder(out))
        return int(args.handler(args) or 0)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, _Terminated)
        _report(args.command, f"{'terminated' if terminated else 'interrupted'}; {_interrupted(args)}")
        return 143 if terminated else 130
    except _out_of_memory() as exc:
        detail = first_line(exc)
        # torch's first sentence; numpy's only one ("Unable to allocate 745. GiB ...": a number's dot)
        detail = re.split(r"(?<![0-9])\. ", detail)[0].rstrip(".")
        if detail[1:2].islower():  # "Unable to ..." but not "CUDA ..."
            detail = detail[:1].lower() + detail[1:]
        return _report_out_of_memory(args, detail)
    except RuntimeError as exc:
        detail = _cpu_allocation_failure(exc)
        if detail is None:
            return _report_internal_error(args, exc)
        return _report_out_of_memory(args, detail)
    except (UserError, ValueError, TypeError, FileNotFoundError, KeyError, OSError, OverflowError,
            ImportError) as exc:
        msg = first_line(exc, type(exc).__name__)
        if isinstance(exc, KeyError):
            msg = f"missing or unknown key: {msg}"
        # under torchrun, an error of one process alone (savic_alike False) is printed by it
        _report(args.command, f"error: {msg}" + _kept_after_error(args),
                errors_alike=getattr(exc, "savic_alike", True))
        return 2
    except Exception as exc:  # anything else is a bug in savic, not in the input
        return _report_internal_error(args, exc)


def _report_internal_error(args: argparse.Namespace, exc: BaseException) -> int:
    """Print the traceback of ``exc``, an exception no input explains (a bug), then a last line
    that says so and what was kept; the exit status, 3."""
    traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)
    msg = first_line(exc)
    what = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    _report(args.command, f"internal error, a bug in savic ({what}; the traceback above shows where)"
            + _kept_after_error(args), errors_alike=False)
    return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
