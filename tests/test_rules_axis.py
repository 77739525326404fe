"""Rules on the run axis: ``simulate(problem, [rule_0, rule_1, ...])`` gives run ``r`` rule ``r``.

The contract is that each run is the run its own rule would make: with a deterministic oracle
(no noise, exact Hessian diagonals) a run of the mixed call equals the single-rule call with the
same γ, H and β, bit for bit on the reference loop. With noise the draws are shared by all runs
of one call, so the mixed call is compared with itself on every path (fused NumPy, the generated
Numba kernel, the GPU code path on emulated CuPy with its CUDA sources run by Python or g++).
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from savic_theory import Quadratic, rules, simulate
from savic_theory.rules import Statistic
from savic_theory.simulator import fused

from .test_fused import RTOL, assert_same_result, fake_cupy, local_kernel, problem  # noqa: F401 (fixtures)

STEPS = 41


def mixed_parts(probes=False):
    """Every g ⊙ g rule kind, the identity, two β of one kind, a schedule and per-run e; with
    ``probes`` an oasis run replaces the last (two statistics in one call)."""
    parts = [rules.adam(beta=0.9, e=0.5), rules.rmsprop(beta=0.5, e=0.6), rules.identity(),
             rules.adam(beta=0.99, e=1.0), rules.rmsprop(beta=lambda k: 1.0 - 1.0 / (k + 1), e=0.5)]
    if probes:
        parts[-1] = rules.oasis(beta=0.9, e=0.5)
    return parts


BOTH = pytest.mark.parametrize("probes", [False, True], ids=["g2", "g2+probes"])


GAMMA = np.array([0.1, 0.2, 0.3, 0.15, 0.25])
H = np.array([2, 3, 5, 4, 3])


def _run_equals_single(mixed, r, single):
    """Run ``r`` of ``mixed`` against the unbatched ``single``, bit for bit."""
    np.testing.assert_array_equal(mixed.x[r], single.x)
    np.testing.assert_array_equal(mixed.D[r], single.D)
    for key, v in single.history.items():
        np.testing.assert_array_equal(mixed.history[key][:, r], v, err_msg=key)
    own = np.isin(mixed.sync_steps, single.sync_steps)
    np.testing.assert_array_equal(mixed.sync_steps[own], single.sync_steps)
    np.testing.assert_array_equal(mixed.drift[own, r], single.drift)
    assert np.all(np.isnan(mixed.drift[~own, r]))  # no drift where this run did not sync
    assert mixed.status[r] == single.status


@pytest.mark.parametrize("scaling", ["global", "local"])
@pytest.mark.parametrize("parts", ["grad_squared", "probes_and_grad_squared"])
def test_each_run_is_the_run_of_its_own_rule(scaling, parts):
    """Reference loop, deterministic oracle: every run equals its single-rule call exactly
    (including G_hat = 0 for identity runs, the drift of its own syncs, per-run γ, H, β, e)."""
    prob = problem("diagonal", seed=3)
    rs = mixed_parts()
    if parts == "probes_and_grad_squared":
        rs = [rules.oasis(beta=0.9, e=0.5)] + rs[:3] + [rules.oasis(beta=0.5, e=0.7)]
    kw = dict(steps=STEPS, scaling=scaling, record_every=1, x0=np.full(prob.dim, 2.0), fused=False,
              init_probes=3)
    mixed = simulate(prob, rs, gamma=GAMMA, sync_every=H, **kw)
    for r, rule in enumerate(rs):
        _run_equals_single(mixed, r, simulate(prob, rule, gamma=GAMMA[r], sync_every=int(H[r]), **kw))
    assert list(mixed.params["rule"]) == [r.name for r in rs]


@BOTH
@pytest.mark.parametrize("scaling", ["global", "local"])
@pytest.mark.parametrize("noise", [0.0, 0.3])
@pytest.mark.parametrize("form", ["diagonal", "dense"])
def test_fused_path_gives_the_reference_numbers(scaling, noise, form, probes):
    """With noise the draws are shared by the runs of a call: the fused path must reproduce the
    reference loop's mixed call, Rademacher probes included (the tolerance of
    tests/test_fused.py: a few ulps per step from the affine form and GEMMs, contracted by
    γ ≤ e/L)."""
    prob = problem(form, seed=4)
    kw = dict(gamma=GAMMA, steps=STEPS, sync_every=H, scaling=scaling, noise=noise, seed=7,
              x0=np.full(prob.dim, 2.0), record_every=4, probes="rademacher")
    fast = simulate(prob, mixed_parts(probes), fused=True, **kw)
    ref = simulate(prob, mixed_parts(probes), fused=False, **kw)
    assert_same_result(fast, ref)


@pytest.mark.parametrize("fused_mode", [True, "numpy"])
@pytest.mark.parametrize("noise", [0.0, 0.3])
@pytest.mark.parametrize("form", ["diagonal", "dense"])
def test_common_syncs_take_the_one_pass_sync_with_probe_runs(fused_mode, noise, form):
    """Every run syncing at once (one H): the compiled one-pass sync (step, average, client mean
    of g ⊙ g) serves the g ⊙ g runs and the probe runs take their probes' mean (global scaling)."""
    prob = problem(form, seed=9)
    kw = dict(gamma=GAMMA, steps=STEPS, sync_every=4, scaling="global", noise=noise, seed=3,
              x0=np.full(prob.dim, 2.0), record_every=4, probes="rademacher")
    fast = simulate(prob, mixed_parts(probes=True), fused=fused_mode, **kw)
    assert_same_result(fast, simulate(prob, mixed_parts(probes=True), fused=False, **kw))


@BOTH
@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_generated_local_kernel_selects_each_runs_kind(local_kernel, noise, probes):
    """The generated Numba kernel (with ``where`` in its body) against the reference loop."""
    prob = problem("diagonal", seed=5, M=5, d=21)
    kw = dict(gamma=GAMMA, steps=STEPS, sync_every=H, scaling="local", noise=noise, seed=2,
              x0=np.full(prob.dim, 2.0), record_every=7, probes="rademacher")
    compiled = simulate(prob, mixed_parts(probes), fused=True, **kw)
    assert_same_result(compiled, simulate(prob, mixed_parts(probes), fused=False, **kw))


@BOTH
@pytest.mark.parametrize("scaling", ["global", "local"])
def test_gpu_code_path_on_emulated_cupy(fake_cupy, scaling, probes):
    """The GPU path's generated kernels select per run too (kernels read by Python and by g++)."""
    prob = problem("diagonal", seed=6)
    kw = dict(gamma=GAMMA, steps=STEPS, sync_every=H, scaling=scaling, noise=0.3, seed=1,
              x0=np.full(prob.dim, 2.0), record_every=3, probes="rademacher")
    gpu = simulate(prob, mixed_parts(probes), backend=fake_cupy, fused=True, **kw)
    assert_same_result(gpu, simulate(prob, mixed_parts(probes), fused=False, **kw), ignore=("backend",))


def test_mixed_statistics_take_the_fused_path():
    prob = problem("diagonal", seed=1)
    rs = [rules.oasis(beta=0.9, e=0.5), rules.adam(beta=0.9, e=0.5)]
    r = rules.per_run(rs)
    assert r.statistic is Statistic.PER_RUN
    assert fused.unsupported_reason(prob, r, "local") is None
    res = simulate(prob, rs, gamma=0.1, steps=5, noise=0.1, probes="rademacher", fused=True)
    assert res.params["probes"] == "rademacher"


def test_probe_runs_draw_rademacher_probes_and_g2_runs_do_not():
    """Mixed statistics: the probe run folds Rademacher probes, the g ⊙ g run squared gradients
    (global scaling: the g ⊙ g run's G_hat is √max of the clients' mean of g ⊙ g, the probe
    run's the max |mean probe|: what D̂ is built from), each from the same start."""
    A = np.array([[1.0, 2.0], [3.0, 0.5]])  # two clients, diagonal Hessians
    prob = Quadratic(A=A, b=np.array([[1.0, -1.0], [0.5, 2.0]]), noise=0.0)
    rs = [rules.oasis(beta=0.5, e=1e-3), rules.rmsprop(beta=0.5, e=1e-3)]
    res = simulate(prob, rs, gamma=0.01, steps=1, sync_every=1, probes="rademacher", record_every=1)
    g0 = -prob.b  # gradient at x⁰ = 0 for both clients
    assert res.history["G_hat"][0, 1] == pytest.approx(np.sqrt(np.max(np.mean(g0 * g0, axis=-2))))  # √2.5
    # a diagonal A: every Rademacher probe is the diagonal itself, so G_hat is max mean diag A
    assert res.history["G_hat"][0, 0] == pytest.approx(2.0)
    assert res.history["Gamma_hat"][0, 0] == pytest.approx(np.max(np.mean(A, axis=0)))  # global D̂⁰


def test_params_summary_and_save_load_name_each_runs_rule(tmp_path):
    prob = problem("diagonal", seed=2)
    rs = ["adam", rules.rmsprop(beta=0.9), "identity"]
    res = simulate(prob, rs, gamma=0.1, steps=10, sync_every=2)
    assert res.rule.run_names == ("adam", "rmsprop", "identity")
    assert res.params["beta"].tolist() == [0.999, 0.9, 0.0]  # identity has no β (never read)
    summary = json.loads(json.dumps(res.summary(), allow_nan=False))
    assert summary["rule"] == ["adam", "rmsprop", "identity"]
    res.save(tmp_path / "r.npz")
    back = type(res).load(tmp_path / "r.npz", prob, res.rule)
    assert list(back.params["rule"]) == ["adam", "rmsprop", "identity"]
    # a β schedule beside numbers: each entry keeps its type through save and load
    mixed = simulate(prob, [rules.adam(beta=0.999), rules.oasis(beta=lambda k: 0.9), "identity"], gamma=0.1,
                     steps=4, sync_every=2)
    mixed.save(tmp_path / "m.npz")
    again = type(mixed).load(tmp_path / "m.npz", prob, mixed.rule)
    assert again.params["beta"].tolist() == mixed.params["beta"].tolist() == [0.999, "<lambda>", 0.0]


def test_one_kind_keeps_its_own_functions():
    """A list of one kind is that rule with β and e over runs (no masks, no extra work)."""
    one = rules.per_run([rules.adam(beta=0.9), rules.adam(beta=0.5, e=0.1)])
    assert one.update is rules.adam().update and one.statistic is Statistic.GRAD_SQUARED
    assert one.e.tolist() == [1e-2, 0.1] and one.beta.constant.tolist() == [0.9, 0.5]
    mixed = rules.per_run([rules.adam(), rules.rmsprop(), rules.adam()])
    assert mixed.name == "adam+rmsprop" and mixed.init_updates.tolist() == [1, 0, 1]


@pytest.mark.parametrize("bad,err,match", [
    ([], ValueError, "must not be empty"),
    ([rules.adam(beta=[0.9, 0.99])], ValueError, r"rule\[0\] \(adam\) carries a run axis of 2"),
    ([rules.adam(), 3], TypeError, r"rule\[1\] must be a ScalingRule"),
    (["adam", "adamw"], ValueError, "unknown scaling rule 'adamw'"),
    ([rules.per_run(["adam", "rmsprop"])], ValueError, r"rule\[0\] is itself a rule over runs"),
])
def test_bad_lists_name_the_offending_entry(bad, err, match):
    prob = problem("diagonal")
    with pytest.raises(err, match=match):
        simulate(prob, bad, gamma=0.1, steps=3)


def test_run_axis_must_agree_with_the_other_parameters():
    prob = problem("diagonal")
    with pytest.raises(ValueError, match=r"run axes disagree: gamma has 2, rule \(beta/e\) has 3"):
        simulate(prob, ["adam", "rmsprop", "oasis"], gamma=[0.1, 0.2], steps=3)


def test_array_api_strict_backend_runs_a_rule_over_runs():
    """The reference loop's ``where`` on per-run masks is array-API only."""
    pytest.importorskip("array_api_strict")
    prob = problem("diagonal", seed=2)
    kw = dict(gamma=0.1, steps=12, sync_every=3, scaling="local", noise=0.2, seed=4, probes="rademacher")
    rs = ["adam", "oasis", "identity"]
    strict = simulate(prob, rs, backend="array_api_strict", **kw)
    ref = simulate(prob, rs, fused=False, **kw)
    np.testing.assert_allclose(strict.x, ref.x, rtol=1e-14)


def test_sweep_of_rules_seeds_and_step_sizes_in_one_call():
    """The sweep the docs show: rules × γ × seeds as one run axis, then read back per cell.

    Noise-free, so that every cell can be checked against its single-rule, single-γ call (with
    noise the draws depend on the whole call, and no single call reproduces a cell's)."""
    prob = problem("diagonal", seed=8)
    names, gammas, seeds = ["identity", "rmsprop", "adam"], [0.1, 0.3], 4
    cells = list(itertools.product(names, gammas, range(seeds)))
    kw = dict(steps=30, sync_every=5, noise=0.0, seed=0)
    res = simulate(prob, [c[0] for c in cells], gamma=[c[1] for c in cells], **kw)
    final = res.history["dist_sq"][-1].reshape(len(names), len(gammas), seeds)
    assert final.shape == (3, 2, 4) and np.all(np.isfinite(final))
    assert list(res.params["rule"][::seeds * len(gammas)]) == names
    for i, name in enumerate(names):
        for j, gamma in enumerate(gammas):
            single = simulate(prob, name, gamma=gamma, **kw)
            # the default (fused) path on both sides: RTOL, the tolerance of the fused path against
            # the per-rule reference in this file (tests/test_fused.py); measured exactly equal
            np.testing.assert_allclose(final[i, j], single.history["dist_sq"][-1], rtol=RTOL)
            for s in range(seeds):
                r = (i * len(gammas) + j) * seeds + s
                np.testing.assert_allclose(res.x[r], single.x, rtol=RTOL)


def test_rules_benchmark_on_the_emulated_gpu_path(fake_cupy):
    """``benchmarks/rules_axis.py`` as the GPU suite calls it (backend given), on a tiny problem:
    it checks the two ways agree before timing and reports the fused path."""
    from benchmarks import rules_axis

    cfg = dict(rules_axis.GPU_CONFIG, runs=2, clients=3, dim=4, steps=10)
    kept = []
    out = rules_axis.compare(cfg, repeats=1, log=lambda *a: None, backend=fake_cupy, keep=kept.append)
    assert [len(k["rows"]) for k in kept] == [1, 2, 3, 4] and kept[-1]["rows"] == out["rows"]
    assert [(r["sweep"], r["scaling"]) for r in out["rows"]] == [
        (label, scaling) for label in rules_axis.SWEEPS for scaling in ("global", "local")]
    # the mixed call against the per-rule calls, noise-free: RTOL (1e-12), this file's tolerance
    # for the fused path against per-rule numbers (measured: 0 on both emulated kernels); the
    # benchmark's own 1e-9 guard (benchmarks/cpu.py CHECK_RTOL) is for the large timing problems
    assert all(r["mixed_path"] == "fused" and r["max_rel_gap"] <= RTOL for r in out["rows"])


def test_a_schedule_is_called_only_at_its_own_runs_update_indices():
    """A part's β schedule sees the update indices its run would see alone: not those of the
    other runs (a run syncing every step reaches k far beyond one syncing every 4), and never
    k = 0 (a run that has not synced yet while others sync). A schedule defined by a table of
    β₁, β₂, β₃ serves its run in a mixed call exactly as alone."""
    prob = problem("diagonal", seed=2)
    seen: list[int] = []

    def table(k):
        seen.append(k)
        return [0.9, 0.5, 0.7][k - 1] if k >= 1 else float("nan")  # k = 0 would be a bug

    rs = [rules.rmsprop(beta=table, e=0.5), rules.adam(beta=lambda k: 0.9, e=0.5), rules.identity()]
    for scaling, fused_mode in [("global", False), ("global", True), ("local", False)]:
        H = [4, 1, 2] if scaling == "global" else [4, 4, 4]
        steps = 12 if scaling == "global" else 2
        kw = dict(steps=steps, scaling=scaling, record_every=1, x0=np.full(prob.dim, 2.0), fused=fused_mode)
        seen.clear()
        alone = simulate(prob, rs[0], gamma=0.2, sync_every=H[0], **kw)
        own = set(seen)
        seen.clear()
        mixed = simulate(prob, rs, gamma=0.2, sync_every=H, **kw)
        assert set(seen) == own, scaling
        if fused_mode is False:
            _run_equals_single(mixed, 0, alone)


def test_generated_kernel_has_one_row_loop_per_kind():
    """The generated Numba kernel specialises one row loop per kind (one-hot masks), plus one
    that selects per element for any other setting: not one per subset of kinds, whose number
    (and compile time) doubles with each kind."""
    from .test_fused import _adagrad_like

    n = 6  # rules defined by their own functions: each call is a kind of its own
    r = rules.per_run([_adagrad_like(e=0.5 + 0.1 * i) for i in range(n)])
    full = (n, 3, 4)
    prog = fused.trace_rule(r, [np.shape(c) for c in r.init(np.ones(full), np.full((n, 1, 1), 0.5), np)], full)
    assert len(prog.selectors()) == n - 1
    source = fused.local_numba_source(prog, True, False, False)[0]
    assert source.count("for j in range(d):") == n + 1 + 1  # the kinds, the fallback, the reductions


def test_unsupported_reason_takes_a_list_of_rules_as_simulate_does():
    prob = problem("diagonal", seed=1)
    assert fused.unsupported_reason(prob, ["adam", rules.oasis(), "identity"], "local") is None
    assert fused.unsupported_reason(prob, ("adam", "rmsprop"), backend="array_api_strict").startswith(
        "backend array_api_strict")


def test_generated_kernel_with_two_kinds_whose_small_components_share_a_slot(local_kernel):
    """Adam and a variant of it (its own functions): both bias-correction masses are per-run
    values in one slot, selected on the host (a small ``where``, a kernel parameter); the
    specialised row loops must read that parameter, not the branches behind it."""
    adam = rules.adam(beta=0.9, e=0.5)
    variant = adam._replace(name="adam_variant", update=lambda st, s, b, xp: type(st)(
        b * st.v + (1.0 - b) * s, b * st.c + (1.0 - b)))
    rs = [adam, variant, rules.rmsprop(beta=0.5, e=0.5)]
    prob = problem("diagonal", seed=1)
    kw = dict(gamma=0.2, steps=10, sync_every=3, scaling="local", noise=0.1, seed=1, x0=np.full(prob.dim, 2.0))
    assert_same_result(simulate(prob, rs, fused=True, **kw), simulate(prob, rs, fused=False, **kw))


def test_params_record_each_runs_beta_or_schedule_name():
    """With a schedule among the parts, ``params["beta"]`` keeps every run's constant β and names
    each schedule (it was the one label "per_run")."""
    def warmup(k):
        return 1.0 - 1.0 / (k + 1)

    prob = problem("diagonal", seed=2)
    res = simulate(prob, [rules.adam(beta=0.9), rules.rmsprop(beta=warmup), "identity"], gamma=0.1, steps=6)
    assert list(res.params["beta"]) == [0.9, "warmup", 0.0]
    assert json.loads(json.dumps(res.summary(), allow_nan=False))["params"]["beta"] == [0.9, "warmup", 0.0]


def test_a_part_schedule_returning_one_value_per_run_is_named():
    prob = problem("diagonal", seed=2)
    per_run_values = rules.rmsprop(beta=lambda k: np.full(3, 0.9))  # a run axis where there is none
    with pytest.raises(ValueError, match=r"rule\[1\]: .* each rule is one run, so its beta schedule returns one number"):
        simulate(prob, ["adam", per_run_values, "identity"], gamma=0.1, steps=4, fused=False)
