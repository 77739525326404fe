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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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



def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        print("savic: interrupted; no result folder was written (rerun with --resume to reuse finished blocks)",
              file=sys.stderr)
        return 130
    except (UserError, ValueError, TypeError, FileNotFoundError, KeyError, OSError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, KeyError):
            msg = f"missing or unknown key: {msg}"
        print(f"savic {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
