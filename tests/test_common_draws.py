"""``common_draws``: runs of one group see the same noise, minibatches and probes.

Exact equalities (``array_equal``) where the same arithmetic runs on the same numbers; 1e-12
(relative) between the fused and the reference path, the project's agreement tolerance.
"""
from __future__ import annotations

import numpy as np
import pytest

from savic_theory import Logistic, Quadratic, rules, simulate
from savic_theory.simulator.draws import SharedDraws, draw_groups

from .test_fused import fake_cupy  # noqa: F401  (the emulated CuPy fixture)


@pytest.fixture(scope="module")
def prob():
    return Quadratic.random(dim=6, n_clients=3, L=1.0, mu=0.1, heterogeneity=0.5, noise=0.3, seed=1)


RULES = [rules.adam(beta=0.9, e=1e-2), rules.oasis(beta=0.9, e=1e-2), rules.identity()]


@pytest.mark.parametrize("fused", [False, "numpy"])
@pytest.mark.parametrize("scaling", ["global", "local"])
@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.name)
def test_runs_of_one_group_with_the_same_parameters_are_identical(prob, rule, scaling, fused):
    res = simulate(prob, rule, gamma=np.array([0.05, 0.05, 0.05, 0.1]), steps=40, sync_every=4,
                   scaling=scaling, seed=3, common_draws=[7, 2, 7, 2], fused=fused)
    assert np.array_equal(res.x[0], res.x[2])          # same group, same γ
    assert np.array_equal(res.history["dist_sq"][:, 0], res.history["dist_sq"][:, 2])
    assert not np.allclose(res.x[0], res.x[1])         # another group: other noise
    assert res.params["common_draws"].tolist() == [1, 0, 1, 0]  # labels ranked in sorted order


@pytest.mark.parametrize("scaling", ["global", "local"])
@pytest.mark.parametrize("rule", RULES[:2], ids=lambda r: r.name)
def test_each_group_draws_what_a_call_of_G_runs_draws(prob, rule, scaling):
    gamma = np.array([0.05, 0.1, 0.2, 0.05, 0.1, 0.2])
    grouped = simulate(prob, rule, gamma=gamma, steps=30, sync_every=3, scaling=scaling, seed=5,
                       common_draws=[0, 0, 0, 1, 1, 1], fused=False)
    for i, g in enumerate((0.05, 0.1, 0.2)):
        alone = simulate(prob, rule, gamma=np.full(2, g), steps=30, sync_every=3, scaling=scaling, seed=5,
                         fused=False)
        np.testing.assert_allclose(grouped.x[[i, i + 3]], alone.x, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("fused", [False, True])
def test_every_run_its_own_group_changes_nothing(prob, fused):
    kw = dict(gamma=np.array([0.05, 0.1, 0.2]), steps=30, sync_every=3, seed=2, fused=fused)
    plain = simulate(prob, rules.oasis(beta=0.9, e=1e-2), **kw)
    own = simulate(prob, rules.oasis(beta=0.9, e=1e-2), common_draws=np.arange(3), **kw)
    assert np.array_equal(plain.x, own.x)
    assert plain.params["common_draws"] is None


@pytest.mark.parametrize("scaling", ["global", "local"])
@pytest.mark.parametrize("rule", RULES[:2], ids=lambda r: r.name)
def test_fused_agrees_with_the_reference(prob, rule, scaling):
    kw = dict(gamma=np.array([0.05, 0.1, 0.05, 0.1]), steps=40, sync_every=np.array([2, 2, 5, 5]),
              scaling=scaling, seed=9, common_draws=[0, 1, 1, 0])
    ref = simulate(prob, rule, fused=False, **kw)
    fast = simulate(prob, rule, fused=True, **kw)
    np.testing.assert_allclose(fast.x, ref.x, rtol=1e-12, atol=1e-14 * np.abs(ref.x).max())


@pytest.mark.parametrize("scaling", ["global", "local"])
def test_gpu_code_path_shares_the_draws(fake_cupy, prob, scaling):  # noqa: F811
    """The CuPy path draws its noise on the host into a reused buffer: grouped there too (NumPy
    dressed as CuPy, as in tests/test_fused.py; tests/test_gpu.py repeats this on a device)."""
    kw = dict(gamma=np.array([0.05, 0.1, 0.05]), steps=20, sync_every=4, scaling=scaling, seed=6,
              common_draws=[0, 1, 0], probes="rademacher")
    gpu = simulate(prob, rules.oasis(beta=0.9, e=1e-2), backend=fake_cupy, fused=True, **kw)
    ref = simulate(prob, rules.oasis(beta=0.9, e=1e-2), fused=False, **kw)
    np.testing.assert_allclose(gpu.x, ref.x, rtol=1e-12, atol=1e-14 * np.abs(ref.x).max())


def test_minibatches_are_shared():
    prob = Logistic.random(n_clients=3, n_per_client=20, dim=4, lam=0.1, batch_size=4, noise=0.1, seed=0)
    res = simulate(prob, rules.rmsprop(beta=0.9, e=1e-2), gamma=np.array([0.1, 0.1, 0.1]), steps=25,
                   sync_every=5, seed=1, common_draws=[0, 1, 0])
    assert np.array_equal(res.x[0], res.x[2])
    assert not np.allclose(res.x[0], res.x[1])


def test_own_groups_leave_the_minibatch_stream_unchanged():
    prob = Logistic.random(n_clients=3, n_per_client=20, dim=4, lam=0.1, batch_size=4, seed=0)
    kw = dict(gamma=np.array([0.1, 0.2]), steps=15, sync_every=3, seed=4)
    plain = simulate(prob, rules.adam(beta=0.9, e=1e-2), **kw)
    own = simulate(prob, rules.adam(beta=0.9, e=1e-2), common_draws=[3, 8], **kw)
    assert np.array_equal(plain.x, own.x)


def test_a_grid_over_H_draws_oasis_probes_at_every_runs_syncs(prob):
    """The documented exception: in global scaling probes are drawn only at steps where some run
    syncs, so with H of 1 and 5 in one call the H = 5 runs are not those of an H = 5 call alone;
    with adam (no probes) they are."""
    for rule, alike in ((rules.oasis(beta=0.99, e=0.01), False), (rules.adam(beta=0.99, e=0.01), True)):
        grid = simulate(prob, rule, gamma=0.05, steps=30, sync_every=np.repeat([1, 5], 3), seed=0,
                        common_draws=np.tile(np.arange(3), 2), probes="rademacher", fused=False)
        alone = simulate(prob, rule, gamma=0.05, steps=30, sync_every=5, runs=3, seed=0, probes="rademacher",
                         fused=False)
        assert np.allclose(grid.x[3:], alone.x, rtol=1e-12, atol=0) is alike, rule.name


def test_pairing_shrinks_the_spread_of_a_difference(prob):
    """What pairing is for: the difference between two nearby step sizes, run by run, varies far
    less with shared draws than without. Measured: 0.06–0.08 of the unpaired spread with seeds
    11–13; the bound 0.25 leaves a factor 3."""
    R = 64
    gamma = np.repeat([0.05, 0.055], R)
    kw = dict(gamma=gamma, steps=200, sync_every=5, seed=11)
    paired = simulate(prob, rules.adam(beta=0.9, e=1e-2), common_draws=np.tile(np.arange(R), 2), **kw)
    unpaired = simulate(prob, rules.adam(beta=0.9, e=1e-2), **kw)

    def spread(res):
        final = res.history["dist_sq"][-1]
        return np.std(final[R:] - final[:R])

    assert spread(paired) < 0.25 * spread(unpaired)


def test_shared_draws_match_the_generator_row_by_row():
    groups = draw_groups([3, 1, 3])
    assert groups.tolist() == [1, 0, 1]
    shared = SharedDraws(np.random.default_rng(0), groups)
    out = np.empty((3, 2, 5))
    shared.standard_normal(out=out)
    rows = np.random.default_rng(0).standard_normal((2, 2, 5))
    assert np.array_equal(out, rows[[1, 0, 1]])
    ints = shared.integers(0, np.array([[4], [9]]), size=(3, 2, 5))
    gen = np.random.default_rng(0)
    gen.standard_normal((2, 2, 5))  # the stream advances past the first draw, as for 2 runs
    assert np.array_equal(ints, gen.integers(0, np.array([[4], [9]]), size=(2, 2, 5))[[1, 0, 1]])
    with pytest.raises(TypeError, match="Generator.random, which has no shared form"):
        shared.random((3, 2))
    with pytest.raises(ValueError, match="leading axis"):
        shared.standard_normal(size=(2, 5))
    # a permutation of the runs: every run its own group, but not in order (the rows are taken)
    perm = SharedDraws(np.random.default_rng(0), draw_groups([5, 2, 9]))
    assert not perm.one_per_run
    np.testing.assert_array_equal(perm.standard_normal(size=(3, 4)),
                                  np.random.default_rng(0).standard_normal((3, 4))[[1, 0, 2]])
    # in order: passed through
    ordered = SharedDraws(np.random.default_rng(0), draw_groups([4, 7, 9]))
    assert ordered.one_per_run
    np.testing.assert_array_equal(ordered.integers(0, 5, size=(3, 6)), np.random.default_rng(0).integers(0, 5, size=(3, 6)))
    with pytest.raises(ValueError, match="leading axis"):
        ordered.standard_normal(size=(2, 5))


@pytest.mark.parametrize("labels, error, match", [
    ([0, 1], ValueError, "run axes disagree: .*common_draws has 2"),
    ([0.0, 1.0, 0.0], TypeError, "common_draws must be a 1-D array of integers"),
    ([True, False, True], TypeError, "common_draws"),
    ([[0, 1, 0]], TypeError, "common_draws"),
    ([], ValueError, "common_draws must not be empty"),
])
def test_bad_labels_are_named(prob, labels, error, match):
    with pytest.raises(error, match=match):
        simulate(prob, "adam", gamma=np.array([0.1, 0.1, 0.1]), steps=3, common_draws=labels)


def test_labels_alone_set_the_number_of_runs(prob):
    res = simulate(prob, "adam", gamma=0.1, steps=5, common_draws=[0, 0])
    assert res.x.shape == (2, 3, 6) and np.array_equal(res.x[0], res.x[1])
