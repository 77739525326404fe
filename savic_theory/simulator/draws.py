"""Common random numbers: runs that share every random draw of a ``simulate`` call.

Every draw of the simulator (additive noise, minibatch rows, Hutchinson probes) is one array
whose leading axis is the runs. :class:`SharedDraws` wraps the call's generator so that each
such array is drawn for the *groups* of runs only and every run receives its group's row. Runs
of one group then see the same noise, minibatches and probes at every step, whatever their step
size, ``β``, ``H`` or rule: differences between them are paired, and their variance is that of
the difference, not the sum of two variances.
"""
from __future__ import annotations

import numpy as np

__all__ = ["SharedDraws", "draw_groups"]


def draw_groups(labels) -> np.ndarray:
    """``labels`` (one integer per run) as group indices ``0 … G − 1`` in the order of the sorted
    labels; errors name ``common_draws`` (its length is checked with the other run axes)."""
    a = np.asarray(labels)
    if a.ndim == 1 and a.size == 0:
        raise ValueError("common_draws must not be empty (one group label per run)")
    if a.dtype == np.bool_ or a.dtype.kind not in "iu" or a.ndim != 1:
        raise TypeError("common_draws must be a 1-D array of integers (one group label per run), "
                        f"got {labels!r}")
    return np.unique(a, return_inverse=True)[1].reshape(-1)


class SharedDraws:
    """A ``numpy.random.Generator`` whose run-axis draws are shared within groups of runs.

    ``groups[r]`` is run ``r``'s group (``0 … G − 1``). A draw of shape ``(runs, …)`` takes
    ``(G, …)`` numbers from the wrapped generator and repeats each group's row for its runs: the
    stream advances as for ``G`` runs. With every run its own group in order (``groups =
    arange(runs)``) the draws are exactly those of the unwrapped generator.
    """

    def __init__(self, rng: np.random.Generator, groups: np.ndarray):
        self.rng = rng
        self.groups = np.asarray(groups, dtype=np.intp)
        self.n_groups = int(self.groups.max()) + 1
        #: every run its own group, in order: the draws are the generator's, passed through
        self.one_per_run = bool(np.array_equal(self.groups, np.arange(self.groups.size)))

    def __getattr__(self, name):
        # a Problem's oracle may draw only what can be shared by runs: say so instead of an AttributeError
        if name.startswith("_"):
            raise AttributeError(name)
        raise TypeError(f"common_draws shares the draws standard_normal and integers; this problem's "
                        f"oracle calls Generator.{name}, which has no shared form")

    def _shape(self, size) -> tuple:
        size = (size,) if np.ndim(size) == 0 else tuple(size)
        if not size or size[0] != self.groups.size:
            raise ValueError(f"a shared draw must have the runs ({self.groups.size}) as its leading axis, "
                             f"got shape {size}")
        return (self.n_groups, *size[1:])

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        if self.one_per_run:
            self._shape(size if out is None else out.shape)
            return self.rng.standard_normal(size=size, dtype=dtype, out=out)
        if out is not None:
            rows = self.rng.standard_normal(size=self._shape(out.shape), dtype=dtype)
            np.take(rows, self.groups, axis=0, out=out)
            return out
        return self.rng.standard_normal(size=self._shape(size), dtype=dtype)[self.groups]

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        if self.one_per_run:
            self._shape(size)
            return self.rng.integers(low, high, size=size, dtype=dtype, endpoint=endpoint)
        return self.rng.integers(low, high, size=self._shape(size), dtype=dtype, endpoint=endpoint)[self.groups]
