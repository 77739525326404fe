"""Quadratic problems: exact constants against eigenvalues, optimality and Monte Carlo."""
from __future__ import annotations

import numpy as np
import pytest

from savic_theory import Quadratic


@pytest.fixture(params=["diagonal", "dense", "eigenbasis"])
def form(request):
    return request.param


def dense_of(prob):
    """Per-client dense Hessians (M, d, d) of an unbatched problem."""
    if prob.form == "diagonal":
        return np.stack([np.diag(a) for a in prob.A[0]])
    if prob.form == "dense":
        return prob.A[0]
    return np.stack([prob.Q @ np.diag(lam) @ prob.Q.T for lam in prob.A[0]])


def test_L_and_mu_are_extreme_eigenvalues(form):
    prob = Quadratic.random(dim=6, n_clients=3, L=4.0, mu=0.25, heterogeneity=0.7, form=form,
                            client_spectra="random", seed=2)
    eig = np.linalg.eigvalsh(dense_of(prob))
    assert prob.L == pytest.approx(eig.max(), rel=1e-12) and prob.L == pytest.approx(4.0, rel=1e-12)
    # dense A_m = Q diag(λ) Qᵀ and eigvalsh are backward stable: eigenvalues to ~d·ε·‖A‖ = 5e-15,
    # 2e-14 relative to μ = 0.25; measured 2.2e-16 here, 4.6e-15 at worst over 10 seeds × 3 forms
    assert prob.mu == pytest.approx(eig.min(), rel=1e-13) and prob.mu == pytest.approx(0.25, rel=1e-13)
    if form != "dense":  # stored spectra: exactly the given ends (dense: to round-off, as documented)
        assert float(prob.L) == 4.0 and float(prob.mu) == 0.25


def test_x_star_is_stationary_and_minimal(form, rng):
    prob = Quadratic.random(dim=5, n_clients=4, heterogeneity=2.0, form=form, client_spectra="random", seed=1)
    g = prob.full_grad(prob.x_star).mean(axis=0)
    assert np.linalg.norm(g) <= 1e-12
    assert prob.objective(prob.x_star) == pytest.approx(prob.f_star, rel=1e-14, abs=1e-15)
    for _ in range(5):
        assert prob.objective(prob.x_star + 1e-3 * rng.standard_normal(5)) > prob.f_star


def test_heterogeneity_constants(form):
    same = Quadratic.random(dim=4, n_clients=3, heterogeneity=0.0, form=form, noise=0.5, seed=0)
    assert same.identical and same.zeta2 == pytest.approx(0.0, abs=1e-28)
    assert same.sigma2 == 0.5 and same.sigma_dif2 == pytest.approx(0.5)
    het = Quadratic.random(dim=4, n_clients=3, heterogeneity=1.0, form=form, noise=0.5, seed=0)
    per_client = het.full_grad(het.x_star)
    assert het.zeta2 == pytest.approx(np.mean(np.sum(per_client**2, axis=1)), rel=1e-12)
    assert het.sigma_dif2 == pytest.approx(0.5 + het.zeta2, rel=1e-12)


def test_sigma_constants_match_monte_carlo(form):
    """E‖g_m(x*)‖² averaged over clients = σ_dif², and E‖g_m − ∇f_m‖² = σ².

    200k draws; the estimate's standard error is computed from the sample, and we accept
    5 standard errors (a false failure has probability < 1e-6).
    """
    import numpy as xp

    prob = Quadratic.random(dim=3, n_clients=2, heterogeneity=1.0, form=form, noise=0.7, seed=4)
    oracle = prob.bind(xp, xp.float64)
    runs = 100_000
    x = np.broadcast_to(prob.x_star, (runs, 2, 3))
    g = oracle.grad(x, oracle.draw(np.random.default_rng(0), runs))
    sq = np.mean(np.sum(g**2, axis=-1), axis=1)
    assert abs(sq.mean() - prob.sigma_dif2) <= 5 * sq.std() / np.sqrt(runs)
    dev = np.mean(np.sum((g - prob.full_grad(prob.x_star)) ** 2, axis=-1), axis=1)
    assert abs(dev.mean() - prob.sigma2) <= 5 * dev.std() / np.sqrt(runs)


def test_eigenbasis_equals_dense_form():
    from savic_theory import rules, simulate

    eig = Quadratic.random(dim=5, n_clients=3, heterogeneity=1.0, form="eigenbasis",
                           client_spectra="random", seed=3)
    dense = Quadratic(A=dense_of(eig), b=eig.b[0])
    # x* solved from assembled A_m against one from the spectra: round-off times κ ≤ L/μ = 10;
    # measured 4.4e-15 (9e-15 at worst over 10 seeds): 1e-12 is > 100× that
    np.testing.assert_allclose(dense.x_star, eig.x_star, rtol=1e-12)
    assert dense.L == pytest.approx(eig.L, rel=1e-12)
    kw = dict(gamma=0.1, steps=20, sync_every=4, scaling="local")
    # 20 contracting steps of the same iteration with A_m applied two ways: measured 5e-16 relative
    # (1.2e-15 at worst over 10 seeds); 1e-13 is 200× that
    np.testing.assert_allclose(simulate(eig, rules.oasis(beta=0.9), **kw).x,
                               simulate(dense, rules.oasis(beta=0.9), **kw).x, rtol=1e-13)
    assert eig.hessian_bound() == pytest.approx(dense.hessian_bound(), rel=1e-12)


def test_hessian_bound_is_max_absolute_row_sum():
    A = np.array([[[2.0, -1.0], [-1.0, 3.0]], [[1.0, 0.5], [0.5, 1.0]]])
    prob = Quadratic(A=A, b=np.zeros((2, 2)))
    assert prob.hessian_bound() == 4.0


def test_with_noise_changes_only_noise():
    prob = Quadratic.random(dim=3, n_clients=2, heterogeneity=1.0, seed=0)
    noisy = prob.with_noise(2.0)
    assert noisy.sigma2 == 2.0 and prob.sigma2 == 0.0
    assert noisy.zeta2 == pytest.approx(prob.zeta2)


# ------------------------------------------------------------------ bad input
def test_dense_symmetry_check_is_relative_to_the_scale_of_A():
    """An asymmetric A with small entries is refused (its eigvalsh constants would describe the
    lower triangle only); round-off asymmetry at the same scale is accepted."""
    with pytest.raises(ValueError, match="symmetric"):
        Quadratic(A=1e-13 * np.array([[[2.0, 1.0], [0.0, 2.0]]]), b=np.zeros((1, 2)))
    Quadratic(A=1e-13 * np.array([[[2.0, 1.0], [1.0 + 1e-14, 2.0]]]), b=np.zeros((1, 2)))


@pytest.mark.parametrize("kwargs,name", [
    (dict(A=np.ones((2, 2)) * (1 + 1j), b=np.ones((2, 2))), "A"),  # would drop the imaginary part
    (dict(A=np.ones((2, 2)), b=None), "b"),  # would become NaN
    (dict(A=np.ones((2, 2)), b=np.ones((2, 2)), Q=np.eye(2) * (1 + 0j)), "Q"),
])
def test_non_real_arrays_are_type_errors(kwargs, name):
    with pytest.raises(TypeError, match=f"{name} must be an array of real numbers"):
        Quadratic(**kwargs)


def test_host_maths_check_the_shape_of_x(form):
    """x of another shape is refused: (runs, d) on a problem with M = runs clients used to pair
    row m with client m silently."""
    prob = Quadratic.random(dim=3, n_clients=2, heterogeneity=1.0, form=form, seed=0)
    for x in [np.ones((2, 3)), np.ones(4), 1.0]:
        for method in (prob.full_grad, prob.objective):
            with pytest.raises(ValueError, match=r"x must have shape \(3,\)"):
                method(x)
    batched = Quadratic(A=np.stack([prob.A[0]] * 2), b=np.stack([prob.b[0]] * 2), Q=prob.Q)
    assert batched.full_grad(np.ones((2, 3))).shape == (2, 2, 3)
    with pytest.raises(ValueError, match=r"x must have shape \(2, 3\)"):
        batched.objective(np.ones(3))


@pytest.mark.parametrize("seed,err", [(-1, ValueError), ("abc", TypeError), (1.5, TypeError)])
def test_random_bad_seed_is_named(seed, err):
    with pytest.raises(err, match="seed must be"):
        Quadratic.random(dim=3, n_clients=2, seed=seed)
