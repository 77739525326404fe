"""Named equivalences of the algorithm spec (docs/algorithm.md, "Consequences")."""
from __future__ import annotations

import numpy as np
import pytest

from savic_theory import RULES, SCALINGS, Quadratic, rules, simulate

from ._reference import local_sgd

SCALED = [n for n in RULES if n != "identity"]


@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("form", ["diagonal", "dense"])
def test_identity_is_local_sgd(scaling, form):
    prob = Quadratic.random(dim=5, n_clients=4, heterogeneity=1.0, form=form,
                            client_spectra="random", seed=3)
    res = simulate(prob, rules.identity(), gamma=0.1, steps=30, sync_every=4, scaling=scaling)
    ref = local_sgd(prob.A[0], prob.b[0], 0.1, 30, 4, np.zeros(5))
    np.testing.assert_allclose(res.x, ref, rtol=1e-12, atol=1e-14)


def test_identity_global_equals_local_with_noise():
    """With identity scaling the two variants are the same algorithm, noise included."""
    prob = Quadratic.random(dim=5, n_clients=3, heterogeneity=1.0, noise=0.5, seed=3)
    kw = dict(gamma=0.1, steps=40, sync_every=5, runs=8, seed=9)
    g = simulate(prob, rules.identity(), scaling="global", **kw)
    lo = simulate(prob, rules.identity(), scaling="local", **kw)
    np.testing.assert_array_equal(g.x, lo.x)


@pytest.mark.parametrize("rule", SCALED)
def test_one_client_every_step_global_equals_local(rule):
    """M = 1 and H = 1 ⇒ global = local, with noise and random probes (same draws)."""
    prob = Quadratic.random(dim=6, n_clients=1, form="dense", noise=0.3, seed=4)
    kw = dict(gamma=0.05, steps=40, sync_every=1, runs=5, seed=2, probes="rademacher")
    g = simulate(prob, rules.make(rule, beta=0.8, e=1e-3), scaling="global", **kw)
    lo = simulate(prob, rules.make(rule, beta=0.8, e=1e-3), scaling="local", **kw)
    np.testing.assert_allclose(g.x, lo.x, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(g.D, lo.D, rtol=1e-13)


@pytest.mark.parametrize("rule", SCALED)
def test_sync_every_step_is_minibatch_sgd_with_one_preconditioner(rule):
    """H = 1 ⇒ global scaling is x ← x − γ mean_m(g_m)/D̂ with D̂ from mean_m S_m."""
    prob = Quadratic.random(dim=5, n_clients=4, heterogeneity=1.0, form="dense", seed=8)
    A, b = prob.A[0], prob.b[0]
    beta, e, gamma, T = 0.7, 1e-2, 0.05, 25
    res = simulate(prob, rules.make(rule, beta=beta, e=e), gamma=gamma, steps=T, sync_every=1)

    def stats(x):
        if rule == "oasis":
            return np.mean([np.diag(Am) for Am in A], axis=0)
        return np.mean([(Am @ x - bm) ** 2 for Am, bm in zip(A, b)], axis=0)

    x = np.zeros(5)
    s0 = stats(x)
    v, c = ((1 - beta) * s0, 1 - beta) if rule == "adam" else (s0, 1.0)
    for _ in range(T):
        D = np.maximum(e, np.abs(v) if rule == "oasis" else np.sqrt(v / c))
        s = stats(x)
        x = x - gamma * np.mean([Am @ x - bm for Am, bm in zip(A, b)], axis=0) / D
        v = beta * v + (1 - beta) * s
        c = beta * c + (1 - beta) if rule == "adam" else c
    np.testing.assert_allclose(res.x, np.broadcast_to(x, res.x.shape), rtol=1e-12)


@pytest.mark.parametrize("scaling", SCALINGS)
def test_adam_is_rmsprop_with_bias_correction_schedule(scaling):
    """Adam(β) = rmsprop with β̃_k = (β − β^{k+1})/(1 − β^{k+1}) on D², k counting rmsprop's updates."""
    beta = 0.9
    prob = Quadratic.random(dim=5, n_clients=3, heterogeneity=1.0, noise=0.2, seed=6)
    kw = dict(gamma=0.05, steps=30, sync_every=3, scaling=scaling, runs=4, seed=1)
    a = simulate(prob, rules.adam(beta=beta, e=1e-3), **kw)
    tilde = lambda k: (beta - beta ** (k + 1)) / (1 - beta ** (k + 1))  # noqa: E731
    r = simulate(prob, rules.rmsprop(beta=tilde, e=1e-3), **kw)
    np.testing.assert_allclose(a.x, r.x, rtol=1e-12)
    np.testing.assert_allclose(a.D, r.D, rtol=1e-12)


@pytest.mark.parametrize("scaling", SCALINGS)
def test_oasis_probes_are_exact_for_diagonal_hessians(scaling):
    """z ⊙ (A z) = diag(A) when A is diagonal: Rademacher and exact probes coincide."""
    prob = Quadratic.random(dim=6, n_clients=3, heterogeneity=1.0, client_spectra="random",
                            noise=0.1, seed=2)
    kw = dict(gamma=0.05, steps=20, sync_every=4, scaling=scaling, runs=3, seed=5)
    a = simulate(prob, rules.oasis(beta=0.9), probes="rademacher", **kw)
    b = simulate(prob, rules.oasis(beta=0.9), probes="exact", **kw)
    np.testing.assert_allclose(a.D, b.D, rtol=1e-15)
    assert a.params["probes"] == "rademacher" and b.params["probes"] == "exact"


def test_oasis_probe_mode_auto():
    prob = Quadratic.random(dim=4, n_clients=2, form="dense", seed=2)
    assert simulate(prob, rules.oasis(), gamma=0.1, steps=2).params["probes"] == "exact"
    assert simulate(prob, rules.oasis(), gamma=0.1, steps=2, noise=0.1).params["probes"] == "rademacher"


@pytest.mark.parametrize("rule", SCALED)
@pytest.mark.parametrize("scaling", SCALINGS)
def test_beta_zero_keeps_only_the_last_statistic(rule, scaling):
    """β = 0: D̂ is built from the last statistic alone (matches the reference at β = 0)."""
    from ._reference import reference_savic

    prob = Quadratic.random(dim=4, n_clients=2, heterogeneity=1.0, form="dense", seed=1)
    res = simulate(prob, rules.make(rule, beta=0.0, e=1e-8), gamma=0.05, steps=9, sync_every=3,
                   scaling=scaling)
    ref = reference_savic(prob.A[0], prob.b[0], rule, 0.05, 9, [3, 6, 9], scaling, np.zeros(4),
                          beta=0.0, e=1e-8)
    np.testing.assert_allclose(res.x, ref, rtol=1e-12)


def test_sync_at_equals_periodic_schedule():
    prob = Quadratic.random(dim=4, n_clients=3, heterogeneity=1.0, noise=0.1, seed=1)
    kw = dict(gamma=0.05, steps=20, runs=2, seed=3)
    a = simulate(prob, rules.adam(beta=0.9), sync_every=4, **kw)
    b = simulate(prob, rules.adam(beta=0.9), sync_at=[4, 8, 12, 16, 20], **kw)
    np.testing.assert_array_equal(a.x, b.x)
