"""Figures of simulation results (matplotlib, Agg backend, PNG)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

__all__ = ["plot_scalings"]


def _band(ax, steps, values, label, color, log=True):
    vals = np.asarray(values, dtype=np.float64).reshape(len(steps), -1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns after a divergence
        mid = np.nanmean(vals, axis=1)
        lo, hi = np.nanmin(vals, axis=1), np.nanmax(vals, axis=1)
    ax.plot(steps, mid, color=color, label=label)
    if vals.shape[1] > 1:
        ax.fill_between(steps, lo, hi, color=color, alpha=0.2, linewidth=0)
    if log:
        ax.set_yscale("log")


def plot_scalings(curves: dict, path: str | Path, title: str = "") -> Path:
    """Distance to the optimum and the empirical ``α̂``, ``Γ̂`` against steps.

    Parameters
    ----------
    curves : mapping ``label -> SimulationResult`` or ``label -> (SimulationResult, runs)``
        where ``runs`` selects columns of the run axis (a slice or index array); each label is
        drawn as the mean over its runs with a min..max band.
    path : where to write the PNG (written atomically)
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .cli._common import atomic_write

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (label, item) in enumerate(curves.items()):
        res, cols = item if isinstance(item, tuple) else (item, slice(None))
        c = colors[i % len(colors)]

        def pick(key):
            return np.asarray(res.history[key]).reshape(len(res.steps), -1)[:, cols]

        _band(ax1, res.steps, np.maximum(pick("dist_sq"), np.finfo(float).tiny), label, c)
        _band(ax2, res.steps, pick("Gamma_hat"), f"Γ̂ {label}", c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN after a divergence
            ax2.plot(res.steps, np.nanmean(pick("alpha_hat"), axis=1), color=c, linestyle="--",
                     label=f"α̂ {label}")
    ax1.set_xlabel("step t")
    ax1.set_ylabel("‖x̄ − x*‖²  (mean over runs, band: min..max)")
    ax2.set_xlabel("step t")
    ax2.set_ylabel("D̂: max Γ̂ (solid), min α̂ (dashed)")
    small = len(curves) > 4
    ax1.legend(fontsize=7 if small else 9)
    if not small:
        ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return path
