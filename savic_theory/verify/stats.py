r"""Confidence limits for expectations estimated from independent runs.

The observed ``E X`` at each recorded step is the mean over ``n`` independent seeds; its
one-sided upper confidence limit at level ``1 − a`` is ``mean + z·s/√n`` with ``z`` the
standard normal quantile and ``s`` the sample standard deviation (normal approximation; ``n``
is at least 32 in the suites). A bound is declared to hold when the upper limit is below it at
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

__all__ = ["z_of", "mean_and_se", "upper_limit", "lower_limit"]


def z_of(level: float) -> float:
    """One-sided standard normal quantile ``z`` with ``P(N(0,1) ≤ z) = level``."""
    if not (isinstance(level, (int, float)) and 0.5 <= level < 1.0):
        raise ValueError(f"level must be a confidence level in [0.5, 1), got {level!r}")
    return float(norm.ppf(level))


def mean_and_se(x: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard error over ``axis`` (runs); NaN entries (diverged runs) propagate."""
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[axis]
    mean = np.mean(x, axis=axis)
    se = np.std(x, axis=axis, ddof=1) / np.sqrt(n) if n > 1 else np.zeros_like(mean)
    return mean, se


def upper_limit(x: np.ndarray, level: float = 0.99, axis: int = -1) -> np.ndarray:
    """``mean + z·se`` over ``axis``."""
    mean, se = mean_and_se(x, axis)
    return mean + z_of(level) * se


def lower_limit(x: np.ndarray, level: float = 0.99, axis: int = -1) -> np.ndarray:
    """``mean − z·se`` over ``axis``."""
    mean, se = mean_and_se(x, axis)
    return mean - z_of(level) * se
