"""``savic run EXPERIMENT.toml``: run an experiment declared in a config file.

The same as ``savic simulate --config EXPERIMENT.toml`` (every flag of ``simulate`` may
override the file); the result folder defaults to ``results/<config name>``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..config import load_config, resolve
from .simulate import add_config_options, add_run_options, execute, overrides_from


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="run an experiment config file (grids, resume)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="EXPERIMENT.toml", help="TOML config file")
    add_run_options(p, default_out="results/<config name>")
    add_config_options(p)
    p.set_defaults(handler=run)


def result_folder(args: argparse.Namespace) -> str:
    """``--out``, or ``results/<config file's stem>`` when it was not given."""
    return str(Path("results") / Path(args.config).stem) if args.out == "results/<config name>" else args.out


def run(args: argparse.Namespace) -> int:
    args.out = result_folder(args)
    cfg = resolve(load_config(args.config), overrides_from(args))
    return execute(cfg, args)
