"""The fused CuPy path on a real CUDA device (skipped where CuPy or a device is missing).

Run on a GPU machine with ``pytest tests/test_gpu.py -v``. The same host logic is exercised on
every machine by ``tests/test_fused.py`` through an emulated CuPy (its kernels read by Python or
compiled by g++ as host C++), and ``tests/test_cuda_sources.py`` compiles every kernel with nvcc;
these tests add what only a device can check: that the kernels launch with the right arguments
and compute the reference's numbers with the device's rounding.
"""
from __future__ import annotations

import numpy as np
import pytest

from savic_theory import RULES, SCALINGS, simulate
from savic_theory.simulator import fused

from .test_fused import FORMS, assert_close, assert_same_result, per_run_rule, problem

cp = pytest.importorskip("cupy")


def _device_count() -> int:
    try:
        return int(cp.cuda.runtime.getDeviceCount())
    except Exception:  # CuPy installed without a driver or device
        return 0


pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(_device_count() == 0, reason="no CUDA device visible to CuPy")]

# On the device, products may be contracted into FMAs and reductions (history, maxima) are
# trees instead of sequential sums, so a step differs from the host by a few ulps; in the
# contractive set-up of tests/test_fused.py (γ ≤ e/L) that stays ≪ 1e-12 relative.
RTOL = 1e-12


@pytest.mark.parametrize("dtype,rtol", [("float64", RTOL), ("float32", 1e-5)])
@pytest.mark.parametrize("rule", ["rmsprop", "adam", "oasis"])
def test_gpu_global_update_kernel_agrees_with_cpu_reference(rule, dtype, rtol):
    """Syncs of every run (H = 4): global scaling's update through the generated kernel."""
    prob = problem("diagonal", seed=3)
    x0 = np.full(prob.dim, 2.0)
    kw = dict(gamma=np.array([0.1, 0.2, 0.3]), steps=29, sync_every=4, noise=0.3, seed=11, record_every=3)
    gpu = simulate(prob, per_run_rule(rule), x0=cp.asarray(x0), fused=True, dtype=dtype, **kw)
    ref = simulate(prob, per_run_rule(rule), x0=x0, fused=False, **kw)
    for name in ("x", "D", "drift", "drift_min"):
        assert_close(getattr(gpu, name), getattr(ref, name), rtol, name)


@pytest.mark.parametrize("noise", [0.0, 0.3])
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("rule", list(RULES))
def test_gpu_agrees_with_cpu_reference(rule, scaling, form, noise):
    prob = problem(form, seed=3)
    x0 = np.full(prob.dim, 2.0)
    kw = dict(gamma=np.array([0.1, 0.2, 0.3]), steps=31, sync_every=np.array([2, 3, 5]),
              scaling=scaling, noise=noise, seed=11, record_every=3)
    gpu = simulate(prob, per_run_rule(rule), x0=cp.asarray(x0), fused=True, **kw)
    ref = simulate(prob, per_run_rule(rule), x0=x0, fused=False, **kw)
    assert gpu.params["backend"] == "cupy"
    assert_same_result(gpu, ref, RTOL, ignore=("backend",))


@pytest.mark.parametrize("scaling", SCALINGS)
def test_gpu_same_draws_probes_and_divergence(scaling):
    prob = problem("dense", seed=5)
    gens = [np.random.default_rng(4), np.random.default_rng(4)]
    kw = dict(gamma=np.array([0.2, 40.0, 0.3]), steps=30, sync_every=4, scaling=scaling, noise=0.2,
              probes="rademacher", init_probes=2)
    gpu = simulate(prob, per_run_rule("oasis"), x0=cp.zeros(prob.dim), seed=gens[0], fused=True, **kw)
    ref = simulate(prob, per_run_rule("oasis"), seed=gens[1], fused=False, **kw)
    assert gens[0].bit_generator.state == gens[1].bit_generator.state
    assert list(ref.status) == ["ok", "diverged", "ok"]
    assert_same_result(gpu, ref, RTOL, ignore=("backend",))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("rule", list(RULES))
def test_gpu_float32(rule, scaling, form):
    """float32 kernels of every rule and form (dense and eigenbasis through cuBLAS in float32).
    Host and device round in different orders: 25 contracting steps of unit round-off 6e-8
    give about 1e-7 (measured on the host with FMA contraction: ≤ 1.1e-7 for x, 5e-8 for D̂);
    1e-5 leaves a factor 100."""
    prob = problem(form, seed=10)
    kw = dict(gamma=np.array([0.1, 0.2, 0.3]), steps=25, sync_every=np.array([2, 3, 5]),
              scaling=scaling, noise=0.1, seed=4, dtype="float32")
    gpu = simulate(prob, per_run_rule(rule), x0=cp.zeros(prob.dim), fused=True, **kw)
    ref = simulate(prob, per_run_rule(rule), fused=False, **kw)
    assert_close(gpu.x, ref.x, 1e-5, "x")
    assert_close(gpu.D, ref.D, 1e-5, "D")
    assert_close(gpu.history["dist_sq"], ref.history["dist_sq"], 1e-5, "dist_sq")


@pytest.mark.parametrize("scaling", SCALINGS)
def test_gpu_rules_mixed_on_the_run_axis(scaling):
    """One call whose runs use different rules (rules.per_run): the generated kernels select
    each run's statistic and transform on the device, as the reference loop does per run."""
    from .test_rules_axis import GAMMA, H, mixed_parts

    parts = mixed_parts(probes=True)  # every g ⊙ g kind, the identity, and oasis's probes
    prob = problem("dense", seed=6)
    kw = dict(gamma=GAMMA, steps=21, sync_every=H, scaling=scaling, noise=0.2, seed=9, probes="rademacher",
              record_every=3)
    gpu = simulate(prob, parts, x0=cp.zeros(prob.dim), fused=True, **kw)
    ref = simulate(prob, parts, fused=False, **kw)
    assert_same_result(gpu, ref, RTOL, ignore=("backend",))


def _free_bytes() -> int:
    return int(cp.cuda.Device().mem_info[0])


def test_kernels_index_past_two_to_the_31(d=2**28 + 3):
    """Arrays of more than 2**31 elements (float32, 8.6 GB; 21.5 GB in all): the elementwise step
    and the streaming client average reach their last elements, where 32-bit indices would have
    wrapped. Values are constants, so every element's result is known exactly."""
    R, M = 4, 2
    need = 4 * (R * M * d + 2 * M * d + R * d) + 4 * R * d
    if d > 2**20 and _free_bytes() < 1.25 * need:
        pytest.skip(f"needs {need / 2**30:.0f} GiB of free device memory")
    x = cp.ones((R, M, d), dtype=cp.float32)
    a = cp.full((1, M, d), 2.0, dtype=cp.float32)
    b = cp.ones((1, M, d), dtype=cp.float32)
    D = cp.full((R, 1, d), 4.0, dtype=cp.float32)
    gamma = cp.full((R, 1, 1), 0.5, dtype=cp.float32)
    step = fused._cuda_elementwise(*fused.step_kernel_source(True, False, False), "savic_step")
    step(a, b, gamma, D, x)  # x ← x − γ (a x − b) / D = 1 − 0.5 · 1 / 4 = 0.875, exact in float32
    del a, b, D, gamma
    # the last 24 elements lie past index 2**31 (all in run 3, client 1)
    assert float(x[-1, -1, -1]) == 0.875 and float(x[0, 0, 0]) == 0.875
    assert float(cp.min(x)) == float(cp.max(x)) == 0.875
    x[:, 1, :] = 0.125  # clients 0 and 1 now average to 0.5, exact in float32
    xbar = cp.empty((R, 1, d), dtype=cp.float32)
    kern = fused._cuda_mean_kernel("float")
    grid = ((R * d + fused._BLOCK - 1) // fused._BLOCK,)
    kern(grid, (fused._BLOCK,), (x, xbar, cp.ones((R,), dtype=cp.bool_), np.int64(R), np.int64(M), np.int64(d),
                                 np.int32(1)))
    assert float(cp.min(xbar)) == float(cp.max(xbar)) == 0.5
    assert float(cp.min(x)) == float(cp.max(x)) == 0.5  # every client set to the average, the last one too
    del x, xbar
    cp.get_default_memory_pool().free_all_blocks()


@pytest.mark.parametrize("dtype,ctype", [(np.float64, "double"), (np.float32, "float")])
def test_client_mean_kernel_is_numpys_sequential_mean(dtype, ctype):
    """The streaming average sums clients in order, exactly as NumPy's mean over axis 1."""
    rng = np.random.default_rng(0)
    R, M, d = 5, 300, 1000
    host = (rng.standard_normal((R, M, d)) * 10 ** rng.uniform(-4, 4, (R, M, d))).astype(dtype)
    x = cp.asarray(host)
    xbar = cp.empty((R, 1, d), dtype=dtype)
    sync = np.array([True, False, True, False, True])
    kern = fused._cuda_mean_kernel(ctype)
    grid = ((R * d + fused._BLOCK - 1) // fused._BLOCK,)
    kern(grid, (fused._BLOCK,), (x, xbar, cp.asarray(sync), np.int64(R), np.int64(M), np.int64(d),
                                 np.int32(1)))
    want = np.mean(host, axis=1, keepdims=True)
    np.testing.assert_array_equal(xbar.get(), want)
    back = x.get()
    np.testing.assert_array_equal(back[sync], np.broadcast_to(want[sync], back[sync].shape))
    np.testing.assert_array_equal(back[~sync], host[~sync])


def test_problem_instances_on_the_run_axis_on_gpu():
    """One dense problem per run: the batched mat-vec path of the GPU gradient."""
    prob = problem("dense", seed=8, instances=3)
    for scaling in SCALINGS:
        kw = dict(gamma=np.array([0.1, 0.2, 0.3]), steps=20, sync_every=4, scaling=scaling, noise=0.1, seed=1)
        gpu = simulate(prob, per_run_rule("rmsprop"), x0=cp.zeros(prob.dim), fused=True, **kw)
        ref = simulate(prob, per_run_rule("rmsprop"), fused=False, **kw)
        assert_same_result(gpu, ref, RTOL, ignore=("backend",))


@pytest.mark.parametrize("scaling", SCALINGS)
def test_gpu_common_draws_agree_with_cpu_reference(scaling):
    """``common_draws`` on the device: the grouped host draws reach the kernels."""
    prob = problem("diagonal", seed=3)
    x0 = np.full(prob.dim, 2.0)
    kw = dict(gamma=np.array([0.1, 0.2, 0.1]), steps=31, sync_every=3, scaling=scaling, noise=0.3,
              seed=11, common_draws=[0, 1, 0])
    gpu = simulate(prob, per_run_rule("adam"), x0=cp.asarray(x0), fused=True, **kw)
    ref = simulate(prob, per_run_rule("adam"), x0=x0, fused=False, **kw)
    assert_close(gpu.x, ref.x, RTOL, "x")
