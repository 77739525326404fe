"""A rule over runs: each run of one ``simulate`` call with its own scaling rule.

``per_run([adam, adam, rmsprop, identity])`` is one :class:`ScalingRule` whose run ``r`` follows
the ``r``-th rule exactly (its ``β``, its ``e``, its state and its statistic), so a sweep over
rules is one batched call like a sweep over step sizes. It is built from the parts' own
functions: the runs are grouped by *kind* (rules with the same ``init``/``update``/``diagonal``),
every kind's update is computed on the shared state, and ``xp.where`` on per-run masks keeps each
run's own kind. Kinds share state slots (slot ``i`` holds component ``i`` of whichever kind the
run has), so the state is no larger than the largest kind's; the arithmetic is the sum of the
kinds', which is free on a memory-bound device and a few extra passes on the CPU.

The masks travel as the first components of the state, so the function stays pure and the
fused path traces it like any rule (one generated kernel per local step for all kinds).
"""
from __future__ import annotations

import collections
import functools
from collections.abc import Sequence

import numpy as np

from ._base import BetaSchedule, ScalingRule, Statistic, state_type

__all__ = ["per_run"]


def per_run(rules: Sequence) -> ScalingRule:
    """One rule for a batched call in which run ``r`` uses ``rules[r]``.

    ``simulate(problem, [r0, r1, ...], ...)`` calls this for you.

    Parameters
    ----------
    rules : sequence of ScalingRule or str
        One rule per run, each without a run axis of its own (scalar ``beta`` and ``e``, or a
        schedule ``k ↦ β_k``); a name stands for the rule with its default parameters.

    Returns
    -------
    ScalingRule
        With a run axis of ``len(rules)`` (per-run ``e``, ``β`` and ``init_updates``) and
        ``parts`` the rules in run order. Its statistic is the parts' common one (the identity
        rule uses none, so it joins any); rules with different statistics (``g ⊙ g`` and
        Hessian probes) give ``Statistic.PER_RUN`` (each run takes its own; the reference
        loop and the fused paths serve it). A part's β schedule is called only at the update
        indices of its own run.

    Example
    -------
    >>> from savic_theory import rules
    >>> r = rules.per_run([rules.adam(beta=0.9), "rmsprop", "identity"])
    >>> r.runs, r.run_names, r.statistic.value
    (3, ('adam', 'rmsprop', 'identity'), 'grad_squared')
    """
    from . import make

    if isinstance(rules, (str, ScalingRule)) or not isinstance(rules, Sequence):
        raise TypeError(f"rules must be a list of rules (one per run), got {rules!r}")
    if len(rules) == 0:
        raise ValueError("rules must not be empty (one rule per run)")
    parts = []
    for i, r in enumerate(rules):
        if isinstance(r, str):
            r = make(r)
        if not isinstance(r, ScalingRule):
            raise TypeError(f"rule[{i}] must be a ScalingRule from savic_theory.rules or a rule name, got {r!r}")
        if r.parts:
            raise ValueError(f"rule[{i}] is itself a rule over runs; give its parts instead")
        if r.runs is not None:
            raise ValueError(f"rule[{i}] ({r.name}) carries a run axis of {r.runs} (beta or e is an array); "
                             "in a list of rules each rule is one run")
        parts.append(r)
    parts = tuple(parts)

    kinds: list[ScalingRule] = []  # one representative per kind, in order of first appearance
    index: dict = {}  # kind -> its position in kinds
    kind_of = np.empty(len(parts), dtype=np.int64)
    for i, r in enumerate(parts):
        key = _kind_key(r)
        if key not in index:
            index[key] = len(kinds)
            kinds.append(r)
        kind_of[i] = index[key]

    stats = {r.statistic for r in parts if r.statistic is not Statistic.NONE}
    statistic = stats.pop() if len(stats) == 1 else (Statistic.NONE if not stats else Statistic.PER_RUN)
    e = np.array([float(r.e) for r in parts], dtype=np.float64)
    init_updates = np.array([int(r.init_updates) for r in parts], dtype=np.int64)
    beta = _per_run_beta(parts)
    name = "+".join(k.name for k in kinds)
    if len(kinds) == 1:  # one kind: the rule itself, with its β and e over runs
        k = kinds[0]
        return ScalingRule(name, k.statistic, k.init, k.update, k.diagonal, beta, e, init_updates, parts)

    n_kinds = len(kinds)
    kind_types = [state_type(k) for k in kinds]
    state_cls = _mixed_state(n_kinds, max(len(kt._fields) for kt in kind_types))

    def masks_for(like, xp):
        """One boolean ``(runs, 1, 1)`` mask per kind (the last kind is the default of every where)."""
        runs = int(like.shape[0])
        if runs != len(parts):
            raise ValueError(f"this rule over runs has {len(parts)} runs, the arrays have {runs}")
        host = [(kind_of == j).reshape(-1, 1, 1) for j in range(n_kinds)]
        return [xp.asarray(m) for m in host]

    def select(masks, values, xp):
        """Slot value per run: the value of the run's kind (kinds without the slot are skipped)."""
        have = [(j, v) for j, v in enumerate(values) if v is not None]
        out = have[-1][1]
        for j, v in reversed(have[:-1]):
            out = xp.where(masks[j], v, out)
        return out

    def init(s, beta, xp):
        masks = masks_for(s, xp)
        states = [tuple(k.init(s, beta, xp)) for k in kinds]
        return state_cls(*masks, *_combine(states, masks, select, xp))

    def update(state, s, beta, xp):
        masks, slots = list(state[:n_kinds]), list(state[n_kinds:])
        states = [tuple(k.update(kt(*slots[:len(kt._fields)]), s, beta, xp))
                  for k, kt in zip(kinds, kind_types)]
        return state_cls(*masks, *_combine(states, masks, select, xp))

    def diagonal(state, xp):
        masks, slots = list(state[:n_kinds]), list(state[n_kinds:])
        diags = [k.diagonal(kt(*slots[:len(kt._fields)]), xp) for k, kt in zip(kinds, kind_types)]
        return select(masks, diags, xp)

    return ScalingRule(name, statistic, init, update, diagonal, beta, e, init_updates, parts)


def _kind_key(r: ScalingRule):
    """Rules of one kind differ at most in β and e."""
    return (r.name, r.statistic, r.init, r.update, r.diagonal, int(r.init_updates))


def _combine(states, masks, select, xp):
    """Slot ``i`` of the shared state from component ``i`` of each kind's state."""
    n = max(len(st) for st in states)
    return [select(masks, [st[i] if i < len(st) else None for st in states], xp) for i in range(n)]


@functools.lru_cache(maxsize=None)
def _mixed_state(n_kinds: int, n_slots: int):
    """State of a rule over runs: ``n_kinds`` per-run masks, then ``n_slots`` shared slots."""
    fields = [f"mask{j}" for j in range(n_kinds)] + [f"slot{i}" for i in range(n_slots)]
    return collections.namedtuple("PerRunState", fields)


def _per_run_beta(parts) -> BetaSchedule:
    """β of each run from its own rule (0 for a rule without β, which never reads it)."""
    betas = [p.beta for p in parts]
    if all(b is None or b.is_constant for b in betas):
        return BetaSchedule(np.array([0.0 if b is None else float(b.constant) for b in betas]))
    return _PerRunSchedule(betas)


class _PerRunSchedule(BetaSchedule):
    """The β of a rule over runs with a schedule among its parts: each part's β is evaluated
    only at the update indices of its own run (a schedule never sees another run's ``k``, which
    may lie outside the range its own run reaches)."""

    def __init__(self, betas):
        groups: dict[int, tuple[BetaSchedule, list]] = {}
        for i, b in enumerate(betas):
            if b is not None:
                groups.setdefault(id(b), (b, []))[1].append(i)
        self._groups = [(b, np.array(idx)) for b, idx in groups.values()]
        self._runs = len(betas)
        #: each run's β as ``params["beta"]`` records it: the number, or the schedule's name
        self.run_labels = tuple(0.0 if b is None else float(b.constant) if b.is_constant else b.label
                                for b in betas)
        super().__init__(self._at)
        self.label = "per_run"

    def _at(self, k: int) -> np.ndarray:
        """β of every run at the same update index ``k``."""
        return self.values(np.full(self._runs, k, dtype=np.int64))

    def values(self, k: np.ndarray) -> np.ndarray:
        k = np.asarray(k)
        if k.shape != (self._runs,):
            raise ValueError(f"this rule over runs has {self._runs} runs, got update indices of shape {k.shape}")
        out = np.zeros(k.shape, dtype=np.float64)
        for b, idx in self._groups:
            try:
                out[idx] = b.values(k[idx])
            except ValueError as exc:
                if "shape" not in str(exc):
                    raise
                raise ValueError(f"rule[{int(idx[0])}]: {exc}; in a list of rules each rule is one run, "
                                 "so its beta schedule returns one number") from None
        return out
