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


def plot_scalings(results: dict, path: str | Path, title: str = "") -> Path:
    """Distance to the optimum and the empirical ``α̂``, ``Γ̂`` against steps, one colour per
    scaling variant (mean over runs, band = min..max).

    Parameters
    ----------
    results : mapping ``scaling name -> SimulationResult``
    path : where to write the PNG (written atomically)
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .cli._common import atomic_write

    colors = {"global": "tab:blue", "local": "tab:orange"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for name, res in results.items():
        c = colors.get(name, None)
        dist = np.maximum(res.history["dist_sq"], np.finfo(float).tiny)
        _band(ax1, res.steps, dist, f"{name} scaling", c)
        _band(ax2, res.steps, res.history["Gamma_hat"], f"Γ̂ {name}", c)
        vals = np.asarray(res.history["alpha_hat"]).reshape(len(res.steps), -1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            ax2.plot(res.steps, np.nanmean(vals, axis=1), color=c, linestyle="--", label=f"α̂ {name}")
    ax1.set_xlabel("step t")
    ax1.set_ylabel("‖x̄ − x*‖²")
    ax1.legend()
    ax2.set_xlabel("step t")
    ax2.set_ylabel("scaling D̂: min (α̂, dashed) and max (Γ̂)")
    ax2.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return path
