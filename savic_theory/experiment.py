"""Run a resolved config: expand its grids into batched calls, resume, write the results.

A config's grid axes (``run.gamma``, ``run.sync_every``, ``rule.beta``, ``rule.e``) expand into
their product; each point gets ``run.runs`` runs, and all of them go through *one* ``simulate``
call per rule name and scaling variant (a "block"), so that a sweep is one launch per step.

Every block's call is seeded with ``run.seed`` and draws the noise, minibatches and probes of
all its runs, of every grid point, from that one random stream (the runs of point ``i`` are the
batch's runs ``i·runs … (i+1)·runs − 1``). The same config therefore reproduces every number
exactly, a resumed experiment included. By default a point's numbers are not a function of the
point alone: the same point run alone, or in a grid with other values or another order, gets
other draws, and runs with the same index at different points do not share their noise (they
are not paired): compare grid points by their statistics over runs. With ``run.paired = true``
the call's ``common_draws`` gives run ``j`` of every point the same draws (noise, minibatches,
probes: common random numbers); grid points of a block then compare run by run, and a
difference between two points has the variance of a paired difference. Pairing holds within a
block (one rule and scaling); blocks are separate calls. A point's draws are then those of run
``j`` of the point alone (a single-point call with ``runs`` runs and the same seed), with one
exception: in global scaling a rule with Hutchinson probes draws them only at steps where some
run of the call syncs, so in a grid over ``sync_every`` the probes of the point alone fall on
other steps (the pairing inside the grid is unaffected).

Finished blocks are kept in a hidden work folder beside the result folder, so an interrupted
experiment resumes where it stopped (``resume=True``); the result folder appears only when every
block is done. An error (not an interruption) before any block finished removes the work folder
again: it leaves nothing.

The result folder holds ``config.toml`` (the resolved config), ``history.csv`` (one row per run
and recorded step: the grid point, the run's index within its point, ``0 … runs − 1``, not a
seed of its own, the step and the :data:`HISTORY_KEYS`), ``drift.csv`` (one row per run and sync
at which it synchronised; only the header when no run did), ``summary.json`` and ``plot.png``. A
run that diverged has rows in both CSV files only for the steps before its ``diverged_at`` (no
NaN rows); ``summary.json`` gives, per grid point, each run's ``status`` (``"ok"`` or
``"diverged"``) and ``diverged_at`` (the first recorded step at which the divergence was
detected, ``null`` if none) and the number of diverged runs. In a paired experiment with
several grid points, each point of a block also has ``paired_vs_best``: its final ``‖x̄ − x*‖²``
minus that of the block's best point (lowest mean), run ``j`` against run ``j``, as a mean, a
standard error and the number of pairs without a diverged run.
"""
from __future__ import annotations

import csv
import hashlib
import itertools
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import applicable, build_problem
from .rules import make
from .simulator import HISTORY_KEYS, SimulationResult, simulate

__all__ = ["Block", "expand", "run_experiment", "write_results"]

GRID_COLUMNS = ("gamma", "sync_every", "beta", "e")


@dataclass(frozen=True)
class Block:
    """One batched ``simulate`` call: a rule and a scaling over grid points × runs."""

    rule: str
    scaling: str
    points: list  # list of dicts {gamma, sync_every, beta, e}, one per grid point
    runs: int

    @property
    def key(self) -> str:
        """``"<rule>-<scaling>"``: the name of the block in the result files."""
        return f"{self.rule}-{self.scaling}"

    @property
    def n_runs(self) -> int:
        """All runs of the block: grid points × runs per point."""
        return len(self.points) * self.runs

    def runs_of(self, point: int) -> slice:
        """The block's runs of grid point number ``point`` (its ``runs`` seeds)."""
        return slice(point * self.runs, (point + 1) * self.runs)

    def per_run(self, values, rows: int = 1) -> np.ndarray:
        """A result array of this block as ``(rows, n_runs)``, also for 0 rows or an unbatched call."""
        return np.asarray(values).reshape(rows, self.n_runs)

    def column(self, name: str) -> np.ndarray:
        """Per-run values of a grid column (grid point major, seed minor)."""
        return np.repeat(np.array([p[name] for p in self.points]), self.runs)


def _as_list(v):
    return v if isinstance(v, list) else [v]


def expand(cfg: dict) -> list[Block]:
    """The blocks of a resolved config (identity ignores ``beta`` and ``e``)."""
    blocks = []
    for name in _as_list(cfg["rule"]["name"]):
        axes = {
            "gamma": _as_list(cfg["run"]["gamma"]),
            "sync_every": _as_list(cfg["run"]["sync_every"]),
            "beta": _as_list(cfg["rule"]["beta"]) if name != "identity" else [float("nan")],
            "e": _as_list(cfg["rule"]["e"]) if name != "identity" else [float("nan")],
        }
        points = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
        for scaling in cfg["run"]["scaling"]:
            blocks.append(Block(name, scaling, points, cfg["run"]["runs"]))
    return blocks


def _rule_of(block: Block):
    if block.rule == "identity":
        return make("identity")
    return make(block.rule, beta=block.column("beta"), e=block.column("e"))


def _run_block(problem, block: Block, cfg: dict, progress: bool) -> SimulationResult:
    r = cfg["run"]
    batched = len(block.points) > 1 or block.runs > 1
    paired = np.tile(np.arange(block.runs), len(block.points)) if r["paired"] and batched else None
    return simulate(problem, _rule_of(block), gamma=block.column("gamma"), steps=r["steps"],
                    sync_every=block.column("sync_every").astype(np.int64), scaling=block.scaling,
                    runs=len(block.points) * block.runs if batched else None, seed=r["seed"],
                    common_draws=paired, probes=cfg["rule"]["probes"],
                    record_every=r["record_every"] or None, dtype=r["dtype"], backend=r["backend"],
                    progress=progress)


def config_digest(cfg: dict) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:16]


def run_experiment(cfg: dict, out: str | Path, *, resume: bool = False, progress: bool = True):
    """Run every block of ``cfg`` and write the result folder ``out`` atomically.

    Returns ``{block key: SimulationResult}``. With ``resume``, blocks finished by an earlier,
    interrupted call of the same config are loaded instead of run again.
    """
    from .cli._common import UserError, atomic_dir, atomic_write, remove_stale_work, work_folder
    from .cli._common import progress as bar_of

    out = Path(out)
    work = work_folder(out)
    digest = config_digest(cfg)
    if work.exists() and resume:
        stamp = work / "config.sha"
        if not (stamp.exists() and stamp.read_text() == digest):
            raise UserError(f"cannot resume: {work} holds an unfinished run of a different config")
    elif resume and not out.exists():
        raise UserError(f"nothing to resume: no unfinished run at {work}")

    problem = build_problem(cfg)
    blocks = expand(cfg)
    if not resume:
        remove_stale_work(work)
    created = not work.exists()
    work.mkdir(parents=True, exist_ok=True)
    with atomic_write(work / "config.sha") as fh:  # a new file at each start: the CLI tells its runs apart by it
        fh.write(digest)
    results = {}
    bar = bar_of(len(blocks), "blocks", enabled=progress and len(blocks) > 1)
    try:
        for block in blocks:
            saved = work / f"{block.key}.npz"
            if resume and saved.exists():
                results[block.key] = SimulationResult.load(saved, problem=problem, rule=_rule_of(block))
            else:
                results[block.key] = res = _run_block(problem, block, cfg, progress)
                res.save(saved)
            bar.update(1)
    except Exception:
        if created and not any(work.glob("*.npz")):  # an error, not an interruption, with nothing to keep
            shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        bar.close()
    with atomic_dir(out) as tmp:
        write_results(tmp, cfg, blocks, results)
    shutil.rmtree(work, ignore_errors=True)
    return results


def write_results(folder: Path, cfg: dict, blocks: list[Block], results: dict) -> None:
    """``config.toml``, ``history.csv``, ``drift.csv``, ``summary.json`` and ``plot.png``."""
    import tomli_w

    from .cli._common import write_json
    from .plotting import plot_scalings

    (folder / "config.toml").write_text(tomli_w.dumps(applicable(cfg)))
    with open(folder / "history.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rule", "scaling", *GRID_COLUMNS, "run", "step", *HISTORY_KEYS])
        for block in blocks:
            res = results[block.key]
            hist = [block.per_run(res.history[k], len(res.steps)) for k in HISTORY_KEYS]
            grid = [block.column(c) for c in GRID_COLUMNS]
            diverged_at = block.per_run(res.diverged_at)[0]
            for r in range(block.n_runs):
                head = [block.rule, block.scaling, *(_fmt(g[r]) for g in grid), r % block.runs]
                for i, t in enumerate(res.steps):
                    if 0 <= diverged_at[r] <= t:  # a diverged run's rows stop at its divergence
                        break
                    w.writerow([*head, int(t), *(repr(float(h[i, r])) for h in hist)])
    with open(folder / "drift.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["rule", "scaling", *GRID_COLUMNS, "run", "sync_step", "drift", "drift_min"])
        for block in blocks:
            res = results[block.key]
            hi = block.per_run(res.drift, len(res.sync_steps))
            lo = block.per_run(res.drift_min, len(res.sync_steps))
            grid = [block.column(c) for c in GRID_COLUMNS]
            diverged_at = block.per_run(res.diverged_at)[0]
            for r in range(block.n_runs):
                head = [block.rule, block.scaling, *(_fmt(g[r]) for g in grid), r % block.runs]
                for i, t in enumerate(res.sync_steps):
                    if 0 <= diverged_at[r] <= t:  # as history.csv: the sync at the divergence step is already past it
                        break
                    if not np.isnan(hi[i, r]):  # NaN: the run did not sync at t (another point's H)
                        w.writerow([*head, int(t), repr(float(hi[i, r])), repr(float(lo[i, r]))])
    write_json(folder / "summary.json", {b.key: _summary(b, results[b.key]) for b in blocks})
    p = cfg["problem"]
    curves = {}
    for b in blocks:
        for i, point in enumerate(b.points):
            grid = _point_label(point) if len(b.points) > 1 else ""
            curves[f"{b.rule} {b.scaling} {grid}".strip()] = (results[b.key], b.runs_of(i))
    title = f"{p['kind']}, M = {p['clients']}, T = {cfg['run']['steps']}"
    if len(curves) > 12:  # too many to tell apart: each block's best grid point (pooling would mix γ, H, β)
        curves = {}
        for b in blocks:
            i = _best_point(b, results[b.key])
            curves[f"{b.rule} {b.scaling}: {_point_label(b.points[i])}"] = (results[b.key], b.runs_of(i))
        title += "; per rule and scaling the grid point with the lowest final mean (summary.json has all)"
    plot_scalings(curves, folder / "plot.png", title=title)


def _best_point(block: Block, res: SimulationResult) -> int:
    """The grid point of ``block`` whose runs end with the lowest mean ‖x̄ − x*‖² (a point with a
    diverged run, NaN at the end, counts as infinite: never preferred to one without)."""
    last = block.per_run(res.history["dist_sq"], len(res.steps))[-1]
    last = np.where(np.isnan(last), np.inf, last)
    return int(np.argmin([np.mean(last[block.runs_of(i)]) for i in range(len(block.points))]))


def _point_label(point: dict) -> str:
    """``gamma=0.1 sync_every=4 ...``: a grid point's values (identity's NaN β and e left out)."""
    return " ".join(f"{k}={v:g}" for k, v in point.items() if v == v)


def _summary(block: Block, res: SimulationResult) -> dict:
    """Per grid point: mean ± std over runs of the final values, and the runs' statuses; in a
    paired block of several points also each point's run-by-run difference from the best one."""
    status = block.per_run(res.status)[0]
    diverged_at = block.per_run(res.diverged_at)[0]
    paired = res.params.get("common_draws") is not None and len(block.points) > 1
    best = _best_point(block, res) if paired else None
    last = block.per_run(res.history["dist_sq"], len(res.steps))[-1]
    points = []
    for i, point in enumerate(block.points):
        sl = block.runs_of(i)
        final = {}
        for k in HISTORY_KEYS:
            v = block.per_run(res.history[k], len(res.steps))[-1, sl]
            final[k] = {"mean": _nanstat(np.nanmean, v), "std": _nanstat(np.nanstd, v)}
        points.append({**{k: _fmt(v) for k, v in point.items()}, "final": final,
                       "diverged": int(np.sum(status[sl] == "diverged")), "runs": block.runs,
                       "status": [str(s) for s in status[sl]],
                       "diverged_at": [int(t) if t >= 0 else None for t in diverged_at[sl]]})
        if paired:
            points[-1]["paired_vs_best"] = _paired_difference(last[sl], last[block.runs_of(best)], best, i)
    return {"rule": block.rule, "scaling": block.scaling, "elapsed_s": res.elapsed,
            "constants": {k: np.asarray(v).tolist() for k, v in res.problem.constants.as_dict().items()
                          if k != "x_star"},
            "points": points}


def _paired_difference(final, best_final, best: int, point: int) -> dict:
    """Final ``‖x̄ − x*‖²`` of a point minus that of the best point, run ``j`` against run ``j``
    (both drew the same noise): mean, its standard error (``std/√n``, ``ddof = 1``) and the
    number ``n`` of pairs in which neither run diverged."""
    diff = final - best_final
    ok = np.isfinite(diff)
    n = int(np.sum(ok))
    mean = float(np.mean(diff[ok])) if n else None
    se = float(np.std(diff[ok], ddof=1) / np.sqrt(n)) if n > 1 else None
    return {"best_point": best, "dist_sq_diff_mean": 0.0 if point == best else mean,
            "dist_sq_diff_se": 0.0 if point == best else se, "pairs": n}


def _nanstat(fn, v):
    v = np.asarray(v, dtype=np.float64)
    return None if np.all(np.isnan(v)) else float(fn(v))


def _fmt(v):
    v = v.item() if isinstance(v, np.generic) else v
    return None if isinstance(v, float) and np.isnan(v) else v
