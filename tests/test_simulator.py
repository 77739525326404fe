"""The generic suite: every rule × both scalings against the per-client reference and the contract."""
from __future__ import annotations

import numpy as np
import pytest

from savic_theory import RULES, SCALINGS, Quadratic, rules, simulate

from ._reference import reference_savic

RULE_NAMES = list(RULES)
# Agreement with the reference is limited only by float64 round-off accumulated over a few
# dozen steps of O(1) arithmetic: 1e-12 relative is ~5000 ulps of headroom. The external
# contract asks for 1e-9.
RTOL = 1e-12


def make_rule(name, beta=0.9, e=1e-2):
    return rules.make(name) if name == "identity" else rules.make(name, beta=beta, e=e)


def hetero_problem(form, seed=0, M=3, d=5):
    rng = np.random.default_rng(seed)
    if form == "diagonal":
        A = rng.uniform(0.3, 2.0, (M, d))
    else:
        G = rng.standard_normal((M, d, d))
        A = np.einsum("mij,mkj->mik", G, G) / d + 0.3 * np.eye(d)
    return A, rng.standard_normal((M, d))


@pytest.mark.parametrize("rule", RULE_NAMES)
@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("form", ["diagonal", "dense"])
@pytest.mark.parametrize("H", [1, 3, 4])
def test_matches_per_client_reference(rule, scaling, form, H):
    A, b = hetero_problem(form, seed=H)
    x0 = np.linspace(-1.0, 1.0, b.shape[1])
    res = simulate(Quadratic(A=A, b=b), make_rule(rule), gamma=0.05, steps=24, sync_every=H,
                   scaling=scaling, x0=x0, noise=0.0, seed=0)
    ref = reference_savic(A, b, rule, 0.05, 24, range(H, 25, H), scaling, x0)
    np.testing.assert_allclose(res.x, ref, rtol=RTOL, atol=1e-14)


@pytest.mark.parametrize("rule", RULE_NAMES)
@pytest.mark.parametrize("scaling", SCALINGS)
def test_explicit_sync_moments_match_reference(rule, scaling):
    A, b = hetero_problem("dense", seed=7)
    moments = [2, 3, 7, 8, 15]
    res = simulate(Quadratic(A=A, b=b), make_rule(rule), gamma=0.04, steps=17, sync_at=moments,
                   scaling=scaling, seed=0)
    ref = reference_savic(A, b, rule, 0.04, 17, moments, scaling, np.zeros(b.shape[1]))
    np.testing.assert_allclose(res.x, ref, rtol=RTOL, atol=1e-14)
    assert res.sync_steps.tolist() == moments
    assert res.params["H"] == 7  # largest gap between sync moments: 8 → 15


@pytest.mark.parametrize("rule", RULE_NAMES)
@pytest.mark.parametrize("scaling", SCALINGS)
def test_contract_shapes_and_history(rule, scaling):
    A, b = hetero_problem("diagonal")
    prob = Quadratic(A=A, b=b)
    res = simulate(prob, make_rule(rule), gamma=0.02, steps=24, sync_every=4,
                   scaling=scaling, x0=np.zeros(5), noise=0.0, seed=0)
    assert res.x.shape == (3, 5) and res.x_bar.shape == (5,)
    assert res.steps[0] == 0 and res.steps[-1] == 24
    for key in ("dist_sq", "f_gap", "consensus", "alpha_hat", "Gamma_hat", "G_hat", "dist_sq_D"):
        assert res.history[key].shape == res.steps.shape
        assert np.all(np.isfinite(res.history[key]))
    # ‖x̄ − x*‖²_D̂ with the final D̂ (the clients' mean D̂ in local scaling)
    final_D = np.sum(res.D.mean(axis=0) * (res.x_bar - prob.x_star) ** 2)
    np.testing.assert_allclose(res.history["dist_sq_D"][-1], final_D, rtol=1e-12)
    assert res.sync_steps.tolist() == [4, 8, 12, 16, 20, 24]
    assert res.drift.shape == (6,)
    assert res.status == "ok" and res.diverged_at == -1
    # just after a sync the clients agree: consensus error is zero at t = 24
    assert res.history["consensus"][-1] <= 1e-28
    assert np.all(res.history["alpha_hat"] >= (1.0 if rule == "identity" else 1e-2))


@pytest.mark.parametrize("rule", RULE_NAMES)
@pytest.mark.parametrize("scaling", SCALINGS)
def test_batched_runs_equal_separate_runs(rule, scaling):
    """A run axis over γ, β, e and H gives what separate calls give (noise-free)."""
    A, b = hetero_problem("diagonal", seed=2)
    gammas, Hs = np.array([0.01, 0.03, 0.05]), np.array([1, 2, 5])
    betas, es = np.array([0.5, 0.9, 0.99]), np.array([1e-3, 1e-2, 1e-1])
    if rule == "identity":
        batched_rule = rules.identity()
    else:
        batched_rule = rules.make(rule, beta=betas, e=es)
    prob = Quadratic(A=A, b=b)
    res = simulate(prob, batched_rule, gamma=gammas, steps=20, sync_every=Hs, scaling=scaling, seed=0)
    assert res.x.shape == (3, 3, 5) and res.history["dist_sq"].shape == (21, 3)
    for r in range(3):
        single = simulate(prob, make_rule(rule, betas[r], es[r]), gamma=gammas[r], steps=20,
                          sync_every=int(Hs[r]), scaling=scaling, seed=0)
        np.testing.assert_allclose(res.x[r], single.x, rtol=RTOL, atol=1e-14)
        np.testing.assert_allclose(res.history["dist_sq"][:, r], single.history["dist_sq"], rtol=RTOL)
        synced = ~np.isnan(res.drift[:, r])
        np.testing.assert_allclose(res.drift[synced, r], single.drift, rtol=RTOL)


def test_batched_problem_instances():
    """A leading instance axis on A and b gives one problem per run."""
    A = np.stack([hetero_problem("diagonal", seed=s)[0] for s in range(4)])
    b = np.stack([hetero_problem("diagonal", seed=s)[1] for s in range(4)])
    prob = Quadratic(A=A, b=b)
    assert prob.instances == 4 and prob.L.shape == (4,) and prob.x_star.shape == (4, 5)
    res = simulate(prob, rules.adam(beta=0.9), gamma=0.05, steps=12, sync_every=3)
    for r in range(4):
        single = simulate(Quadratic(A=A[r], b=b[r]), rules.adam(beta=0.9), gamma=0.05, steps=12, sync_every=3)
        np.testing.assert_allclose(res.x[r], single.x, rtol=RTOL)
        # f_gap ≥ 0.019 here, so RTOL needs no absolute floor (measured difference: exactly 0)
        np.testing.assert_allclose(res.history["f_gap"][:, r], single.history["f_gap"], rtol=RTOL)


@pytest.mark.parametrize("rule", RULE_NAMES)
@pytest.mark.parametrize("scaling", SCALINGS)
def test_converges_to_optimum_without_noise(rule, scaling):
    """H = 1 averages every step, so x̄ ← x̄ − γ (1/M) Σ_m g_m(x̄)/D̂_m: its fixed point is x* when
    every client holds the same D̂ (global scaling, identity, and local oasis here: on a diagonal
    quadratic with identical spectra D̂_m = clip(diag A_m) is the same on every client). Local
    rmsprop/adam keep D̂_m = clip(|g_m(x̄)|), different per client, so the fixed point is the
    method's own: (1/M) Σ_m g_m(x̄)/D̂_m = 0, not x*."""
    prob = Quadratic.random(dim=6, n_clients=4, L=1.0, mu=0.2, heterogeneity=1.0, seed=5)
    own_fixed_point = scaling == "local" and rule in ("rmsprop", "adam")
    # the coupled (x̄, D̂_m) iteration of local rmsprop/adam contracts slowly (measured: the
    # residual below shrinks ~65× per 1000 steps and reaches its round-off floor, 1.5e-15, by step
    # 7000); 10 000 steps leave a factor ~65³ to spare. The others reach 1e-12·dist_0 by ~1400 steps.
    steps = 10_000 if own_fixed_point else 3000
    res = simulate(prob, make_rule(rule, beta=0.99, e=0.1), gamma=0.05, steps=steps, sync_every=1,
                   scaling=scaling, record_every=100)
    if not own_fixed_point:
        assert res.history["dist_sq"][-1] < 1e-12 * res.history["dist_sq"][0]
        return
    A, b = prob.A[0], prob.b[0]  # diagonal form: g_m(x) = A_m ⊙ x − b_m
    g = A * res.x_bar - b
    # the rule's fixed point: v_m = g_m ⊙ g_m (bias correction → 1), so D̂_m = max(e, |g_m(x̄)|);
    # measured 1.7e-15 (rmsprop) and 3.1e-15 (adam) on entries ≤ 0.5: 1e-12 is > 300× that
    np.testing.assert_allclose(res.D, np.maximum(0.1, np.abs(g)), rtol=0, atol=1e-12)
    # stationarity of x̄; the terms g_m/D̂_m are O(1) (±1 where |g_m| > e), so 1e-12 is ~600× the
    # measured floor (1.5e-15 rmsprop, 1.3e-15 adam), set by x̄ no longer moving once γ·residual
    # is below half an ulp of x̄
    assert np.max(np.abs(np.mean(g / res.D, axis=0))) <= 1e-12
    assert res.history["dist_sq"][-1] > 1e-3  # and it is not x* (measured ‖x̄ − x*‖² = 0.014)


def test_noise_floor_scales_with_sigma2():
    """Identity rule, identical data: E‖x̄−x*‖² at stationarity ≈ γσ²/(M(2−γλ)λ) per eigenvalue.

    For f = ½λ‖x‖² in each coordinate with H = 1 the average iterate is SGD with noise σ²/(dM) per
    coordinate, whose stationary variance is γσ²/(dM λ (2 − γλ)). The Monte-Carlo mean over
    4000 runs × 200 late steps has relative standard error < 1%; we allow 5%.
    """
    lam, gamma, sigma2, M, d = 0.5, 0.2, 0.3, 4, 2
    prob = Quadratic(A=np.full((M, d), lam), b=np.zeros((M, d)), noise=sigma2)
    res = simulate(prob, rules.identity(), gamma=gamma, steps=400, sync_every=1, runs=4000,
                   record_every=1, seed=11)
    observed = res.history["dist_sq"][200:].mean()
    expected = d * gamma * sigma2 / (d * M * lam * (2 - gamma * lam))
    assert abs(observed / expected - 1) < 0.05


@pytest.mark.parametrize("scaling", SCALINGS)
def test_diverging_run_stops_with_status(scaling):
    prob = Quadratic.random(dim=4, n_clients=2, L=10.0, mu=1.0, seed=0)
    res = simulate(prob, rules.identity(), gamma=np.array([0.05, 5.0]), steps=200, sync_every=2,
                   scaling=scaling, record_every=1)
    assert res.status.tolist() == ["ok", "diverged"]
    t_div = res.diverged_at[1]
    assert 0 < t_div < 200
    d = res.history["dist_sq"][:, 1]
    assert np.all(np.isfinite(d[res.steps < t_div])) and np.all(np.isnan(d[res.steps >= t_div]))
    assert np.all(np.isfinite(res.history["dist_sq"][:, 0]))
    assert np.all(np.isfinite(res.x[1]))  # iterate kept from the detection step
    assert res.diverged


@pytest.mark.parametrize("fused", [True, False])
def test_a_scaling_value_that_overflows_is_not_a_divergence(fused):
    """Local scaling with e = 1e308: the clients' mean of D̂ overflows, so ‖x̄ − x*‖²_D̂ is inf,
    while the iterate is finite (the step γ/D̂ is ~0): recorded as inf, the run goes on."""
    prob = Quadratic.random(dim=4, n_clients=2, L=1.0, mu=0.1, seed=0)
    res = simulate(prob, rules.adam(beta=0.9, e=1e308), gamma=0.5, steps=20, sync_every=2,
                   scaling="local", record_every=1, fused=fused)
    assert res.status == "ok"
    assert np.all(np.isinf(res.history["dist_sq_D"])) and np.all(np.isfinite(res.history["dist_sq"]))
    assert np.all(res.history["alpha_hat"] == 1e308)


@pytest.mark.parametrize("fused", [True, False])
def test_a_nan_scaling_is_a_divergence_even_before_the_iterate_shows_it(fused):
    """A rule whose D̂ is NaN: caught at the record of step 0, where x̄ is still x⁰."""
    from savic_theory.rules._base import BetaSchedule, ScalingRule, Statistic, check_e

    nan_rule = ScalingRule("nan", Statistic.GRAD_SQUARED, lambda s, beta, xp: (s,),
                           lambda st, s, beta, xp: (s,), lambda st, xp: st[0] * xp.nan,
                           BetaSchedule(0.9), check_e(0.1), 0)
    prob = Quadratic.random(dim=4, n_clients=2, L=1.0, mu=0.1, seed=0)
    res = simulate(prob, nan_rule, gamma=0.1, steps=10, sync_every=2, record_every=1, fused=fused)
    assert res.status == "diverged" and res.diverged_at == 0


def test_all_runs_diverging_ends_early():
    prob = Quadratic.random(dim=3, n_clients=2, L=10.0, mu=1.0, seed=0)
    res = simulate(prob, rules.identity(), gamma=100.0, steps=10_000, record_every=1)
    assert res.status == "diverged" and res.steps[-1] < 10_000


def test_float32_close_to_float64():
    prob = Quadratic.random(dim=8, n_clients=4, heterogeneity=0.5, seed=1)
    kw = dict(gamma=0.05, steps=50, sync_every=5, scaling="local")
    r64 = simulate(prob, rules.adam(beta=0.95), dtype="float64", **kw)
    r32 = simulate(prob, rules.adam(beta=0.95), dtype="float32", **kw)
    # float32 round-off (u = 6e-8) accumulated over 50 steps: measured 8.6e-7 elementwise (~14 u,
    # at the smallest coordinate, |x| = 7e-3; 4.5e-7 relative to max|x|). 1e-4 keeps ~100× margin for
    # other BLAS/FMA choices; no absolute floor is needed with every |x| ≥ 7e-3
    np.testing.assert_allclose(r32.x, r64.x, rtol=1e-4, atol=0)


def test_keep_iterates_and_default_history_is_small():
    prob = Quadratic.random(dim=3, n_clients=2, seed=1)
    res = simulate(prob, rules.rmsprop(), gamma=0.1, steps=5000, sync_every=10)
    assert "x_bar" not in res.history and res.steps.size <= 502
    res = simulate(prob, rules.rmsprop(), gamma=0.1, steps=20, keep_iterates=True, record_every=5)
    assert res.history["x_bar"].shape == (5, 3)
    np.testing.assert_allclose(res.history["x_bar"][-1], res.x_bar)


def test_rule_by_name_and_summary_is_json_ready():
    import json

    prob = Quadratic.random(dim=3, n_clients=2, seed=1)
    res = simulate(prob, "oasis", gamma=0.1, steps=10)
    assert res.rule.name == "oasis"
    json.dumps(res.summary())


def test_params_record_beta_as_numbers():
    """A constant β is recorded as its number (one per run for an array), a schedule by its name."""
    import json

    prob = Quadratic.random(dim=3, n_clients=2, seed=0)
    kw = dict(gamma=0.1, steps=4)
    one = simulate(prob, rules.adam(beta=0.99), **kw).summary()["params"]
    per_run = simulate(prob, rules.adam(beta=np.array([0.9, 0.99])), **kw).summary()["params"]

    def warmup(k):
        return 0.9

    sched = simulate(prob, rules.adam(beta=warmup), **kw).summary()["params"]
    assert one["beta"] == 0.99 and per_run["beta"] == [0.9, 0.99] and sched["beta"] == "warmup"
    assert simulate(prob, rules.identity(), **kw).params["beta"] is None
    json.dumps([one, per_run, sched])  # JSON-ready


def test_summary_writes_non_finite_numbers_as_none():
    """A diverged run's NaN final values (and a never-synced run's drift) become None, so the
    summary passes ``json.dumps(..., allow_nan=False)``; finite values stay numbers."""
    import json

    prob = Quadratic(A=np.array([[1.0, 2.0], [3.0, 4.0]]), b=np.ones((2, 2)))
    res = simulate(prob, rules.adam(beta=0.9), gamma=np.array([0.05, 5.0]), steps=200,
                   sync_every=np.array([2, 1000]), seed=0)
    assert list(res.status) == ["ok", "diverged"]
    s = res.summary()
    json.dumps(s, allow_nan=False)
    assert all(v[1] is None and isinstance(v[0], float) for v in s["final"].values())
    assert isinstance(s["max_drift"][0], float) and s["max_drift"][1] is None
    one = simulate(prob, rules.identity(), gamma=5.0, steps=200, sync_every=2).summary()
    json.dumps(one, allow_nan=False)
    assert one["status"] == "diverged" and one["final"]["dist_sq"] is None and one["max_drift"] == 1.0


@pytest.mark.parametrize("seed", [3, np.int64(3), np.uint32(3)])
def test_params_record_integer_seeds(seed):
    prob = Quadratic.random(dim=3, n_clients=2, seed=0)
    res = simulate(prob, "adam", gamma=0.1, steps=3, seed=seed)
    assert res.params["seed"] == 3 and type(res.params["seed"]) is int
    assert simulate(prob, "adam", gamma=0.1, steps=3, seed=np.random.SeedSequence(3)).params["seed"] is None
