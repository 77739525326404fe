r"""Confidence limits for expectations estimated from independent runs.

The observed ``E X`` at each recorded step is the mean over ``n`` independent seeds; its
one-sided upper confidence limit at level ``1 − a`` is ``mean + t·s/√n`` with ``s`` the sample
standard deviation and ``t`` the Student-t quantile with ``n − 1`` degrees of freedom (exact for
Gaussian per-run values; the normal quantile ``z`` would understate the far tails that
Bonferroni corrections reach: with 32 seeds a one-sided 1e-6 is ``z = 4.75`` but ``t = 5.83``).
Levels are passed around as normal quantiles ``z`` (``z_of``) and turned into ``t`` where ``n``
is known (:func:`t_quantile`). A bound is declared to hold when the upper limit is below it at
every step, so noise can only make a check fail, never pass.

Example
-------
>>> import numpy as np
>>> from savic_theory.verify.stats import upper_limit
>>> x = np.array([[1.0, 1.0, 1.0, 1.0]])
>>> upper_limit(x, level=0.99).tolist()     # no spread: the mean itself
[1.0]
"""
from __future__ import annotations

import numpy as np
from scipy.stats import norm
from scipy.stats import t as student_t

__all__ = ["z_of", "t_quantile", "mean_and_se", "upper_limit", "lower_limit"]


def z_of(level: float) -> float:
    """One-sided standard normal quantile ``z`` with ``P(N(0,1) ≤ z) = level``."""
    if not (isinstance(level, (int, float)) and 0.5 <= level < 1.0):
        raise ValueError(f"level must be a confidence level in [0.5, 1), got {level!r}")
    return float(norm.ppf(level))


def t_quantile(z: float, n: int | None) -> float:
    """The Student-t quantile with ``n − 1`` degrees of freedom at the one-sided level of the
    normal quantile ``z`` (``P(T > t) = P(N(0,1) > z)``); ``z`` itself when ``n`` is ``None``.
    With one run there is no standard error (it is 0) and ``t`` does not matter: ``z``."""
    if n is None or n < 2:
        return float(z)
    return float(student_t.isf(norm.sf(z), int(n) - 1))


def mean_and_se(x: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over ``axis`` (runs); NaN entries (diverged runs) propagate."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[axis]
    mean = np.mean(x, axis=axis)
    se = np.std(x, axis=axis, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(mean)
    return mean, se


def upper_limit(x: np.ndarray, level: float = 0.99, axis: int = -1) -> np.ndarray:
    """``mean + t·se`` over ``axis`` (``t``: :func:`t_quantile` of the level, ``n`` the runs)."""
    mean, se = mean_and_se(x, axis)
    return mean + t_quantile(z_of(level), np.shape(x)[axis]) * se


def lower_limit(x: np.ndarray, level: float = 0.99, axis: int = -1) -> np.ndarray:
    """``mean − t·se`` over ``axis`` (as :func:`upper_limit`)."""
    mean, se = mean_and_se(x, axis)
    return mean - t_quantile(z_of(level), np.shape(x)[axis]) * se
