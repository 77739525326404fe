"""Every CUDA kernel the GPU path can generate, compiled by nvcc for the H100/H200 (sm_90).

No GPU is needed: nvcc and ptxas run on the host (skipped where nvcc is missing). The kernels are
wrapped as CuPy wraps them (:mod:`tests._cuda_host`), for float64 and float32, all in one
translation unit per dtype, with warnings as errors. What a device adds, launching and the
numbers, is checked by ``tests/test_gpu.py``; the same sources compiled for the host and run
against the reference are in ``tests/test_fused.py`` (``fake_cupy`` with ``g++``).
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from savic_theory import RULES, rules
from savic_theory.simulator import fused

from benchmarks import gpu as bench_gpu

from . import _cuda_host
from .test_fused import _adagrad_like

pytestmark = pytest.mark.skipif(not _cuda_host.have_nvcc(), reason="nvcc (CUDA toolkit) not installed")

ARCH = "sm_90"  # H100 and H200


def _programs():
    """The traced local-scaling program of every rule with state, a rule given only as functions,
    and a rule over runs (its kinds selected per run by ``where``)."""
    full = (2, 3, 5)
    beta = np.full((2, 1, 1), 0.9)
    stateful = [rules.make(name, beta=0.9, e=0.1) for name, _ in RULES.items() if name != "identity"]
    for r in stateful + [_adagrad_like()]:
        state = r.init(np.ones(full), beta, np)
        yield r.name, fused.trace_rule(r, [np.shape(c) for c in state], full)
    mixed = rules.per_run([rules.adam(beta=0.9), rules.rmsprop(beta=0.5), rules.identity()])
    full = (3, 3, 5)
    state = mixed.init(np.ones(full), np.full((3, 1, 1), 0.9), np)
    yield "per_run", fused.trace_rule(mixed, [np.shape(c) for c in state], full)


def generated_kernels():
    """``(name, in_params, out_params, body)`` of every elementwise kernel the GPU path builds."""
    kernels = []
    for inline, noisy, with_stat in itertools.product([True, False], repeat=3):
        if noisy and not inline:
            continue  # a given gradient already holds the noise
        ins, outs, body = fused.step_kernel_source(inline, noisy, with_stat)
        kernels.append((f"step_{int(inline)}{int(noisy)}{int(with_stat)}", ins, outs, body))
    for rule, program in _programs():
        statistics = [True, False] + (["per_run"] if rule == "per_run" else [])
        for inline, noisy, given_s in itertools.product([True, False], [True, False], statistics):
            if noisy and not inline:
                continue
            ins, outs, body, _ = fused.local_kernel_source(program, inline, noisy, given_s)
            mode = "p" if given_s == "per_run" else int(given_s)
            kernels.append((f"local_{rule}_{int(inline)}{int(noisy)}{mode}", ins, outs, body))
    for rule, program in _global_programs():
        ins, outs, body, _ = fused.global_kernel_source(program)
        kernels.append((f"global_{rule}", ins, outs, body))
    return kernels


def _global_programs():
    """The traced global-scaling update of the same rules, over ``(runs, 1, d)``."""
    for name, program in _programs():
        rule = program.rule
        runs = program.full[0]
        state = rule.init(np.ones((runs, 1, 5)), np.full((runs, 1, 1), 0.9), np)
        yield name, fused.RuleProgram(rule, [np.shape(c) for c in state], (runs, 1, 5))


def test_every_generated_kernel_is_listed():
    """The list covers each rule with state and each form of the step (a guard for the tests below)."""
    names = [k[0] for k in generated_kernels()]
    assert len(names) == len(set(names))
    for rule in [n for n in RULES if n != "identity"] + ["adagrad_like", "per_run"]:
        # three forms of the gradient × the statistic: g ⊙ g, given, and (a rule over runs with
        # both statistics) given or g ⊙ g per run
        assert sum(n.startswith(f"local_{rule}_") for n in names) == (9 if rule == "per_run" else 6)
    assert sum(n.startswith("step_") for n in names) == 6
    assert sorted(n for n in names if n.startswith("global_")) == sorted(
        f"global_{rule}" for rule in [n for n in RULES if n != "identity"] + ["adagrad_like", "per_run"])


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kernels_compile_for_hopper_without_spills(dtype):
    ctype = _cuda_host.CTYPES[np.dtype(dtype)]
    kernels = generated_kernels()
    unit = [f"typedef {ctype} T;", fused._CUDA_PREAMBLE]
    unit += [_cuda_host.elementwise_function(ins, outs, body, name) for name, ins, outs, body in kernels]
    unit.append(fused._MEAN_SRC.replace("TYPE", ctype))
    unit.append(bench_gpu.STEP_ROWS_SRC.replace("TYPE", ctype))
    report = _cuda_host.ptxas_report(_cuda_host.nvcc_check("\n".join(unit), ARCH))
    assert set(report) == {k[0] for k in kernels} | {"savic_client_mean", "savic_step_rows"}
    for name, info in report.items():
        # an elementwise body keeps a handful of values per thread: no spills and no stack. Past
        # 128 registers per thread an SM (65536 registers) holds under 512 threads, too few to
        # hide memory latency in a bandwidth-bound step; this wrapper needs 29-62 (nvcc 13.0)
        assert info["spill_stores"] == 0 and info["spill_loads"] == 0 and info["stack"] == 0, (name, info)
        assert info["registers"] <= 128, (name, info)


def test_nvcc_rejects_a_broken_kernel():
    """The check has teeth: a body that uses an undeclared name does not compile."""
    src = "\n".join(["typedef double T;", fused._CUDA_PREAMBLE,
                     _cuda_host.elementwise_function("T a", "T x", "x = a * undeclared;", "broken")])
    with pytest.raises(RuntimeError, match="undeclared"):
        _cuda_host.nvcc_check(src, ARCH)


@pytest.mark.skipif(not _cuda_host.have_cxx(), reason="no g++")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_client_mean_kernel_on_the_host_build(dtype):
    """The RawKernel's index arithmetic, thread by thread, on a grid that does not divide R·d."""
    rng = np.random.default_rng(0)
    R, M, d = 3, 7, 37
    host = rng.standard_normal((R, M, d)).astype(dtype)
    x, xbar = host.copy(), np.empty((R, 1, d), dtype=dtype)
    sync = np.array([True, False, True])
    kern = _cuda_host.HostRawKernel(fused._MEAN_SRC.replace("TYPE", _cuda_host.CTYPES[np.dtype(dtype)]),
                                    "savic_client_mean")
    block = 32
    kern(((R * d + block - 1) // block,), (block,), (x, xbar, sync, np.int64(R), np.int64(M), np.int64(d), np.int32(1)))
    want = np.mean(host, axis=1, keepdims=True)  # NumPy sums the clients in order, as the kernel
    np.testing.assert_array_equal(xbar, want)
    np.testing.assert_array_equal(x[sync], np.broadcast_to(want[sync], x[sync].shape))
    np.testing.assert_array_equal(x[~sync], host[~sync])
    with pytest.raises(TypeError, match="long long"):  # a Python int would be passed as the wrong width
        kern((1,), (block,), (x, xbar, sync, R, np.int64(M), np.int64(d), np.int32(1)))


@pytest.mark.skipif(not _cuda_host.have_cxx(), reason="no g++")
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_step_rows_kernel_on_the_host_build(dtype):
    """The benchmark's row-grid step, thread by thread, on a grid smaller than the clients and
    runs (its stride loops) whose x-blocks do not divide d: it computes the simulator's step."""
    rng = np.random.default_rng(2)
    R, M, d = 3, 5, 37
    x = rng.standard_normal((R, M, d)).astype(dtype)
    a, b = rng.uniform(0.5, 2.0, (1, M, d)).astype(dtype), rng.standard_normal((1, M, d)).astype(dtype)
    D, gamma = rng.uniform(1.0, 2.0, (R, 1, d)).astype(dtype), np.full((R, 1, 1), 0.3, dtype=dtype)
    want = x - (gamma * (a * x - b)) / D  # the elementwise kernel's operations, in its order
    kern = _cuda_host.HostRawKernel(bench_gpu.STEP_ROWS_SRC.replace("TYPE", _cuda_host.CTYPES[np.dtype(dtype)]),
                                    "savic_step_rows")
    kern((3, 2, 2), (16,), (a, b, gamma, D, x, np.int64(R), np.int64(M), np.int64(d)))
    np.testing.assert_array_equal(x, want)  # no FMA contraction on the host build: the same roundings
