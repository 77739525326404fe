"""Bad input raises a clear error naming the parameter."""
from __future__ import annotations

import numpy as np
import pytest

from savic_theory import Quadratic, rules, simulate

A = np.array([[1.0, 2.0], [3.0, 4.0]])
B = np.zeros((2, 2))


@pytest.fixture
def prob():
    return Quadratic(A=A, b=B)


@pytest.mark.parametrize("gamma", [0.0, -0.1, np.nan, np.inf, [0.1, -1.0]])
def test_gamma_must_be_positive(prob, gamma):
    with pytest.raises(ValueError, match="gamma"):
        simulate(prob, rules.identity(), gamma=gamma, steps=3)


@pytest.mark.parametrize("gamma", ["0.1", None, True])
def test_gamma_must_be_a_number(prob, gamma):
    with pytest.raises(TypeError, match="gamma"):
        simulate(prob, rules.identity(), gamma=gamma, steps=3)


@pytest.mark.parametrize("name", ["rmsprop", "adam", "oasis"])
@pytest.mark.parametrize("beta", [-0.1, 1.0, 1.5, np.nan, [0.5, 1.0]])
def test_beta_in_unit_interval(name, beta):
    with pytest.raises(ValueError, match="beta"):
        rules.make(name, beta=beta)


def test_beta_schedule_checked_when_used(prob):
    with pytest.raises(ValueError, match="beta schedule at k=1"):
        simulate(prob, rules.rmsprop(beta=lambda k: 1.0), gamma=0.1, steps=3)


@pytest.mark.parametrize("name", ["rmsprop", "adam", "oasis"])
@pytest.mark.parametrize("e", [0.0, -1.0, np.inf])
def test_e_positive(name, e):
    with pytest.raises(ValueError, match="e must"):
        rules.make(name, e=e)


def test_unknown_rule_and_scaling(prob):
    with pytest.raises(ValueError, match="unknown scaling rule 'lion'"):
        rules.make("lion")
    with pytest.raises(ValueError, match="unknown scaling rule"):
        simulate(prob, "lion", gamma=0.1, steps=3)
    with pytest.raises(ValueError, match="unknown scaling 'glob'"):
        simulate(prob, rules.adam(), gamma=0.1, steps=3, scaling="glob")
    with pytest.raises(TypeError, match="identity"):
        rules.make("identity", beta=0.9)


def test_non_symmetric_or_indefinite_A():
    with pytest.raises(ValueError, match="symmetric"):
        Quadratic(A=np.array([[[1.0, 0.5], [0.0, 1.0]]]), b=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="positive definite"):
        Quadratic(A=np.array([[[1.0, 2.0], [2.0, 1.0]]]), b=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="positive definite"):
        Quadratic(A=np.array([[1.0, 0.0]]), b=np.zeros((1, 2)))


def test_shape_mismatches(prob):
    with pytest.raises(ValueError, match=r"A of shape \(2, 3\) and b of shape \(2, 2\) do not fit: .* \(2, 2\)"):
        Quadratic(A=np.ones((2, 3)), b=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="does not fit b"):
        Quadratic(A=np.ones(2), b=np.zeros((2, 2, 2, 2)))
    with pytest.raises(ValueError, match="x0"):
        simulate(prob, rules.adam(), gamma=0.1, steps=3, x0=np.zeros(3))
    with pytest.raises(ValueError, match="run axes disagree"):
        simulate(prob, rules.adam(beta=[0.9, 0.99]), gamma=[0.1, 0.2, 0.3], steps=3)
    with pytest.raises(ValueError, match="Q must be orthogonal"):
        Quadratic(A=np.ones((2, 2)), b=B, Q=np.ones((2, 2)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_in_data(prob, bad):
    with pytest.raises(ValueError, match="A contains NaN or inf"):
        Quadratic(A=np.array([[1.0, bad]]), b=np.zeros((1, 2)))
    with pytest.raises(ValueError, match="b contains NaN or inf"):
        Quadratic(A=np.ones((1, 2)), b=np.array([[0.0, bad]]))
    with pytest.raises(ValueError, match="x0 contains NaN or inf"):
        simulate(prob, rules.adam(), gamma=0.1, steps=3, x0=np.array([0.0, bad]))


@pytest.mark.parametrize("H", [0, -2, [1, 0]])
def test_sync_every_at_least_one(prob, H):
    with pytest.raises(ValueError, match="sync_every must be >= 1"):
        simulate(prob, rules.adam(), gamma=0.1, steps=3, sync_every=H)


def test_sync_every_integer(prob):
    with pytest.raises(TypeError, match="sync_every"):
        simulate(prob, rules.adam(), gamma=0.1, steps=3, sync_every=2.5)


def test_sync_at_in_range(prob):
    with pytest.raises(ValueError, match="sync_at"):
        simulate(prob, rules.adam(), gamma=0.1, steps=3, sync_at=[2, 5])
    with pytest.raises(ValueError, match="sync_at"):
        simulate(prob, rules.adam(), gamma=0.1, steps=3, sync_at=[2, 2])


@pytest.mark.parametrize("kw,match", [
    (dict(steps=0), "steps must be >= 1"),
    (dict(steps=2.5), "steps must be an integer"),
    (dict(record_every=0), "record_every"),
    (dict(dtype="float16"), "dtype"),
    (dict(backend="jax"), "unknown backend"),
    (dict(noise=-1.0), "noise"),
    (dict(probes="hutch"), "probes"),
    (dict(runs=0), "runs"),
])
def test_other_parameters(prob, kw, match):
    args = dict(gamma=0.1, steps=3) | kw
    with pytest.raises((ValueError, TypeError), match=match):
        simulate(prob, rules.oasis(), **args)


def test_problem_type(prob):
    with pytest.raises(TypeError, match="problem"):
        simulate("quadratic", rules.adam(), gamma=0.1, steps=3)
    with pytest.raises(TypeError, match="rule"):
        simulate(prob, 3, gamma=0.1, steps=3)


def test_random_generator_arguments():
    with pytest.raises(ValueError, match="mu"):
        Quadratic.random(dim=3, L=1.0, mu=2.0)
    with pytest.raises(ValueError, match="unknown form"):
        Quadratic.random(dim=3, form="sparse")
    with pytest.raises(ValueError, match="n_clients"):
        Quadratic.random(dim=3, n_clients=0)


@pytest.mark.parametrize("scaling", ["global", "local"])
def test_diverging_run_stops_with_status_and_step(scaling):
    """γ = 5 with client curvatures 1..4 multiplies the error by up to 19 per step: that run is
    marked diverged at the first step where ‖x̄−x*‖² > 1e12 · max(1, ‖x⁰−x*‖²); the other goes on."""
    prob = Quadratic(A=A, b=np.ones((2, 2)))
    res = simulate(prob, rules.identity(), gamma=np.array([0.05, 5.0]), steps=200, sync_every=2,
                   scaling=scaling, seed=0, record_every=1)
    assert list(res.status) == ["ok", "diverged"]
    k = int(res.diverged_at[1])
    assert int(res.diverged_at[0]) == -1 and 1 <= k < 200
    d = res.history["dist_sq"][:, 1]
    limit = 1e12 * max(1.0, float(d[0]))
    assert np.all(d[:k] <= limit) and not d[k] <= limit  # first exceedance (or NaN) is step k
    assert np.all(np.isfinite(res.history["dist_sq"][:, 0]))
    alone = simulate(prob, rules.identity(), gamma=5.0, steps=200, sync_every=2, scaling=scaling, seed=0)
    assert alone.status == "diverged" and alone.diverged_at == k and alone.steps[-1] == k < 200
