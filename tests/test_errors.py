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


def test_numerically_singular_A():
    """An eigenvalue float64 cannot resolve is an error, not a μ (and x*) made of round-off:
    subnormal for a diagonal A, below d·ε·‖A_m‖ for a dense one, whose eigenvalues are computed."""
    with pytest.raises(ValueError, match="numerically singular: an eigenvalue of 1e-320 is subnormal"):
        Quadratic(A=np.array([[1.0, 1e-320]]), b=np.zeros((1, 2)))
    assert Quadratic(A=np.array([[1.0, 1e-300]]), b=np.zeros((1, 2))).constants.mu == 1e-300  # exact
    with pytest.raises(ValueError, match=r"numerically singular: .* within round-off of 0 for a dense A_m"):
        Quadratic.random(dim=8, n_clients=2, L=1.0, mu=1e-16, form="dense")
    dense = Quadratic.random(dim=8, n_clients=2, L=1.0, mu=1e-12, form="dense")
    assert dense.constants.mu == pytest.approx(1e-12, rel=1e-3)  # 8·ε·‖A‖ ≈ 2e-15: resolved


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


@pytest.mark.parametrize("kw,match", [
    (dict(gamma=[]), "gamma must not be empty"),
    (dict(sync_every=[]), "sync_every must not be empty"),
    (dict(x0=np.zeros((0, 2))), "x0 must not be empty"),
])
def test_empty_run_axis_is_an_error(prob, kw, match):
    """A zero-length run axis is rejected like ``runs=0``, naming the parameter."""
    args = dict(rule=rules.adam(), gamma=0.1, steps=3) | kw
    with pytest.raises(ValueError, match=match):
        simulate(prob, **args)


@pytest.mark.parametrize("name", ["rmsprop", "adam", "oasis"])
@pytest.mark.parametrize("param", ["beta", "e"])
def test_empty_beta_or_e_is_an_error(name, param):
    with pytest.raises(ValueError, match=f"{param} must not be empty"):
        rules.make(name, **{param: []})


@pytest.mark.parametrize("param,value", [("beta", ["a"]), ("e", ["a"]), ("e", "0.1"), ("beta", None)])
def test_non_numeric_beta_or_e(param, value):
    with pytest.raises(TypeError, match=f"{param} must be"):
        rules.make("adam", **{param: value})


@pytest.mark.parametrize("H", [1e30, 2**63, 10**20, 2**62, np.uint64(2**63), [2, 10**20], [2, 1e30]])
def test_sync_every_longer_than_any_int64_means_never(prob, H):
    """A finite integer period of any size is accepted without warnings: beyond the run it
    means "never synchronise" (recorded H = steps); a period within int64 is kept as given."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = simulate(prob, rules.adam(), gamma=0.1, steps=5, sync_every=H)
    never = simulate(prob, rules.adam(), gamma=0.1, steps=5, sync_every=6)
    if np.ndim(H):
        assert res.params["H"].tolist() == [2, 5] and res.sync_steps.tolist() == [2, 4]
        np.testing.assert_array_equal(res.x[1], never.x)
    else:
        assert res.params["H"] == 5 and res.sync_steps.size == 0
        np.testing.assert_array_equal(res.x, never.x)


@pytest.mark.parametrize("H", [np.inf, -np.inf, np.nan, [2, np.inf]])
def test_sync_every_must_be_finite(prob, H):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="sync_every must be finite"):
            simulate(prob, rules.adam(), gamma=0.1, steps=3, sync_every=H)


@pytest.mark.parametrize("H", [-10**20, -1e30])
def test_sync_every_hugely_negative(prob, H):
    with pytest.raises(ValueError, match="sync_every must be >= 1"):
        simulate(prob, rules.adam(), gamma=0.1, steps=3, sync_every=H)


@pytest.mark.parametrize("sync_at", [2, np.int64(2), 2.0, {1, 2}, "12", np.array(2)])
def test_sync_at_takes_a_sequence(prob, sync_at):
    with pytest.raises(TypeError, match="sync_at must be a sequence of step numbers"):
        simulate(prob, rules.adam(), gamma=0.1, steps=3, sync_at=sync_at)


def test_sync_at_sequences_still_accepted(prob):
    res = simulate(prob, rules.adam(), gamma=0.1, steps=5, sync_at=range(2, 6, 2))
    assert res.sync_steps.tolist() == [2, 4]
    res = simulate(prob, rules.adam(), gamma=0.1, steps=5, sync_at=[[1, 2], [3]])
    assert res.sync_steps.tolist() == [1, 2, 3]


@pytest.mark.parametrize("A_,b_,match", [
    (np.zeros((0, 2)), np.zeros((0, 2)), r"b must have at least one client and one coordinate, got shape \(0, 2\)"),
    (np.zeros((2, 0)), np.zeros((2, 0)), r"b must have at least one client and one coordinate, got shape \(2, 0\)"),
    (np.zeros((0, 2, 2)), np.zeros((0, 2)), r"got shape \(0, 2\)"),  # dense, no clients
    (np.zeros((0, 1, 2)), np.zeros((0, 1, 2)), r"at least one instance"),
])
def test_quadratic_without_clients_or_coordinates(A_, b_, match):
    with pytest.raises(ValueError, match=match):
        Quadratic(A=A_, b=b_)


def test_logistic_without_rows_or_columns():
    from savic_theory.problems import Logistic

    with pytest.raises(ValueError, match=r"features_per_client\[1\] has shape \(0, 2\); every client needs >= 1 row"):
        Logistic([np.ones((2, 2)), np.zeros((0, 2))], [np.ones(2), np.zeros(0)])
    with pytest.raises(ValueError, match="d >= 1 columns"):
        Logistic([np.zeros((3, 0))], [np.ones(3)])
    with pytest.raises(ValueError, match="at least one client"):
        Logistic([], [])
    with pytest.raises(ValueError, match="n_clients must be >= 1"):
        Logistic.random(n_clients=0, n_per_client=5, dim=2)
    with pytest.raises(ValueError, match="dim must be >= 1"):
        Logistic.random(n_clients=2, n_per_client=5, dim=0)


@pytest.mark.parametrize("beta,match,err", [
    (lambda k: np.full(5, 0.5), r"beta schedule at k=1 must return .* shape \(2,\).* got an array of shape \(5,\)",
     ValueError),
    (lambda k: np.full((2, 1), 0.5), r"beta schedule at k=1 must return", ValueError),
    (lambda k: "0.5", r"beta schedule at k=1 must return a number", TypeError),
    (lambda k: None, r"beta schedule at k=1 must return a number", TypeError),
    (lambda k: True, r"beta schedule at k=1 must return a number", TypeError),
    (lambda k: 0.5 if k < 2 else [0.5, "x"], r"beta schedule at k=2 must return a number", TypeError),
])
def test_beta_schedule_return_value_checked(prob, beta, match, err):
    with pytest.raises(err, match=match):
        simulate(prob, rules.rmsprop(beta=beta), gamma=[0.1, 0.2], steps=3)


def test_beta_schedule_one_value_per_run_accepted(prob):
    """A schedule returning one β per run gives each run the run of its own constant β."""
    kw = dict(steps=3, x0=np.array([1.0, -0.5]))  # x⁰ ≠ x* = 0, so the steps (and β) matter
    res = simulate(prob, rules.rmsprop(beta=lambda k: np.array([0.5, 0.9])), gamma=[0.1, 0.2], **kw)
    assert res.status.tolist() == ["ok", "ok"]
    for r, (beta, gamma) in enumerate([(0.5, 0.1), (0.9, 0.2)]):
        single = simulate(prob, rules.rmsprop(beta=beta), gamma=gamma, **kw)
        # a few float64 steps of the same arithmetic (tests/test_simulator.py's RTOL for batched vs
        # separate calls); measured exactly equal, while the other run's β moves x by ≥ 5e-3
        np.testing.assert_allclose(res.x[r], single.x, rtol=1e-12)
        np.testing.assert_allclose(res.D[r], single.D, rtol=1e-12)


@pytest.mark.parametrize("kw,err", [
    (dict(heterogeneity="a"), TypeError),
    (dict(heterogeneity=None), TypeError),
    (dict(heterogeneity=-1.0), ValueError),
    (dict(heterogeneity=np.inf), ValueError),
    (dict(L="1"), TypeError),
    (dict(L=np.nan), ValueError),
    (dict(mu=[0.1]), TypeError),
    (dict(mu=0.0), ValueError),
    (dict(noise="0"), TypeError),
    (dict(noise=-1.0), ValueError),
    (dict(dim=0), ValueError),
    (dict(dim=2.0), TypeError),
])
def test_quadratic_random_numeric_arguments_named(kw, err):
    name = next(iter(kw))
    with pytest.raises(err, match=f"^{name} must"):
        Quadratic.random(**(dict(dim=2) | kw))


@pytest.mark.parametrize("kw,err", [
    (dict(heterogeneity="a"), TypeError),
    (dict(heterogeneity=-1.0), ValueError),
    (dict(lam="a"), TypeError),
    (dict(lam=0.0), ValueError),
    (dict(noise=None), TypeError),
    (dict(batch_size=0), ValueError),
])
def test_logistic_random_numeric_arguments_named(kw, err):
    from savic_theory.problems import Logistic

    name = next(iter(kw))
    with pytest.raises(err, match=f"^{name} must"):
        Logistic.random(**(dict(n_clients=2, n_per_client=5, dim=3) | kw))


@pytest.mark.parametrize("kw,err", [
    (dict(lam="a"), TypeError),
    (dict(noise=-1.0), ValueError),
    (dict(batch_size=1.5), TypeError),
    (dict(split="dirichlet", alpha="a"), TypeError),
    (dict(split="dirichlet", alpha=0.0), ValueError),
])
def test_logistic_from_dataset_checks_options_before_loading(monkeypatch, kw, err):
    from savic_theory.problems import Logistic, logistic

    def no_loading(*a, **k):
        raise AssertionError("data loaded before the options were checked")

    monkeypatch.setattr(logistic, "load_data", no_loading)
    name = "alpha" if "alpha" in kw else next(iter(kw))
    with pytest.raises(err, match=f"^{name} must"):
        Logistic.from_dataset("breast_cancer", n_clients=2, **kw)


def test_constants_that_overflow_are_an_error_not_inf():
    """Minimisers near 1e200: ‖x*‖² and ζ*² are not representable, so the problem is refused
    (before: warnings, then NaN distances and a plotting error)."""
    prob = Quadratic.random(dim=4, n_clients=2, heterogeneity=1e200, seed=0)
    with pytest.raises(ValueError, match=r"^the problem's constants overflow float64 \(x\* has entries up to"):
        prob.constants


@pytest.mark.parametrize("kw,error,match", [
    ({"seed": -1}, ValueError, "seed must be a non-negative integer"),
    ({"seed": "a"}, TypeError, "seed must be"),
    ({"seed": 1.5}, TypeError, "seed must be"),
    ({"keep_iterates": "no"}, TypeError, "keep_iterates must be True or False"),
    ({"progress": "no"}, TypeError, "progress must be True or False"),
    ({"x0": np.array([1 + 2j, 0.0])}, TypeError, "x0 must be an array of real numbers, got complex"),
    ({"x0": [1 + 2j, 0.0]}, TypeError, "x0 must be an array of real numbers, got complex"),
    ({"steps": 10**30}, ValueError, r"steps must be at most 2\*\*62"),
    ({"gamma": 1e39, "dtype": "float32"}, ValueError, "gamma = 1e\\+39 does not fit float32"),
])
def test_seed_flags_x0_steps_and_gamma_range(prob, kw, error, match):
    args = {"gamma": 0.1, "steps": 3, **kw}
    with pytest.raises(error, match=match):
        simulate(prob, rules.identity(), **args)


def test_a_gamma_whose_step_overflows_diverges_without_warnings(prob):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning from the fused path's γ/D̂
        res = simulate(prob, rules.rmsprop(), gamma=1e308, steps=5)
    assert np.all(np.asarray(res.status) == "diverged")


@pytest.mark.parametrize("steps,error", [(-3, ValueError), (0, ValueError), ("5", TypeError), (2**62 + 1, ValueError)])
def test_sync_schedule_checks_steps(steps, error):
    from savic_theory.simulator.schedule import SyncSchedule
    with pytest.raises(error, match="steps must"):
        SyncSchedule(steps, 2)


def test_complexity_plan_beyond_int64_is_an_error():
    from savic_theory.theory import THEOREMS
    nums = dict(L=1.0, mu=0.1, alpha=1.0, Gamma=1.0, delta=0.0, M=4, H=2, sigma2=0.1, r0=1.0, A_nu=0.0, B_nu=1.0)
    plan = THEOREMS["complexity[identical]"].plan(eps=1e-14, **nums)  # about 1e17 steps: fits
    assert 0 < plan["steps"] < 2**62 and plan["rounds"] == np.ceil(plan["steps"] / 2)
    with pytest.raises(ValueError, match="does not fit a 64-bit integer"):
        THEOREMS["complexity[identical]"].plan(eps=1e-16, **nums)


@pytest.mark.parametrize("args,match", [
    ((0.5, 1.0, 1.0, 0.1), "kappa .* must be >= 1"),
    ((0.0, 1.0, 1.0, 0.1), "kappa"),
    ((10.0, 0.0, 1.0, 0.1), "q must be"),
    ((10.0, 1.0, -1.0, 0.1), "scale must be"),
    ((10.0, 1.0, 1.0, -0.1), "heterogeneity must be"),
])
def test_adversarial_instance_parameters_checked(args, match):
    from savic_theory.verify.adversarial import instance_problem
    with pytest.raises(ValueError, match=match):
        instance_problem(*args)


def test_adversarial_reproduce_names_missing_keys():
    from savic_theory.verify.adversarial import reproduce
    with pytest.raises(ValueError, match="params lacks kappa"):
        reproduce({})


@pytest.mark.parametrize("kw", [
    {"seed": np.int64(3)}, {"seed": np.random.SeedSequence(3)}, {"seed": np.random.default_rng(3)},
    {"seed": [1, 2]}, {"keep_iterates": np.bool_(True)}, {"progress": np.bool_(False)}, {"gamma": 1},
    {"x0": np.array([1.0, 2.0], dtype=np.float32)}, {"dtype": np.float32}, {"backend": "array_api_strict"},
])
def test_valid_seeds_flags_and_arrays_still_run(prob, kw):
    args = {"gamma": 0.1, "steps": 3, **kw}
    if kw.get("backend") == "array_api_strict":
        pytest.importorskip("array_api_strict")
    res = simulate(prob, rules.adam(), **args)
    assert np.all(np.asarray(res.status) == "ok")
