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


def run(args: argparse.Namespace) -> int:
    if args.out == "results/<config name>":
        args.out = str(Path("results") / Path(args.config).stem)
    cfg = resolve(load_config(args.config), overrides_from(args))
    return execute(cfg, args)
