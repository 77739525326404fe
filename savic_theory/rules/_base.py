"""The common shape of a scaling rule and its β schedule.

A scaling rule builds the diagonal preconditioner ``D̂`` of SAVIC from a per-client statistic
``S`` (``g ⊙ g`` or a Hutchinson probe ``z ⊙ (∇²f z)``). Following optax, a rule is data plus
pure functions: ``init`` turns the first statistic into a state, ``update`` folds one more
statistic into it, ``diagonal`` reads the unclipped diagonal off the state. The simulator
applies ``clip(D) = max(e, |D|)``, so every rule satisfies ``D̂ ≥ e`` (``α = e``).

All functions take the array namespace ``xp`` explicitly and use only array-API operations,
so the same rule code runs on NumPy, CuPy and ``array_api_strict``. Arrays have shape
``(runs, clients, d)``; in global scaling the client axis has length 1.
"""
from __future__ import annotations

import enum
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

__all__ = ["Statistic", "BetaSchedule", "ScalingRule", "clip", "state_type"]


class Statistic(enum.Enum):
    """Which per-client statistic a rule consumes."""

    NONE = "none"
    GRAD_SQUARED = "grad_squared"  # g ⊙ g, same sample as the step's gradient
    HESSIAN_PROBE = "hessian_probe"  # z ⊙ (∇²f_m(x, ξ) z), z Rademacher
    PER_RUN = "per_run"  # a rule over runs whose runs use different statistics (rules.per_run)


class BetaSchedule:
    """β as a constant, one constant per run, or a schedule ``k ↦ β_k``.

    ``k`` counts the updates of a rule's state, starting at 1. ``values(k)`` takes an integer
    array of update indices (one per run) and returns the β of each run as float64.

    Parameters
    ----------
    beta : float, array of shape (runs,), or callable
        A callable is called with a Python ``int`` ``k ≥ 1`` and must return a float (or an
        array of shape ``(runs,)``) in ``[0, 1)``.
    """

    def __init__(self, beta: Any):
        self._fn: Callable[[int], Any] | None = None
        self._const: np.ndarray | None = None
        if isinstance(beta, BetaSchedule):
            self._fn, self._const, self.label = beta._fn, beta._const, beta.label
            return
        if callable(beta):
            self._fn = beta
            self.label = getattr(beta, "__name__", "schedule")
            return
        arr = _run_array(beta, "beta", "a number, an array of numbers or a callable k -> beta_k")
        _check_beta(arr, "beta")
        self._const = arr
        self.label = f"{float(arr):g}" if arr.ndim == 0 else f"array{arr.shape}"

    @property
    def runs(self) -> int | None:
        """Length of the run axis this β carries (``None`` when it carries none)."""
        if self._const is not None and self._const.ndim == 1:
            return int(self._const.shape[0])
        return None

    @property
    def constant(self) -> np.ndarray | None:
        """The constant β (a 0-d array, or one per run), ``None`` for a schedule ``k ↦ β_k``."""
        return None if self._const is None else self._const.copy()

    @property
    def is_constant(self) -> bool:
        """True when β is one number (or one per run) rather than a schedule ``k ↦ β_k``."""
        return self._const is not None

    def values(self, k: np.ndarray) -> np.ndarray:
        """β for update index ``k`` (integer array of shape ``(runs,)``), float64 ``(runs,)``.

        A schedule's value is checked at each ``k``: a TypeError when it is not a number or an
        array of numbers, a ValueError when it has the wrong shape or lies outside ``[0, 1)``.
        """
        k = np.asarray(k)
        if self._const is not None:
            return np.broadcast_to(self._const, k.shape).astype(np.float64)
        out = np.empty(k.shape, dtype=np.float64)
        for kk in np.unique(k):
            name = f"beta schedule at k={int(kk)}"
            val = _schedule_value(self._fn(int(kk)), name, k.shape)
            _check_beta(val, name)
            mask = k == kk
            out[mask] = val if val.ndim == 0 else val[mask]
        return out

    def __repr__(self) -> str:
        return f"BetaSchedule({self.label})"


def _check_beta(arr: np.ndarray, name: str) -> None:
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr}")
    if np.any(arr < 0.0) or np.any(arr >= 1.0):
        raise ValueError(f"{name} must lie in [0, 1), got {arr}")


def _run_array(value: Any, name: str, expected: str) -> np.ndarray:
    """``value`` (a number or a non-empty 1-D sequence over runs) as a float64 array.

    TypeError naming ``name`` (and saying it should be ``expected``) for a non-numeric value,
    ValueError for more than one axis or an empty run axis.
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Real, list, tuple, np.ndarray)):
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    try:
        raw = np.asarray(value)
    except ValueError as exc:  # ragged nesting
        raise ValueError(f"{name} must be a scalar or a 1-D array over runs, got {value!r}") from exc
    if raw.size and raw.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    if raw.ndim > 1:
        raise ValueError(f"{name} must be a scalar or a 1-D array over runs, got shape {raw.shape}")
    if raw.ndim == 1 and raw.size == 0:
        raise ValueError(f"{name} must not be empty (one value per run), got shape {raw.shape}")
    return raw.astype(np.float64)


def _schedule_value(raw: Any, name: str, shape: tuple) -> np.ndarray:
    """A β schedule's return value as float64: a number or an array of ``shape`` (one per run)."""
    expected = f"a number or an array of shape {shape} (one per run)"
    try:
        val = np.asarray(raw)
    except ValueError as exc:  # ragged nesting
        raise TypeError(f"{name} must return {expected}, got {raw!r}") from exc
    if isinstance(raw, (bool, np.bool_)) or val.dtype.kind not in "iuf":
        raise TypeError(f"{name} must return {expected}, got {raw!r}")
    if val.ndim != 0 and val.shape != shape:
        raise ValueError(f"{name} must return {expected}, got an array of shape {val.shape}")
    return val.astype(np.float64)


def check_e(e: Any) -> np.ndarray:
    """Validate the clipping level ``e > 0`` (scalar or one per run)."""
    arr = _run_array(e, "e", "a positive number or a 1-D array of them")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0.0):
        raise ValueError(f"e must be finite and > 0, got {arr}")
    return arr


class ScalingRule(NamedTuple):
    """A diagonal scaling rule: data plus pure functions.

    Attributes
    ----------
    name : str
        Registry name.
    statistic : Statistic
        The per-client statistic ``S`` the rule consumes.
    init : callable ``(s, beta, xp) -> state``
        State from the first statistic ``s = S(x⁰)``; ``beta`` is β of update 1, shape
        broadcastable to ``s`` (used only by rules whose initialisation counts as an update).
    update : callable ``(state, s, beta, xp) -> state``
        Fold one more statistic into the state with the given β.
    diagonal : callable ``(state, xp) -> D``
        The unclipped diagonal; ``D̂ = clip(D) = max(e, |D|)``.
    beta : BetaSchedule or None
        β for each update (``None`` for rules without state).
    e : numpy.ndarray
        Clipping level (scalar or one per run); ``α = e``.
    init_updates : int or numpy.ndarray
        How many β values ``init`` consumes: 0 when the first sync is update ``k = 1``
        (rmsprop, oasis), 1 when initialisation is itself update ``k = 1`` (adam); one per
        run for a rule over runs.
    parts : tuple of ScalingRule
        Empty for a rule; for a rule over runs (:func:`savic_theory.rules.per_run`) the rule
        of each run, in run order.
    """

    name: str
    statistic: Statistic
    init: Callable
    update: Callable
    diagonal: Callable
    beta: BetaSchedule | None
    e: np.ndarray
    init_updates: int = 0
    parts: tuple = ()

    @property
    def is_static(self) -> bool:
        """True when ``D̂`` never changes (the identity rule)."""
        return self.statistic is Statistic.NONE

    @property
    def run_names(self) -> tuple[str, ...] | None:
        """The name of each run's rule for a rule over runs, ``None`` for a plain rule."""
        return tuple(p.name for p in self.parts) if self.parts else None

    @property
    def runs(self) -> int | None:
        """Length of the run axis carried by β or e (``None`` when neither carries one)."""
        sizes = {n for n in ((self.beta.runs if self.beta else None),
                             (int(self.e.shape[0]) if self.e.ndim == 1 else None)) if n is not None}
        if len(sizes) > 1:
            raise ValueError(f"rule {self.name}: beta and e carry run axes of different lengths {sorted(sizes)}")
        return sizes.pop() if sizes else None


def state_type(rule: ScalingRule):
    """The NamedTuple class of ``rule``'s state, from ``init`` on a tiny array (one row per run
    for a rule over runs, whose ``init`` checks its run count)."""
    shape = (len(rule.parts) if rule.parts else 1, 1, 1)
    return type(rule.init(np.ones(shape), np.full(shape, 0.5), np))


def clip(D, e, xp):
    """``max(e, |D|)`` elementwise: the clip that gives ``αI ⪯ D̂`` with ``α = e``."""
    return xp.maximum(xp.abs(D), e)
