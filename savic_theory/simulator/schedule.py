"""Synchronisation moments: every ``H`` steps (``t_p = pH``), or an explicit list, per run."""
from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np

from .._validation import check_int

__all__ = ["SyncSchedule"]

MAX_STEPS = 2**62


class SyncSchedule:
    """When the clients average: ``is_sync(t+1)`` gives a boolean per run.

    Parameters
    ----------
    steps : int
        Total number of local steps ``T``.
    sync_every : int or array of ints (runs,), optional
        Period ``H ≥ 1``; step ``t+1`` is a sync moment when ``(t+1) % H == 0``. Any finite
        integer is accepted: a period longer than ``steps`` means the run never synchronises.
    sync_at : sequence of ints, or a sequence of such sequences (one per run), optional
        Explicit sync moments in ``[1, T]``, strictly increasing. Overrides ``sync_every``.
    """

    def __init__(self, steps: int, sync_every=1, sync_at=None):
        steps = check_int("steps", steps, 1)
        if steps > MAX_STEPS:  # step counters and tables are int64
            raise ValueError(f"steps must be at most 2**62, got {steps}")
        self.steps = steps
        self._table = None
        self._period = None
        self._any = None  # sync moments of any run (explicit schedules), built on first use
        if sync_at is not None:
            lists = _as_lists(sync_at)
            for lst in lists:
                if lst.size and (lst[0] < 1 or lst[-1] > steps or np.any(np.diff(lst) <= 0)):
                    raise ValueError(f"sync_at must be strictly increasing integers in [1, steps={steps}]")
            self._table = np.zeros((steps + 1, len(lists)), dtype=bool)
            for r, lst in enumerate(lists):
                self._table[lst, r] = True
            self.runs = len(lists) if _is_nested(sync_at) else None
            gaps = [np.diff(np.concatenate(([0], lst, [steps]))) for lst in lists]
            self.max_gap = np.array([int(g.max()) if g.size else steps for g in gaps])
        else:
            arr = _periods(sync_every, steps)
            if np.any(arr < 1):
                raise ValueError(f"sync_every must be >= 1, got {sync_every}")
            self._period = arr
            self.runs = int(arr.shape[0]) if arr.ndim == 1 else None
            self.max_gap = np.minimum(arr, steps)

    def bind(self, runs: int) -> "SyncSchedule":
        """Fix the run count (broadcasting a shared schedule)."""
        if self.runs is not None and self.runs != runs:
            raise ValueError(f"the sync schedule has {self.runs} runs, expected {runs}")
        if self._period is not None:
            self._period = np.broadcast_to(self._period, (runs,))
        else:
            self._table = np.broadcast_to(self._table, (self.steps + 1, runs))
        self.max_gap = np.broadcast_to(self.max_gap, (runs,))
        return self

    def is_sync(self, t1: int) -> np.ndarray:
        """Boolean array (runs,): whether moment ``t1`` (after ``t1`` steps) is a sync."""
        if self._period is not None:
            return t1 % self._period == 0
        return self._table[t1]

    def next_sync(self, t: int) -> int:
        """The first sync moment after ``t`` of any run (``steps + 1`` when there is none)."""
        if self._period is not None:
            return int(np.min((t // self._period + 1) * self._period))
        if self._any is None:
            self._any = np.flatnonzero(self._table.any(axis=1))
        i = np.searchsorted(self._any, t, side="right")
        return int(self._any[i]) if i < self._any.size else self.steps + 1

    @property
    def H(self) -> np.ndarray:
        """Largest gap between consecutive sync moments (the theory's ``H``), per run."""
        return self.max_gap


def _periods(sync_every, steps: int) -> np.ndarray:
    """``sync_every`` as int64 periods (a scalar or one per run), not yet checked for ``≥ 1``.

    Integers of any size are accepted (integral floats too): a period that does not fit int64
    means, like any period longer than the run, that the run never synchronises, so it becomes
    ``steps + 1`` (and a hugely negative one ``0``, rejected by the caller); other values are
    kept as given. TypeError for non-integers, ValueError for NaN/inf, several axes or no runs.
    """
    try:
        arr = np.asarray(sync_every)
    except ValueError as exc:  # ragged nesting
        raise ValueError(f"sync_every must be a scalar or a 1-D array over runs, got {sync_every!r}") from exc
    if arr.dtype == object:  # Python ints beyond int64 (or anything else numpy cannot type)
        flat = arr.ravel().tolist()
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in flat):
            raise TypeError(f"sync_every must be an integer or an array of integers, got {sync_every!r}")
        hi, lo = np.iinfo(np.int64).max, np.iinfo(np.int64).min
        arr = np.array([steps + 1 if v > hi else 0 if v < lo else v for v in flat],
                       dtype=np.int64).reshape(arr.shape)
    elif arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"sync_every must be finite, got {sync_every!r}")
        if not np.all(arr == np.round(arr)):
            raise TypeError(f"sync_every must be an integer or an array of integers, got {sync_every!r}")
        big = arr >= 2.0**63  # the smallest float64 beyond int64
        arr = np.where(big, steps + 1, np.where(arr < -(2.0**63), 0, arr)).astype(np.int64)
    elif arr.dtype.kind == "u":
        arr = np.where(arr > np.iinfo(np.int64).max, steps + 1, arr).astype(np.int64)
    elif arr.dtype.kind != "i":
        raise TypeError(f"sync_every must be an integer or an array of integers, got {sync_every!r}")
    arr = arr.astype(np.int64)
    if arr.ndim > 1:
        raise ValueError(f"sync_every must be a scalar or a 1-D array over runs, got shape {arr.shape}")
    if arr.ndim == 1 and arr.size == 0:
        raise ValueError(f"sync_every must not be empty (one period per run), got shape {arr.shape}")
    return arr


def _is_nested(sync_at) -> bool:
    return len(sync_at) > 0 and not isinstance(sync_at[0], numbers.Integral) and np.ndim(sync_at[0]) == 1


def _as_lists(sync_at):
    sequence = sync_at.ndim > 0 if isinstance(sync_at, np.ndarray) else (
        isinstance(sync_at, Sequence) and not isinstance(sync_at, (str, bytes)))
    if not sequence:
        raise TypeError("sync_at must be a sequence of step numbers (or one such sequence per run), "
                        f"got {sync_at!r}")
    items = sync_at if _is_nested(sync_at) else [sync_at]
    out = []
    for it in items:
        arr = np.asarray(it)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise TypeError("sync_at must be a sequence of integers (or one such sequence per run)")
        out.append(arr.astype(np.int64))
    return out
