"""GPU suite (CuPy): bandwidth of the fused step, small problems against the launch floor, scaling.

``python -m benchmarks gpu`` writes ``gpu.json`` and ``gpu_scaling.png``. Device times come
from CUDA events after a warm-up; end-to-end times (a whole ``simulate`` call, Python loop
included) from the wall clock with set-up removed by the two-length difference.

Bytes moved by one global-scaling step ``x ← x − γ(a ⊙ x − b)/D̂`` on ``N = R·M·d``
coordinates: ``x`` read and written (``2N`` values) plus ``a, b`` ``(M, d)``, ``D̂`` ``(R, d)``
and ``γ`` ``(R,)`` read once (a lower bound: the shared ``a, b`` are re-read from cache by each
run). Achieved bandwidth = bytes / kernel time, compared with a device-to-device copy of the
same number of bytes (read ``N`` + write ``N``) timed the same way.
"""
from __future__ import annotations

import numpy as np

from savic_theory import Quadratic, rules, simulate
from savic_theory.simulator import fused

from ._common import steady_step_time

#: coordinates per step for the bandwidth table (runs × clients × d with runs = clients = 64)
COORDINATES = [10**6, 10**7, 10**8, 10**9]
QUICK_COORDINATES = COORDINATES[:3]
#: coordinates of the whole-loop timings through ``simulate``
END_TO_END = (10**6, 10**7, 10**8)
QUICK_END_TO_END = END_TO_END[:2]
SMALL = dict(runs=1, clients=16, dim=100)
SCALING_BASE = dict(runs=64, clients=64, dim=4096)
SWEEPS = {"runs": [1, 4, 16, 64, 256, 1024], "clients": [1, 4, 16, 64, 256],
          "dim": [64, 256, 1024, 4096, 16384, 65536]}
QUICK_SWEEPS = {"runs": [1, 16, 256], "clients": [4, 64], "dim": [256, 4096]}
#: the scaling curves time the reference loop up to this many coordinates (runs × clients × d)
REFERENCE_MAX = 1 << 25


def _cp():
    import cupy as cp

    return cp


#: The same global step as the simulator's ElementwiseKernel (``fused.step_kernel_source``, the
#: same operations in the same order) as a RawKernel on a three-dimensional grid: x over the
#: coordinates, y over the clients, z over the runs. CuPy's elementwise indexer finds each
#: element's (run, client, coordinate) by integer division, two per element for a 3-D
#: broadcast; here no thread divides. The bandwidth table times both: which one reaches the
#: copy rate decides whether the simulator should take this form.
STEP_ROWS_SRC = r"""
extern "C" __global__ void savic_step_rows(const TYPE* a, const TYPE* b, const TYPE* gamma, const TYPE* D,
                                           TYPE* x, long long R, long long M, long long d) {
    long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= d) return;
    for (long long r = blockIdx.z; r < R; r += gridDim.z) {
        const TYPE g = gamma[r];
        const TYPE Dj = D[r * d + j];
        for (long long m = blockIdx.y; m < M; m += gridDim.y) {
            const long long k = (r * M + m) * d + j;
            const TYPE x_old = x[k];
            const TYPE gr = a[m * d + j] * x_old - b[m * d + j];
            x[k] = x_old - (g * gr) / Dj;
        }
    }
}
"""


def step_rows(dtype):
    """``launch(a, b, gamma, D, x)``: the step of :data:`STEP_ROWS_SRC` on ``x`` (R, M, d) of
    ``dtype`` in place, with ``a, b`` (1, M, d), ``gamma`` (R, 1, 1) and ``D`` (R, 1, d), all
    contiguous."""
    ctype = "double" if np.dtype(dtype).itemsize == 8 else "float"
    kern = _cp().RawKernel(STEP_ROWS_SRC.replace("TYPE", ctype), "savic_step_rows")

    def launch(a, b, gamma, D, x):
        R, M, d = x.shape
        # raw pointers: every array must be C-contiguous, of x's dtype and of the stated shape
        for v, shape in ((a, (1, M, d)), (b, (1, M, d)), (gamma, (R, 1, 1)), (D, (R, 1, d)), (x, (R, M, d))):
            if v.shape != shape or v.dtype != x.dtype or not v.flags.c_contiguous:
                raise ValueError(f"savic_step_rows: an argument of shape {v.shape} ({v.dtype}) where a contiguous "
                                 f"{shape} array of {x.dtype} is needed")
        grid = ((d + fused._BLOCK - 1) // fused._BLOCK, min(M, 65535), min(R, 65535))
        kern(grid, (fused._BLOCK,), (a, b, gamma, D, x, np.int64(R), np.int64(M), np.int64(d)))
    return launch


def check_step_rows(dtype, shape=(3, 5, 1031)) -> float:
    """Relative gap between one step of :func:`step_rows` and of the simulator's kernel on the
    same numbers (the device may contract the two into FMAs differently: a few ulps)."""
    cp = _cp()
    x, a, b, D, gamma = _step_arrays(*shape, dtype, seed=1)
    y = x.copy()
    fused._cuda_elementwise(*fused.step_kernel_source(True, False, False), "savic_step")(a, b, gamma, D, x)
    step_rows(dtype)(a, b, gamma, D, y)
    return float(cp.max(cp.abs(x - y)) / cp.max(cp.abs(x)))


def device_time(fn, inner=20, repeats=7) -> float:
    """Median seconds per call of ``fn`` from CUDA events around ``inner`` back-to-back calls."""
    cp = _cp()
    fn()
    cp.cuda.Device().synchronize()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    times = []
    for _ in range(repeats):
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, end) / 1e3 / inner)
    return float(np.median(times))


def wall_time_per_call(fn, inner=200, repeats=7) -> float:
    """Median wall seconds per call of ``inner`` back-to-back calls, synchronised at the end
    (what a Python loop of launches costs: launch overhead included)."""
    import time

    cp = _cp()
    fn()
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        cp.cuda.Device().synchronize()
        times.append((time.perf_counter() - t) / inner)
    return float(np.median(times))


def _shape_for(n):
    R = M = 64
    return R, M, max(1, n // (R * M))


def _step_arrays(R, M, d, dtype, seed=0):
    """Arrays of one global-scaling step, drawn on the device (their values do not matter)."""
    cp = _cp()
    cp.random.seed(seed)
    x = cp.random.standard_normal((R, M, d), dtype=dtype)
    a = cp.random.uniform(0.5, 2.0, (1, M, d), dtype=dtype)
    b = cp.random.standard_normal((1, M, d), dtype=dtype)
    D = cp.random.uniform(1.0, 2.0, (R, 1, d), dtype=dtype)
    gamma = cp.full((R, 1, 1), 0.01, dtype=dtype)
    return x, a, b, D, gamma


def _note(exc: BaseException) -> str:
    """What a point that failed records instead of its numbers."""
    if isinstance(exc, _cp().cuda.memory.OutOfMemoryError):
        return "out of device memory"
    return f"{type(exc).__name__}: {exc}"


def _measured(row: dict, measure) -> dict:
    """``row`` updated with the numbers ``measure()`` returns; an error of this one point (out of
    memory or any other) is its ``note`` instead, not the end of the section. The point's arrays
    live in ``measure``'s frame, so device memory is freed afterwards whatever happened."""
    try:
        row.update(measure())
    except Exception as exc:  # this point lost, not the ones before it
        row["note"] = _note(exc)
    _cp().get_default_memory_pool().free_all_blocks()
    return row


def _bandwidth_row(step, rows_step, R, M, d, dtype) -> dict:
    """The timings of one row of :func:`bandwidth` (its arrays are freed when it returns or raises)."""
    cp = _cp()
    item = np.dtype(dtype).itemsize
    N = R * M * d
    row = {}
    x, a, b, D, gamma = _step_arrays(R, M, d, dtype)
    y = cp.empty_like(x)
    t_copy = device_time(lambda: cp.copyto(y, x))
    y = None  # freed before the step is timed
    row["copy_GBps"] = 2 * N * item / t_copy / 1e9
    t_step = device_time(lambda: step(a, b, gamma, D, x))
    moved = item * (2 * N + 2 * M * d + R * d + R)  # a, b (M, d) read once: from cache after
    row["step_us"] = 1e6 * t_step
    row["step_GBps"] = moved / t_step / 1e9
    row["step_fraction_of_copy"] = row["step_GBps"] / row["copy_GBps"]
    # a and b read again for every run (what DRAM serves once (M, d) outgrows the L2
    # cache): the step's true traffic lies between the two counts
    row["step_GBps_ab_per_run"] = item * (4 * N + R * d + R) / t_step / 1e9
    row["step_fraction_of_copy_ab_per_run"] = row["step_GBps_ab_per_run"] / row["copy_GBps"]
    row["ab_MiB"] = 2 * M * d * item / 2**20
    t_rows = device_time(lambda: rows_step(a, b, gamma, D, x))
    row["step_rows_us"] = 1e6 * t_rows
    row["step_rows_GBps"] = moved / t_rows / 1e9
    row["step_rows_fraction_of_copy"] = row["step_rows_GBps"] / row["copy_GBps"]
    xbar = cp.empty((R, 1, d), dtype=dtype)
    flags = cp.ones((R,), dtype=cp.bool_)
    mean_k = fused._cuda_mean_kernel("double" if item == 8 else "float")
    grid = ((R * d + fused._BLOCK - 1) // fused._BLOCK,)
    t_avg = device_time(lambda: mean_k(grid, (fused._BLOCK,), (x, xbar, flags, np.int64(R),
                                                               np.int64(M), np.int64(d), np.int32(1))))
    row["average_GBps"] = 2 * N * item / t_avg / 1e9
    t_mean = device_time(lambda: x.mean(axis=1))
    row["mean_axis1_GBps"] = N * item / t_mean / 1e9
    return row


def bandwidth(coordinates=COORDINATES, dtypes=("float64", "float32"), log=print, keep=None) -> list[dict]:
    """Achieved bandwidth of the fused step and of the client average against a copy;
    ``keep(rows so far)`` after every row. A row that fails records why in its ``note``."""
    rows = []
    step = fused._cuda_elementwise(*fused.step_kernel_source(True, False, False), "savic_step")
    for dtype in dtypes:
        item = np.dtype(dtype).itemsize
        rows_step = step_rows(dtype)
        rows_gap = check_step_rows(dtype)
        # both compute x − (γ (a x − b))/D̂ in the same order; only FMA contraction may differ
        if not rows_gap <= (1e-12 if item == 8 else 1e-5):
            raise AssertionError(f"savic_step_rows does not compute the simulator's step ({dtype}): "
                                 f"relative gap {rows_gap:.2e}")
        for n in coordinates:
            R, M, d = _shape_for(n)
            N = R * M * d
            row = {"dtype": dtype, "coordinates": N, "shape": (R, M, d)}
            rows.append(_measured(row, lambda: dict(_bandwidth_row(step, rows_step, R, M, d, dtype),
                                                    step_rows_checked_gap=rows_gap)))
            log("  " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
            if keep is not None:
                keep(rows)
    return rows


def _gpu_simulate(prob, steps, H, runs, fused_mode, dtype="float64", scaling="global"):
    cp = _cp()
    x0 = cp.zeros(prob.dim, dtype=cp.float64)
    res = simulate(prob, rules.adam(beta=0.99, e=0.1), gamma=0.1, steps=steps, sync_every=H,
                   runs=runs, record_every=steps, x0=x0, scaling=scaling, dtype=dtype, fused=fused_mode)
    if res.diverged:  # a stopped run would time fewer steps than asked for
        raise AssertionError("benchmark runs diverged")
    return res


def _problem(clients, dim, seed=0):
    return Quadratic.random(dim=dim, n_clients=clients, L=1.0, mu=0.01, heterogeneity=1.0,
                            client_spectra="random", seed=seed)


def small_problem(repeats=5, log=print, keep=None) -> dict:
    """Per-step time of a 16-client, d = 100 problem against the launch floor of one kernel;
    ``keep(result so far)`` after every measurement, each of which is also logged at once."""
    cp = _cp()
    R, M, d = SMALL["runs"], SMALL["clients"], SMALL["dim"]
    out = _Logged({"shape": (R, M, d)}, log, keep)
    tiny = cp.zeros((1,), dtype=cp.float64)
    copy_k = cp.ElementwiseKernel("T x", "T y", "y = x", "savic_launch_floor")
    out_tiny = cp.empty_like(tiny)
    out["launch_floor_us"] = 1e6 * wall_time_per_call(lambda: copy_k(tiny, out_tiny))
    x, a, b, D, gamma = _step_arrays(R, M, d, "float64")
    step = fused._cuda_elementwise(*fused.step_kernel_source(True, False, False), "savic_step")
    out["fused_kernel_us"] = 1e6 * wall_time_per_call(lambda: step(a, b, gamma, D, x))
    prob = _problem(M, d)
    for label, H, mode in (("simulate fused, H = 10", 10, True), ("simulate fused, no sync", None, True),
                           ("simulate reference loop, H = 10", 10, False)):
        def run(n, H=H, mode=mode):
            return _gpu_simulate(prob, n, H or n, R, mode)
        out[f"{label} (us/step)"] = 1e6 * steady_step_time(run, repeats)
    cpu = lambda n: simulate(prob, rules.adam(beta=0.99, e=0.1), gamma=0.1, steps=n,  # noqa: E731
                             sync_every=10, runs=R, record_every=n, fused=True)
    out["CPU simulate fused, H = 10 (us/step)"] = 1e6 * steady_step_time(cpu, repeats)
    return dict(out)


class _Logged(dict):
    """A result dict that logs each entry as it is set and hands the whole to ``keep``."""

    def __init__(self, first: dict, log, keep):
        super().__init__()
        self._log, self._keep = log, keep
        for key, value in first.items():
            self[key] = value

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        self._log(f"  {key}: {value}")
        if self._keep is not None:
            self._keep(dict(self))


def end_to_end(coordinates=END_TO_END, repeats=3, log=print, keep=None) -> list[dict]:
    """Whole-loop time per step through ``simulate`` (fused, no sync; and H = 10);
    ``keep(rows so far)`` after every row. A row that fails records why in its ``note``."""
    rows = []
    for n in coordinates:
        R, M, d = _shape_for(n)

        def measure():  # called at once, by _measured
            prob = _problem(M, d)
            return {f"fused {label} (ms/step)": 1e3 * steady_step_time(
                lambda s, H=H: _gpu_simulate(prob, s, H or s, R, True), repeats)
                for label, H in (("no sync", None), ("H = 10", 10))}
        row = _measured({"coordinates": R * M * d, "shape": (R, M, d)}, measure)
        rows.append(row)
        log("  " + ", ".join(f"{k} {v}" for k, v in row.items()))
        if keep is not None:
            keep(rows)
    return rows


def scaling(sweeps=SWEEPS, repeats=3, log=print, on_point=None) -> dict:
    """Time per step (set-up excluded) against runs, clients and d: fused and reference on GPU.

    ``on_point(curves)`` is called after every point with the curves so far (to save them).
    """
    cp = _cp()
    curves = {}
    for axis, values in sweeps.items():
        pts = curves[axis] = []
        for v in values:
            cfg = dict(SCALING_BASE, **{axis: v})
            R, M, d = cfg["runs"], cfg["clients"], cfg["dim"]

            def measure():  # called at once, by _measured
                prob, out = _problem(M, d), {}
                # the reference loop only up to REFERENCE_MAX coordinates: above, its temporaries
                # make it the slowest part of the suite, and the targets are the fused path's
                modes = (("fused float64", True),) + ((("reference float64", False),)
                                                      if R * M * d <= REFERENCE_MAX else ())
                for label, mode in modes:
                    out[label] = 1e3 * steady_step_time(
                        lambda s, mode=mode: _gpu_simulate(prob, s, 10, R, mode), repeats)
                out["fused float32"] = 1e3 * steady_step_time(
                    lambda s: _gpu_simulate(prob, s, 10, R, True, dtype="float32"), repeats)
                x = cp.ones((R, M, d))
                y = cp.empty_like(x)
                out["one pass over x (copy)"] = 1e3 * device_time(lambda: cp.copyto(y, x))
                return out
            row = _measured({axis: v, "coordinates": R * M * d}, measure)
            pts.append(row)
            log(f"  {axis} = {v}: {row}")
            if on_point is not None:
                on_point(curves)
    return curves


def check_agreement(log=print) -> dict:
    """Fused GPU against the CPU reference loop (float64, noise): relative gap of x."""
    prob = Quadratic.random(dim=64, n_clients=8, L=1.0, mu=0.1, heterogeneity=1.0,
                            client_spectra="random", noise=0.5, seed=1)
    out = {}
    cp = _cp()
    for scaling_ in ("global", "local"):
        kw = dict(gamma=np.array([0.1, 0.2, 0.3]), steps=40, sync_every=np.array([2, 3, 5]),
                  scaling=scaling_, seed=3)
        rule = rules.adam(beta=np.array([0.5, 0.9, 0.99]), e=np.array([0.5, 0.6, 1.0]))
        gpu = simulate(prob, rule, x0=cp.zeros(64), fused=True, **kw)
        ref = simulate(prob, rule, fused=False, **kw)
        out[scaling_] = float(np.max(np.abs(gpu.x - ref.x)) / np.max(np.abs(ref.x)))
    log(f"  GPU fused vs CPU reference, relative gap of x: {out}")
    return out
