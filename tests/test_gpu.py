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


@pytest.mark.parametrize("scaling", SCALINGS)
def test_gpu_float32(scaling):
    prob = problem("diagonal", seed=10)
    kw = dict(gamma=np.array([0.1, 0.2, 0.3]), steps=25, sync_every=np.array([2, 3, 5]),
              scaling=scaling, noise=0.1, seed=4, dtype="float32")
    gpu = simulate(prob, per_run_rule("adam"), x0=cp.zeros(prob.dim), fused=True, **kw)
    ref = simulate(prob, per_run_rule("adam"), fused=False, **kw)
    assert_close(gpu.x, ref.x, 1e-5, "x")  # float32 round-off, two different orders


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
