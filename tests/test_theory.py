"""The SymPy theory: registries, reductions to Local SGD (KMR 2020), lemmas against exact maths.

Relations tested (PEPit style): *equal* for the symbolic reductions (exact rational arithmetic,
difference simplifies to 0) and for the closed form vs. the unrolled recursion (relative 1e-12,
float64 round-off of a few hundred multiply-adds); *upper bound* for every inequality, with a
relative slack of 1e-12 for float64 round-off.
"""
from __future__ import annotations

import types

import numpy as np
import pytest
import sympy as sp
from hypothesis import given
from hypothesis import strategies as st

from savic_theory import rules
from savic_theory.theory import LEMMAS, RULE_BOUNDS, THEOREMS, drift_factors, symbols
from savic_theory.theory.symbols import (
    A_nu,
    B_nu,
    Gamma,
    H,
    L,
    M,
    alpha,
    delta,
    gamma,
    mu,
    r0,
    sigma2,
    t,
    zeta2,
)

RTOL = 1e-12  # float64 round-off of the evaluated expressions
RATE = ["identical", "heterogeneous"]

BASE = dict(L=1.0, mu=0.1, alpha=0.5, Gamma=2.0, delta=0.01, M=4, H=4, sigma2=0.03, zeta2=0.2,
            A_nu=0.0, B_nu=1.0, r0=1.5)


# ----------------------------------------------------------------------------- registries
def test_registries_are_read_only_and_cover_every_rule():
    for reg in (THEOREMS, LEMMAS, RULE_BOUNDS, symbols.SYMBOLS):
        assert isinstance(reg, types.MappingProxyType)
        with pytest.raises(TypeError):
            reg["new"] = None
    assert set(RULE_BOUNDS) == set(rules.RULES)
    for rule in rules.RULES:
        assert f"dhat_bounds[{rule}]" in LEMMAS and f"drift[{rule}]" in LEMMAS
    assert {"identical", "heterogeneous", "beta_condition[identical]", "beta_condition[heterogeneous]",
            "complexity[identical]", "complexity[heterogeneous]"} == set(THEOREMS)


def test_symbols_carry_their_signs():
    for s in (L, mu, alpha, Gamma, gamma, M, H, B_nu):
        assert s.is_positive
    for s in (sigma2, zeta2, delta, r0, A_nu, symbols.beta, symbols.G):
        assert s.is_nonnegative
    assert M.is_integer and H.is_integer and t.is_integer


def test_every_theorem_and_lemma_is_documented():
    for thm in THEOREMS.values():
        assert thm.statement and thm.assumptions and thm.derivation
        assert "\\le" in thm.latex() or "T_" in thm.latex()
        assert all(isinstance(c, sp.core.relational.Relational) for c in thm.conditions.values())
    for lem in LEMMAS.values():
        assert lem.proof.strip() and lem.checked_by and lem.latex()


def test_theory_page_covers_every_assumption_lemma_and_theorem():
    """docs/theory.md names each registry entry (parametrised families by their base name), every
    rule in the rule-lemma table, the assumptions A1–A5, and says the derivations are this project's."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "docs" / "theory.md").read_text()
    for name in list(LEMMAS) + list(THEOREMS):
        assert re.search(rf"[`*]{re.escape(name.split('[')[0])}\b", text), name
    for rule in RULE_BOUNDS:
        assert f"\n| {rule} |" in text, rule
    for k in range(1, 6):
        assert f"| A{k} |" in text
    assert "this project's derivations, not the paper's" in text


# ----------------------------------------------------------------------------- the derivation
def _numbers(**over):
    return {**BASE, **over}


@pytest.mark.parametrize("name", RATE)
def test_bound_at_alpha_gamma_one_delta_zero_is_local_sgd_exactly(name):
    """At α = Γ = 1, δ = 0: (1−γμ)^t r0 + ε (1 − (1−γμ)^t)/(γμ) with ε the per-step noise."""
    thm = THEOREMS[name]
    sub = {alpha: 1, Gamma: 1, delta: 0}
    eps_step = thm.extras["eps_step"].subs(sub)
    kmr = (1 - gamma * mu) ** t * r0 + eps_step * (1 - (1 - gamma * mu) ** t) / (gamma * mu)
    vals = {L: sp.Rational(3, 2), mu: sp.Rational(1, 5), gamma: sp.Rational(1, 9), M: 3,
            sigma2: sp.Rational(1, 7), zeta2: sp.Rational(2, 3), A_nu: sp.Rational(1, 4), B_nu: 2, r0: 5}
    for H_val in (1, 3, 5):
        for t_val in (0, 1, 2, 3, 7, 15, 16):
            got = thm.bound.subs(sub).subs({**vals, H: H_val, t: t_val})
            want = kmr.subs({**vals, H: H_val, t: t_val})
            assert sp.simplify(got - want) == 0, (H_val, t_val)


def _floor_coefficients(name):
    """Noise floor ε/(γμ) at α = Γ = 1, δ = 0 as a polynomial in γ."""
    thm = THEOREMS[name]
    floor = sp.expand(thm.extras["eps_step"].subs({alpha: 1, Gamma: 1}) / (gamma * mu))
    poly = sp.Poly(floor, gamma)
    assert set(poly.monoms()) <= {(1,), (2,)}
    return floor.coeff(gamma, 1), floor.coeff(gamma, 2)


def test_identical_noise_floor_has_the_kmr_shape():
    """O(γσ²/(μM)) + O(γ²Lσ²(H−1)/μ): c1 = B_ν σ²/(μM), c2 = (2L−μ)(1−1/M)(H−1)B_ν σ²/μ ≤ 2B_ν L(H−1)σ²/μ."""
    c1, c2 = _floor_coefficients("identical")
    assert sp.simplify(c1 - B_nu * sigma2 / (mu * M)) == 0
    assert sp.simplify(c2 - (2 * L - mu) * (1 - 1 / M) * (H - 1) * B_nu * sigma2 / mu) == 0
    assert c2.subs(H, 1) == 0  # H = 1: minibatch SGD, no consensus term


def test_heterogeneous_noise_floor_has_the_kmr_shape():
    """O(γσ²/(μM)) + O(γ²L(H−1)²σ_dif²/μ): the ζ*² term carries (H−1)², the σ² term (H−1)."""
    c1, c2 = _floor_coefficients("heterogeneous")
    assert sp.simplify(c1 - B_nu * sigma2 / (mu * M)) == 0
    c2 = sp.expand(c2)
    assert sp.simplify(c2.coeff(zeta2) - 4 * (2 * L - mu) * (H - 1) ** 2 / mu) == 0
    assert sp.simplify(c2.coeff(sigma2) - 2 * (2 * L - mu) * (H - 1) * (1 - 1 / M) * B_nu / mu) == 0
    assert sp.simplify(c2.subs(H, 1)) == 0
    # c2 ≤ (8 + 4B_ν) L (H−1)² σ_dif² / μ with σ², ζ*² ≤ σ_dif² and H ≥ 2
    rng = np.random.default_rng(0)
    f = sp.lambdify((L, mu, H, M, B_nu, sigma2, zeta2), c2)
    for _ in range(200):
        Lv = rng.uniform(0.1, 10)
        muv, Hv, Mv, Bv = Lv * rng.uniform(0.01, 1), rng.integers(2, 50), rng.integers(1, 20), rng.choice([1.0, 2.0])
        s2, z2 = rng.uniform(0, 1, 2)
        assert f(Lv, muv, Hv, Mv, Bv, s2, z2) <= (8 + 4 * Bv) * Lv * (Hv - 1) ** 2 * (s2 + z2) / muv * (1 + RTOL)


@pytest.mark.parametrize("name", RATE)
def test_step_size_conditions_reduce_to_kmr(name):
    """γ ≤ α/(4(L + A_ν/M)): 1/(4L) for additive noise at α = 1; heterogeneous also γ ≲ 1/(L(H−1))."""
    thm = THEOREMS[name]
    cap = thm.conditions["step_size"].rhs
    assert sp.simplify(cap.subs({alpha: 1, A_nu: 0}) - 1 / (4 * L)) == 0
    g = thm.gamma_max(**_numbers(alpha=1.0, Gamma=1.0, A_nu=0.0, H=9))
    if name == "identical":
        assert np.isclose(g, 0.25)
    else:  # 16γ²(H−1)²L(2L−μ)(1−γμ)^{1−H} ≤ 1 at equality: γ = g0 (1−γμ)^{(H−1)/2}, g0 = 1/(4(H−1)√(L(2L−μ)))
        g0, mu_v = 1 / (4 * 8 * np.sqrt(1.9)), 0.1
        # γ < g0 makes (1−γμ)⁴ > (1−g0μ)⁴: the root lies strictly between these ends
        assert g0 * (1 - g0 * mu_v) ** 4 < g < g0
        # and solves the equation: the bisection's 1e-12 slack on a condition ∝ γ² moves it by at
        # most 5e-13 relative (measured 5.0e-13); 1e-10 is 200× that
        assert g == pytest.approx(g0 * (1 - g * mu_v) ** 4, rel=1e-10)


@pytest.mark.parametrize("name", RATE)
def test_gamma_max_is_the_boundary_of_the_conditions(name):
    thm = THEOREMS[name]
    for over in ({}, {"A_nu": 3.0}, {"H": 1}, {"H": 17, "M": 1}):
        nums = _numbers(**over)
        g = thm.gamma_max(**nums)
        assert thm.holds(gamma=g, **nums)
        assert not thm.holds(gamma=g * 1.001, **nums)


def test_rounds_unrolled_match_rsolve():
    """The product/sum unrolling of Ψ_{p+1} = qΨ_p + c equals SymPy's rsolve solution."""
    thm = THEOREMS["identical"]
    q, S_H, eps_step = thm.extras["q"], thm.extras["S_H"], thm.extras["eps_step"]
    Psi = sp.Function("Psi")
    p = symbols.p
    c = (1 + delta) * eps_step * S_H
    qs, cs, P0 = sp.symbols("q c Psi_0", positive=True)
    sol = sp.rsolve(Psi(p + 1) - qs * Psi(p) - cs, Psi(p), {Psi(0): P0})
    ours = thm.extras["Psi_p"].subs(sp.Symbol("Psi_0", nonnegative=True), P0)
    vals = {L: 1, mu: sp.Rational(1, 10), gamma: sp.Rational(1, 8), Gamma: 2, alpha: sp.Rational(1, 2),
            delta: sp.Rational(1, 50), M: 4, H: 3, sigma2: sp.Rational(1, 3), A_nu: 0, B_nu: 1}
    for pv in range(6):
        a = ours.subs(vals).subs(p, pv)
        b = sol.subs({qs: q.subs(vals), cs: c.subs(vals)}).subs(p, pv)
        assert sp.simplify(a - b) == 0


@pytest.mark.parametrize("name", RATE)
@pytest.mark.parametrize("delta_v", [0.0, 0.02, 0.3])
def test_closed_form_equals_unrolled_recursion(name, delta_v):
    """curve() (the recursion along explicit syncs) equals bound for periodic syncs, constant δ,
    also when q = (1+δ)(1−ρ)^H > 1 and the bound grows."""
    thm = THEOREMS[name]
    nums = _numbers(delta=delta_v, H=5)
    nums["gamma"] = float(thm.gamma_max(**nums))
    steps = np.arange(0, 301)
    syncs = np.arange(5, 301, 5)
    closed = thm.evaluate(t=steps, **nums)
    rec = thm.curve(steps, syncs, np.full(len(syncs), 1 + delta_v), **nums)
    np.testing.assert_allclose(rec, closed, rtol=1e-12)
    if delta_v == 0.3:
        assert closed[-1] > closed[0]  # q > 1: the (1+δ) factors win


def test_curve_handles_runs_and_missing_syncs():
    """Each column of a batched curve is the single-run curve of that run's α along its own
    syncs; a NaN drift (the run did not sync then) is the same as that sync being absent."""
    thm = THEOREMS["identical"]
    nums = _numbers(gamma=0.05, alpha=np.array([0.5, 1.0]))
    drift = np.array([[1.1, np.nan], [1.2, 1.05]])
    out = thm.curve(np.arange(5), np.array([2, 4]), drift, **nums)
    assert out.shape == (5, 2) and np.all(np.isfinite(out))
    run0 = thm.curve(np.arange(5), np.array([2, 4]), np.array([1.1, 1.2]), **_numbers(gamma=0.05, alpha=0.5))
    run1 = thm.curve(np.arange(5), np.array([4]), np.array([1.05]), **_numbers(gamma=0.05, alpha=1.0))
    # the same elementwise float64 operations (a factor 1.0 is exact): equal up to a few ulps at
    # most, should a vectorised and a scalar math-library path differ (measured: exactly equal)
    np.testing.assert_allclose(out[:, 0], run0, rtol=1e-14)
    np.testing.assert_allclose(out[:, 1], run1, rtol=1e-14)
    with pytest.raises(ValueError, match="drift has"):
        thm.curve(np.arange(5), np.array([2, 4]), np.ones(3), **nums)


# ----------------------------------------------------------------------------- the β condition
@given(rho=st.floats(1e-6, 0.5), H_v=st.integers(1, 200), d=st.floats(0, 1.0))
def test_lambda_between_one_and_two_one_plus_delta(rho, H_v, d):
    """1 ≤ Λ = (1+δ)(1 − (1−ρ)^H)/(1 − (1−ρ/2)^H) ≤ 2(1+δ) (used to simplify the β-condition bound)."""
    one_minus_pow = lambda r: -np.expm1(H_v * np.log1p(-r))
    lam = (1 + d) * one_minus_pow(rho) / one_minus_pow(rho / 2)
    assert 1 - RTOL <= lam <= 2 * (1 + d) * (1 + RTOL)


@pytest.mark.parametrize("name", RATE)
def test_beta_condition_bound_dominates_the_rate_bound(name):
    """Where δ ≤ δ_max, the simplified bound (Γ/α)(1−ρ/2)^t r0 + 2(1+δ)ε/(αρ) ≥ the unrolled one."""
    rate, cond = THEOREMS[name], THEOREMS[f"beta_condition[{name}]"]
    for H_v in (1, 4, 12):
        nums = _numbers(H=H_v)
        nums["gamma"] = float(rate.gamma_max(**nums))
        dmax = float(sp.lambdify([], cond.extras["delta_max"].subs(_subs(nums)))())
        for d in (0.0, 0.5 * dmax, dmax):
            nums["delta"] = d
            assert cond.holds(**nums)
            steps = np.arange(0, 400)
            assert np.all(rate.evaluate(t=steps, **nums) <= cond.evaluate(t=steps, **nums) * (1 + RTOL))
        nums["delta"] = 1.01 * dmax + 1e-9
        assert not cond.check(**nums)["beta"]


def _subs(nums):
    return {symbols.SYMBOLS[k_]: v for k_, v in nums.items() if k_ in symbols.SYMBOLS}


@pytest.mark.parametrize("rule", ["rmsprop", "adam", "oasis"])
def test_beta_min_gives_exactly_the_allowed_drift(rule):
    cond = THEOREMS["beta_condition[identical]"]
    bmin = cond.extras["beta_min"][rule]
    for a_v, G_v, X_v in ((0.5, 2.0, 1.01), (0.1, 1.0, 1.3)):
        b = float(bmin.subs({alpha: a_v, Gamma: G_v, delta: X_v - 1}))
        assert 0 < b < 1
        got = float(RULE_BOUNDS[rule].drift_bound(b, a_v, G_v))
        assert np.isclose(got, X_v, rtol=1e-12)
        assert float(RULE_BOUNDS[rule].drift_bound(b + 0.5 * (1 - b), a_v, G_v)) < X_v  # larger β, smaller drift


# ----------------------------------------------------------------------------- complexity
@pytest.mark.parametrize("name", RATE)
def test_complexity_plan_reaches_the_target(name):
    thm = THEOREMS[f"complexity[{name}]"]
    bnd = THEOREMS[f"beta_condition[{name}]"]
    nums = _numbers(alpha=1.0, Gamma=1.0, delta=0.0, zeta2=0.01)
    for target in (0.5, 0.05, 0.005):
        plan = thm.plan(eps=target, **nums)
        val = bnd.evaluate(t=plan["steps"], gamma=plan["gamma"], **nums)
        assert val <= target * (1 + RTOL)
        assert plan["rounds"] == np.ceil(plan["steps"] / nums["H"])
        assert thm.holds(gamma=plan["gamma"], **nums)


def test_complexity_has_the_kmr_shape():
    """T_ε = (2Γ/(γμ)) log(3Γr0/(αε)) with γ = min(γ_max, Θ(εμM/σ²), Θ(√(εμ/(L(H−1)σ²))))."""
    thm = THEOREMS["complexity[identical]"]
    eps = symbols.eps
    assert sp.simplify(thm.bound - 2 * Gamma / (gamma * mu) * sp.log(3 * Gamma * r0 / (alpha * eps))) == 0
    g = thm.extras["gamma_eps"].subs({alpha: 1, Gamma: 1, delta: 0, B_nu: 1})
    args = g.args
    assert any(sp.simplify(a - eps * mu * M / (6 * sigma2)) == 0 for a in args)
    sq = next(a for a in args if a.has(H))
    assert sp.simplify(sq**2 - eps * mu * M / (6 * (H - 1) * (2 * L - mu) * (M - 1) * sigma2)) == 0
    # the step size minimising decay + c1 γ for a given T: (2Γ/(μT)) log(μT r0/(2α c1))
    c1, T_ = thm.extras["c1"], symbols.T
    want = 2 * Gamma / (mu * T_) * sp.log(mu * T_ * r0 / (2 * alpha * c1))
    assert sp.simplify(sp.expand_log(thm.extras["gamma_opt"] - want, force=True)) == 0


@pytest.mark.parametrize("name", RATE)
def test_beta_condition_at_alpha_gamma_one_delta_zero_is_local_sgd(name):
    """At α = Γ = 1, δ = 0 the β-condition bound is (1−γμ/2)^t r0 + 2ε/(γμ): Local SGD's shape
    with the rate halved and the floor doubled; its floor has the same γ and γ² terms as the rate."""
    thm = THEOREMS[f"beta_condition[{name}]"]
    sub = {alpha: 1, Gamma: 1, delta: 0}
    eps_step = THEOREMS[name].extras["eps_step"].subs(sub)
    want = (1 - gamma * mu / 2) ** t * r0 + 2 * eps_step / (gamma * mu)
    vals = {L: sp.Rational(3, 2), mu: sp.Rational(1, 5), gamma: sp.Rational(1, 9), M: 3,
            sigma2: sp.Rational(1, 7), zeta2: sp.Rational(2, 3), A_nu: sp.Rational(1, 4), B_nu: 2, r0: 5}
    for H_val in (1, 3, 5):
        for t_val in (0, 1, 2, 3, 7, 15, 16):
            got = thm.bound.subs(sub).subs({**vals, H: H_val, t: t_val})
            assert sp.simplify(got - want.subs({**vals, H: H_val, t: t_val})) == 0, (H_val, t_val)
    c1, c2 = _floor_coefficients(name)
    floor = sp.expand(thm.bound.subs(sub).subs(t, 0) - r0)  # the decay term is r0 at t = 0
    assert sp.simplify(floor - 2 * (c1 * gamma + c2 * gamma**2)) == 0


def test_heterogeneous_complexity_has_the_kmr_shape():
    """Heterogeneous data: the same T_ε, c1 = 2B_ν σ²/(μM), and c2's ζ*² term carries (H−1)²."""
    thm = THEOREMS["complexity[heterogeneous]"]
    eps = symbols.eps
    sub = {alpha: 1, Gamma: 1, delta: 0}
    assert sp.simplify(thm.bound.subs(sub) - 2 / (gamma * mu) * sp.log(3 * r0 / eps)) == 0
    c1, c2 = (sp.expand(thm.extras[k].subs(sub)) for k in ("c1", "c2"))
    assert sp.simplify(c1 - 2 * B_nu * sigma2 / (mu * M)) == 0
    assert sp.simplify(c2.coeff(zeta2) - 8 * (2 * L - mu) * (H - 1) ** 2 / mu) == 0
    assert sp.simplify(c2.coeff(sigma2) - 4 * (2 * L - mu) * (H - 1) * (1 - 1 / M) * B_nu / mu) == 0
    assert sp.simplify(c2.subs(H, 1)) == 0  # H = 1: no consensus term


# ----------------------------------------------------------------------------- rule lemmas
def _run_rule(rule, stats, beta):
    """Fold statistics (k, d) through a rule's own functions; return the clipped diagonals."""
    xp = np
    s0 = stats[0][None, None, :]
    b = np.asarray(beta)
    state = rule.init(s0, b, xp)
    Ds = [rules.clip(rule.diagonal(state, xp), rule.e, xp)]
    for s in stats[1:]:
        state = rule.update(state, s[None, None, :], b, xp)
        Ds.append(rules.clip(rule.diagonal(state, xp), rule.e, xp))
    return np.array([D[0, 0] for D in Ds])


@given(beta=st.floats(0.0, 0.999), e=st.floats(1e-3, 2.0), G_v=st.floats(1e-3, 5.0),
       seed=st.integers(0, 2**31 - 1))
@pytest.mark.parametrize("name", ["rmsprop", "adam", "oasis"])
def test_rule_code_respects_its_bounds_and_drift_lemma(name, beta, e, G_v, seed):
    """Run the rule's own init/update on adversarial statistics: e ≤ D̂ ≤ Γ and D̂ᵏ⁺¹/D̂ᵏ ≤ 1 + δ_k."""
    rng = np.random.default_rng(seed)
    rule = rules.make(name, beta=beta, e=e)
    K, d = 12, 5
    if name == "oasis":  # probes in [−G_H, G_H], some at the extremes
        stats = rng.choice([-1.0, 1.0], size=(K, d)) * G_v * rng.choice([0.0, 0.3, 1.0], size=(K, d))
        Gam = max(e, G_v)
    else:  # g ⊙ g in [0, G²], jumps between 0 and G²
        stats = (G_v * rng.choice([0.0, 0.1, 1.0], size=(K, d))) ** 2
        Gam = max(e, G_v)
    D = _run_rule(rule, stats, beta)
    assert np.all(D >= e * (1 - RTOL)) and np.all(D <= Gam * (1 + RTOL))
    ratio = np.max(D[1:] / D[:-1], axis=1)
    bounds = drift_factors(name, np.full(K, beta), e, Gam, init_updates=rule.init_updates)
    assert np.all(ratio <= bounds[: K - 1] * (1 + RTOL))
    # the linear bound δ ≤ (1−β̃)(κ^p − 1)/p with adam's effective weights β̃_k
    eff = RULE_BOUNDS[name].effective_betas(np.full(K, beta), rule.init_updates)[: K - 1]
    lin = 1 + sp.lambdify((symbols.beta, alpha, Gamma), RULE_BOUNDS[name].delta_linear)(eff, e, Gam)
    assert np.all(ratio <= lin * (1 + RTOL) + RTOL)


def test_adam_bias_correction_is_an_effective_beta_schedule():
    lem = LEMMAS["drift[adam]"]
    bt = sp.lambdify((symbols.beta, symbols.k), lem.extras["beta_tilde_k"])
    for b in (0.5, 0.9, 0.999):
        eff = RULE_BOUNDS["adam"].effective_betas(np.full(8, b), 0)
        np.testing.assert_allclose(eff[1:], [bt(b, kk) for kk in range(2, 9)], rtol=1e-12)
        assert eff[0] == 0.0  # update 1 (initialisation) keeps nothing of v₀ = 0
    assert sp.simplify(lem.extras["c_k"] - (1 - symbols.beta ** symbols.k)) == 0


def test_drift_factors_validates_its_input():
    with pytest.raises(ValueError, match="unknown rule"):
        drift_factors("lion", np.ones(2), 1.0, 1.0)
    with pytest.raises(ValueError, match="betas must be an array"):
        drift_factors("oasis", 0.9, 1.0, 1.0)
    assert np.all(drift_factors("identity", np.full(4, 0.3), 0.1, 10.0) == 1.0)


@pytest.mark.parametrize("name,init_updates", [("rmsprop", 0), ("adam", 1), ("oasis", 0), ("identity", 0)])
def test_drift_factors_shared_betas_broadcast_against_per_run_constants(name, init_updates):
    """``betas`` (n,) with per-run ``alpha``/``Gamma`` (runs,) gives (n − u, runs): column r is
    the scalar call with run r's constants (also when n equals the number of runs)."""
    betas = np.array([0.5, 0.9, 0.99])
    for alpha_r, Gamma_r in [(np.array([0.1, 0.2, 0.5]), 2.0), (0.1, np.array([1.0, 2.0, 3.0, 4.0])),
                             (np.array([0.1, 0.2]), np.array([1.0, 3.0]))]:
        out = drift_factors(name, betas, alpha_r, Gamma_r, init_updates=init_updates)
        runs = np.broadcast_shapes(np.shape(alpha_r), np.shape(Gamma_r))[0]
        assert out.shape == (3 - init_updates, runs)
        for r in range(runs):
            col = drift_factors(name, betas, np.broadcast_to(alpha_r, (runs,))[r],
                                np.broadcast_to(Gamma_r, (runs,))[r], init_updates=init_updates)
            np.testing.assert_allclose(out[:, r], col, rtol=1e-15)
    per_run = drift_factors(name, np.tile(betas[:, None], (1, 2)), np.array([0.1, 0.2]), 2.0, init_updates)
    np.testing.assert_array_equal(per_run, drift_factors(name, betas, np.array([0.1, 0.2]), 2.0, init_updates))


# ----------------------------------------------------------------------------- the one-step lemma
@given(seed=st.integers(0, 2**31 - 1), frac=st.floats(0.05, 1.0))
def test_one_step_lemma_holds_in_exact_expectation(seed, frac):
    """Heterogeneous diagonal quadratics with additive noise: E Φ_{t+1} is computed exactly
    (no sampling) for random client points and a random D̂ in [α, Γ]; it never exceeds the lemma."""
    rng = np.random.default_rng(seed)
    Mv, d = int(rng.integers(1, 5)), int(rng.integers(1, 6))
    A = rng.uniform(0.1, 2.0, size=(Mv, d))
    xs_m = rng.standard_normal((Mv, d))
    b = A * xs_m
    x_star = b.sum(0) / A.sum(0)
    Lv, muv = A.max(), A.min()
    a_v, G_v = rng.uniform(0.1, 1.0), rng.uniform(1.0, 3.0)
    D = rng.uniform(a_v, G_v, size=d)
    s2 = rng.uniform(0, 1)
    x = x_star + rng.standard_normal((Mv, d)) * rng.uniform(0.01, 2)
    gv = frac * a_v / (2 * Lv)  # γ ≤ α/(2L): H̄ coefficient ≤ 0
    grads = A * x - b
    xbar = x.mean(0)
    mean_next = xbar - gv * grads.mean(0) / D
    E_next = np.sum(D * (mean_next - x_star) ** 2) + gv**2 * np.sum((s2 / d) / (Mv * D))
    Phi_t = np.sum(D * (xbar - x_star) ** 2)
    V_t = np.mean(np.sum((x - xbar) ** 2, axis=1))
    h = 0.5 * np.sum(A * (x - x_star) ** 2, axis=1)  # Bregman distance of a quadratic
    lem = LEMMAS["one_step"]
    rhs = lem.rhs.subs({symbols.Phi: Phi_t, symbols.V: V_t, symbols.Hbar: h.mean(), gamma: gv, mu: muv,
                        L: Lv, alpha: a_v, Gamma: G_v, M: Mv, A_nu: 0, B_nu: 1, sigma2: s2})
    assert E_next <= float(rhs) * (1 + RTOL) + 1e-15


def test_one_step_step_caps():
    lem = LEMMAS["one_step"]
    assert sp.simplify(lem.extras["gamma_cap"] - alpha / (2 * (L + A_nu / M))) == 0
    assert sp.simplify(lem.extras["gamma_cap_half"] - alpha / (4 * (L + A_nu / M))) == 0


# ----------------------------------------------------------------------------- evaluation errors
def test_evaluate_names_bad_parameters():
    thm = THEOREMS["identical"]
    nums = _numbers(gamma=0.1)
    with pytest.raises(ValueError, match="missing parameter.*t"):
        thm.evaluate(**nums)
    with pytest.raises(TypeError, match="unknown parameter.*gama"):
        thm.evaluate(t=1, gama=0.1, **nums)
    with pytest.raises(ValueError, match="sigma2 must be finite"):
        thm.evaluate(t=1, **{**nums, "sigma2": np.inf})
    out = thm.evaluate(t=np.arange(3), **{**nums, "gamma": np.array([[0.1], [0.05]])})
    assert out.shape == (2, 3)


def test_evaluate_rejects_numbers_outside_the_assumptions_by_name():
    """Signs and integrality of the symbols (``symbols.py``) and the relations μ ≤ L (A1) and α ≤ Γ
    (A2) are checked; the error names the offending parameter (before: a bound was returned for
    μ < 0 or α > Γ, NaN for H = 0, and a non-number gave a message without the parameter's name)."""
    thm = THEOREMS["identical"]
    nums = _numbers(gamma=0.1)
    for over, pattern in [({"mu": -0.1}, "mu must be > 0"), ({"H": 0}, "H must be > 0"),
                          ({"M": 2.5}, "M must be an integer"), ({"r0": -1.0}, "r0 must be >= 0"),
                          ({"alpha": 3.0}, "alpha must be <= Gamma"), ({"mu": 2.0}, "mu must be <= L"),
                          ({"sigma2": "abc"}, "sigma2 must be a number")]:
        with pytest.raises(ValueError, match=pattern):
            thm.evaluate(t=1, **{**nums, **over})
    for t_bad, pattern in [(-1, "t must be >= 0"), (2.5, "t must be an integer")]:
        with pytest.raises(ValueError, match=pattern):
            thm.evaluate(t=t_bad, **nums)
    with pytest.raises(ValueError, match="parameter L must be > 0"):  # was: "gamma must be finite"
        thm.gamma_max(**{**nums, "L": 0.0})
    with pytest.raises(ValueError, match="parameter eps must be > 0"):  # was: "gamma must be finite"
        THEOREMS["complexity[identical]"].plan(eps=-0.01, **nums)
    ok = thm.evaluate(t=np.arange(3), **{**nums, "alpha": 2.0, "Gamma": 2.0})  # α = Γ is allowed
    assert ok.shape == (3,) and np.all(np.isfinite(ok))


def test_evaluate_reads_strings_in_the_theory_symbols():
    """A string expression means the theory's symbols (before: an AssertionError 'symbol mu has no
    keyword', because sympify made a fresh ``mu`` without the sign)."""
    from savic_theory.theory import evaluate

    assert float(evaluate("L + 2*mu", L=1.0, mu=0.25)) == 1.5
    assert float(evaluate("gamma*sigma2/M", gamma=0.5, sigma2=0.2, M=2)) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="symbol foo"):
        evaluate("foo + L", L=1.0)


def test_curve_rejects_negative_steps_and_answers_repeated_steps():
    """A negative step was silently skipped and a repeated one filled once, leaving entries of
    ``np.empty`` (arbitrary memory) in the returned bound."""
    thm = THEOREMS["heterogeneous"]
    nums = _numbers(gamma=0.05)
    ref = thm.curve(np.arange(6), [4], [1.1], **nums)
    out = thm.curve([3, 5, 3, 0], [4], [1.1], **nums)
    np.testing.assert_array_equal(out, ref[[3, 5, 3, 0]])
    with pytest.raises(ValueError, match="steps must be integers >= 0"):
        thm.curve([0, -1], [4], [1.1], **nums)
    with pytest.raises(ValueError, match="sync_steps must be integers >= 0"):
        thm.curve([0, 1], [1.5], [1.1], **nums)
    with pytest.raises(ValueError, match="sync_steps must not repeat"):
        thm.curve([0, 1], [4, 4], [1.1, 1.1], **nums)


def test_drift_factors_rejects_inputs_outside_the_drift_lemma():
    """β outside [0, 1), α ≤ 0, Γ < α and a negative ``init_updates`` were accepted: they gave a
    'drift bound' below 1 (Γ < α), a ZeroDivisionError (α = 0) or, for ``init_updates = -1``,
    silently only the last sync's factor."""
    for betas, pattern in [(np.full(3, 1.5), "betas must lie in"), (np.full(3, -0.1), "betas must lie in"),
                           (np.full(3, np.nan), "betas must lie in")]:
        with pytest.raises(ValueError, match=pattern):
            drift_factors("oasis", betas, 1.0, 2.0)
    with pytest.raises(ValueError, match="alpha must be finite and > 0"):
        drift_factors("rmsprop", np.full(3, 0.9), 0.0, 2.0)
    with pytest.raises(ValueError, match="Gamma must be finite and >= alpha"):
        drift_factors("oasis", np.full(3, 0.9), 2.0, 1.0)
    with pytest.raises(ValueError, match="init_updates must be >= 0"):
        drift_factors("adam", np.full(3, 0.9), 1.0, 2.0, -1)
    with pytest.raises(TypeError, match="init_updates must be an integer"):
        drift_factors("adam", np.full(3, 0.9), 1.0, 2.0, 1.0)
    assert np.all(drift_factors("oasis", np.full(3, 0.9), 2.0, 2.0) == 1.0)  # Γ = α: no drift
