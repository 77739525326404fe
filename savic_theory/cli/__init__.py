"""The ``savic`` command line: one subcommand module each, errors as one line.

Subcommands are listed in ``SUBCOMMANDS`` (module names under ``savic_theory.cli``); a module
that cannot be imported because an optional dependency is missing (``nn`` without PyTorch)
still gets a subcommand that explains what to install.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ._common import UserError

SUBCOMMANDS = ("simulate", "verify", "bench", "nn", "run")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``savic CMD: error: ...``), exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="savic",
        description="Simulate SAVIC (Local SGD with adaptive scaling) and verify its theory.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args = _apply_config(parser, args, argv)
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        hint = " (rerun with --resume to reuse finished blocks)" if hasattr(args, "resume") else ""
        print(f"savic: interrupted; no result folder was written{hint}", file=sys.stderr)
        return 130
    except (UserError, ValueError, TypeError, FileNotFoundError, KeyError, OSError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, KeyError):
            msg = f"missing or unknown key: {msg}"
        print(f"savic {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
