"""Render the CLI reference (``docs/cli.md``) from the parsers themselves.

``python -m savic_theory.cli._docs > docs/cli.md``; a test checks the file is current.
"""
from __future__ import annotations

import argparse
import os


def render() -> str:
    from . import build_parser

    os.environ["COLUMNS"] = "100"
    parser = build_parser()
    parts = ["# `savic` command-line reference", "",
             "Generated from the parsers by `python -m savic_theory.cli._docs > docs/cli.md`;",
             "every option is also a key of the TOML config where the help says so.", "",
             "Exit status: 0 when the command did its work; 1 when `savic verify` finds a bound violated;",
             "2 for bad input or an error, printed as one line on standard error that names it; 3 for an",
             "internal error (a bug in savic), printed as its traceback and a last line that says so; 130",
             "when interrupted (Ctrl-C) and 143 when terminated (SIGTERM), after saying what was kept: the",
             "finished blocks, cases or checkpoints, for `--resume`. `simulate`, `run` and `verify` write",
             "their result folder at once, at the end; `nn` writes its folder as the runs finish, with",
             "checkpoints in between.",
             "",
             "```", parser.format_help().rstrip(), "```", ""]
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, p in sub.choices.items():
        parts += [f"## `savic {name}`", "", "```", p.format_help().rstrip(), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":  # pragma: no cover
    print(render(), end="")
