"""Rules on the run axis: one ``simulate`` call for a sweep over rules, against one call per rule.

``python -m benchmarks rules`` writes ``rules.json``. The sweep is the CPU comparison problem of
:mod:`benchmarks.cpu` (64 clients, d = 256, heterogeneous diagonal quadratic, H = 10) with
``runs_per_rule`` runs of each rule, in global and in local scaling, noise-free so that the two
ways must give the same iterates (checked before any time is reported). Two sweeps:

* ``identity``, ``rmsprop``, ``adam``: one statistic (``g ⊙ g``); the mixed call computes every
  kind's update on every run and keeps each run's own;
* the same plus ``oasis``: two statistics, so the mixed call also forms each run's statistic
  (``g ⊙ g`` or the Hessian diagonal) before the step, outside the one-pass sync kernel.

Both take the fused path (the JSON records which path ran).
"""
from __future__ import annotations

import numpy as np

from savic_theory import rules, simulate
from savic_theory.simulator.fused import unsupported_reason

from . import cpu
from ._common import median_time

CONFIG = dict(cpu.CONFIG, runs=8, steps=100)  # runs: per rule

#: on the GPU: the small problem of the launch-floor target (16 clients × d = 100), where one
#: launch per step instead of one per rule is what a sweep gains
GPU_CONFIG = dict(CONFIG, clients=16, dim=100, steps=200)

SWEEPS = {
    "g*g rules + identity": ("identity", "rmsprop", "adam"),
    "with oasis (two statistics)": ("identity", "rmsprop", "adam", "oasis"),
}


def _rule(name, cfg):
    return rules.identity() if name == "identity" else rules.make(name, beta=cfg["beta"], e=cfg["e"])


def compare(cfg=CONFIG, repeats=5, log=print, backend=None, keep=None) -> dict:
    """Median ms per step (whole calls, set-up included) of the mixed call and the per-rule calls
    (``backend``: as for ``simulate``; ``"cupy"`` times the GPU path). ``keep``, when given, is
    called with the result so far after every row (a suite stopped midway keeps those rows)."""
    prob = cpu.problem(cfg)
    n = cfg["runs"]
    kw = dict(gamma=cfg["gamma"], steps=cfg["steps"], sync_every=cfg["H"], record_every=cfg["H"],
              seed=cfg["seed"], probes="exact", backend=backend)
    rows = []
    for label, names in SWEEPS.items():
        per_run = [_rule(name, cfg) for name in names for _ in range(n)]
        for scaling in ("global", "local"):
            def mixed():
                return simulate(prob, per_run, scaling=scaling, **kw)

            def separate():
                return [simulate(prob, _rule(name, cfg), runs=n, scaling=scaling, **kw) for name in names]

            one, parts = mixed(), separate()
            gap = max(float(np.max(np.abs(one.x[i * n:(i + 1) * n] - p.x)) / np.max(np.abs(p.x)))
                      for i, p in enumerate(parts))
            if not gap <= cpu.CHECK_RTOL or one.diverged:
                raise AssertionError(f"{label}, {scaling}: the mixed call is not the per-rule calls (gap {gap:.1e})")
            t_mixed = t_sep = None
            tm, ts = [], []
            for _ in range(repeats):  # interleaved, so both see the same state of the machine
                tm.append(median_time(mixed, 1, warmup=0)[0])
                ts.append(median_time(separate, 1, warmup=0)[0])
            t_mixed, t_sep = float(np.median(tm)), float(np.median(ts))
            row = {"sweep": label, "scaling": scaling, "rules": len(names), "runs": len(per_run),
                   "mixed_ms_per_step": 1e3 * t_mixed / cfg["steps"],
                   "separate_ms_per_step": 1e3 * t_sep / cfg["steps"],
                   "separate_over_mixed": t_sep / t_mixed, "max_rel_gap": gap,
                   "mixed_path": ("fused" if unsupported_reason(prob, one.rule, scaling, backend=backend) is None
                                  else "reference")}
            log(f"{label:28s} {scaling:6s}: one call {row['mixed_ms_per_step']:.3f} ms/step "
                f"({row['mixed_path']}), one call per rule {row['separate_ms_per_step']:.3f} ms/step")
            rows.append(row)
            if keep is not None:
                keep({"config": cfg, "repeats": repeats, "rows": list(rows)})
    return {"config": cfg, "repeats": repeats, "rows": rows}
