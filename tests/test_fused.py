"""The fused fast path against the reference loop: same results, same draws, same bookkeeping.

``simulate(..., fused=True)`` (NumPy, preallocated buffers, traced rule programs) is compared with
``simulate(..., fused=False)`` (the reference loop) for every rule × scaling × problem form, with
per-run parameter arrays, with and without noise. The CUDA kernels of the GPU path are checked
here too, on the host: their generated source is executed elementwise with NumPy, and compiled
by g++ as host C++ (``tests/_cuda_host.py``).
"""
from __future__ import annotations

import itertools
import re
from typing import NamedTuple

import numpy as np
import pytest

from savic_theory import RULES, SCALINGS, Quadratic, rules, simulate
from savic_theory.rules import BetaSchedule, ScalingRule, Statistic, clip
from savic_theory.rules._base import check_e
from savic_theory.rules._numerics import ema
from savic_theory.simulator import fused
from savic_theory.simulator.result import HISTORY_KEYS

from . import _cuda_host

# The fused path changes the rounding of a step by a few ulps (the affine form x ← P⊙x + q of
# diagonal problems, GEMM instead of mat-vec for dense ones). With γ ≤ e/L every local step is a
# contraction, so these differences do not grow: the observed gap is ≤ 1e-14, and 1e-12 leaves
# two orders of magnitude. The tolerance is relative to the size of each compared array
# (norm-wise), because entries that cancel to ~0 (consensus just after a sync, coordinates of
# x̄ − x*) have no meaningful elementwise relative error.
RTOL = 1e-12
R = 3
FORMS = ("diagonal", "dense", "eigenbasis")


def assert_close(fast, ref, rtol=RTOL, what=""):
    fast, ref = np.asarray(fast, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert fast.shape == ref.shape, what
    np.testing.assert_array_equal(np.isnan(fast), np.isnan(ref), err_msg=f"NaN pattern of {what}")
    scale = np.nanmax(np.abs(ref)) if np.any(~np.isnan(ref)) else 0.0
    np.testing.assert_allclose(fast, ref, rtol=rtol, atol=rtol * scale, equal_nan=True, err_msg=what)


def assert_same_result(fast, ref, rtol=RTOL, ignore=()):
    assert_close(fast.x, ref.x, rtol, "x")
    assert_close(fast.x_bar, ref.x_bar, rtol, "x_bar")
    assert_close(fast.D, ref.D, rtol, "D")
    np.testing.assert_array_equal(fast.steps, ref.steps)
    assert set(fast.history) == set(ref.history)
    for key in fast.history:
        assert_close(fast.history[key], ref.history[key], rtol, key)
    np.testing.assert_array_equal(fast.sync_steps, ref.sync_steps)
    assert_close(fast.drift, ref.drift, rtol, "drift")
    assert_close(fast.drift_min, ref.drift_min, rtol, "drift_min")
    np.testing.assert_array_equal(np.asarray(fast.status), np.asarray(ref.status))
    np.testing.assert_array_equal(np.asarray(fast.diverged_at), np.asarray(ref.diverged_at))
    assert fast.params.keys() == ref.params.keys()
    for key in set(fast.params) - set(ignore):
        np.testing.assert_array_equal(np.asarray(fast.params[key]), np.asarray(ref.params[key]), err_msg=key)


def problem(form, seed=0, M=4, d=6, instances=None):
    # L = 1, clip levels e ≥ 0.5 below and γ ≤ 0.3: every step is a contraction (γ/D̂ ≤ 0.6/L)
    if instances is None:
        return Quadratic.random(dim=d, n_clients=M, L=1.0, mu=0.1, heterogeneity=1.0, form=form,
                                client_spectra="random", seed=seed)
    probs = [Quadratic.random(dim=d, n_clients=M, L=1.0, mu=0.1, heterogeneity=1.0, form=form,
                              client_spectra="random", seed=seed + i) for i in range(instances)]
    A, b = np.stack([p.A[0] for p in probs]), np.stack([p.b[0] for p in probs])
    return Quadratic(A=A, b=b, Q=probs[0].Q)  # Q is None except for the eigenbasis form


def per_run_rule(name):
    if name == "identity":
        return rules.identity()
    return rules.make(name, beta=np.array([0.5, 0.9, 0.99]), e=np.array([0.5, 0.6, 1.0]))


def both(prob, rule, **kw):
    return simulate(prob, rule, fused=True, **kw), simulate(prob, rule, fused=False, **kw)


@pytest.mark.parametrize("noise", [0.0, 0.3])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("rule", list(RULES))
def test_agrees_with_reference(rule, scaling, form, noise):
    """Per-run γ, β, e and H (2, 3, 5: some steps sync only some runs), x⁰ away from x*."""
    prob = problem(form, seed=3)
    fast, ref = both(prob, per_run_rule(rule), gamma=np.array([0.1, 0.2, 0.3]), steps=31,
                     sync_every=np.array([2, 3, 5]), scaling=scaling, noise=noise, seed=11,
                     x0=np.full(prob.dim, 2.0), record_every=3)
    assert_same_result(fast, ref)


@pytest.mark.parametrize("noise", [0.0, 0.3])
@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("rule", list(RULES))
def test_numpy_fused_path_agrees_with_reference(rule, scaling, noise):
    """``fused="numpy"`` (what runs where Numba is missing): NumPy ufuncs alone, same contract."""
    prob = problem("diagonal", seed=3)
    kw = dict(gamma=np.array([0.1, 0.2, 0.3]), steps=31, sync_every=np.array([2, 3, 5]),
              scaling=scaling, noise=noise, seed=11, x0=np.full(prob.dim, 2.0), record_every=3)
    fast = simulate(prob, per_run_rule(rule), fused="numpy", **kw)
    ref = simulate(prob, per_run_rule(rule), fused=False, **kw)
    assert_same_result(fast, ref)


def test_a_numba_that_fails_to_set_up_leaves_the_numpy_path(monkeypatch):
    """Numba installed but failing as the kernels load (say, no writable cache folder: a
    ``RuntimeError``): a warning, and ``fused="auto"`` gives the ``fused="numpy"`` numbers."""
    import importlib.abc
    import sys

    import savic_theory.simulator as package

    name = "savic_theory.simulator._cpu_kernels"

    class Failing(importlib.abc.MetaPathFinder):
        def find_spec(self, fullname, path, target=None):
            if fullname == name:
                raise RuntimeError("cannot cache function 'affine_steps': no locator available")
            return None

    monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.delattr(package, "_cpu_kernels", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Failing()] + sys.meta_path)
    fused._warn_once.cache_clear()
    prob = problem("diagonal", seed=3)
    kw = dict(gamma=0.2, steps=23, sync_every=4, runs=R, seed=1, noise=0.1)
    want = simulate(prob, rules.adam(beta=0.9, e=0.5), fused="numpy", **kw)
    with pytest.warns(RuntimeWarning, match="no locator available.*NumPy path runs instead"):
        got = simulate(prob, rules.adam(beta=0.9, e=0.5), fused="auto", **kw)
    _bitwise_same(got, want)


def test_without_numba_auto_runs_the_numpy_path(monkeypatch):
    """Where Numba cannot be imported, ``fused="auto"`` gives the ``fused="numpy"`` numbers."""
    prob = problem("diagonal", seed=3)
    kw = dict(gamma=0.2, steps=23, sync_every=4, runs=R, seed=1, noise=0.1)
    want = simulate(prob, rules.adam(beta=0.9, e=0.5), fused="numpy", **kw)
    monkeypatch.setattr(fused, "_compiled_kernels", lambda: None)
    got = simulate(prob, rules.adam(beta=0.9, e=0.5), fused="auto", **kw)
    _bitwise_same(got, want)


def _bitwise_same(a, b, dtype="float64"):
    # the consensus error is summed over d in another order: a relative gap of at most a few
    # (d/8 + 3) units of round-off (d = 21 here), 1e-14 in float64 and 2e-6 in float32
    consensus_rtol = 1e-14 if dtype == "float64" else 2e-6
    for name in ("x", "x_bar", "D", "drift", "drift_min"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    for key in a.history:
        if key == "consensus":
            assert_close(a.history[key], b.history[key], consensus_rtol, key)
        else:
            np.testing.assert_array_equal(a.history[key], b.history[key], err_msg=key)
    np.testing.assert_array_equal(np.asarray(a.diverged_at), np.asarray(b.diverged_at))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("noise", [0.0, 0.3])
@pytest.mark.parametrize("sync_every", [4, (2, 3, 5)])
@pytest.mark.parametrize("rule,scaling", [("identity", "global"), ("identity", "local"),
                                          ("rmsprop", "global"), ("adam", "global"),
                                          ("oasis", "global"), ("adam", "local")])
def test_compiled_kernels_compute_the_numpy_paths_numbers(rule, scaling, sync_every,
                                                          noise, dtype):
    """The Numba kernels do the NumPy fused path's operations in its order: equal bit for bit.

    Covers multi-step segments, the one-pass sync step (rmsprop/adam statistic, identity
    without one), per-run γ, β, e and H, problem instances, noise and float32; the consensus
    error is summed over coordinates in another order, so it is compared to 1e-14.
    """
    pytest.importorskip("numba")
    prob = problem("diagonal", seed=5, M=5, d=21, instances=R if noise else None)
    kw = dict(gamma=np.array([0.1, 0.2, 0.3]), steps=37, sync_every=np.array(sync_every),
              scaling=scaling, noise=noise, seed=2, record_every=5, dtype=dtype,
              x0=np.full(prob.dim, 2.0), fused=True)
    compiled = simulate(prob, per_run_rule(rule), **kw)
    plain = simulate(prob, per_run_rule(rule), **dict(kw, fused="numpy"))
    _bitwise_same(compiled, plain, dtype)


@pytest.fixture
def local_kernel(monkeypatch):
    """The generated local-scaling kernel for every run size (normally only for large runs)."""
    kernels = pytest.importorskip("savic_theory.simulator._cpu_kernels")
    monkeypatch.setattr(fused, "_LOCAL_KERNEL_MIN_WORK", 0)
    return kernels


@pytest.mark.parametrize("rule,noise,form,dtype", [
    *((rule, noise, form, "float64") for rule in ("rmsprop", "adam", "oasis")
      for noise in (0.0, 0.3) for form in ("diagonal", "dense")),
    ("adam", 0.0, "eigenbasis", "float64"), ("adam", 0.3, "eigenbasis", "float64"),
    ("adam", 0.0, "diagonal", "float32"), ("oasis", 0.3, "diagonal", "float32")])
def test_generated_local_kernel_computes_the_numpy_paths_numbers(local_kernel, rule, noise,
                                                                 form, dtype):
    """Local scaling through the generated Numba kernel (several noise-free steps per call up
    to the next sync or record, one step with noise, probes or matrix gradients) against the
    ufunc replay of the same traced program: equal bit for bit, the per-run γ, β, e and H
    included (the consensus error to round-off, as for the other kernels)."""
    prob = problem(form, seed=5, M=5, d=21, instances=R if noise and form == "diagonal" else None)
    kw = dict(gamma=np.array([0.1, 0.2, 0.3]), steps=37, sync_every=np.array([2, 3, 5]),
              scaling="local", noise=noise, seed=2, record_every=7, dtype=dtype,
              x0=np.full(prob.dim, 2.0), fused=True)
    compiled = simulate(prob, per_run_rule(rule), **kw)
    plain = simulate(prob, per_run_rule(rule), **dict(kw, fused="numpy"))
    _bitwise_same(compiled, plain, dtype)
    assert_same_result(compiled, simulate(prob, per_run_rule(rule), **dict(kw, fused=False)),
                       rtol=RTOL if dtype == "float64" else 1e-4)


def test_generated_local_kernel_with_a_beta_schedule_and_threads(local_kernel, monkeypatch):
    """A β schedule gives each folded step its own β; runs split over threads change nothing."""
    prob = problem("diagonal", seed=1, M=5, d=21)
    rule = rules.adam(beta=lambda k: 1.0 - 0.5 / k, e=0.5)
    kw = dict(gamma=0.2, steps=40, sync_every=8, runs=R, seed=3, record_every=5,
              scaling="local", x0=np.full(prob.dim, 2.0), fused=True)
    one = simulate(prob, rule, **kw)
    _bitwise_same(one, simulate(prob, rule, **dict(kw, fused="numpy")))
    monkeypatch.setattr(fused, "_MIN_WORK_PER_THREAD", 1)
    monkeypatch.setattr(local_kernel, "threads", lambda: 3)
    split = simulate(prob, rule, **kw)
    for key in split.history:
        np.testing.assert_array_equal(split.history[key], one.history[key], err_msg=key)
    np.testing.assert_array_equal(split.x, one.x)


def test_generated_local_kernel_propagates_nan_like_numpy(local_kernel):
    """A run that overflows stops as ``diverged`` at the same step on both paths, and the
    others are untouched: the kernel's maxima turn NaN where ``np.max`` does."""
    prob = problem("diagonal", seed=2)
    x0 = np.ones((R, prob.dim))
    x0[1] = 1e160
    kw = dict(gamma=0.2, steps=40, sync_every=4, seed=0, record_every=4, x0=x0,
              scaling="local", fused=True)
    compiled = simulate(prob, rules.rmsprop(beta=0.9, e=0.5), **kw)
    plain = simulate(prob, rules.rmsprop(beta=0.9, e=0.5), **dict(kw, fused="numpy"))
    assert list(plain.status) == ["ok", "diverged", "ok"]
    _bitwise_same(compiled, plain)


def test_small_local_runs_keep_the_ufunc_replay(monkeypatch):
    """Below ``_LOCAL_KERNEL_MIN_WORK`` steps × coordinates nothing is compiled or loaded."""
    kernels = pytest.importorskip("savic_theory.simulator._cpu_kernels")

    def refuse(*args):
        raise AssertionError("a small run loaded the generated kernel")

    monkeypatch.setattr(kernels, "compile_generated", refuse)
    prob = problem("diagonal", seed=1)
    simulate(prob, rules.adam(beta=0.9, e=0.5), gamma=0.2, steps=20, sync_every=4, runs=R,
             scaling="local", fused=True)


@pytest.fixture
def global_kernel(monkeypatch):
    """The generated global-scaling update for every call (normally only for calls with many
    syncs), loaded afresh; returns a list that receives the rule name of each update it takes."""
    pytest.importorskip("savic_theory.simulator._cpu_kernels")
    monkeypatch.setattr(fused, "_GLOBAL_KERNEL_MIN_SYNCS", 0)
    monkeypatch.setattr(fused, "_GLOBAL_KERNELS", {})
    monkeypatch.setattr(fused, "_GLOBAL_SYNCS", {})
    taken = []
    update = fused._CPUOps.update_global

    def counted(self, *args):
        taken.append(self._global[0].rule.name)
        return update(self, *args)

    monkeypatch.setattr(fused._CPUOps, "update_global", counted)
    return taken


@pytest.mark.parametrize("rule,form,noise,sync_every,dtype", [
    *((rule, "diagonal", noise, H, "float64") for rule in ("rmsprop", "adam", "oasis", "mixed")
      for noise in (0.0, 0.3) for H in (4, (2, 3, 5))),
    ("adam", "dense", 0.3, (2, 3, 5), "float64"), ("oasis", "eigenbasis", 0.0, 4, "float64"),
    ("adam", "diagonal", 0.0, 4, "float32"), ("mixed", "diagonal", 0.3, (2, 3, 5), "float32")])
def test_generated_global_update_computes_the_numpy_paths_numbers(global_kernel, rule, form, noise,
                                                                  sync_every, dtype):
    """Global scaling's update at a sync of every run through the generated kernel, against
    the rule's own code (``fused="numpy"``): equal bit for bit, with per-run γ, β, e and H
    (syncs of only some runs take the rule's code), a rule over runs, probes, noise, the
    dense and eigenbasis forms and float32; and within 1e-12 of the reference loop."""
    prob = problem(form, seed=5, M=5, d=21)
    r = (rules.per_run([rules.identity(), rules.rmsprop(beta=0.5, e=0.5), rules.adam(beta=0.9, e=0.6)]
                       + ([rules.oasis(beta=0.99, e=1.0)] if noise else []))
         if rule == "mixed" else per_run_rule(rule))
    runs = len(r.parts) if rule == "mixed" else R
    H = np.resize(np.array(sync_every), runs)
    kw = dict(gamma=np.resize([0.1, 0.2, 0.3], runs), steps=37, sync_every=H, scaling="global",
              noise=noise, seed=2, record_every=5, dtype=dtype, x0=np.full(prob.dim, 2.0), fused=True)
    compiled = simulate(prob, r, **kw)
    assert len(global_kernel) == 37 // int(np.lcm.reduce(H))  # the syncs of every run
    plain = simulate(prob, r, **dict(kw, fused="numpy"))
    _bitwise_same(compiled, plain, dtype)
    assert_same_result(compiled, simulate(prob, r, **dict(kw, fused=False)),
                       rtol=RTOL if dtype == "float64" else 1e-4)


def test_generated_global_update_with_a_beta_schedule_threads_and_divergence(global_kernel, monkeypatch):
    """A β schedule, runs split over threads and a run that diverges: the same numbers as the
    rule's own code."""
    kernels = pytest.importorskip("savic_theory.simulator._cpu_kernels")
    prob = problem("diagonal", seed=2)
    rule = rules.adam(beta=lambda k: 1.0 - 0.5 / k, e=0.5)
    kw = dict(gamma=np.array([0.2, 40.0, 0.3]), steps=60, sync_every=4, seed=0, record_every=2, fused=True)
    plain = simulate(prob, rule, **dict(kw, fused="numpy"))
    assert list(plain.status) == ["ok", "diverged", "ok"]
    _bitwise_same(simulate(prob, rule, **kw), plain)
    monkeypatch.setattr(fused, "_MIN_WORK_PER_THREAD", 1)
    monkeypatch.setattr(kernels, "threads", lambda: 3)
    _bitwise_same(simulate(prob, rule, **kw), plain)
    assert len(global_kernel) == 2 * 15


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_generated_global_update_kernel_takes_nan_and_inf_as_the_rules_code_does(dtype):
    """The kernel alone on statistics with NaN, inf and 0 entries in some runs: new state, D̂,
    ``γ/D̂`` and the ratios' per-run maximum and minimum equal the engine's update (NaN where
    ``np.max`` gives NaN, inf/inf included) bit for bit."""
    kernels = pytest.importorskip("savic_theory.simulator._cpu_kernels")
    from savic_theory.simulator.engine import update_scaling

    rng, runs, d, dt = np.random.default_rng(0), 5, 7, np.dtype(dtype)
    rule = rules.adam(beta=0.9, e=np.array([0.5, 0.5, 0.01, 0.5, 0.5]))
    state = rule.init(rng.random((runs, 1, d)).astype(dt), np.full((runs, 1, 1), 0.9, dtype=dt), np)
    D = clip(rule.diagonal(state, np), rule.e.reshape(-1, 1, 1).astype(dt), np).astype(dt)
    s = rng.random((runs, 1, d)).astype(dt) * 4
    s[1, 0, 3], s[2, 0, :] = np.nan, 0.0
    s[3, 0, 2] = np.inf
    D[4, 0, 5] = np.inf  # inf/inf: NaN
    s[4, 0, 5] = np.inf
    beta, e, gamma = np.full((runs, 1, 1), 0.9, dtype=dt), rule.e.reshape(-1, 1, 1).astype(dt), dt.type(0.3)

    class Setup:  # what update_scaling reads of a RunSetup
        xp = np

    Setup.rule = rule
    with np.errstate(all="ignore"):
        want_state, want_D, want_hi, want_lo = update_scaling(Setup, state, D, s, beta, e, np.ones(runs, bool))
        program = fused.RuleProgram(rule, [c.shape for c in state], (runs, 1, d))
        source, small, _, consts = fused.global_numba_source(program)
        kernel = kernels.compile_generated(source, "savic_global_update")
        K, small_state, big = fused._global_inputs(program, state, D, beta, e, np, dt)
        outs = [np.empty((runs, 1, d), dtype=dt) for _ in range(2 + len(big))]
        hi, lo = np.empty(runs, dtype=dt), np.empty(runs, dtype=dt)
        kernel(D, *big, s, np.full(runs, gamma), K, np.array([consts], dtype=dt).reshape(1, -1), *outs, hi, lo)
    D_new, *big_new, c = outs
    got_state = fused._global_state(program, state, big_new, small_state)
    assert np.isnan(want_hi[[1, 4]]).all() and np.isfinite(want_hi[[0, 2]]).all()
    np.testing.assert_array_equal(hi, want_hi)
    np.testing.assert_array_equal(lo, want_lo)
    np.testing.assert_array_equal(D_new, want_D)
    np.testing.assert_array_equal(c, np.divide(gamma, want_D))
    for got, want in zip(got_state, want_state):
        np.testing.assert_array_equal(np.broadcast_to(got, np.shape(want)), want)


class _Kept(NamedTuple):
    v: object
    w: object


def _keeps_s_rule() -> ScalingRule:
    """A rule whose state stores the statistic ``s`` itself, twice (one array at the start)."""
    return ScalingRule("keeps-s", Statistic.GRAD_SQUARED, lambda s, beta, xp: _Kept(s, s),
                       lambda st, s, beta, xp: _Kept(st.w + s, s), lambda st, xp: xp.sqrt(st.v),
                       BetaSchedule(0.9), check_e(0.5), 0)


def test_generated_global_update_does_not_alias_the_state(global_kernel):
    """A rule whose state keeps the statistic itself (two components, one array at the start)."""
    rule = _keeps_s_rule()
    prob = problem("diagonal", seed=1)
    kw = dict(gamma=0.2, steps=12, sync_every=1, runs=2, x0=np.full(prob.dim, 2.0))
    fast, ref = both(prob, rule, **kw)
    assert global_kernel == ["keeps-s"] * 12
    assert_same_result(fast, ref)


def test_the_update_kernel_is_loaded_once_the_syncs_add_up(monkeypatch):
    """Calls take the rule's code until this process's calls of that kernel have had
    ``_GLOBAL_KERNEL_MIN_SYNCS`` syncs of every run between them; then it is loaded once and
    serves every later call, short ones included."""
    kernels = pytest.importorskip("savic_theory.simulator._cpu_kernels")
    monkeypatch.setattr(fused, "_GLOBAL_KERNELS", {})
    monkeypatch.setattr(fused, "_GLOBAL_SYNCS", {})
    monkeypatch.setattr(fused, "_GLOBAL_KERNEL_MIN_SYNCS", 24)
    loaded = []
    compile_generated = kernels.compile_generated
    monkeypatch.setattr(kernels, "compile_generated", lambda src, name: loaded.append(name) or compile_generated(src, name))
    prob = problem("diagonal", seed=1)
    kw = dict(gamma=0.2, runs=R, fused=True)
    for e in (0.5, 0.6):  # the same kernel for any β and e: 10 + 10 syncs
        simulate(prob, rules.adam(beta=0.9, e=e), steps=20, sync_every=2, **kw)
    simulate(prob, rules.rmsprop(beta=0.9, e=0.5), steps=20, sync_every=1, **kw)  # another kernel
    assert loaded == [] and fused._GLOBAL_KERNELS == {}
    simulate(prob, rules.adam(beta=0.5, e=0.5), steps=4, sync_every=1, **kw)  # 24 of adam's
    assert loaded == ["savic_global_update"] and len(fused._GLOBAL_KERNELS) == 1
    simulate(prob, rules.adam(beta=0.9, e=0.5), steps=3, sync_every=1, **kw)
    assert loaded == ["savic_global_update"]


def test_eager_kernels_load_the_update_kernel_at_the_first_call(monkeypatch):
    """What the benchmarks and ``savic bench`` time: a short call inside ``eager_kernels``
    loads the update kernel; outside it the threshold is what it was."""
    pytest.importorskip("savic_theory.simulator._cpu_kernels")
    monkeypatch.setattr(fused, "_GLOBAL_KERNELS", {})
    monkeypatch.setattr(fused, "_GLOBAL_SYNCS", {})
    threshold = fused._GLOBAL_KERNEL_MIN_SYNCS
    with fused.eager_kernels():
        simulate(problem("diagonal", seed=1), rules.rmsprop(beta=0.9, e=0.5), gamma=0.2, steps=2, runs=R)
    assert len(fused._GLOBAL_KERNELS) == 1 and fused._GLOBAL_KERNEL_MIN_SYNCS == threshold > 0


def test_generated_kernel_cache(tmp_path, monkeypatch):
    """The generated module is written once, whole, under ``SAVIC_KERNEL_CACHE``; where that
    folder cannot be made the kernel is compiled in memory instead."""
    kernels = pytest.importorskip("savic_theory.simulator._cpu_kernels")
    source = "def twice(a):\n    return _nan_max(a, a) + np.float64(0.0) + a\n"
    monkeypatch.setenv("SAVIC_KERNEL_CACHE", str(tmp_path / "cache"))
    twice = kernels.compile_generated.__wrapped__(source, "twice")
    assert twice(1.5) == 3.0
    assert [p.suffix for p in (tmp_path / "cache").iterdir() if p.is_file()] == [".py"]
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("SAVIC_KERNEL_CACHE", str(blocker / "cache"))
    assert kernels.compile_generated.__wrapped__(source, "twice")(2.0) == 4.0


@pytest.mark.parametrize("noise", [0.0, 0.3])
def test_compiled_kernels_split_over_threads_give_the_same_numbers(monkeypatch, noise):
    """Runs split over threads (forced here on a small problem, 3 blocks of 1 run each) compute
    exactly what one thread computes: the runs are independent and each is summed in order."""
    kernels = pytest.importorskip("savic_theory.simulator._cpu_kernels")
    prob = problem("diagonal", seed=5, M=5, d=21, instances=R)
    kw = dict(gamma=np.array([0.1, 0.2, 0.3]), steps=37, sync_every=np.array([2, 3, 5]), seed=2,
              noise=noise, record_every=5, x0=np.full(prob.dim, 2.0), fused=True)
    one = simulate(prob, per_run_rule("adam"), **kw)
    monkeypatch.setattr(fused, "_MIN_WORK_PER_THREAD", 1)
    monkeypatch.setattr(kernels, "threads", lambda: 3)
    assert fused._run_chunks(R, 5 * 21, kernels.threads()) == [(0, 1), (1, 2), (2, 3)]
    split = simulate(prob, per_run_rule("adam"), **kw)
    _bitwise_same(split, one)
    for key in split.history:  # the consensus error too: each run's sum is the same code
        np.testing.assert_array_equal(split.history[key], one.history[key], err_msg=key)


@pytest.mark.parametrize("form", ["dense", "eigenbasis"])
def test_kernels_beside_blas_products_stay_in_the_calling_thread(monkeypatch, form):
    """Dense and eigenbasis gradients are BLAS products: their kernels are not split over a
    worker thread (BLAS threads spin between calls and stalled it), whatever the thread setting."""
    kernels = pytest.importorskip("savic_theory.simulator._cpu_kernels")
    monkeypatch.setattr(fused, "_MIN_WORK_PER_THREAD", 1)
    monkeypatch.setattr(kernels, "threads", lambda: 3)
    asked = []
    real = fused._run_chunks
    monkeypatch.setattr(fused, "_run_chunks", lambda runs, per_run, threads: asked.append(threads)
                        or real(runs, per_run, threads))
    prob = problem(form, seed=3)
    simulate(prob, rules.adam(beta=0.9, e=0.5), gamma=0.1, steps=8, sync_every=2, runs=R, fused=True)
    simulate(problem("diagonal", seed=3), rules.adam(beta=0.9, e=0.5), gamma=0.1, steps=8, sync_every=2, runs=R,
             fused=True)
    assert asked == [1, 3]


def test_run_chunks():
    assert fused._run_chunks(1, 10**6, 8) == [(0, 1)]
    assert fused._run_chunks(5, 10**6, 2) == [(0, 2), (2, 5)]
    assert fused._run_chunks(64, 16, 2) == [(0, 64)]  # too little work to split


def test_compiled_overflowing_run_stops_like_numpy():
    """A run started at 1e160 overflows g ⊙ g to inf at once: it is reported diverged at step 0
    (no warning) by the reference, the NumPy fused path and the compiled kernels alike."""
    pytest.importorskip("numba")
    prob = problem("diagonal", seed=2)
    x0 = np.ones((R, prob.dim))
    x0[1] = 1e160
    kw = dict(gamma=0.2, steps=40, sync_every=4, seed=0, record_every=4, x0=x0, fused=True)
    compiled = simulate(prob, rules.adam(beta=0.9, e=0.5), **kw)
    plain = simulate(prob, rules.adam(beta=0.9, e=0.5), **dict(kw, fused="numpy"))
    ref = simulate(prob, rules.adam(beta=0.9, e=0.5), **dict(kw, fused=False))
    for res in (ref, plain):
        assert list(res.status) == ["ok", "diverged", "ok"] and list(res.diverged_at) == [-1, 0, -1]
    assert_close(plain.x[[0, 2]], ref.x[[0, 2]], RTOL, "x of the runs that did not diverge")
    _bitwise_same(compiled, plain)


@pytest.mark.parametrize("noisy", [False, True])
def test_compiled_sync_step_against_numpy_operations(noisy):
    """One sync step of the kernel against the NumPy operations, NaN and inf entries included:
    the maximum of the clients' mean of ``g ⊙ g`` propagates NaN as ``np.max`` does."""
    kernels = pytest.importorskip("savic_theory.simulator._cpu_kernels")
    rng = np.random.default_rng(0)
    Rk, M, d = 4, 3, 10
    x = rng.standard_normal((Rk, M, d))
    x[1, 2, 7] = np.nan
    x[2, 0, 3] = np.inf
    a, b = rng.random((1, M, d)) + 0.5, rng.standard_normal((1, M, d))
    c = rng.random((Rk, 1, d)) * 0.1
    xi = rng.standard_normal((Rk, M, d))
    g = a * x - b + (xi if noisy else 0.0)
    s = g * g
    want = x * (1.0 - c * a) + c * b - (xi * c if noisy else 0.0)
    xbar, sbar, smax = np.empty((Rk, 1, d)), np.empty((Rk, 1, d)), np.empty(Rk)
    with np.errstate(invalid="ignore"):
        spread_xbar, consensus = np.empty((Rk, d)), np.empty(Rk)
        kernels.sync_step(x, a, b, c, xi, noisy, 0, False, True, np.float64(M), xbar, sbar, smax,
                          True, spread_xbar, consensus)
        # what the record right after the sync gets: client_spread's numbers, bit for bit
        want_xbar, want_consensus = np.empty((Rk, d)), np.empty(Rk)
        kernels.client_spread(x, np.float64(M), want_xbar, want_consensus)
        np.testing.assert_array_equal(spread_xbar, want_xbar)
        np.testing.assert_array_equal(consensus, want_consensus)
        np.testing.assert_array_equal(xbar, np.mean(want, axis=1, keepdims=True))
        np.testing.assert_array_equal(x, np.broadcast_to(xbar, x.shape))
        np.testing.assert_array_equal(sbar, np.mean(s, axis=1, keepdims=True))
        np.testing.assert_array_equal(smax, np.max(np.mean(s, axis=1), axis=1))
    assert np.isnan(smax[1]) and np.isinf(smax[2])


@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("rule", list(RULES))
def test_same_random_draws(rule, scaling):
    """A shared Generator ends in the same state: the fused path draws the same numbers."""
    prob = problem("diagonal", seed=1)
    gens = [np.random.default_rng(7), np.random.default_rng(7)]
    kw = dict(gamma=0.2, steps=12, sync_every=3, scaling=scaling, noise=0.5, runs=R, probes="rademacher")
    fast = simulate(prob, per_run_rule(rule), seed=gens[0], fused=True, **kw)
    ref = simulate(prob, per_run_rule(rule), seed=gens[1], fused=False, **kw)
    assert gens[0].bit_generator.state == gens[1].bit_generator.state
    assert gens[0].standard_normal() == gens[1].standard_normal()
    assert_same_result(fast, ref)


@pytest.mark.parametrize("form", ["diagonal", "dense"])
@pytest.mark.parametrize("scaling", SCALINGS)
def test_oasis_hutchinson_probes(form, scaling):
    """Rademacher probes (several at initialisation) are drawn in the reference's order."""
    prob = problem(form, seed=4)
    fast, ref = both(prob, per_run_rule("oasis"), gamma=0.2, steps=14, sync_every=np.array([2, 3, 7]),
                     scaling=scaling, noise=0.2, seed=5, probes="rademacher", init_probes=3)
    assert_same_result(fast, ref)


# With local scaling, rmsprop/adam rescale every step by D̂ ≈ |g|, so a step moves by about γ
# and a huge γ oscillates instead of diverging; those pairs are left out.
@pytest.mark.parametrize("rule,scaling", [("identity", "global"), ("identity", "local"),
                                          ("oasis", "global"), ("oasis", "local"),
                                          ("rmsprop", "global"), ("adam", "global")])
def test_divergence_handled_identically(rule, scaling):
    """One run with a huge step diverges: same status, step, frozen iterate and NaN rows."""
    prob = problem("diagonal", seed=2)
    r = rules.identity() if rule == "identity" else rules.make(rule, beta=0.9, e=0.5)
    fast, ref = both(prob, r, gamma=np.array([0.2, 40.0, 0.3]),
                     steps=60, sync_every=4, scaling=scaling, seed=0, record_every=2)
    assert list(ref.status) == ["ok", "diverged", "ok"]
    assert_same_result(fast, ref)


def test_all_runs_diverge_stops_early():
    prob = problem("diagonal", seed=2)
    fast, ref = both(prob, rules.adam(beta=0.9, e=0.01), gamma=50.0, steps=400, sync_every=5,
                     runs=2, seed=0)
    assert list(ref.status) == ["diverged", "diverged"] and ref.steps[-1] < 400
    assert_same_result(fast, ref)


@pytest.mark.parametrize("scaling", SCALINGS)
def test_explicit_sync_moments_per_run_and_beta_schedule(scaling):
    prob = problem("eigenbasis", seed=6)
    rule = rules.adam(beta=lambda k: 1.0 - 0.5 / k, e=0.5)
    moments = [[2, 3, 9], [4, 8, 12, 13], [1, 2, 3, 5, 8, 13]]
    fast, ref = both(prob, rule, gamma=0.25, steps=15, sync_at=moments, scaling=scaling, noise=0.1,
                     seed=2, keep_iterates=True)
    assert "x_bar" in fast.history
    assert_same_result(fast, ref)


@pytest.mark.parametrize("form", ["diagonal", "dense", "eigenbasis"])
def test_problem_instances_on_the_run_axis(form):
    """A leading instance axis (one problem per run) goes through the batched mat-vec."""
    prob = problem(form, seed=8, instances=R)
    for scaling in SCALINGS:
        fast, ref = both(prob, per_run_rule("rmsprop"), gamma=np.array([0.1, 0.2, 0.3]), steps=20,
                         sync_every=4, scaling=scaling, noise=0.1, seed=1)
        assert_same_result(fast, ref)


@pytest.mark.parametrize("scaling", SCALINGS)
def test_unbatched_call_and_x0_per_run(scaling):
    prob = problem("diagonal", seed=9)
    fast, ref = both(prob, rules.rmsprop(beta=0.9, e=0.5), gamma=0.3, steps=17, sync_every=4,
                     scaling=scaling, noise=0.1, seed=3)
    assert fast.x.shape == (prob.n_clients, prob.dim) and isinstance(fast.status, str)
    assert_same_result(fast, ref)
    x0 = np.arange(R * prob.dim, dtype=float).reshape(R, prob.dim) / 10
    assert_same_result(*both(prob, rules.adam(beta=0.9, e=0.5), gamma=0.3, steps=9, sync_every=2,
                             scaling=scaling, x0=x0, seed=3))


@pytest.mark.parametrize("scaling", SCALINGS)
def test_float32(scaling):
    """In float32 both paths round differently; they agree to float32 precision (1e-5)."""
    prob = problem("diagonal", seed=10)
    fast, ref = both(prob, per_run_rule("adam"), gamma=np.array([0.1, 0.2, 0.3]), steps=25,
                     sync_every=np.array([2, 3, 5]), scaling=scaling, noise=0.1, seed=4, dtype="float32")
    assert_close(fast.x, ref.x, 1e-5, "x")
    for key in HISTORY_KEYS:
        assert_close(fast.history[key], ref.history[key], 1e-5, key)


# --- dispatch -----------------------------------------------------------------------------
def test_fused_true_explains_unsupported_backend():
    prob = problem("diagonal")
    with pytest.raises(ValueError, match="fused=True is not available: backend array_api_strict"):
        simulate(prob, rules.adam(), gamma=0.1, steps=3, backend="array_api_strict", fused=True)
    res = simulate(prob, rules.adam(), gamma=0.1, steps=3, backend="array_api_strict")  # "auto"
    assert res.params["backend"] == "array_api_strict"


@pytest.mark.parametrize("value", ["yes", 1, None, "True"])
def test_bad_fused_value(value):
    with pytest.raises(ValueError, match="fused must be 'auto', True, 'numpy' or False"):
        simulate(problem("diagonal"), rules.adam(), gamma=0.1, steps=3, fused=value)


@pytest.mark.parametrize("kw,exc", [
    (dict(gamma=-1.0), ValueError), (dict(gamma="0.1"), TypeError), (dict(steps=0), ValueError),
    (dict(sync_every=0), ValueError), (dict(dtype="float16"), ValueError),
    (dict(x0=np.zeros(2)), ValueError), (dict(probes="hutch"), ValueError),
    (dict(scaling="glob"), ValueError), (dict(divergence_factor=1.0), ValueError),
    (dict(gamma=[0.1, 0.2], runs=3), ValueError), (dict(record_every=0), ValueError),
])
def test_bad_input_reports_the_reference_error(kw, exc):
    """Bad input is reported by the reference loop's checks, whatever ``fused`` says."""
    args = dict(gamma=0.1, steps=3)
    args.update(kw)
    messages = []
    for mode in (True, False):
        with pytest.raises(exc) as info:
            simulate(problem("diagonal"), rules.adam(), fused=mode, **args)
        messages.append(str(info.value))
    assert messages[0] == messages[1]


# --- rules the fused path was not written for ------------------------------------------------
class _SumState(NamedTuple):
    v: object


def _adagrad_like(beta=0.0, e=0.5):
    """A rule defined only by its functions: ``v_k = v_{k−1} + s_k``, ``D̂ = max(e, √v / 2)``."""
    return ScalingRule(
        "adagrad_like", Statistic.GRAD_SQUARED,
        lambda s, b, xp: _SumState(s + 0.0),
        lambda st, s, b, xp: _SumState(st.v + ema(s, s, b)),  # ema(s, s, β) = s, traced as ops
        lambda st, xp: xp.sqrt(st.v) / 2.0,
        BetaSchedule(beta), check_e(e), 0)


def _branching_rule():
    """Decides on array values in Python: the tracer cannot follow it."""
    def update(st, s, b, xp):
        return _SumState(st.v + s if bool(xp.max(s) > 0) else st.v)

    return ScalingRule("branching", Statistic.GRAD_SQUARED, lambda s, b, xp: _SumState(s),
                       update, lambda st, xp: xp.sqrt(st.v), BetaSchedule(0.5), check_e(0.5), 0)


@pytest.mark.parametrize("scaling", SCALINGS)
def test_new_rule_needs_no_kernel(scaling):
    """A rule written only as functions runs fused (traced) and matches the reference."""
    prob = problem("diagonal", seed=12)
    assert fused.unsupported_reason(prob, _adagrad_like(), scaling) is None
    fast, ref = both(prob, _adagrad_like(), gamma=0.2, steps=20, sync_every=3, scaling=scaling,
                     noise=0.2, seed=6, runs=R)
    assert_same_result(fast, ref)


def test_untraceable_rule_falls_back():
    prob = problem("diagonal", seed=12)
    reason = fused.unsupported_reason(prob, _branching_rule(), "local")
    assert reason is not None and "cannot be traced" in reason
    with pytest.raises(ValueError, match="cannot be traced"):
        simulate(prob, _branching_rule(), gamma=0.2, steps=5, scaling="local", fused=True)
    auto = simulate(prob, _branching_rule(), gamma=0.2, steps=5, scaling="local", seed=1)
    ref = simulate(prob, _branching_rule(), gamma=0.2, steps=5, scaling="local", seed=1, fused=False)
    np.testing.assert_array_equal(auto.x, ref.x)  # "auto" ran the reference loop itself
    # global scaling calls the rule functions directly at syncs, so it stays on the fused path
    assert fused.unsupported_reason(prob, _branching_rule(), "global") is None


# --- traced programs and generated CUDA source, checked on the host ---------------------------
@pytest.mark.parametrize("rule", ["rmsprop", "adam", "oasis"])
def test_traced_program_counts_and_small_state(rule):
    full = (2, 3, 4)
    r = rules.make(rule, beta=0.9)
    state = r.init(np.ones(full), np.full((2, 1, 1), 0.9), np)
    prog = fused.trace_rule(r, [np.shape(c) for c in state], full)
    # big passes: the EMA (3) + the diagonal (√ for g⊙g rules, v/c too for adam) + clip (2)
    expected = {"rmsprop": 3 + 1 + 2, "adam": 3 + 2 + 2, "oasis": 3 + 0 + 2}[rule]
    assert prog.big_ops() == expected
    assert [n.big for n in prog.state_in] == ([True, False] if rule == "adam" else [True])


def _exec_kernel(ins, outs, body, args, dtype):
    """Run an ElementwiseKernel's source on NumPy arrays (every statement is elementwise)."""
    names = [p.split()[-1] for p in (ins + ", " + outs).split(",")]
    env = dict(zip(names, args))
    out_names = [p.split()[-1] for p in outs.split(",")]
    lib = {"T": lambda v: np.asarray(v, dtype=dtype), "sqrt": np.sqrt, "fabs": np.abs,
           "exp": np.exp, "log": np.log, "savic_max": np.maximum, "savic_min": np.minimum}
    for stmt in body.replace("\n", " ").split(";"):
        stmt = stmt.strip()
        if not stmt:
            continue
        target, expr = stmt.removeprefix("const T ").split("=", 1)
        # C's selection ``((c) != T(0) ? (a) : (b))`` (every operand is a name or a constant)
        expr = re.sub(r"^\s*\(\((.+)\) != T\(0\) \? \((.+)\) : \((.+)\)\)\s*$",
                      r"np.where(\1 != 0, \2, \3)", expr)
        env[target.strip()] = eval(expr, {**lib, "np": np}, env)  # noqa: S307 - our own generated source
    return {n: np.broadcast_to(env[n], args[names.index(n)].shape) for n in out_names}


@pytest.mark.parametrize("given_s", [False, True])
@pytest.mark.parametrize("noisy", [False, True])
@pytest.mark.parametrize("rule", ["rmsprop", "adam", "oasis", "adagrad_like"])
def test_generated_local_kernel_source(rule, noisy, given_s):
    """The local-step kernel body computes the engine's step and the rule's update."""
    rng = np.random.default_rng(0)
    full = (2, 3, 5)
    r = _adagrad_like() if rule == "adagrad_like" else rules.make(rule, beta=0.8, e=0.3)
    beta = np.array([0.8, 0.6]).reshape(2, 1, 1)
    e = np.full((2, 1, 1), 0.3)
    state = r.init(rng.uniform(0.1, 2.0, full), beta, np)
    prog = fused.trace_rule(r, [np.shape(c) for c in state], full)
    ins, outs, body, small = fused.local_kernel_source(prog, True, noisy, given_s)
    a, b = rng.uniform(0.5, 2.0, (1, 3, 5)), rng.standard_normal((1, 3, 5))
    x, xi = rng.standard_normal(full), rng.standard_normal(full)
    D = rng.uniform(0.3, 2.0, full)
    s_in = rng.uniform(0.0, 1.0, full)
    env = {"beta": beta, "e": e}
    env.update({f"st{i}": c for i, c in enumerate(state)})
    params, small_state = prog.small_values(env, np)
    args = [a, b] + ([xi] if noisy else []) + ([s_in] if given_s else []) + [np.full((2, 1, 1), 0.1)]
    args += [params[k] for k in small]
    big_state = [c for c, n in zip(state, prog.state_in) if n.big]
    args += [x.copy(), D.copy()] + [c.copy() for c in big_state] + [np.empty(full), np.empty(full)]
    got = _exec_kernel(ins, outs, body, args, np.float64)

    g = a * x - b + (xi if noisy else 0.0)
    s = s_in if given_s else g * g
    new_state = r.update(state, s, beta, np)
    D_new = clip(r.diagonal(new_state, np), e, np)
    np.testing.assert_array_equal(got["x"], x - 0.1 * g / D)
    np.testing.assert_array_equal(got["D"], D_new)
    np.testing.assert_array_equal(got["ratio"], D_new / D)
    np.testing.assert_array_equal(got["sabs"], np.abs(s))
    big_new = [c for c, n in zip(new_state, prog.state_in) if n.big]
    for name, want in zip([n.name for n in prog.state_in if n.big], big_new):
        np.testing.assert_array_equal(got[name], want)
    small_new = [c for c, n in zip(new_state, prog.state_in) if not n.big]
    for got_c, want in zip(small_state, small_new):
        np.testing.assert_array_equal(got_c, want)


@pytest.mark.parametrize("inline,noisy,with_stat", list(itertools.product([True, False], [True, False], [True, False])))
def test_generated_step_kernel_source(inline, noisy, with_stat):
    rng = np.random.default_rng(1)
    full = (2, 3, 4)
    a, b, g = rng.uniform(0.5, 2.0, (1, 3, 4)), rng.standard_normal((1, 3, 4)), rng.standard_normal(full)
    x, xi, D = rng.standard_normal(full), rng.standard_normal(full), rng.uniform(0.5, 2.0, (2, 1, 4))
    gamma = np.array([0.1, 0.2]).reshape(2, 1, 1)
    ins, outs, body = fused.step_kernel_source(inline, noisy, with_stat)
    args = ([a, b] + ([xi] if noisy else []) if inline else [g]) + [gamma, D, x.copy()]
    args += [np.empty(full)] if with_stat else []
    got = _exec_kernel(ins, outs, body, args, np.float64)
    gr = (a * x - b + (xi if noisy else 0.0)) if inline else g
    np.testing.assert_array_equal(got["x"], x - gamma * gr / D)
    if with_stat:
        np.testing.assert_array_equal(got["s"], gr * gr)


def test_cuda_preamble_max_propagates_nan():
    """The kernels' max/min must propagate NaN like NumPy (C's fmax would drop it)."""
    assert "a != a" in fused._CUDA_PREAMBLE and "fmax" not in fused._CUDA_PREAMBLE


# --- the GPU code path, run on the host through an emulated CuPy ------------------------------
class _FakeDeviceArray(np.ndarray):
    """A NumPy array with CuPy's host-transfer methods."""

    def get(self):
        return np.array(self)

    def set(self, host):
        assert host.shape == self.shape and host.dtype == self.dtype
        self[...] = host


def _dev(v):
    if isinstance(v, np.ndarray) and not isinstance(v, _FakeDeviceArray):
        return v.view(_FakeDeviceArray)
    if isinstance(v, tuple):
        return tuple(_dev(u) for u in v)
    return v


class _FakeElementwiseKernel:
    """cupy.ElementwiseKernel executed statement by statement with NumPy broadcasting."""

    def __init__(self, in_params, out_params, operation, name="kernel", preamble=""):
        self.ins, self.outs, self.body = in_params, out_params, operation
        for p in (in_params + ", " + out_params).split(","):
            assert p.split()[0] == "T" and not p.split()[-1].startswith("_"), p

    def __call__(self, *args):
        n_in = len(self.ins.split(","))
        outs = args[n_in:]
        dtypes = {a.dtype for a in args if isinstance(a, np.ndarray)}
        assert len(dtypes) == 1, f"CuPy raises 'Type is mismatched': placeholder T gets {dtypes}"
        shape = np.broadcast_shapes(*(np.shape(a) for a in args))
        assert all(o.shape == shape for o in outs), "outputs must have the broadcast shape"
        got = _exec_kernel(self.ins, self.outs, self.body, [np.asarray(a) for a in args], outs[0].dtype)
        for o, name in zip(outs, [p.split()[-1] for p in self.outs.split(",")]):
            o[...] = got[name]


class _FakeRawKernel:
    """The client-average RawKernel, emulated: mean over clients, optional write-back."""

    def __init__(self, code, name):
        assert name == "savic_client_mean" and "TYPE" not in code

    def __call__(self, grid, block, args):
        x, xbar, sync, R, M, d, write_back = args
        assert grid[0] * block[0] >= R * d and x.flags.c_contiguous
        xs = np.asarray(x).reshape(int(R), int(M), int(d))
        xbar[...] = np.mean(xs, axis=1, keepdims=True)
        if write_back:
            view = x.reshape(int(R), int(M), int(d))
            np.copyto(view, np.asarray(xbar), where=np.asarray(sync)[:, None, None])


def _fake_cupy(kernels="python"):
    """NumPy dressed as CuPy. ``kernels="python"`` runs kernel sources through
    :func:`_exec_kernel` and :class:`_FakeRawKernel`; ``"g++"`` compiles the generated CUDA C
    itself as host C++ (:mod:`tests._cuda_host`) and runs it thread by thread."""
    import types

    mod = types.ModuleType("cupy")

    def __getattr__(name):
        attr = getattr(np, name)
        if callable(attr) and not isinstance(attr, type):
            return lambda *a, **k: _dev(attr(*a, **k))
        return attr

    mod.__getattr__ = __getattr__
    mod.ElementwiseKernel, mod.RawKernel, mod.ndarray = _FakeElementwiseKernel, _FakeRawKernel, _FakeDeviceArray
    if kernels == "g++":
        mod.ElementwiseKernel, mod.RawKernel = _cuda_host.HostElementwiseKernel, _cuda_host.HostRawKernel
    return mod


@pytest.fixture(params=["python", pytest.param("g++", marks=pytest.mark.skipif(
    not _cuda_host.have_cxx(), reason="no g++ to build the CUDA sources for the host"))])
def fake_cupy(monkeypatch, request):
    """The GPU code path on the host, its kernels read by Python or compiled by g++."""
    import sys

    mod = _fake_cupy(request.param)
    monkeypatch.setitem(sys.modules, "cupy", mod)
    fused._cuda_elementwise.cache_clear()
    fused._cuda_mean_kernel.cache_clear()
    yield mod
    fused._cuda_elementwise.cache_clear()  # never leave emulated kernels in the caches
    fused._cuda_mean_kernel.cache_clear()


@pytest.mark.parametrize("noise", [0.0, 0.3])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("rule", list(RULES))
def test_gpu_code_path_on_emulated_cupy(fake_cupy, rule, scaling, form, noise):
    """The GPU path's host logic (buffers, kernel arguments, averaging, recording) with CuPy
    replaced by NumPy, the kernels read by Python or compiled as host C++: it must give the
    reference's results. Device numerics are checked by tests/test_gpu.py on a GPU machine."""
    prob = problem(form, seed=3)
    kw = dict(gamma=np.array([0.1, 0.2, 0.3]), steps=23, sync_every=np.array([2, 3, 5]),
              scaling=scaling, noise=noise, seed=11, x0=np.full(prob.dim, 2.0), record_every=3)
    gpu = simulate(prob, per_run_rule(rule), backend=fake_cupy, fused=True, **kw)
    ref = simulate(prob, per_run_rule(rule), fused=False, **kw)
    assert gpu.params["backend"] == "cupy"
    assert_same_result(gpu, ref, ignore=("backend",))


@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("rule", ["rmsprop", "adam", "oasis"])
def test_gpu_code_path_float32(fake_cupy, rule, scaling):
    """float32 runs pass float32 arrays to every kernel (CuPy refuses a mixed placeholder ``T``)
    and land within float32 round-off of the float64 reference: a step differs by an ulp of
    float32 (6e-8) and γ ≤ e/L keeps steps contractive, so 25 steps stay well inside 1e-5."""
    prob = problem("diagonal", seed=10)
    kw = dict(gamma=np.array([0.1, 0.2, 0.3]), steps=25, sync_every=np.array([2, 3, 5]),
              scaling=scaling, noise=0.1, seed=4)
    gpu = simulate(prob, per_run_rule(rule), backend=fake_cupy, fused=True, dtype="float32", **kw)
    ref = simulate(prob, per_run_rule(rule), fused=False, **kw)
    assert_close(gpu.x, ref.x, 1e-5, "x")
    assert_close(gpu.D, ref.D, 1e-5, "D")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("rule", ["rmsprop", "adam", "oasis", "mixed"])
def test_gpu_global_update_kernel_on_emulated_cupy(fake_cupy, rule, dtype):
    """Global scaling's update through the generated GPU kernel (every run syncs at once with
    ``H = 4``; with H of 2, 3 and 6 some syncs are of only some runs, which take the rule's
    code): the reference's results, the kernel launched at each sync of every run."""
    r = (rules.per_run([rules.identity(), rules.rmsprop(beta=0.5, e=0.5), rules.adam(beta=0.9, e=0.6),
                        rules.oasis(beta=0.99, e=1.0)]) if rule == "mixed" else per_run_rule(rule))
    runs = len(r.parts) if rule == "mixed" else R
    launched = []
    elementwise = fake_cupy.ElementwiseKernel

    def counting(ins, outs, body, name, **kw):
        kernel = elementwise(ins, outs, body, name, **kw)
        return (lambda *a: launched.append(name) or kernel(*a)) if name == "savic_global_update" else kernel

    fake_cupy.ElementwiseKernel = counting
    prob = problem("diagonal", seed=3)
    for H, syncs in ((4, 7), (np.resize([2, 3, 6], runs), 4)):
        launched.clear()
        kw = dict(gamma=np.resize([0.1, 0.2, 0.3], runs), steps=29, sync_every=H, noise=0.3, seed=11,
                  x0=np.full(prob.dim, 2.0), record_every=3, dtype=dtype)
        gpu = simulate(prob, r, backend=fake_cupy, fused=True, **kw)
        assert launched == ["savic_global_update"] * syncs
        if dtype == "float64":
            assert_same_result(gpu, simulate(prob, r, fused=False, **kw), ignore=("backend",))
        else:  # float32 round-off, as in test_gpu_code_path_float32
            ref = simulate(prob, r, fused=False, **dict(kw, dtype="float64"))
            assert_close(gpu.x, ref.x, 1e-5, "x")
            assert_close(gpu.D, ref.D, 1e-5, "D")
            assert_close(gpu.drift, ref.drift, 1e-5, "drift")


@pytest.mark.parametrize("scaling", SCALINGS)
def test_gpu_code_path_probes_and_divergence(fake_cupy, scaling):
    prob = problem("dense", seed=5)
    kw = dict(gamma=np.array([0.2, 40.0, 0.3]), steps=30, sync_every=4, scaling=scaling, noise=0.2,
              seed=2, probes="rademacher", init_probes=2)
    gpu = simulate(prob, per_run_rule("oasis"), backend=fake_cupy, fused=True, **kw)
    ref = simulate(prob, per_run_rule("oasis"), fused=False, **kw)
    assert list(ref.status) == ["ok", "diverged", "ok"]
    assert_same_result(gpu, ref, ignore=("backend",))


def test_docstring_examples_run():
    import doctest

    failures, tried = doctest.testmod(fused, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert tried > 0 and failures == 0


# --- `savic bench` --------------------------------------------------------------------------
def test_cli_bench_times_and_checks(tmp_path, capsys):
    import json

    from savic_theory.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "--runs", "2", "--clients", "3", "--dim", "5", "--steps", "6", "--repeats", "1",
                 "--scaling", "local", "--reference", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fused path (auto):" in text and "reference loop:" in text
    data = json.loads(out.read_text())
    assert data["fused_ms_per_step"] > 0 and data["relative_gap"] <= RTOL


def test_cli_bench_bad_arguments_are_one_line_errors(capsys):
    from savic_theory.cli import main

    assert main(["bench", "--steps", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["savic bench: error: --steps must be >= 1, got 0"]


def test_rebalance_moves_one_run_toward_the_thread_that_finished_first():
    """The calling thread's block grows by a run when a worker finished more than one run's
    time after it, shrinks in the opposite case, stays within a run's time, and never empties."""
    even = [(0, 16), (16, 32)]  # 16 runs in 16 ms here: 1 ms per run
    assert fused._rebalance(even, 16e-3, 1.0, 1.003) == [(0, 17), (17, 32)]
    assert fused._rebalance(even, 16e-3, 1.003, 1.0) == [(0, 15), (15, 32)]
    assert fused._rebalance(even, 16e-3, 1.0, 1.0005) is even
    assert fused._rebalance([(0, 1), (1, 2)], 1e-3, 2.0, 1.0) == [(0, 1), (1, 2)]
    assert fused._rebalance([(0, 1), (1, 2)], 1e-3, 1.0, 2.0) == [(0, 1), (1, 2)]
    assert fused._rebalance([(0, 3), (3, 6), (6, 9)], 3e-3, 1.0, 1.1) == [(0, 4), (4, 6), (6, 9)]


def test_uneven_thread_split_gives_the_same_numbers(monkeypatch):
    """Whatever split the balancing settles on, every run computes what one thread computes."""
    kernels = pytest.importorskip("savic_theory.simulator._cpu_kernels")
    prob = problem("diagonal", seed=5, M=5, d=21, instances=R)
    kw = dict(gamma=np.array([0.1, 0.2, 0.3]), steps=37, sync_every=np.array([2, 3, 5]), seed=2,
              noise=0.3, record_every=5, x0=np.full(prob.dim, 2.0), fused=True)
    one = simulate(prob, per_run_rule("adam"), **kw)
    monkeypatch.setattr(fused, "_MIN_WORK_PER_THREAD", 1)
    monkeypatch.setattr(kernels, "threads", lambda: 2)
    monkeypatch.setattr(fused, "_BALANCED", {})
    # every kernel starts from a 1 / 2 split, and the balancing may move it after each call
    monkeypatch.setattr(fused, "_run_chunks", lambda runs, per_run, threads: [(0, 1), (1, runs)])
    split = simulate(prob, per_run_rule("adam"), **kw)
    assert fused._BALANCED, "the split kernels were not balanced"
    _bitwise_same(split, one)
    for key in split.history:
        np.testing.assert_array_equal(split.history[key], one.history[key], err_msg=key)


def test_kept_iterates_survive_later_calls(monkeypatch):
    """A call reuses the memory of returned iterates that nothing references any more (no page
    faults for a sweep's fresh buffers); a kept result, or only a view of its x, keeps its
    numbers through later calls, and its memory is reused once the last view is gone."""
    monkeypatch.setattr(fused, "_WORKSPACE", fused._Workspace())
    prob = problem("diagonal", seed=1)
    kw = dict(gamma=0.2, steps=12, sync_every=3, runs=R, fused=True)

    def run(start):
        return simulate(prob, rules.adam(beta=0.9, e=0.5), x0=np.full(prob.dim, start), **kw)

    def address(a):
        return a.__array_interface__["data"][0]

    kept = run(1.0)
    view = run(2.0).x[1, :, ::2]  # the result is dropped, a view of its x kept
    want_kept, want_view = kept.x.copy(), view.copy()
    other = run(3.0)
    assert not np.shares_memory(other.x, kept.x) and not np.shares_memory(other.x, view)
    np.testing.assert_array_equal(kept.x, want_kept)
    np.testing.assert_array_equal(view, want_view)
    freed = address(view.base)
    del view
    reused = run(4.0)  # `other` is still held: the view's memory is the free one
    assert address(reused.x) == freed
    np.testing.assert_array_equal(kept.x, want_kept)
    np.testing.assert_array_equal(other.x, run(3.0).x)
    np.testing.assert_array_equal(reused.x, run(4.0).x)


@pytest.mark.parametrize("fused_mode", [True, "numpy", False])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_result_x_bar_is_the_client_mean_of_x(fused_mode, dtype):
    """``x_bar`` is ``x.mean(axis=1)`` bit for bit, also where the fused path takes it from the
    last record instead of another pass (the last step need not be a sync or a record multiple)."""
    prob = problem("diagonal", seed=2)
    for steps, noise in ((12, 0.0), (13, 0.3)):
        res = simulate(prob, per_run_rule("adam"), gamma=0.2, steps=steps, sync_every=4, record_every=5,
                       runs=R, noise=noise, seed=1, dtype=dtype, fused=fused_mode)
        np.testing.assert_array_equal(res.x_bar, res.x.mean(axis=1))


@pytest.mark.parametrize("noisy", [False, True])
def test_compiled_initial_statistic_leaves_the_first_records_spread(noisy):
    """The kernel of global scaling's initial statistic also leaves :func:`client_spread`'s
    x̄ and consensus error for the record of step 0, bit for bit, NaN entries included."""
    kernels = pytest.importorskip("savic_theory.simulator._cpu_kernels")
    rng = np.random.default_rng(3)
    Rk, M, d = 3, 4, 19
    x = rng.standard_normal((Rk, M, d))
    x[2, 1, 5] = np.nan
    a, b = rng.random((1, M, d)) + 0.5, rng.standard_normal((1, M, d))
    xi = rng.standard_normal((Rk, M, d))
    sbar, smax, xbar, consensus = np.empty((Rk, 1, d)), np.empty(Rk), np.empty((Rk, d)), np.empty(Rk)
    kernels.mean_grad_squared(x, a, b, xi, noisy, False, x[:, :1], np.float64(M), sbar, smax, True, xbar,
                              consensus)
    want_xbar, want_consensus = np.empty((Rk, d)), np.empty(Rk)
    kernels.client_spread(x, np.float64(M), want_xbar, want_consensus)
    np.testing.assert_array_equal(xbar, want_xbar)
    np.testing.assert_array_equal(consensus, want_consensus)
    g = a * x - b + (xi if noisy else 0.0)
    np.testing.assert_array_equal(sbar, np.mean(g * g, axis=1, keepdims=True))
    np.testing.assert_array_equal(smax, np.max(sbar, axis=(1, 2)))
    assert np.isnan(smax[2]) and np.isnan(consensus[2])

    # rows not written yet (x⁰ before the first read): every client's row is `rows`, x is not read
    rows = rng.standard_normal((Rk, 1, d))
    same = np.ascontiguousarray(np.broadcast_to(rows, x.shape))
    got = [np.empty((Rk, 1, d)), np.empty(Rk), np.empty((Rk, d)), np.empty(Rk)]
    kernels.mean_grad_squared(np.full_like(x, np.nan), a, b, xi, noisy, True, rows, np.float64(M), *got[:2], True,
                              *got[2:])
    want = [np.empty((Rk, 1, d)), np.empty(Rk), np.empty((Rk, d)), np.empty(Rk)]
    kernels.mean_grad_squared(same, a, b, xi, noisy, False, rows, np.float64(M), *want[:2], True, *want[2:])
    for u, v in zip(got, want):
        np.testing.assert_array_equal(u, v)


@pytest.mark.parametrize("record_every", [4, 6])
@pytest.mark.parametrize("rule, big_gamma", [(rules.adam(beta=0.9, e=0.5), 50.0), (rules.identity(), 10.0)])
def test_lazy_average_is_written_out_whenever_x_is_read(rule, big_gamma, record_every):
    """Noise-free global rounds leave the averaged rows unwritten and start the next round from
    x̄; whatever reads x in between (a record off the sync steps, the steps before it, the
    frozen iterate of a diverging run, the result) sees the rows written. Run 2's step size is
    far above 1/L, so it diverges, and its iterate is frozen at a record after a sync."""
    pytest.importorskip("numba")
    prob = problem("diagonal", seed=6)
    kw = dict(gamma=np.array([0.1, 0.3, big_gamma]), steps=26, sync_every=4, record_every=record_every,
              runs=R, x0=np.full(prob.dim, 0.5), seed=0)
    compiled = simulate(prob, rule, fused=True, **kw)
    plain = simulate(prob, rule, fused="numpy", **kw)
    ref = simulate(prob, rule, fused=False, **kw)
    assert list(ref.status) == ["ok", "ok", "diverged"] and ref.diverged_at[2] >= 4  # after a sync
    _bitwise_same(compiled, plain)
    assert_same_result(compiled, ref)


@pytest.mark.parametrize("noise", [0.0, 0.3])
@pytest.mark.parametrize("scaling,fused_mode", [("global", True), ("local", True), ("local", "numpy")])
def test_rule_keeping_the_statistic_in_its_state_is_not_aliased(scaling, fused_mode, noise):
    """A rule whose state stores ``s`` itself (twice): in global scaling the compiled sync
    kernel's output buffer is written again at the next sync, in local scaling the replay
    writes every step's ``g ⊙ g`` into one buffer, so what the state keeps must be a copy."""
    rule = _keeps_s_rule()
    prob = problem("diagonal", seed=1)
    kw = dict(gamma=0.2, steps=12, sync_every=3, runs=2, x0=np.full(prob.dim, 2.0), scaling=scaling,
              noise=noise, seed=4)
    fast = simulate(prob, rule, fused=fused_mode, **kw)
    assert_same_result(fast, simulate(prob, rule, fused=False, **kw))


def test_workspace_remembers_a_bounded_number_of_returned_iterates(monkeypatch):
    """Returned iterates of many shapes, all dropped: the workspace remembers at most two per
    shape and at most half its limit in all (the rest is freed), and never one still held."""
    monkeypatch.setattr(fused, "_WORKSPACE", fused._Workspace(limit=4 * 2**20))
    held = []
    for d in range(20, 420, 20):
        prob = problem("diagonal", d=d)
        res = simulate(prob, rules.adam(beta=0.9, e=0.5), gamma=0.2, steps=3, runs=R, fused=True)
        if d % 100 == 0:
            held.append((res.x, res.x.copy()))
    lent = fused._WORKSPACE._lent
    assert sum(b.nbytes for b in lent) <= 2 * 2**20
    for d in range(20, 420, 20):  # more calls of every shape must not write into what is held
        simulate(problem("diagonal", d=d), rules.adam(beta=0.9, e=0.5), gamma=0.1, steps=2, runs=R, fused=True)
    for x, copy in held:
        np.testing.assert_array_equal(x, copy)
