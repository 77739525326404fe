"""Hypothesis properties: the spec's bounds on D̂ and on its drift hold on every recorded step.

For ``clip(D) = max(e, |D|)``: ``α = e ≤ D̂``; rmsprop/adam ``D̂ ≤ Γ = max(e, G)`` with
``G²`` the largest entry of the statistics folded in (``history["G_hat"]``; the clients' mean of
``g ⊙ g`` in global scaling, at most the spec's ``sup‖g‖_∞``); oasis ``D̂ ≤ max(e,
max_i Σ_j |∇²f_ij|)``. Drift per update: ``D̂ᵏ⁺¹ ≤ (1+δ) D̂ᵏ`` with
``δ = (1−β_k)Γ²/(2α²)`` (rmsprop/adam, ``β_k`` Adam's effective ``(β−β^k)/(1−β^k)``, worst at
``k = 2``) and ``δ = (1−β)Γ/α`` (oasis); from below ``D̂ᵏ⁺¹ ≥ √β_k D̂ᵏ`` for rmsprop/adam.
Inequalities are checked with a relative slack of 1e-12 for float64 round-off.
"""
from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from savic_theory import SCALINGS, Quadratic, rules, simulate

SLACK = 1e-12


@st.composite
def instances(draw):
    M = draw(st.integers(1, 4))
    d = draw(st.integers(1, 5))
    form = draw(st.sampled_from(["diagonal", "dense"]))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    if form == "diagonal":
        A = rng.uniform(0.05, 3.0, (M, d))
    else:
        G = rng.standard_normal((M, d, d))
        A = np.einsum("mij,mkj->mik", G, G) / d + 0.05 * np.eye(d)
    b = rng.standard_normal((M, d)) * draw(st.floats(0.0, 3.0))
    noise = draw(st.sampled_from([0.0, 0.01, 1.0]))
    return Quadratic(A=A, b=b, noise=noise)


common = dict(
    prob=instances(),
    beta=st.floats(0.0, 0.999),
    e=st.floats(1e-4, 1.0),
    scaling=st.sampled_from(SCALINGS),
    H=st.integers(1, 6),
    gamma=st.floats(1e-3, 0.3),
)


@given(rule=st.sampled_from(["rmsprop", "adam"]), **common)
def test_gradient_rules_respect_alpha_gamma_and_drift(prob, rule, beta, e, scaling, H, gamma):
    res = simulate(prob, rules.make(rule, beta=beta, e=e), gamma=gamma, steps=30, sync_every=H,
                   scaling=scaling, runs=3, record_every=1, seed=0)
    h = res.history
    ok = res.status == "ok"
    assert np.all(h["alpha_hat"][:, ok] >= e * (1 - SLACK))
    Gamma_t = np.maximum(e, h["G_hat"])
    assert np.all(h["Gamma_hat"][:, ok] <= Gamma_t[:, ok] * (1 + SLACK))
    Gamma = Gamma_t[-1]
    one_minus_beta = (1 - beta) if rule == "rmsprop" else 1 / (1 + beta)  # Adam's worst, k = 2
    delta = one_minus_beta * Gamma**2 / (2 * e**2)
    synced = ~np.isnan(res.drift)
    assert np.all((res.drift <= (1 + delta) * (1 + SLACK))[synced])
    low = np.sqrt(beta if rule == "rmsprop" else beta / (1 + beta))
    assert np.all((res.drift_min >= low * (1 - SLACK))[synced])


@given(probes=st.sampled_from(["exact", "rademacher"]), **common)
def test_oasis_respects_alpha_gamma_and_drift(prob, beta, e, scaling, H, gamma, probes):
    res = simulate(prob, rules.oasis(beta=beta, e=e), gamma=gamma, steps=30, sync_every=H,
                   scaling=scaling, runs=3, record_every=1, seed=0, probes=probes)
    h = res.history
    Gamma = max(e, float(prob.hessian_bound()))
    assert np.all(h["alpha_hat"] >= e * (1 - SLACK))
    assert np.all(h["Gamma_hat"] <= Gamma * (1 + SLACK))
    assert np.all(h["G_hat"] <= Gamma * (1 + SLACK))  # every probe obeys Gershgorin's bound
    synced = ~np.isnan(res.drift)
    assert np.all((res.drift <= (1 + (1 - beta) * Gamma / e) * (1 + SLACK))[synced])


@given(prob=instances(), scaling=st.sampled_from(SCALINGS), H=st.integers(1, 6))
def test_identity_keeps_unit_scaling(prob, scaling, H):
    res = simulate(prob, rules.identity(), gamma=0.05, steps=12, sync_every=H, scaling=scaling)
    assert np.all(res.history["alpha_hat"] == 1.0) and np.all(res.history["Gamma_hat"] == 1.0)
    assert np.all(res.drift == 1.0)


@given(prob=instances(), H=st.integers(1, 6))
def test_consensus_is_zero_right_after_every_sync(prob, H):
    res = simulate(prob, rules.adam(beta=0.9), gamma=0.05, steps=24, sync_every=H, record_every=1)
    at_sync = np.isin(res.steps, res.sync_steps)
    scale = 1 + np.max(np.abs(res.x)) ** 2
    assert np.all(res.history["consensus"][at_sync] <= 1e-24 * scale)
