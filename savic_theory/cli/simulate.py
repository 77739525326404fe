"""``savic simulate``: run a problem and a rule with global and local scaling, write results.

Options come from a TOML config file (``--config``) and flags, flags winning. Lists in the
config (``run.gamma``, ``run.sync_every``, ``rule.beta``, ``rule.e``, ``rule.name``) are grids,
run as one batched call per rule and scaling, seeded with ``--seed``: a grid point's runs draw
from that call's one random stream with the other points' runs, so the same config reproduces
every number exactly, while the same point alone or in another grid gets other draws; with
``--paired`` run j of every point gets the same draws (common random numbers) and
``summary.json`` gives each point's paired difference from the best point (``paired_vs_best``). Writes,
atomically, into ``--out``: ``config.toml`` (the resolved config, re-runnable), ``history.csv``
(one row per run and recorded step), ``drift.csv`` (one row per run and sync; only the header if
none synced), ``summary.json`` and ``plot.png``. A run that diverges has history and drift rows
only before its divergence; ``summary.json`` gives each run's ``status`` and ``diverged_at``.
Prints one line per rule, scaling and grid point, for the first 20 of them (``summary.json``
has every point), from the same rows: a diverged run's α̂, Γ̂ and drift count only before its
divergence. ``--resume`` continues an interrupted run of the same config; with no
interrupted run it is an error when ``--out`` does not exist (a mistyped folder) and runs afresh
into a finished one.
"""
from __future__ import annotations

import argparse
import sys
import warnings
from typing import TYPE_CHECKING

import numpy as np

from ..config import CHOICES, DEFAULTS, HELP, load_config, resolve

if TYPE_CHECKING:
    from ..experiment import Block
    from ..simulator import SimulationResult

#: option names that differ from the config key
_RENAMED = {("problem", "kind"): "problem", ("rule", "name"): "rule", ("problem", "seed"): "problem-seed"}


def _option(table: str, key: str) -> str:
    return "--" + _RENAMED.get((table, key), key.replace("_", "-"))


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One flag per config key, each overriding the config file."""
    for table, keys in DEFAULTS.items():
        group = parser.add_argument_group(f"[{table}] options (also settable in the config file)")
        for key, default in keys.items():
            text, choices = HELP[(table, key)], CHOICES.get((table, key), ())
            if not all(c in text for c in choices):
                text += f": {', '.join(choices)}"
            kw = dict(dest=f"{table}.{key}", default=None, help=f"{text} (default: {default})")
            if key == "scaling":
                kw.update(choices=["global", "local", "both"],
                          help="which scaling to simulate: global, local, or both, each with --runs runs "
                               "(default: both)")
            elif isinstance(default, bool):
                kw.update(action=argparse.BooleanOptionalAction)
            elif isinstance(default, (int, float)):
                kw.update(type=type(default), metavar=type(default).__name__.upper())
            else:
                kw.update(metavar=key.upper())
            group.add_argument(_option(table, key), **kw)


def overrides_from(args: argparse.Namespace) -> dict:
    out: dict = {}
    for dest, value in vars(args).items():
        if "." not in dest or value is None:
            continue
        table, key = dest.split(".", 1)
        if key == "scaling":
            value = ["global", "local"] if value == "both" else [value]
        out.setdefault(table, {})[key] = value
    return out


def add_parser(sub) -> None:
    p = sub.add_parser("simulate", help="simulate SAVIC with global and local scaling",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", metavar="FILE", help="TOML config file ([problem], [rule], [run]; default: none)")
    add_run_options(p, default_out="results/simulate")
    add_config_options(p)
    p.set_defaults(handler=run)


def add_run_options(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--out", metavar="DIR", default=default_out,
                   help=f"result folder, replaced atomically (default: {default_out})")
    p.add_argument("--resume", action="store_true",
                   help="reuse the finished blocks of an interrupted run of the same config; with none, "
                        "an error if --out does not exist, else a fresh run (default: off)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars (default: shown)")


def run(args: argparse.Namespace) -> int:
    cfg = resolve(load_config(args.config) if args.config else None, overrides_from(args))
    return execute(cfg, args)


def execute(cfg: dict, args: argparse.Namespace) -> int:
    """Run a resolved config, print one line per block and grid point, write ``args.out``."""
    from ..experiment import expand, run_experiment

    results = run_experiment(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    lines = 0
    for block in expand(cfg):
        for i in range(len(block.points)):
            if lines == 20:
                print("... (more grid points in summary.json)")
            lines += 1
            if lines <= 20:
                print(point_line(block, i, results[block.key]))
    print(f"results written to {args.out}/", file=sys.stderr)
    return 0


def point_line(block: Block, point: int, res: SimulationResult) -> str:
    """The console line of one grid point: its distance to x*, divergences, α̂, Γ̂ and drift.

    As in ``history.csv`` and ``drift.csv``, a diverged run counts only with its records and
    syncs before its ``diverged_at``."""
    sl = block.runs_of(point)
    at = block.per_run(res.diverged_at)[0, sl]

    def before_divergence(values, times):
        """``values`` of this point's runs, NaN from each run's divergence on."""
        v = block.per_run(values, len(times))[:, sl].astype(np.float64)
        t = np.asarray(times).reshape(-1, 1)
        return np.where((at >= 0) & (t >= at), np.nan, v)

    dist = block.per_run(res.history["dist_sq"], len(res.steps))[:, sl]
    n_div = int(np.sum(block.per_run(res.status)[0, sl] == "diverged"))
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices of diverged runs
        final = np.nanmean(dist[-1]) if n_div < block.runs else float("nan")
        alpha = np.nanmin(before_divergence(res.history["alpha_hat"], res.steps))
        Gamma = np.nanmax(before_divergence(res.history["Gamma_hat"], res.steps))
        drift = before_divergence(res.drift, res.sync_steps)
        if np.isfinite(drift).any():
            drift_text = f"over runs and syncs max drift {np.nanmax(drift):.4f}"
        elif np.isfinite(block.per_run(res.drift, len(res.sync_steps))[:, sl]).any():
            drift_text = "no sync before a divergence, no drift"
        else:
            drift_text = "no sync, no drift"
    grid = " ".join(f"{k}={v:g}" for k, v in block.points[point].items() if v == v) if len(block.points) > 1 else ""
    label = " ".join(filter(None, (block.rule, f"{block.scaling:>6}", grid)))
    if n_div == 0:
        runs_text = f"mean of {block.runs} runs, 0 diverged"
    elif n_div < block.runs:
        runs_text = f"end: mean of the {block.runs - n_div} of {block.runs} runs that did not diverge, {n_div} diverged"
    else:
        runs_text = f"all {block.runs} runs diverged"
    return (f"{label}: ‖x̄−x*‖² {np.mean(dist[0]):.3e} -> {final:.3e} ({runs_text}); "
            f"over runs and recorded steps min α̂ {alpha:.3g}, max Γ̂ {Gamma:.3g}; {drift_text}")
