"""Figures of network experiments against communication rounds (matplotlib, Agg, PNG).

Columns are the splits (identical ``iid`` data next to heterogeneous ``dirichlet``/``shards``
data), lines the methods side by side: the mean over seeds, with a min..max band.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

__all__ = ["plot_rounds", "plot_scaling", "curves"]

_TITLES = {"iid": "identical data (iid)", "dirichlet": "heterogeneous (Dirichlet)",
           "shards": "heterogeneous (label shards)"}
_LABELS = {"train_loss": "train loss of x̄", "test_acc": "test accuracy", "test_loss": "test loss",
           "batch_loss": "minibatch loss (round mean)", "Gamma_hat": "Γ̂ = max D̂", "alpha_hat": "α̂ = min D̂",
           "drift": "drift max D̂⁺/D̂"}


def curves(histories: dict, split: str, method: str, metric: str):
    """``(rounds, values (n_rounds, n_seeds))`` of one method on one split (NaN-padded)."""
    runs = [p["history"] for (s, m, _), p in histories.items() if s == split and m == method]
    if not runs:
        return np.zeros(0), np.zeros((0, 0))
    n = max(len(h) for h in runs)
    vals = np.full((n, len(runs)), np.nan)
    rounds = np.arange(n)
    for j, h in enumerate(runs):
        for i, rec in enumerate(h):
            v = rec.get(metric)
            vals[i, j] = np.nan if v is None else v
            rounds[i] = rec["round"]
    return rounds, vals


def _grid(histories, path, splits, methods, metrics, logy):
    from ..cli._common import atomic_write

    fig = _figure(histories, splits, methods, metrics, logy)  # selects the Agg backend first
    import matplotlib.pyplot as plt

    path = Path(path)
    with atomic_write(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)
    return path


def _figure(histories, splits, methods, metrics, logy):
    """The panels (rows: metrics, columns: splits) and one legend entry per method drawn anywhere."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(metrics), len(splits), figsize=(4.6 * len(splits), 3.4 * len(metrics)),
                             squeeze=False, constrained_layout=True)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for col, split in enumerate(splits):
        for row, metric in enumerate(metrics):
            ax = axes[row][col]
            for method in methods:
                rounds, vals = curves(histories, split, method, metric)
                if vals.size == 0 or not np.isfinite(vals).any():
                    continue
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows (round 0, divergence)
                    mid, lo, hi = np.nanmean(vals, 1), np.nanmin(vals, 1), np.nanmax(vals, 1)
                c = colors[_family(method, methods) % len(colors)]
                style = "--" if method.endswith("-local") else "-"
                ax.plot(rounds, mid, style, color=c, label=method)
                if vals.shape[1] > 1:
                    ax.fill_between(rounds, lo, hi, color=c, alpha=0.15, linewidth=0)
            if metric in logy:
                ax.set_yscale("log")
            ax.set_xlabel("communication round")
            ax.set_ylabel(_LABELS.get(metric, metric))
            if row == 0:
                ax.set_title(_TITLES.get(split, split))
            ax.grid(alpha=0.3)
    # every panel, not only the first: a method with no finite value in one split or metric
    # still has its line elsewhere (methods in display order, each once)
    drawn = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            drawn.setdefault(label, handle)
    labels = [m for m in methods if m in drawn]
    if labels:
        fig.legend([drawn[m] for m in labels], labels, loc="outside lower center", ncol=min(len(labels), 7),
                   fontsize="small")
    return fig


def _family(method: str, methods) -> int:
    """One colour per rule: ``adam-global`` and ``adam-local`` share it (solid vs dashed)."""
    families = list(dict.fromkeys(m.rsplit("-", 1)[0] for m in methods))
    return families.index(method.rsplit("-", 1)[0])


def plot_rounds(histories: dict, path, splits, methods) -> Path:
    """Train loss of ``x̄`` and test accuracy against rounds, one column per split.

    Parameters
    ----------
    histories : mapping ``(split, method, seed) -> {"history": [record, ...], ...}``
    path : where to write the PNG (atomically)
    splits, methods : sequences of names, in display order
    """
    return _grid(histories, path, splits, methods, ("train_loss", "test_acc"), logy=("train_loss",))


def plot_scaling(histories: dict, path, splits, methods) -> Path:
    """``Γ̂``, ``α̂`` and the drift of ``D̂`` against rounds, one column per split."""
    return _grid(histories, path, splits, methods, ("Gamma_hat", "alpha_hat", "drift"),
                 logy=("Gamma_hat", "alpha_hat"))
