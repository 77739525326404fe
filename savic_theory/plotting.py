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
    _line(ax, steps, mid, color=color, label=label)
    if vals.shape[1] > 1:
        ax.fill_between(steps, lo, hi, color=color, alpha=0.2, linewidth=0)
    if log:
        ax.set_yscale("log")


def _line(ax, steps, values, **kw):
    """``ax.plot``, with markers when fewer than two values are finite: a line through a single
    point (runs that all diverged at their first records) would draw nothing."""
    if np.count_nonzero(np.isfinite(values)) < 2:
        kw.setdefault("marker", "o")
    ax.plot(steps, values, **kw)


def _mark_divergence(axes, res, cols, color) -> None:
    """A dotted vertical line at the step by which every run of ``cols`` had diverged, if all did."""
    at = np.asarray(res.diverged_at).reshape(-1)[cols]
    if at.size == 0 or not np.all(at >= 0):
        return
    t = int(at.max())
    text = f"all runs diverged at t = {t}" if at.min() == t else f"all runs diverged by t = {t}"
    for ax in axes:
        ax.axvline(t, color=color, linestyle=":", linewidth=1)
    axes[0].text(t, 0.98, f" {text}", color=color, fontsize=7, rotation=90, va="top", ha="right",
                 transform=axes[0].get_xaxis_transform())


def plot_scalings(curves: dict, path: str | Path, title: str = "") -> Path:
    """Distance to the optimum and the empirical ``α̂``, ``Γ̂`` against steps.

    Parameters
    ----------
    curves : mapping ``label -> SimulationResult`` or ``label -> (SimulationResult, runs)``
        where ``runs`` selects columns of the run axis (a slice or index array); each label is
        drawn as the mean over its runs with a min..max band.
    path : where to write the PNG (written atomically)
    title : the figure's title

    The x-axes span the recorded steps ``0 … T`` even where runs diverged early; a label whose
    runs all diverged gets a dotted line at the step by which they had.
    """
    from .cli._common import atomic_write

    fig = _figure(curves, title)
    import matplotlib.pyplot as plt  # after _figure chose the Agg backend

    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
    return path


def _figure(curves: dict, title: str = ""):
    """The figure of :func:`plot_scalings` (left open: the caller closes it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    first, last = np.inf, -np.inf
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
            alpha = np.nanmean(pick("alpha_hat"), axis=1)
        _line(ax2, res.steps, alpha, color=c, linestyle="--", label=f"α̂ {label}")
        _mark_divergence((ax1, ax2), res, cols, c)
        if len(res.steps):  # T from params: the records end early when every run diverged
            first = min(first, res.steps[0])
            last = max(last, res.steps[-1], (res.params or {}).get("steps", res.steps[-1]))
    ax1.set_xlabel("step t")
    ax1.set_ylabel("‖x̄ − x*‖²  (mean over runs, band: min..max)")
    ax2.set_xlabel("step t")
    ax2.set_ylabel("D̂: max Γ̂ (solid), min α̂ (dashed)")
    small = len(curves) > 4
    ax1.legend(fontsize=7 if small else 9)
    if not small:
        ax2.legend(fontsize=8)
    if first < last:  # autoscaling sees only finite points: after early divergences, a sliver around 0
        pad = 0.02 * (last - first)  # room for a marker at either end
        for ax in (ax1, ax2):
            ax.set_xlim(first - pad, last + pad)
    if title:
        fig.suptitle(title)
    return fig
