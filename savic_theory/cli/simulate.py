"""``savic simulate``: run one problem and rule with global and local scaling, write results.

Writes, atomically, into ``--out``: ``config.toml`` (the resolved config, re-runnable with
``--config``), ``history.csv``, ``drift.csv``, ``summary.json`` and ``plot.png``.
"""
from __future__ import annotations

import argparse
import csv
import sys

import numpy as np

from ..config import DEFAULTS, HELP, build_problem, build_rule, load_config, resolve
from ._common import atomic_dir, write_json

#: option names that differ from the config key
_RENAMED = {("problem", "kind"): "problem", ("rule", "name"): "rule", ("problem", "seed"): "problem-seed"}


def _option(table: str, key: str) -> str:
    return "--" + _RENAMED.get((table, key), key.replace("_", "-"))


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One flag per config key, each overriding the config file."""
    for table, keys in DEFAULTS.items():
        group = parser.add_argument_group(f"[{table}] options (also settable in the config file)")
        for key, default in keys.items():
            kw = dict(dest=f"{table}.{key}", default=None,
                      help=f"{HELP[(table, key)]} (default: {default})")
            if key == "scaling":
                kw.update(choices=["global", "local", "both"])
            elif isinstance(default, bool):
                kw.update(type=lambda s: s.lower() in ("1", "true", "yes"))
            elif isinstance(default, (int, float)):
                kw.update(type=type(default), metavar=type(default).__name__.upper())
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
    p.add_argument("--config", metavar="FILE", help="TOML config file ([problem], [rule], [run])")
    p.add_argument("--out", metavar="DIR", default="results/simulate",
                   help="result folder, replaced atomically (default: results/simulate)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_config_options(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    cfg = resolve(load_config(args.config) if args.config else None, overrides_from(args))
    problem = build_problem(cfg)
    rule = build_rule(cfg)
    r = cfg["run"]
    from .. import simulate

    results = {}
    for scaling in r["scaling"]:
        results[scaling] = simulate(
            problem, rule, gamma=r["gamma"], steps=r["steps"], sync_every=r["sync_every"],
            scaling=scaling, runs=r["runs"], seed=r["seed"], record_every=r["record_every"] or None,
            dtype=r["dtype"], backend=r["backend"], progress=not args.no_progress)
    write_results(args.out, cfg, results)
    for scaling, res in results.items():
        d = res.history["dist_sq"]
        status = ", ".join(f"{s}: {int(np.sum(res.status == s))}" for s in ("ok", "diverged") if np.any(res.status == s))
        print(f"{scaling:>6} scaling: ‖x̄−x*‖² {np.nanmean(d[0]):.3e} -> {np.nanmean(d[-1]):.3e} "
              f"(mean of {res.x.shape[0]} runs; {status}); α̂ {np.nanmin(res.history['alpha_hat']):.3g}, "
              f"Γ̂ {np.nanmax(res.history['Gamma_hat']):.3g}, max drift {np.nanmax(res.drift) if res.drift.size else 1:.4f}")
    print(f"results written to {args.out}/", file=sys.stderr)
    return 0


def write_results(out, cfg: dict, results: dict) -> None:
    import tomli_w

    from ..plotting import plot_scalings
    from ..simulator import HISTORY_KEYS

    with atomic_dir(out) as tmp:
        (tmp / "config.toml").write_text(tomli_w.dumps(cfg))
        with open(tmp / "history.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["scaling", "run", "step", *HISTORY_KEYS])
            for scaling, res in results.items():
                cols = [res.history[k] for k in HISTORY_KEYS]
                for i, t in enumerate(res.steps):
                    for run_ in range(res.x.shape[0]):
                        w.writerow([scaling, run_, int(t), *(repr(float(c[i, run_])) for c in cols)])
        with open(tmp / "drift.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["scaling", "run", "sync_step", "drift", "drift_min"])
            for scaling, res in results.items():
                for i, t in enumerate(res.sync_steps):
                    for run_ in range(res.x.shape[0]):
                        if not np.isnan(res.drift[i, run_]):
                            w.writerow([scaling, run_, int(t), repr(float(res.drift[i, run_])),
                                        repr(float(res.drift_min[i, run_]))])
        write_json(tmp / "summary.json", {s: res.summary() for s, res in results.items()})
        p = cfg["problem"]
        plot_scalings(results, tmp / "plot.png",
                      title=f"{p['kind']} (M={p['clients']}), {cfg['rule']['name']}, H={cfg['run']['sync_every']}")
