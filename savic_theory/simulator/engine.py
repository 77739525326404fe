"""The vectorised SAVIC simulator (reference path, array-API only).

Every array has shape ``(runs, clients, d)``; the scaling ``D̂`` has shape ``(runs, 1, d)`` in
global scaling and ``(runs, M, d)`` in local scaling, so one expression ``x − γ g / D̂`` serves
both. Reductions over clients happen only at synchronisation (and when recording).
"""
from __future__ import annotations

import functools
import numbers
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._backend import dtype_of, namespace, namespace_name, to_numpy
from .._validation import check_bool
from ..problems._base import Problem, as_generator
from ..rules import ScalingRule, Statistic, as_rule, clip
from .result import HISTORY_KEYS, SimulationResult
from .draws import SharedDraws, draw_groups
from .schedule import SyncSchedule

#: the leading HISTORY_KEYS, those of the iterate (dist_sq, f_gap, consensus): not finite = diverged
_ITERATE_KEYS = HISTORY_KEYS.index("consensus") + 1

__all__ = ["simulate", "SCALINGS"]

SCALINGS = ("global", "local")


def simulate(problem: Problem, rule: ScalingRule | str, gamma, steps: int, sync_every=1,
             scaling: str = "global", x0=None, noise=None, seed=0, *, runs: int | None = None,
             sync_at=None, record_every: int | None = None, dtype="float64", backend=None,
             keep_iterates: bool = False, init_probes: int = 1, probes: str = "auto",
             common_draws=None, progress: bool = False,
             divergence_factor: float = 1e12, fused="auto") -> SimulationResult:
    r"""Run SAVIC (Local SGD with diagonal scaling) on ``problem``, many runs at once.

    Every client takes ``x_m ← x_m − γ g_m / D̂`` and the clients average at sync moments.
    In global scaling ``D̂`` is shared and updated at syncs from the clients' mean statistic;
    in local scaling each client updates its own ``D̂_m`` after every step. See
    ``docs/algorithm.md`` for the exact semantics.

    Parameters
    ----------
    problem : Problem
        ``Quadratic``, ``Logistic``, ... (a leading instance axis gives one problem per run).
    rule : ScalingRule, str, or a list of them (one per run)
        From ``savic_theory.rules`` (a name uses the rule's default ``beta`` and ``e``). A list
        gives every run its own rule, so a sweep over rules is one call: it is
        :func:`savic_theory.rules.per_run` of the list, and ``params["rule"]`` names each run's.
    gamma : float or array (runs,)
        Step size ``γ > 0``.
    steps : int
        Number of local steps ``T ≥ 1``.
    sync_every : int or array of ints (runs,)
        Period ``H ≥ 1`` between averagings (``t_p = pH``); ``H > steps``: never.
    scaling : {"global", "local"}
    x0 : array (d,) or (runs, d), optional
        Start point of every client (zeros by default). A CuPy array selects the GPU.
    noise : float, optional
        Replace the problem's additive gradient noise ``σ² = E‖ξ‖²``.
    seed : int, numpy.random.SeedSequence or numpy.random.Generator
        Seed of the host generator that draws all noise, minibatches and probes.
    runs : int, optional
        Number of independent runs (default: from the array parameters, else one run).
    sync_at : sequence of ints (or one per run), optional
        Explicit sync moments in ``[1, T]``; overrides ``sync_every``.
    record_every : int, optional
        Record the history every this many steps (default ``max(1, T // 500)``); step 0 and
        ``T`` are always recorded.
    dtype : {"float64", "float32"}
        Precision of the iterates, the scaling and the arithmetic of every step. The result's
        arrays (``x``, ``x_bar``, ``D``, ``history``, ``drift``) come back as float64 NumPy
        arrays whatever ``dtype`` is (a float32 run's values, exactly).
    backend : {"numpy", "cupy", "array_api_strict"} or module, optional
    keep_iterates : bool
        Also keep ``x̄`` at each record in ``history["x_bar"]``.
    init_probes : int
        Number of Hutchinson probes averaged for OASIS's initial ``D₀``.
    probes : {"auto", "rademacher", "exact"}
        OASIS statistic: Hutchinson probes ``z ⊙ (∇²f_m z)`` with Rademacher ``z``, or their
        expectation ``diag ∇²f_m`` computed exactly. ``"auto"`` uses the exact diagonal when the
        gradient oracle is deterministic (noise-free, full batch) so that a noise-free run is
        deterministic, and Rademacher probes otherwise. Both coincide for diagonal Hessians.
    common_draws : array of ints (runs,), optional
        Group labels: runs with equal labels receive the same random draws (noise, minibatches,
        probes) at every step, so that runs differing only in ``gamma``, ``β``, ``H`` or rule are
        compared on the same randomness (common random numbers: a paired difference has a
        smaller variance). Each group's draws are those one run would get in a call of ``G``
        runs (``G`` distinct labels, ranked in sorted order); ``arange(runs)`` gives exactly the
        draws of ``None``. Every run draws at every step, the same arrays whatever its
        parameters, so a group stays paired to the end (a diverged run included). One
        exception: in global scaling OASIS draws its probes only at steps where some run of the
        call syncs, so with different ``sync_every`` (or ``sync_at``) per run a group's probes
        differ from those of one run alone; they are still shared within the group.
    divergence_factor : float
        A run whose ``‖x̄−x*‖²`` exceeds ``divergence_factor · max(1, ‖x⁰−x*‖²)``, or whose
        ``‖x̄−x*‖²``, ``f(x̄)−f*`` or consensus error is not finite, or any recorded value NaN,
        is stopped with status ``"diverged"``.
    fused : {"auto", True, "numpy", False}
        ``"auto"`` runs supported configurations (quadratics on NumPy or CuPy) on the fused
        fast path of :mod:`savic_theory.simulator.fused`, which returns the same result, with
        compiled CPU kernels where Numba is installed; ``True`` requires it (``ValueError``
        saying why when unsupported); ``"numpy"`` requires it without the compiled kernels
        (NumPy ufuncs only); ``False`` runs the reference loop below.

    Returns
    -------
    SimulationResult

    Example
    -------
    >>> import numpy as np
    >>> from savic_theory import Quadratic, rules, simulate
    >>> prob = Quadratic.random(dim=4, n_clients=3, L=1.0, mu=0.1, heterogeneity=0.5, seed=1)
    >>> res = simulate(prob, rules.adam(beta=0.9, e=1e-2), gamma=0.01, steps=40, sync_every=4)
    >>> res.x.shape, res.history["dist_sq"].shape
    ((3, 4), (41,))
    """
    t_start = time.perf_counter()
    S = prepare(problem, rule, gamma, steps, sync_every, scaling, x0, noise, seed, runs=runs,
                sync_at=sync_at, record_every=record_every, dtype=dtype, backend=backend,
                keep_iterates=keep_iterates, init_probes=init_probes, probes=probes,
                common_draws=common_draws, progress=progress, divergence_factor=divergence_factor)
    # --- dispatch to the fused fast path (simulator/fused.py); this loop stays the reference ---
    if fused is not False:
        from .fused import simulate_fused

        res = simulate_fused(fused, S, t_start)
        if res is not None:
            return res
    # --- end of dispatch ---------------------------------------------------------------------
    problem, rule, steps, record_every = S.problem, S.rule, S.steps, S.record_every
    gamma_arr, schedule, x0_host, R = S.gamma_arr, S.schedule, S.x0_host, S.R
    xp, dt, oracle, rng = S.xp, S.dt, S.oracle, S.rng
    M, d = problem.n_clients, problem.dim
    local = scaling == "local"

    dev, beta_of = S.device, S.beta_of

    gamma_x = dev(gamma_arr.reshape(-1, 1, 1) if gamma_arr.ndim else gamma_arr, (R, 1, 1))
    e_x = dev(rule.e.reshape(-1, 1, 1) if rule.e.ndim else rule.e, (R, 1, 1))
    const = problem.constants
    x_star = dev(const.x_star, (R, d) if np.ndim(const.x_star) == 1 else const.x_star.shape)
    f_star = dev(const.f_star, (R,))
    x = xp.zeros((R, M, d), dtype=dt) + dev(x0_host if x0_host.ndim == 2 else x0_host[None], (R, d))[:, None, :]

    statistic = S.statistic

    # --- initial scaling from S(x⁰) -----------------------------------------------------
    k, stat_max, state, D = initial_scaling(S, x, e_x)

    # --- bookkeeping ----------------------------------------------------------------------
    rec = Recorder(S)
    alive = rec.alive
    run_max = run_min = None  # local scaling: drift since the last sync, per run

    def record(t):
        xbar = xp.mean(x, axis=1)
        diff = xbar - x_star
        dev_c = x - xbar[:, None, :]
        vals = xp.stack([
            xp.sum(diff * diff, axis=-1),
            oracle.loss(xbar) - f_star,
            xp.mean(xp.sum(dev_c * dev_c, axis=-1), axis=-1),
            xp.min(D, axis=(1, 2)),
            xp.max(D, axis=(1, 2)),
            S.G_hat(stat_max),
            xp.sum(xp.mean(D, axis=1) * diff * diff, axis=-1),  # ‖x̄ − x*‖²_D̂ (clients' mean D̂)
        ])
        rec.record(t, np.array(to_numpy(vals), dtype=np.float64), x, xbar)

    bar = None
    if progress:
        from ..cli._common import progress as _progress

        bar = _progress(steps, f"simulate {rule.name}/{scaling}")
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        record(0)
        for t in range(steps):
            if not alive.any():
                break
            t1 = t + 1
            sample = oracle.draw(rng, R)
            g = oracle.grad(x, sample)
            sync = schedule.is_sync(t1)
            any_sync = bool(sync.any())
            s = None
            if not rule.is_static and (local or any_sync):
                s = statistic(x, sample, g)
            x = x - gamma_x * g / D
            if s is not None:
                if not local:  # D̂ is built from the clients' mean: G bounds that, not each client's
                    s = xp.mean(s, axis=1, keepdims=True)
                s_max = xp.max(xp.abs(s), axis=(1, 2))
                if local or bool(sync.all()):
                    stat_max = xp.maximum(stat_max, s_max)
                else:
                    stat_max = xp.where(xp.asarray(sync), xp.maximum(stat_max, s_max), stat_max)
            if local and s is not None:
                k += 1
                state = rule.update(state, s, beta_of(k), xp)
                D_new = clip(rule.diagonal(state, xp), e_x, xp)
                ratio = D_new / D
                hi, lo = xp.max(ratio, axis=(1, 2)), xp.min(ratio, axis=(1, 2))
                run_max = hi if run_max is None else xp.maximum(run_max, hi)
                run_min = lo if run_min is None else xp.minimum(run_min, lo)
                D = D_new
            if any_sync:
                all_sync = bool(sync.all())
                mask = None if all_sync else xp.asarray(sync[:, None, None])
                xbar = xp.mean(x, axis=1, keepdims=True)
                x = xp.broadcast_to(xbar, x.shape) if all_sync else xp.where(mask, xbar, x)
                if rule.is_static:
                    hi_h = lo_h = np.ones(R)
                elif local:
                    hi_h, lo_h, run_max, run_min = drift_since_sync(S, run_max, run_min, sync)
                else:
                    k[sync] += 1
                    state, D, hi_h, lo_h = update_scaling(S, state, D, s, beta_of(k), e_x, sync)
                rec.sync(t1, sync, hi_h, lo_h)
            if t1 % record_every == 0 or t1 == steps:
                record(t1)
            if bar is not None and (t1 % max(1, steps // 100) == 0 or t1 == steps):
                bar.update(t1 - bar.n)
    if bar is not None:
        bar.close()

    # --- results back to the host -----------------------------------------------------
    return rec.result(x, D, t_start)



def initial_scaling(S: "RunSetup", x, e_x, draw_squared_gradients=None, draw_mean_squared_gradients=None):
    r"""The scaling before the first step: ``state ← init(S(x⁰))``, ``D̂ ← clip(D(state))``.

    The statistic is taken at ``x⁰`` with the oracle's first draw (averaged over
    ``init_probes`` Hutchinson probes for OASIS) and averaged over clients in global scaling.
    ``draw_squared_gradients()``, when given, returns that draw's ``g ⊙ g`` for a ``g ⊙ g``
    rule (the fused CPU path computes it in its own buffers); ``draw_mean_squared_gradients()``,
    in global scaling, its client mean and that mean's maximum per run (one compiled pass). Returns
    ``(k, stat_max, state, D)``: the updates folded into the state per run, ``max |S|`` per run
    of the statistic ``D̂`` is built from (the clients' mean in global scaling), the state and ``D̂``.
    An overflowing start gives inf/NaN here, reported as a diverged run at step 0, not a warning.
    """
    xp, rule, R = S.xp, S.rule, S.R
    probing = rule.statistic in (Statistic.HESSIAN_PROBE, Statistic.PER_RUN) and not S.exact_probe
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        if rule.is_static:
            s0 = xp.zeros((R, S.M if S.local else 1, S.d), dtype=S.dt)
            stat_max = xp.zeros((R,), dtype=S.dt)
        else:
            pre_reduced = (draw_mean_squared_gradients is not None and not S.local
                           and rule.statistic is Statistic.GRAD_SQUARED)
            if pre_reduced:
                s0, stat_max = draw_mean_squared_gradients()  # already the client mean and maximum
            elif draw_squared_gradients is not None and rule.statistic is Statistic.GRAD_SQUARED:
                s0 = draw_squared_gradients()
            else:
                sample0 = S.oracle.draw(S.rng, R)
                g0 = S.oracle.grad(x, sample0)
                per_run = rule.statistic is Statistic.PER_RUN
                s0 = S.probe(x, sample0) if per_run else S.statistic(x, sample0, g0)
                for _ in range(S.init_probes - 1 if probing else 0):  # probing: the statistic is the probe
                    s0 = s0 + S.probe(x, sample0)
                if probing and S.init_probes > 1:
                    s0 = s0 / S.init_probes
                if per_run:  # the g ⊙ g runs take theirs; the probe runs their average of probes
                    s0 = xp.where(S.probe_runs[:, None, None], s0, g0 * g0)
            if not pre_reduced:
                if not S.local:  # D̂ is built from the clients' mean: G bounds that
                    s0 = xp.mean(s0, axis=1, keepdims=True)
                # g ⊙ g ≥ 0 (or NaN): its max needs no |·| (a pass and a temporary fewer)
                stat_max = xp.max(s0 if rule.statistic is Statistic.GRAD_SQUARED else xp.abs(s0), axis=(1, 2))
        k = np.full(R, rule.init_updates, dtype=np.int64)
        state = rule.init(s0, S.beta_of(np.ones(R, dtype=np.int64)), xp)
        D = clip(rule.diagonal(state, xp), e_x, xp)
    return k, stat_max, state, D


def update_scaling(S: "RunSetup", state, D, s_mean, beta, e_x, sync):
    """Global scaling at a sync: ``state ← update(state, mean_m S_m)``, ``D̂ ← clip(D(state))``
    for the runs flagged in ``sync``. Returns ``(state, D, max_i, min_i of D̂ᵏ⁺¹_i / D̂ᵏ_i)``."""
    xp, rule = S.xp, S.rule
    new_state = rule.update(state, s_mean, beta, xp)
    D_new = clip(rule.diagonal(new_state, xp), e_x, xp)
    ratio = D_new / D
    hi, lo = to_numpy(xp.max(ratio, axis=(1, 2))), to_numpy(xp.min(ratio, axis=(1, 2)))
    if bool(sync.all()):
        return new_state, D_new, hi, lo
    mask = xp.asarray(sync[:, None, None])
    state = type(state)(*(xp.where(mask, n, o) for n, o in zip(new_state, state)))
    return state, xp.where(mask, D_new, D), hi, lo


def drift_since_sync(S: "RunSetup", run_max, run_min, sync):
    """Local scaling at a sync: the largest and smallest ``D̂ᵏ⁺¹_i / D̂ᵏ_i`` since the last sync
    (host arrays), and the running extremes reset for the runs flagged in ``sync``."""
    xp, R, dt = S.xp, S.R, S.dt
    hi, lo = to_numpy(run_max), to_numpy(run_min)
    reset = xp.asarray(sync)
    run_max = xp.where(reset, xp.full((R,), -xp.inf, dtype=dt), run_max)
    run_min = xp.where(reset, xp.full((R,), xp.inf, dtype=dt), run_min)
    return hi, lo, run_max, run_min


class Recorder:
    """What both simulator paths record, and the :class:`SimulationResult` built from it.

    ``record`` takes the history values of one recorded step and stops runs that diverged
    (``‖x̄−x*‖²``, ``f(x̄)−f*`` or the consensus error not finite, any value NaN, or ``‖x̄−x*‖²``
    above ``divergence_factor · max(1, ‖x⁰−x*‖²)``): their iterate
    is frozen, their later rows are NaN. ``sync`` takes the drift of one sync moment.
    """

    def __init__(self, S: "RunSetup"):
        self.S = S
        self.alive = np.ones(S.R, dtype=bool)
        self.diverged_at = np.full(S.R, -1, dtype=np.int64)
        self.frozen_x = None
        self.ref = None
        self.steps: list[int] = []
        self.values: list[np.ndarray] = []
        self.iterates: list[np.ndarray] = []
        self.last_xbar = None  # x̄ of the last record (see result)
        self.sync_steps: list[int] = []
        self.drift_hi: list[np.ndarray] = []
        self.drift_lo: list[np.ndarray] = []

    def record(self, t: int, host: np.ndarray, x, xbar) -> None:
        """``host``: float64 array (len(HISTORY_KEYS), runs) of step ``t``; ``x``, ``xbar`` on the device
        (``x`` may be a function returning it, called only when a run diverged)."""
        alive, dist = self.alive, host[0]
        if self.S.static_runs is not None:  # identity runs of a rule over runs fold no statistic
            host[HISTORY_KEYS.index("G_hat"), self.S.static_runs] = 0.0
        if self.ref is None:
            self.ref = np.maximum(dist, 1.0)
        # the iterate's values must be finite and nothing NaN; a D̂ value may overflow to inf (a
        # client mean of D̂ near the float maximum) while the iterate is fine: not a divergence
        bad = alive & (~np.isfinite(host[:_ITERATE_KEYS]).all(axis=0) | np.isnan(host).any(axis=0)
                       | (dist > self.S.divergence_factor * self.ref))
        if bad.any():
            self.diverged_at[bad] = t
            xh = np.array(to_numpy(x() if callable(x) else x))
            self.frozen_x = xh if self.frozen_x is None else np.where(bad[:, None, None], xh, self.frozen_x)
            alive[bad] = False
        host[:, ~alive] = np.nan
        self.steps.append(t)
        self.values.append(host)
        self.last_xbar = xbar
        if self.S.keep_iterates:
            xb = np.array(to_numpy(xbar), dtype=np.float64)
            xb[~alive] = np.nan
            self.iterates.append(xb)

    def sync(self, t: int, sync: np.ndarray, hi, lo) -> None:
        """The drift ``max_i`` / ``min_i D̂ᵏ⁺¹_i / D̂ᵏ_i`` of the runs that synced at ``t``."""
        on = sync & self.alive
        self.sync_steps.append(t)
        self.drift_hi.append(np.where(on, np.asarray(hi, dtype=np.float64), np.nan))
        self.drift_lo.append(np.where(on, np.asarray(lo, dtype=np.float64), np.nan))

    def result(self, x, D, t_start: float, xbar_recorded: bool = False) -> SimulationResult:
        """The result of the run whose final iterates are ``x`` and scaling ``D``.

        ``xbar_recorded``: the last record was of this ``x`` and its ``x̄`` still stands (the
        client mean in client order, as ``mean(axis=1)`` sums); in float64 on the host it is
        then the result's ``x_bar`` without another pass over ``x``.
        """
        S, R, alive = self.S, self.S.R, self.alive
        x_host = np.asarray(to_numpy(x), dtype=np.float64)
        if self.frozen_x is not None:
            x_host = np.where(alive[:, None, None], x_host, self.frozen_x)
        vals = np.stack(self.values, axis=1)  # (n_keys, n_records, R)
        history = {key: vals[i] for i, key in enumerate(HISTORY_KEYS)}
        if S.keep_iterates:
            history["x_bar"] = np.stack(self.iterates)
        n_syncs = len(self.sync_steps)
        drift = np.array(self.drift_hi).reshape(n_syncs, R)
        drift_min = np.array(self.drift_lo).reshape(n_syncs, R)
        status, diverged_at = np.where(alive, "ok", "diverged"), self.diverged_at
        rule, xp = S.rule, S.xp
        params = {
            "gamma": S.gamma_arr, "H": S.schedule.H.copy(), "scaling": S.scaling,
            "rule": rule.name if not rule.parts else np.array(rule.run_names),
            "beta": _beta_param(rule.beta), "e": rule.e,
            "probes": (("exact" if S.exact_probe else "rademacher")
                       if rule.statistic in (Statistic.HESSIAN_PROBE, Statistic.PER_RUN) else None),
            "steps": S.steps, "record_every": S.record_every, "runs": R,
            "seed": int(S.seed) if _is_integer(S.seed) else None, "dtype": np.dtype(S.dtype).name,
            "backend": namespace_name(xp), "batched": S.batched,
            "common_draws": S.rng.groups.copy() if isinstance(S.rng, SharedDraws) else None,
        }
        D_host = np.array(to_numpy(xp.broadcast_to(D, (R, S.M if S.local else 1, S.d))), dtype=np.float64)
        if (xbar_recorded and self.frozen_x is None and np.dtype(S.dtype) == np.float64
                and namespace_name(xp) == "numpy"):
            x_bar = np.array(self.last_xbar, dtype=np.float64)
        else:
            x_bar = x_host.mean(axis=1)
        if not S.batched:
            history = {k: v[:, 0] if k != "x_bar" else v[:, 0, :] for k, v in history.items()}
            x_host, x_bar, D_host = x_host[0], x_bar[0], D_host[0]
            drift, drift_min = drift[:, 0], drift_min[:, 0]
            status, diverged_at = str(status[0]), int(diverged_at[0])
            params["gamma"] = float(S.gamma_arr)
            params["H"] = int(S.schedule.H[0])
        return SimulationResult(
            x=x_host, x_bar=x_bar, D=D_host, steps=np.array(self.steps), history=history,
            sync_steps=np.array(self.sync_steps, dtype=np.int64), drift=drift, drift_min=drift_min,
            status=status, diverged_at=diverged_at, problem=S.problem, rule=rule, params=params,
            elapsed=time.perf_counter() - t_start,
        )


@dataclass
class RunSetup:
    """A checked ``simulate`` call: its arguments resolved, the problem bound to the backend.

    Built by :func:`prepare` (no random draws yet); the reference loop and the fused paths of
    :mod:`.fused` both start from it.
    """

    problem: Problem
    rule: ScalingRule
    scaling: str
    steps: int
    record_every: int
    init_probes: int
    gamma_arr: np.ndarray
    divergence_factor: float
    schedule: SyncSchedule
    x0_host: np.ndarray
    R: int
    batched: bool
    xp: Any
    dt: Any
    dtype: Any
    oracle: Any
    exact_probe: bool
    rng: np.random.Generator | SharedDraws
    seed: Any
    keep_iterates: bool
    progress: bool
    _beta_cache: dict = field(default_factory=dict, repr=False)

    @property
    def M(self) -> int:
        return self.problem.n_clients

    @property
    def d(self) -> int:
        return self.problem.dim

    @property
    def local(self) -> bool:
        return self.scaling == "local"

    def device(self, a, shape):
        """Host data ``a`` broadcast to ``shape``, on the run's backend in its dtype."""
        host = np.ascontiguousarray(np.broadcast_to(np.asarray(a, dtype=np.float64), shape))
        return self.xp.asarray(host, dtype=self.dt)

    def statistic(self, x, sample, g):
        """The rule's statistic ``S_m`` at ``x`` with ``sample`` (``g`` its gradient): ``g ⊙ g``,
        the exact Hessian diagonal, or a Rademacher probe ``z ⊙ (∇²f_m z)`` drawn from ``rng``
        (for a rule over runs with both kinds, each run's own: the probe is drawn for all)."""
        if self.rule.statistic is Statistic.GRAD_SQUARED:
            return g * g
        if self.rule.statistic is Statistic.PER_RUN:
            return self.xp.where(self.probe_runs[:, None, None], self.probe(x, sample), g * g)
        return self.probe(x, sample)

    def probe(self, x, sample):
        """The Hessian-diagonal statistic: exact, or a Rademacher probe drawn from ``rng``."""
        if self.exact_probe:
            return self.xp.zeros_like(x) + self.oracle.hessian_diag(x, sample)
        z = self.xp.asarray(self.rng.integers(0, 2, size=(self.R, self.M, self.d)) * 2.0 - 1.0, dtype=self.dt)
        return self.oracle.probe(x, sample, z)

    @functools.cached_property
    def probe_runs(self):
        """Rule over runs: which runs use a Hessian probe, as a ``(runs,)`` device bool array."""
        parts = self.rule.parts or (self.rule,) * self.R
        return self.xp.asarray(np.array([p.statistic is Statistic.HESSIAN_PROBE for p in parts]))

    @functools.cached_property
    def static_runs(self) -> np.ndarray | None:
        """Rule over runs: which runs use a rule without statistic (host bool), else ``None``."""
        if not self.rule.parts:
            return None
        return np.array([p.statistic is Statistic.NONE for p in self.rule.parts])

    def G_hat(self, stat_max):
        """The history's ``G_hat`` from the largest ``|S|`` per run: ``√`` for ``g ⊙ g`` runs."""
        stat = self.rule.statistic
        if stat is Statistic.GRAD_SQUARED:
            return self.xp.sqrt(stat_max)
        if stat is Statistic.PER_RUN:
            return self.xp.where(self.probe_runs, stat_max, self.xp.sqrt(stat_max))
        return stat_max

    def beta_of(self, k: np.ndarray):
        """The rule's ``β`` for update indices ``k`` (runs,), as a ``(runs, 1, 1)`` device array
        (cached: a constant β is moved once, a schedule once per distinct ``k``)."""
        rule = self.rule
        if rule.beta is None:
            return 0.0
        # a run that does not sync at a sync moment of others has its β computed and discarded:
        # it gets the β of an update it has had (k = 0 before its first: β₁), never a k < 1
        k = np.maximum(k, 1)
        key = "const" if rule.beta.is_constant else k.tobytes()
        if key not in self._beta_cache:
            if len(self._beta_cache) > 64:
                self._beta_cache.clear()
            self._beta_cache[key] = self.device(rule.beta.values(k).reshape(self.R, 1, 1), (self.R, 1, 1))
        return self._beta_cache[key]


def prepare(problem, rule, gamma, steps, sync_every=1, scaling="global", x0=None, noise=None, seed=0, *,
            runs=None, sync_at=None, record_every=None, dtype="float64", backend=None,
            keep_iterates=False, init_probes=1, probes="auto", common_draws=None, progress=False,
            divergence_factor=1e12) -> RunSetup:
    """Check the arguments of :func:`simulate` (same parameters) and resolve them; every bad
    input raises here, with a message naming the parameter."""
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a savic_theory Problem, got {type(problem).__name__}")
    rule = as_rule(rule)
    if not isinstance(rule, ScalingRule):
        raise TypeError("rule must be a ScalingRule from savic_theory.rules, a rule name, or a list "
                        f"of them (one per run), got {rule!r}")
    if scaling not in SCALINGS:
        raise ValueError(f"unknown scaling {scaling!r}; expected one of {', '.join(SCALINGS)}")
    steps = _positive_int("steps", steps)  # its upper bound: SyncSchedule, below
    keep_iterates, progress = check_bool("keep_iterates", keep_iterates), check_bool("progress", progress)
    if record_every is None:
        record_every = max(1, steps // 500)
    record_every = _positive_int("record_every", record_every)
    init_probes = _positive_int("init_probes", init_probes)
    gamma_arr = np.asarray(gamma, dtype=np.float64) if _is_real_array(gamma) else None
    if gamma_arr is None:
        raise TypeError(f"gamma must be a positive number or a 1-D array of them, got {gamma!r}")
    if gamma_arr.ndim > 1 or not np.all(np.isfinite(gamma_arr)) or np.any(gamma_arr <= 0):
        raise ValueError(f"gamma must be finite and > 0 (a scalar or a 1-D array over runs), got {gamma}")
    if gamma_arr.ndim == 1 and gamma_arr.size == 0:
        raise ValueError(f"gamma must not be empty (one step size per run), got {gamma!r}")
    if not (isinstance(divergence_factor, numbers.Real) and divergence_factor > 1):
        raise ValueError(f"divergence_factor must be a number > 1, got {divergence_factor!r}")
    if noise is not None:
        problem = problem.with_noise(noise)
    schedule = SyncSchedule(steps, sync_every, sync_at)

    x0_host = np.zeros(problem.dim) if x0 is None else _as_host(x0)
    if x0_host.ndim not in (1, 2) or x0_host.shape[-1] != problem.dim:
        raise ValueError(f"x0 must have shape (d,) or (runs, d) with d = {problem.dim}, got {x0_host.shape}")
    if x0_host.ndim == 2 and x0_host.shape[0] == 0:
        raise ValueError(f"x0 must not be empty (one start point per run), got shape {x0_host.shape}")
    if not np.all(np.isfinite(x0_host)):
        raise ValueError("x0 contains NaN or inf")

    groups = None if common_draws is None else draw_groups(common_draws)
    sizes = {
        "runs": runs,
        "gamma": gamma_arr.shape[0] if gamma_arr.ndim == 1 else None,
        "rule (beta/e)": rule.runs,
        "sync schedule": schedule.runs,
        "problem instances": problem.instances if problem.batched else None,
        "x0": x0_host.shape[0] if x0_host.ndim == 2 else None,
        "common_draws": None if groups is None else groups.size,
    }
    if runs is not None:
        _positive_int("runs", runs)
    given = {k: v for k, v in sizes.items() if v is not None}
    if len(set(given.values())) > 1:
        raise ValueError("run axes disagree: " + ", ".join(f"{k} has {v}" for k, v in given.items()))
    R = next(iter(given.values()), 1)
    batched = bool(given)

    xp = namespace(backend, like=x0)
    dt = dtype_of(xp, dtype)
    oracle = problem.bind(xp, dt)
    if probes not in ("auto", "rademacher", "exact"):
        raise ValueError(f"probes must be 'auto', 'rademacher' or 'exact', got {probes!r}")
    exact_probe = probes == "exact" or (probes == "auto" and oracle.deterministic)
    schedule.bind(R)
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype  # checked by dtype_of
    if not np.all(gamma_arr <= np.finfo(name).max):  # γ enters every step in the run's dtype
        raise ValueError(f"gamma = {np.max(gamma_arr):g} does not fit {name} (at most {np.finfo(name).max:.4g})")
    rng = as_generator(seed)
    if groups is not None:
        rng = SharedDraws(rng, groups)  # its length is R: checked with the run axes above
    return RunSetup(problem, rule, scaling, steps, record_every, init_probes, gamma_arr,
                    divergence_factor, schedule, x0_host, R, batched, xp, dt, dtype, oracle,
                    exact_probe, rng, seed, keep_iterates, progress)

def _positive_int(name, value):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _is_integer(a) -> bool:
    """True for Python and NumPy integers (not bools): the seeds recorded in ``params``."""
    return isinstance(a, numbers.Integral) and not isinstance(a, (bool, np.bool_))


def _is_real_array(a) -> bool:
    if isinstance(a, (bool, np.bool_)):
        return False
    try:
        arr = np.asarray(a)
    except Exception:
        return False
    return arr.dtype.kind in "iuf"


def _as_host(a) -> np.ndarray:
    try:
        complex_ = np.iscomplexobj(a)
    except ValueError:  # ragged: reported below
        complex_ = False
    if complex_:
        raise TypeError("x0 must be an array of real numbers, got complex values")
    try:
        return np.array(to_numpy(a) if not isinstance(a, (list, tuple)) else a, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError("x0 must be an array of real numbers") from exc


def _beta_param(beta) -> np.ndarray | str | None:
    """β as recorded in ``params``: the number (or one per run), a schedule's name, or None."""
    if beta is None:
        return None
    if getattr(beta, "run_labels", None) is not None:  # a rule over runs with schedules: each run's
        return np.array(beta.run_labels, dtype=object)
    return beta.constant if beta.is_constant else beta.label
