"""Rules of the algorithm spec (docs/algorithm.md) pinned by checks that share nothing with the
simulator's code and do not depend on the order in which it draws random numbers:

* the statistic comes from the same sample as the step's gradient, under noise and minibatches;
* ``clip(D) = max(e, |D|)`` also when an OASIS probe is negative;
* β schedules ``k ↦ β_k``, including which β adam's first update consumes;
* what is recorded off the sync steps (``f_gap``, ``consensus``, ``dist_sq_D``) and the drift,
  global and local, against the per-client reference.
"""
from __future__ import annotations

import numpy as np
import pytest

from savic_theory import Logistic, Quadratic, rules, simulate

from ._reference import reference_savic, savic_loop
from .test_simulator import hetero_problem

# Noise-free comparisons with the per-client reference: float64 round-off over a few dozen
# O(1) steps (as in test_simulator.py, whose RTOL this is).
RTOL = 1e-12


def _d1_first_step(prob, rule, scaling, runs=32, gamma=0.1, x0=0.0):
    """One step of a one-client, one-coordinate problem with H = 1 and β = 0: returns the
    gradient each run stepped with, recovered from its iterates, and the D̂ after the sync."""
    res = simulate(prob, rules.make(rule, beta=0.0, e=1e-3), gamma=gamma, steps=1, sync_every=1,
                   scaling=scaling, runs=runs, seed=5, x0=np.array([x0]), record_every=1)
    d0 = res.history["Gamma_hat"][0]  # d = 1: D̂ in force during step 0 (alpha_hat is the same)
    np.testing.assert_array_equal(d0, res.history["alpha_hat"][0])
    g = (x0 - res.x[:, 0, 0]) * d0 / gamma  # x¹ = x⁰ − γ g / D̂⁰
    return g, res.D[:, 0, 0]


@pytest.mark.parametrize("rule", ["rmsprop", "adam"])
@pytest.mark.parametrize("scaling", ["global", "local"])
def test_grad_squared_statistic_uses_the_steps_own_noise_sample(rule, scaling):
    """With β = 0 the D̂ after step 0 is clip(|g|) of the gradient that step used (adam: its
    bias correction divides by 1 − β = 1). A statistic from a fresh sample would differ in
    every run: the noise has σ = 1 against a gradient of 1."""
    prob = Quadratic(A=[[1.0]], b=[[1.0]], noise=1.0)
    g, d1 = _d1_first_step(prob, rule, scaling)
    assert np.ptp(g) > 0.5  # the runs did draw different noise
    # g is recovered from x¹ = −γ g / D̂⁰ (x⁰ = 0: no cancellation) with a few roundings: ~1e-16
    np.testing.assert_allclose(d1, np.maximum(1e-3, np.abs(g)), rtol=1e-12)


@pytest.mark.parametrize("scaling", ["global", "local"])
def test_oasis_probe_uses_the_steps_own_minibatch(scaling):
    """Logistic regression on three rows, minibatches of one row: at x⁰ = 0 row i has gradient
    −y_i a_i / 2 and Hessian a_i²/4 + λ (a probe z² = 1 reads it exactly in d = 1). Each run's
    (gradient, D̂) pair must be one row's pair; a probe on another draw would mix rows."""
    a, y, lam = np.array([1.0, 2.0, 3.0]), np.array([1.0, 1.0, -1.0]), 0.01
    prob = Logistic([a[:, None]], [y], lam=lam, batch_size=1)
    g, d1 = _d1_first_step(prob, "oasis", scaling, runs=48)
    rows_g, rows_h = -y * a / 2, a * a / 4 + lam
    row = np.argmin(np.abs(g[:, None] - rows_g[None, :]), axis=1)
    np.testing.assert_allclose(g, rows_g[row], rtol=1e-12)
    np.testing.assert_allclose(d1, rows_h[row], rtol=1e-12)
    assert len(set(row.tolist())) == 3  # all three rows were drawn (48 runs)


@pytest.mark.parametrize("scaling", ["global", "local"])
def test_oasis_clip_takes_the_absolute_value_of_a_negative_probe(scaling):
    """For A = [[1, −1.9], [−1.9, 4]] (positive definite) a Rademacher probe gives
    z ⊙ (A z) = (1 − 1.9 z₁z₂, 4 − 1.9 z₁z₂): (−0.9, 2.1) when z₁ = z₂, (2.9, 5.9) otherwise.
    With β = 0 the D̂ after one sync is clip of that probe: |−0.9| = 0.9, not e."""
    prob = Quadratic(A=[[[1.0, -1.9], [-1.9, 4.0]]], b=[[0.0, 0.0]])
    res = simulate(prob, rules.oasis(beta=0.0, e=1e-3), gamma=0.01, steps=1, sync_every=1, scaling=scaling,
                   runs=32, seed=1, probes="rademacher")
    D = res.D[:, 0, :]
    same = np.isclose(D[:, 1], 2.1, rtol=1e-12, atol=0)
    np.testing.assert_allclose(D[same], np.broadcast_to([0.9, 2.1], D[same].shape), rtol=1e-12)
    np.testing.assert_allclose(D[~same], np.broadcast_to([2.9, 5.9], D[~same].shape), rtol=1e-12)
    assert 0 < same.sum() < len(same)  # both signs of z₁z₂ occurred


def _schedule(k):
    """β_k that changes with every update, so each update's index matters."""
    return 0.3 + 0.6 * k / (k + 2)


@pytest.mark.parametrize("rule", ["rmsprop", "adam"])
@pytest.mark.parametrize("scaling", ["global", "local"])
def test_beta_schedule_matches_the_reference(rule, scaling):
    """The k-th update of the state uses β_k (k from 1; adam's initialisation consumes β₁, its
    first update β₂), as the per-client reference spells out."""
    A, b = hetero_problem("dense", seed=3, M=3, d=4)
    x0 = np.linspace(-1.0, 1.0, 4)
    res = simulate(Quadratic(A=A, b=b), rules.make(rule, beta=_schedule, e=1e-2), gamma=0.05, steps=24,
                   sync_every=3, scaling=scaling, x0=x0, seed=0)
    ref = reference_savic(A, b, rule, 0.05, 24, range(3, 25, 3), scaling, x0, beta=_schedule)
    np.testing.assert_allclose(res.x, ref, rtol=RTOL, atol=1e-14)
    # the schedule matters here: a constant β (its first or its last value) gives other iterates
    for beta in (_schedule(1), _schedule(2), _schedule(40)):
        other = reference_savic(A, b, rule, 0.05, 24, range(3, 25, 3), scaling, x0, beta=beta)
        assert np.max(np.abs(other - ref)) > 1e3 * RTOL * np.max(np.abs(ref))


@pytest.mark.parametrize("scaling", ["global", "local"])
def test_oasis_beta_schedule_matches_a_logistic_reference(scaling):
    """OASIS's statistic is constant on a quadratic, so β is seen only where the Hessian changes:
    full-batch logistic regression with the exact Hessian diagonal, written out here."""
    rng = np.random.default_rng(4)
    M, n, d, lam = 3, 20, 4, 0.05
    X = [rng.standard_normal((n, d)) * [1.0, 2.0, 0.5, 3.0] for _ in range(M)]
    Y = [np.where(rng.random(n) < 0.5, -1.0, 1.0) for _ in range(M)]

    def grad(m, x):
        u = Y[m] * (X[m] @ x)
        return -(X[m] * (Y[m] / (1 + np.exp(u)))[:, None]).mean(axis=0) + lam * x

    def hdiag(m, x):
        p = 1 / (1 + np.exp(-Y[m] * (X[m] @ x)))
        return (X[m] ** 2 * (p * (1 - p))[:, None]).mean(axis=0) + lam

    x0 = np.array([1.0, -1.0, 0.5, 0.2])
    res = simulate(Logistic(X, Y, lam=lam), rules.oasis(beta=_schedule, e=1e-2), gamma=0.5, steps=24,
                   sync_every=3, scaling=scaling, x0=x0, probes="exact", seed=0)
    ref = savic_loop(grad, hdiag, M, "oasis", 0.5, 24, range(3, 25, 3), scaling, x0, beta=_schedule)
    np.testing.assert_allclose(res.x, ref, rtol=RTOL, atol=1e-14)
    for beta in (_schedule(1), _schedule(40)):
        other = savic_loop(grad, hdiag, M, "oasis", 0.5, 24, range(3, 25, 3), scaling, x0, beta=beta)
        assert np.max(np.abs(other - ref)) > 1e3 * RTOL * np.max(np.abs(ref))


@pytest.mark.parametrize("rule", ["identity", "rmsprop", "adam", "oasis"])
@pytest.mark.parametrize("scaling", ["global", "local"])
def test_records_off_the_sync_steps_and_drift_match_the_reference(rule, scaling):
    """At a step that is not a sync (T = 10, H = 4) ``f_gap``, ``consensus`` and ``dist_sq_D``
    are computed from the reference's client iterates and D̂ (local: the clients' mean D̂); the
    drift at each sync is the extreme ratio of consecutive D̂ over the coordinates (local: and
    over the clients and the steps since the previous sync)."""
    A, b = hetero_problem("dense", seed=11, M=3, d=4)
    prob = Quadratic(A=A, b=b)
    x0 = np.linspace(1.0, -1.0, 4)
    rule_obj = rules.make(rule) if rule == "identity" else rules.make(rule, beta=0.7, e=1e-2)
    res = simulate(prob, rule_obj, gamma=0.05, steps=10, sync_every=4, scaling=scaling, x0=x0, seed=0)
    trace = []
    xs = reference_savic(A, b, rule, 0.05, 10, [4, 8], scaling, x0, beta=0.7, trace=trace)
    assert res.steps[-1] == 10 and res.sync_steps.tolist() == [4, 8]

    xbar = xs.mean(axis=0)
    xstar = np.linalg.solve(A.mean(axis=0), b.mean(axis=0))
    f = 0.5 * xbar @ A.mean(axis=0) @ xbar - b.mean(axis=0) @ xbar
    f_star = 0.5 * xstar @ A.mean(axis=0) @ xstar - b.mean(axis=0) @ xstar
    D_last = trace[-1][1]
    expected = {"f_gap": f - f_star, "consensus": np.mean(np.sum((xs - xbar) ** 2, axis=1)),
                "dist_sq": np.sum((xbar - xstar) ** 2),
                "dist_sq_D": np.sum(D_last.mean(axis=0) * (xbar - xstar) ** 2),
                "alpha_hat": D_last.min(), "Gamma_hat": D_last.max()}
    for name, value in expected.items():
        # f_gap and consensus are differences of O(1) numbers: round-off relative to them
        assert res.history[name][-1] == pytest.approx(value, rel=1e-9, abs=1e-13), name
    assert expected["consensus"] > 1e-6  # step 10 is not a sync: the clients differ

    for p, sync in enumerate((4, 8)):
        prev = [0, 4][p]
        Ds = [D for t, D in trace if prev <= t <= sync] if scaling == "local" else \
            [D for t, D in trace if t in (prev, sync)]
        ratios = np.stack([new / old for old, new in zip(Ds, Ds[1:])])
        assert res.drift[p] == pytest.approx(ratios.max(), rel=RTOL), p
        assert res.drift_min[p] == pytest.approx(ratios.min(), rel=RTOL), p


@pytest.mark.parametrize("fused", [True, "numpy", False])
def test_G_hat_bounds_the_statistic_D_is_built_from(fused):
    """``G_hat`` is √ of the largest entry of the statistic folded into D̂: in global scaling the
    clients' mean of ``g ⊙ g`` (what the rmsprop/adam bound ``D̂ ≤ max(e, G)`` needs), in local
    scaling each client's own; every path of the simulator records the same. Noise-free, from
    x⁰ = 0 both the initial statistic and that of step 1 (a sync) are taken at x⁰: ``b ⊙ b``."""
    b = np.array([[2.0, -1.0, 0.5], [0.0, 3.0, -1.0]])  # two clients: coordinate 1 has the largest mean
    prob = Quadratic(A=np.array([[1.0, 0.5, 0.8], [0.6, 1.0, 0.9]]), b=b)
    kw = dict(gamma=0.1, steps=1, sync_every=1, record_every=1, fused=fused)
    glob = simulate(prob, rules.rmsprop(beta=0.5, e=1e-3), **kw)
    loc = simulate(prob, rules.rmsprop(beta=0.5, e=1e-3), scaling="local", **kw)
    np.testing.assert_allclose(glob.history["G_hat"], np.sqrt(np.max(np.mean(b * b, axis=0))), rtol=RTOL)
    np.testing.assert_allclose(loc.history["G_hat"], np.max(np.abs(b)), rtol=RTOL)
    # the bound holds with the smaller G: D̂⁰ = √(mean b ⊙ b) attains it
    np.testing.assert_allclose(np.max(glob.history["Gamma_hat"]), np.sqrt(5.0), rtol=RTOL)
