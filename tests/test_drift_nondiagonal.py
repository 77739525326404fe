"""Is the heterogeneous theorem's drift factor needed when the Hessians are not diagonal in D̂'s basis?

``docs/theory.md`` §7. On heterogeneous *diagonal* quadratics the exact expectation never exceeds the
heterogeneous theorem's bound with ``δ = 0`` (``tests/test_verify.py``). Here the Hessians ``A_m`` are
dense (rotated), and that bound fails: a fixed three-dimensional instance with two clients, ``D̂``
between ``I`` and ``100 I`` and one change of ``D̂`` (a drift of 100 at one sync) has
``E‖x̄_t − x*‖²`` 1.35 times that bound at ``t = 30 000`` (1.84 times at ``t = 60 000``), while it
stays far below the bound with its true drift factor.

The mechanism is deterministic. With a fixed ``D̂`` the iterate contracts in the ``D̂``-norm, so
``‖x̄ − x*‖²`` can grow by at most ``Γ/α`` (what the bound allows for ``r₀``). The fast modes of
``D̂⁻¹A`` project the iterate onto the slow ones along ``D̂⁻¹``-bent directions, and with widely
separated eigenvalues (here 1, 1e-2 and 1e-5) two such projections under two different ``D̂``,
one after the other, compound: ``‖x̄ − x*‖²`` grows to 135 times ``r₀`` at ``t = 30 000`` (184
times at ``t = 60 000``), against ``Γ/α = 100``. On diagonal Hessians each coordinate contracts
on its own and this cannot happen.

The evaluator: client ``m`` steps ``x_m ← x_m − γD̂⁻¹(A_m x_m − b_m + ξ_m)`` with
``ξ_m ~ N(0, (σ²/d) I)`` independent over clients and steps (the noise of
``savic_theory/problems/quadratic.py`` and of ``verify.exact.exact_dist_sq``), the clients average
every ``H`` steps and ``D̂`` changes only then. ``_stacked_exact`` here propagates the mean and
the covariance of the stacked client state ``(x_1, …, x_M)`` step by step (the reference);
``verify.exact.exact_dist_sq_dense`` uses that after a sync every client holds ``x̄``, so a round
is the affine map ``x̄ ← G x̄ + c`` plus independent noise, and only the mean and covariance of
``x̄`` (``d`` numbers and ``d × d``) travel from round to round: the same numbers to round-off,
fast enough for the 30 000 steps the instance needs.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
from scipy.stats import norm, ortho_group

from savic_theory import Quadratic, rules, simulate
from savic_theory.rules import ScalingRule, Statistic
from savic_theory.rules._base import BetaSchedule
from savic_theory.theory import THEOREMS
from savic_theory.verify.exact import exact_dist_sq, exact_dist_sq_dense
from savic_theory.verify.stats import lower_limit, mean_and_se

RTOL = 1e-9  # float64 round-off of the recursions and of the bound
THM = THEOREMS["heterogeneous"]


# ----------------------------------------------------------------------------- the exact evaluator
def _as_rounds(Ds, d):
    Ds = np.atleast_2d(np.asarray(Ds, dtype=np.float64))
    assert Ds.shape[1] == d and np.all(Ds > 0)
    return Ds


def _stacked_exact(A, b, gamma, steps, H, noise, Ds, x0=None):
    """``E‖x̄_t − x*‖²``, ``t = 0 … steps``, from the mean and covariance of the stacked client state
    (``M·d`` numbers, ``M·d × M·d``), step by step. ``A`` (M, d, d), ``b`` (M, d); row ``p`` of ``Ds``
    is the ``D̂`` of round ``p`` (the last row is reused); every client starts at ``x0`` (default 0)."""
    A, b = np.asarray(A, dtype=np.float64), np.asarray(b, dtype=np.float64)
    M, d = b.shape
    Ds = _as_rounds(Ds, d)
    x_star = np.linalg.solve(A.sum(0), b.sum(0))
    z = np.tile(np.zeros(d) if x0 is None else np.asarray(x0, dtype=np.float64), M)
    C = np.zeros((M * d, M * d))
    avg = np.kron(np.full((M, M), 1.0 / M), np.eye(d))  # a sync: every client gets x̄
    J = np.kron(np.full((1, M), 1.0 / M), np.eye(d))  # x̄ of the stacked state
    out, rnd = np.empty(steps + 1), 0
    for t in range(steps + 1):
        e = J @ z - x_star
        out[t] = e @ e + np.trace(J @ C @ J.T)
        if t == steps:
            break
        Dinv = 1.0 / Ds[min(rnd, len(Ds) - 1)]
        B = np.zeros((M * d, M * d))
        for m in range(M):
            B[m * d:(m + 1) * d, m * d:(m + 1) * d] = np.eye(d) - gamma * Dinv[:, None] * A[m]
        z = B @ z + gamma * np.tile(Dinv, M) * b.ravel()
        C = B @ C @ B.T + gamma**2 * noise / d * np.diag(np.tile(Dinv**2, M))
        if (t + 1) % H == 0:
            z, C = avg @ z, avg @ C @ avg.T
            rnd += 1
    return out


def _numbers(A, b, x0, noise, H):
    """The heterogeneous theorem's problem constants for dense ``A_m``, as ``tests/test_verify.py``
    computes them for diagonal ones: ``L`` and ``μ`` the largest and smallest eigenvalue of any
    ``A_m`` (A1: every ``f_m`` μ-strongly convex and L-smooth), ``x* = (Σ A_m)⁻¹ Σ b_m``,
    ``ζ*² = (1/M) Σ ‖A_m x* − b_m‖²``, ``r₀ = ‖x⁰ − x*‖²``, additive noise ``(A_ν, B_ν) = (0, 1)``."""
    A, b = np.asarray(A, dtype=np.float64), np.asarray(b, dtype=np.float64)
    M, d = b.shape
    eig = np.linalg.eigvalsh(A)
    x_star = np.linalg.solve(A.sum(0), b.sum(0))
    grads = np.einsum("mij,j->mi", A, x_star) - b
    x0 = np.zeros(d) if x0 is None else np.asarray(x0, dtype=np.float64)
    return dict(L=float(eig.max()), mu=float(eig.min()), M=M, H=H, sigma2=float(noise), A_nu=0.0, B_nu=1.0,
                zeta2=float(np.mean(np.sum(grads**2, axis=1))), r0=float(np.sum((x0 - x_star) ** 2)))


def _drift(Ds, n_syncs):
    """``1 + δ_k`` at the ``k``-th sync: the smallest factor with ``D̂ᵏ⁺¹ ⪯ (1 + δ_k) D̂ᵏ`` (A3),
    ``max(1, max_i D̂ᵏ⁺¹_i / D̂ᵏ_i)``; the simulator records ``max_i D̂ᵏ⁺¹_i / D̂ᵏ_i`` as ``drift``."""
    Ds = np.atleast_2d(Ds)
    rows = Ds[np.minimum(np.arange(n_syncs + 1), len(Ds) - 1)]
    return np.maximum(1.0, np.max(rows[1:] / rows[:-1], axis=1))


class _SwitchState(NamedTuple):
    k: object  # syncs so far, per coordinate


def _prescribed_rule(Ds) -> ScalingRule:
    """A scaling rule for ``simulate`` whose ``D̂`` is row ``p`` of ``Ds`` in round ``p`` (the last row
    reused): it counts its updates and ignores the statistic, so ``D̂`` does not depend on the noise."""
    Ds = np.atleast_2d(np.asarray(Ds, dtype=np.float64))
    changes = [p for p in range(1, len(Ds)) if np.any(Ds[p] != Ds[p - 1])]

    def init(s, beta, xp):
        return _SwitchState(xp.zeros_like(s))

    def update(state, s, beta, xp):
        return _SwitchState(state.k + 1.0)

    def diagonal(state, xp):
        D = xp.asarray(Ds[0], dtype=state.k.dtype) + 0.0 * state.k
        for p in changes:
            D = xp.where(state.k >= p, xp.asarray(Ds[p], dtype=state.k.dtype), D)
        return D

    return ScalingRule("prescribed", Statistic.GRAD_SQUARED, init, update, diagonal, BetaSchedule(0.5),
                       np.asarray(float(Ds.min())), 0)


def _dense_instance(rng, M, d, kappa, het):
    Q = [ortho_group.rvs(d, random_state=rng) if d > 1 else np.ones((1, 1)) for _ in range(M)]
    lam = np.exp(rng.uniform(-np.log(kappa), 0.0, (M, d)))
    A = np.stack([(Q[m] * lam[m]) @ Q[m].T for m in range(M)])
    A = 0.5 * (A + np.swapaxes(A, 1, 2))
    xs = rng.standard_normal(d) + het * rng.standard_normal((M, d))
    return A, np.einsum("mij,mj->mi", A, xs)


# ----------------------------------------------------------------------------- the evaluator is exact
def test_evaluator_is_the_diagonal_exact_expectation_on_diagonal_hessians():
    """Diagonal ``A_m`` (as dense matrices), ``D̂`` changing at every sync: both evaluators give
    ``verify.exact.exact_dist_sq`` to round-off (observed 5e-15)."""
    rng = np.random.default_rng(11)
    for _ in range(30):
        M, d, H, T = int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 7)), 40
        lam = np.exp(rng.uniform(-3.0, 0.0, (M, d)))
        b = lam * rng.standard_normal((M, d))
        Ds = np.exp(rng.uniform(0.0, 1.5, (T // H + 2, d)))
        noise, x0, g = float(rng.uniform(0.0, 0.3)), rng.standard_normal(d), float(rng.uniform(0.05, 0.3))
        ref = exact_dist_sq(lam, b, g, T, H, noise, D=Ds, x0=x0)
        A = np.stack([np.diag(row) for row in lam])
        np.testing.assert_allclose(_stacked_exact(A, b, g, T, H, noise, Ds, x0), ref, rtol=1e-12)
        np.testing.assert_allclose(exact_dist_sq_dense(A, b, g, T, H, noise, Ds, x0), ref, rtol=1e-12)


def test_the_two_evaluators_agree_on_dense_heterogeneous_hessians():
    rng = np.random.default_rng(12)
    for _ in range(20):
        M, d, H, T = int(rng.integers(1, 5)), int(rng.integers(1, 5)), int(rng.integers(1, 7)), 37
        A, b = _dense_instance(rng, M, d, kappa=20.0, het=1.0)
        Ds = np.exp(rng.uniform(0.0, 1.5, (T // H + 2, d)))
        args = (A, b, 0.2 / float(np.linalg.eigvalsh(A).max()), T, H, float(rng.uniform(0, 0.3)), Ds,
                rng.standard_normal(d))
        np.testing.assert_allclose(exact_dist_sq_dense(*args), _stacked_exact(*args), rtol=1e-12)


def test_dense_evaluator_names_bad_input():
    A = np.array([[[2.0, 0.5], [0.5, 1.0]], [[1.0, 0.0], [0.0, 3.0]]])
    b = np.ones((2, 2))
    assert exact_dist_sq_dense(A, b, 0.1, 3).shape == (4,)
    for kw, pattern in [(dict(A=A[0]), "A must be an array \\(M, d, d\\)"), (dict(b=b[:, :1]), "b must have shape"),
                        (dict(A=A + np.array([[0.0, 0.1], [0.0, 0.0]])), "A must be symmetric"),
                        (dict(A=-A), "A must be positive definite"), (dict(A=A * np.nan), "A and b must be finite"),
                        (dict(sync_every=0), "sync_every must be"), (dict(gamma=0.0), "gamma must be > 0"),
                        (dict(D=np.ones(3)), "D must have shape"), (dict(x0=np.ones(3)), "x0 must be")]:
        args = dict(dict(A=A, b=b, gamma=0.1, steps=3), **kw)
        with pytest.raises(ValueError, match=pattern):
            exact_dist_sq_dense(**args)


def test_evaluator_replays_a_noise_free_rmsprop_run_on_a_dense_quadratic():
    """A real rule on dense heterogeneous Hessians without noise: rmsprop's ``D̂`` (β = 0.5, it moves
    at every sync) read back from the simulator round by round; the exact recursion with that
    sequence is the simulator's ``‖x̄_t − x*‖²`` to round-off, and its drift the recorded one."""
    p = Quadratic.random(dim=3, n_clients=3, heterogeneity=1.0, form="dense", client_spectra="random",
                         mu=0.05, seed=5)
    A, b, H, T, g = p.A[0], p.b[0], 3, 30, 0.3
    rule = rules.rmsprop(beta=0.5, e=1e-3)
    Ds = [simulate(p, rule, gamma=g, steps=max(1, k * H), sync_every=H, noise=0.0).D[0] for k in range(T // H)]
    res = simulate(p, rule, gamma=g, steps=T, sync_every=H, noise=0.0, record_every=1)
    assert np.max(Ds) / np.min(Ds) > 2  # D̂ is not a multiple of I
    np.testing.assert_allclose(exact_dist_sq_dense(A, b, g, T, H, 0.0, Ds), res.history["dist_sq"], rtol=1e-10)
    np.testing.assert_allclose(_drift(Ds, len(Ds) - 1), np.maximum(1.0, res.drift[: len(Ds) - 1]), rtol=1e-12)


def test_evaluator_matches_monte_carlo_runs_with_noise():
    """Dense heterogeneous Hessians, additive noise, 4000 runs, 41 recorded steps: (i) OASIS with its
    exact Hessian-diagonal statistic (a noise-free, non-uniform ``D̂``); (ii) a prescribed ``D̂`` that
    changes at every sync. The sample mean of ``‖x̄_t − x*‖²`` lies within 5 standard errors of the
    exact value at every step: for a mean of 4000 runs the normal approximation is good, a
    two-sided 5-se excursion has probability 5.7e-7 per step and so at most 2.4e-5 over 41 steps
    (Bonferroni), per check."""
    q = Quadratic.random(dim=3, n_clients=3, heterogeneity=1.0, form="dense", client_spectra="random",
                         mu=0.1, seed=8)
    S = np.diag([1.5, 1.0, 0.6])  # unequal diagonals, so that OASIS's D̂ is not a multiple of I
    p = Quadratic(A=S @ q.A[0] @ S, b=q.b[0], noise=0.2)
    A, b, H, T, g, runs = p.A[0], p.b[0], 4, 40, 0.2, 4000
    z = 5.0
    assert 41 * 2 * norm.sf(z) < 2.4e-5
    oasis = simulate(p, rules.oasis(beta=0.9, e=0.05), gamma=g, steps=T, sync_every=H, runs=runs, seed=1,
                     record_every=1, probes="exact")
    D_oasis = oasis.D[0, 0]
    np.testing.assert_allclose(D_oasis, np.maximum(0.05, np.diagonal(A, axis1=1, axis2=2).mean(0)), rtol=1e-12)
    assert D_oasis.max() / D_oasis.min() > 1.5
    Ds = np.array([[1.0, 3.0, 1.0], [3.0, 1.0, 2.0], [1.0, 1.0, 3.0]] * 5)
    prescribed = simulate(p, _prescribed_rule(Ds), gamma=g, steps=T, sync_every=H, runs=runs, seed=2,
                          record_every=1, x0=np.ones(3))
    assert np.all(prescribed.D[:, 0] == Ds[T // H])
    for res, D, x0 in ((oasis, D_oasis, None), (prescribed, Ds, np.ones(3))):
        dist = res.history["dist_sq"]
        mean, se = mean_and_se(dist)
        ex = exact_dist_sq_dense(A, b, g, T, H, p.noise, D, x0)
        assert np.all(np.abs(mean - ex) <= z * se + 1e-12 * ex), float(np.max(np.abs(mean - ex) / se))


# ----------------------------------------------------------------------------- the finding
N1, H_CE, T_CE, NOISE_CE = 200, 2, 30_000, 1e-4
D_FIRST, D_THEN = np.array([100.0, 1.0, 1.0]), np.array([100.0, 1.0, 100.0])


def _counterexample(identical=False):
    """Two clients in ``d = 3``. Eigenbasis ``Q = (v1, v2, v3)`` with ``v1 = (cos a, 0, sin a)``,
    ``v3 = cos c·e2 + sin c·(−sin a, 0, cos a)``, ``v2 = v3 × v1``, ``a = 0.16``, ``c = 3.0``; spectrum
    ``λ = (1, 1e-2, 1e-5)``. Client ``s = ∓1``: ``A_s = Q diag(λ ⊙ 10^{0.1 s (0, 1, −1)}) Qᵀ
    + 0.05 s (v1 v2ᵀ + v2 v1ᵀ)`` (so the two Hessians have different eigenbases and neither is
    diagonal), minimiser ``0.01 s (1, −1, 1)``. Start ``x⁰ = x* + v1``
    (``r₀ = 1``). ``D̂ = diag(100, 1, 1)`` for ``N1 = 200`` rounds, then ``diag(100, 1, 100)``: ``α = 1``,
    ``Γ = 100``, one sync with drift ``1 + δ = 100``. ``H = 2``, ``σ² = 1e-4``, ``γ`` the theorem's
    ``γ_max``."""
    a, c = 0.16, 3.0
    v1 = np.array([np.cos(a), 0.0, np.sin(a)])
    v3 = np.cos(c) * np.array([0.0, 1.0, 0.0]) + np.sin(c) * np.array([-np.sin(a), 0.0, np.cos(a)])
    Q = np.column_stack([v1, np.cross(v3, v1), v3])
    lam = np.array([1.0, 1e-2, 1e-5])
    A, xs = [], []
    for s in (-1.0, 1.0):
        s = 0.0 if identical else s
        mix = 0.05 * s * (np.outer(Q[:, 0], Q[:, 1]) + np.outer(Q[:, 1], Q[:, 0]))
        A.append(Q @ np.diag(lam * 10 ** (0.1 * s * np.array([0.0, 1.0, -1.0]))) @ Q.T + mix)
        xs.append(0.01 * s * np.array([1.0, -1.0, 1.0]))
    A = np.array(A)
    A = 0.5 * (A + np.swapaxes(A, 1, 2))
    b = np.einsum("mij,mj->mi", A, np.array(xs))
    x0 = np.linalg.solve(A.sum(0), b.sum(0)) + v1
    nums = _numbers(A, b, x0, NOISE_CE, H_CE)
    scaling = dict(alpha=1.0, Gamma=100.0)
    gamma = float(THM.gamma_max(delta=0.0, **scaling, **nums))
    return A, b, x0, nums, dict(scaling, gamma=gamma)


def _rounds():
    return np.vstack([np.tile(D_FIRST, (N1, 1)), D_THEN])


def test_heterogeneous_dense_instance_exceeds_the_theorem_without_its_drift_factor():
    """The counterexample, exactly: ``E‖x̄_t − x*‖²`` exceeds the heterogeneous theorem's bound with
    ``δ = 0`` from step 21 072 on, by a factor 1.351 at ``t = 30 000`` (1.84 at ``t = 60 000``, not
    checked here), with ``γ = γ_max`` and the theorem's conditions met. With the true drift
    (``1 + δ_k = 100`` at the sync where ``D̂`` changes, 1 elsewhere; ``Theorem.curve``) the bound
    holds with room: the expectation stays below 10 % of it (9.7 % just before the switch, where the
    two bounds still coincide, and below 1.4 % after it)."""
    A, b, x0, nums, sc = _counterexample()
    assert THM.holds(delta=0.0, **sc, **nums)
    assert nums["L"] / nums["mu"] > 1e5 and nums["zeta2"] > 0  # ill-conditioned, and heterogeneous
    assert all(not np.allclose(np.diag(np.diag(Am)), Am, atol=1e-3) for Am in A)
    ex = exact_dist_sq_dense(A, b, sc["gamma"], T_CE, H_CE, NOISE_CE, _rounds(), x0)
    t = np.arange(T_CE + 1)
    ratio = ex / THM.evaluate(t=t, delta=0.0, **sc, **nums)
    assert 1.35 < ratio[-1] < 1.36 and ratio.max() == ratio[-1], ratio[-1]
    assert 20_500 < np.argmax(ratio > 1.0) < 21_500
    assert ex[-1] > 130 * nums["r0"]  # ‖x̄ − x*‖² grew by more than Γ/α = 100 on average
    syncs = np.arange(H_CE, T_CE + 1, H_CE)
    drift = _drift(_rounds(), len(syncs))
    assert drift[N1 - 1] == 100.0 and np.all(np.delete(drift, N1 - 1) == 1.0)
    with_drift = THM.curve(t, syncs, drift, delta=0.0, **sc, **nums)
    assert np.all(ex <= 0.1 * with_drift) and np.all(ex[H_CE * N1:] <= 0.014 * with_drift[H_CE * N1:])
    np.testing.assert_allclose(with_drift[syncs[N1 - 1]], 100 * THM.evaluate(t=syncs[N1 - 1], delta=0.0, **sc,
                                                                             **nums), rtol=1e-12)


def test_the_same_instance_with_identical_clients_exceeds_both_theorems():
    """The mechanism does not need heterogeneity: with both clients equal to the mean instance
    (``Q diag(1, 1e-2, 1e-5) Qᵀ``, minimiser 0, ``ζ*² = 0``) the exact expectation exceeds the
    identical-data theorem's bound with ``δ = 0`` as well: by 1.35 at ``t = 30 000`` for the
    heterogeneous theorem's ``γ_max`` (0.177), by 1.59 for the identical one's (``α/(4L) = 0.25``)."""
    A, b, x0, nums, sc = _counterexample(identical=True)
    assert nums["zeta2"] == 0.0 and np.allclose(A[0], A[1])
    ex = exact_dist_sq_dense(A, b, sc["gamma"], T_CE, H_CE, NOISE_CE, _rounds(), x0)
    for name in ("heterogeneous", "identical"):
        thm = THEOREMS[name]
        g = float(thm.gamma_max(delta=0.0, **{**sc, **nums}))
        ex_g = ex if g == sc["gamma"] else exact_dist_sq_dense(A, b, g, T_CE, H_CE, NOISE_CE, _rounds(), x0)
        ratio = ex_g[-1] / float(thm.evaluate(t=T_CE, delta=0.0, **{**sc, "gamma": g}, **nums))
        assert {"heterogeneous": 1.34 < ratio < 1.36, "identical": 1.58 < ratio < 1.6}[name], (name, ratio)


def test_simulated_runs_of_the_counterexample_exceed_the_bound():
    """The simulator on the counterexample (``D̂`` prescribed by ``_prescribed_rule``, 16 runs): the
    recorded drift is 100 at the one sync where ``D̂`` changes; the sample mean agrees with the
    exact expectation within 5 standard errors at every recorded step, and at ``t = 30 000`` its
    one-sided lower confidence limit (level 1 − 1e-6, Student t, 15 degrees of freedom) lies
    above the theorem's bound with ``δ = 0``."""
    A, b, x0, nums, sc = _counterexample()
    prob = Quadratic(A=A, b=b, noise=NOISE_CE)
    res = simulate(prob, _prescribed_rule(_rounds()), gamma=sc["gamma"], steps=T_CE, sync_every=H_CE, x0=x0,
                   runs=16, seed=4, record_every=3000)
    drift = res.drift[:, 0]
    assert np.all(res.drift[N1 - 1] == 100.0) and np.all(np.delete(drift, N1 - 1) == 1.0)
    dist, steps = res.history["dist_sq"], np.asarray(res.steps)
    mean, se = mean_and_se(dist)
    ex = exact_dist_sq_dense(A, b, sc["gamma"], T_CE, H_CE, NOISE_CE, _rounds(), x0)[steps]
    assert np.all(np.abs(mean - ex) <= 5 * se + 1e-9 * ex)
    lower = float(lower_limit(dist[-1], level=1 - 1e-6))
    bound = float(THM.evaluate(t=T_CE, delta=0.0, **sc, **nums))
    assert lower > 1.3 * bound, (lower, bound)


def test_random_dense_instances_with_random_scaling_stay_below_the_bound():
    """What random sampling sees (evidence that the counterexample needs its structure): 60 seeded
    instances like the 200 diagonal ones of ``tests/test_verify.py``, with dense Hessians (each
    client its own random eigenbasis; ``κ`` up to 1e3), ``Γ/α`` up to 100 and ``D̂`` jumping between
    ``α`` and ``Γ``, wandering in ``[α, Γ]``, growing from ``α`` to ``Γ`` or drawn from the corners
    anew each round; ``H`` 1 to 15, ``γ`` up to ``γ_max``, from ``x*`` or from 0. The exact expectation
    stays below the ``δ = 0`` bound (the search behind ``docs/theory.md`` §7 ran 20 000 such
    instances: largest ratio 1 at ``t = 1`` from ``x*`` with ``D̂⁰ = αI`` and ``H = 1``, where the bound
    is an equality, and 0.999 from ``t = 2`` on)."""
    rng, T, cases = np.random.default_rng(2025), 120, []
    for trial in range(60):
        M, d, H = int(rng.integers(2, 5)), int(rng.integers(2, 5)), int(rng.integers(1, 16))
        A, b = _dense_instance(rng, M, d, kappa=10 ** rng.uniform(0, 3), het=10 ** rng.uniform(-2, 1))
        L = float(np.linalg.eigvalsh(A).max())
        A, b = A / L, b / L  # L = 1
        Gamma, n_rounds = 10 ** rng.uniform(0.1, 2), T // H + 2
        Ds = [np.where(np.arange(n_rounds)[:, None] % 2 == rng.integers(0, 2, d), 1.0, Gamma),
              np.exp(rng.uniform(0, np.log(Gamma), (n_rounds, d))),
              np.geomspace(1.0, Gamma, n_rounds)[:, None] * np.ones(d),
              np.where(rng.random((n_rounds, d)) < 0.5, 1.0, Gamma)][trial % 4]
        Ds[0, 0], Ds[-1, -1] = 1.0, Gamma
        x0 = np.linalg.solve(A.sum(0), b.sum(0)) if trial % 2 else None
        noise = float(10 ** rng.uniform(-4, 0))
        cases.append((A, b, x0, noise, Ds, dict(_numbers(A, b, x0, noise, H), alpha=1.0, Gamma=Gamma),
                      10 ** rng.uniform(-2, 0)))
    keys = cases[0][5].keys()
    g_max = THM.gamma_max(delta=0.0, **{k: np.array([c[5][k] for c in cases]) for k in keys})  # one call
    worst = late = 0.0
    for (A, b, x0, noise, Ds, nums, frac), gm in zip(cases, g_max):
        g = frac * float(gm)
        ex = exact_dist_sq_dense(A, b, g, T, nums["H"], noise, Ds, x0)
        bound = THM.evaluate(t=np.arange(1, T + 1), gamma=g, delta=0.0, **nums)
        worst, late = max(worst, float(np.max(ex[1:] / bound))), max(late, float(np.max(ex[2:] / bound[1:])))
    assert 0.999 < worst <= 1.0 + RTOL and late < 0.9, (worst, late)  # an equality at t = 1, 0.88 after
