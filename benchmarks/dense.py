"""Dense ``A_m`` and shared-eigenbasis gradients: the streamed mat-vec against the copy roofline,
the matrix products against the device's GEMM rate, and their share of a whole step.

One code path for NumPy (``xp = numpy``, wall clock) and CuPy (``xp = cupy``, CUDA events).
The measured operation is the simulator's own matrix work of one gradient, ``A_m x_m`` for every
run and client, done as in ``savic_theory/simulator/fused.py`` (``_CPUOps.grad``,
``_GPUOps.grad``):

* ``"dense, per run"``: problem instances on the run axis, ``A`` of shape ``(R, M, d, d)``: a
  batched mat-vec that streams ``A`` once per step. Bytes moved: ``A`` (``R·M·d²`` values) plus
  ``x`` read and ``g`` written (``2·R·M·d``). The roofline is the copy bandwidth of an array of
  ``A``'s size on the same device (read + write counted, as in ``benchmarks/gpu.py``).
* ``"dense, shared A"``: ``A`` of shape ``(1, M, d, d)``: one ``(R, d) × (d, d)`` product per
  client on the CPU, one batched product on the GPU; ``2·R·M·d²`` flops.
* ``"eigenbasis"``: ``A_m = Q diag(λ_m) Qᵀ``: two ``(R·M, d) × (d, d)`` products around an
  elementwise scaling; ``4·R·M·d²`` flops (the scaling not counted).

GEMM rates are compared with a square ``n × n × n`` product measured in the same process
(``n = 2048`` on the CPU, ``8192`` on the GPU). Before any timing, each operation is checked
against ``einsum`` with the problem's explicit matrices (``CHECK_RTOL``).
"""
from __future__ import annotations

import functools
import os

import numpy as np

from savic_theory import Quadratic, rules, simulate

from ._common import median_time, steady_step_time, table

#: (R, M, d) for the streamed mat-vec: A = 32, 64, 128 MiB in float64 (beyond last-level cache)
STREAMED_CPU = [(8, 8, 256), (4, 8, 512), (2, 8, 1024)]
#: A = 1, 2, 4, 8 GiB in float64
STREAMED_GPU = [(64, 32, 256), (16, 16, 1024), (8, 16, 2048), (16, 16, 2048)]
#: (R, M, d) for the shared-A and eigenbasis products
GEMM_CPU = [(32, 64, 64), (32, 64, 256), (128, 16, 512), (32, 8, 1024)]
GEMM_GPU = [(64, 64, 256), (256, 64, 1024), (1024, 16, 1024), (64, 16, 4096)]
#: (R, M, d) of the whole steps through simulate: shared A and eigenbasis at "shared", instances
#: on the run axis at "instances" (A of shape (R, M, d, d): 64 MiB on the CPU, 256 MiB on the GPU)
STEP_CPU = dict(shared=(32, 64, 256), instances=(8, 16, 256))
STEP_GPU = dict(shared=(256, 16, 1024), instances=(16, 8, 512))
REFERENCE_N = {"cpu": 2048, "gpu": 8192}
QUICK = {"cpu": dict(streamed=[(8, 8, 256)], gemm=[(32, 64, 64), (32, 16, 256)], reference_n=1024,
                     step=dict(shared=(16, 16, 128), instances=(4, 8, 128)), dtypes=("float64",)),
         "gpu": dict(streamed=STREAMED_GPU[:2], gemm=GEMM_GPU[:2], reference_n=4096,
                     step=dict(shared=(64, 64, 256), instances=(8, 8, 256)),
                     dtypes=("float64", "float32"))}

# einsum and BLAS sum in different orders: a few ulps per product, far below 1e-12 relative
CHECK_RTOL = 1e-12
PATHS = ("dense, per run", "dense, shared A", "eigenbasis")


def _gpu(xp) -> bool:
    return xp is not np


def _host(a) -> np.ndarray:
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _free(xp) -> None:
    if _gpu(xp):
        xp.get_default_memory_pool().free_all_blocks()


def _out_of_memory(xp) -> tuple:
    return (MemoryError, xp.cuda.memory.OutOfMemoryError) if _gpu(xp) else (MemoryError,)


def _random(xp, shape, dtype, seed=0):
    """Standard normals of ``shape`` on the device of ``xp`` (values do not matter for timing)."""
    if not _gpu(xp):
        return np.random.default_rng(seed).standard_normal(shape, dtype=dtype)
    xp.random.seed(seed)
    return xp.random.standard_normal(shape, dtype=dtype)


def timer(xp, repeats, min_s=0.02):
    """``time(fn, inner)``: median seconds per call over ``repeats`` timings of back-to-back calls.

    GPU: CUDA events around ``inner`` calls (``gpu.device_time``). CPU: the wall clock around
    as many calls as make one timing last ``min_s`` (``inner`` is ignored; sub-millisecond calls
    are noisy one by one), after one untimed call.
    """
    if _gpu(xp):
        from .gpu import device_time

        return lambda fn, inner=20: device_time(fn, inner=inner, repeats=repeats)

    def time(fn, inner=None):
        probe, _ = median_time(fn, 1)
        calls = max(1, int(np.ceil(min_s / max(probe, 1e-9))))
        return median_time(lambda: [fn() for _ in range(calls)], repeats, warmup=0)[0] / calls
    return time


# ---------------------------------------------------------------------------------- the operations
def matrix_op(xp, form, A, runs, Q=None):
    """``fn(x) -> A_m x_m`` for ``x`` of shape ``(runs, M, d)``, as the fused simulator does it.

    Parameters
    ----------
    form : {"dense", "eigenbasis"}
        Dense: ``A`` of shape ``(1, M, d, d)`` (shared, one GEMM per client) or ``(runs, M, d, d)``
        (streamed batched mat-vec). Eigenbasis: ``A`` holds the spectra ``(1 or runs, M, d)``.
    Q : array (d, d), eigenbasis only
    """
    M, d = A.shape[1], A.shape[2]
    full = (runs, M, d)
    if form == "eigenbasis":
        QT = xp.ascontiguousarray(Q.T)
        if _gpu(xp):
            return lambda x: xp.matmul((xp.matmul(x.reshape(-1, d), Q).reshape(full) * A).reshape(-1, d),
                                       QT).reshape(full)
        y, g = np.empty(full, A.dtype), np.empty(full, A.dtype)

        def eig(x):
            np.matmul(x.reshape(-1, d), Q, out=y.reshape(-1, d))
            np.multiply(y, A, out=y)
            return np.matmul(y.reshape(-1, d), QT, out=g.reshape(-1, d)).reshape(full)
        return eig
    if A.shape[0] == 1:  # shared by all runs
        if _gpu(xp):
            return lambda x: xp.matmul(x.transpose(1, 0, 2), A[0].transpose(0, 2, 1)).transpose(1, 0, 2)
        AT, g = np.ascontiguousarray(np.swapaxes(A[0], -1, -2)), np.empty(full, A.dtype)

        def shared(x):
            for m in range(M):
                np.matmul(x[:, m, :], AT[m], out=g[:, m, :])
            return g
        return shared
    if _gpu(xp):
        return lambda x: xp.matmul(A, x[..., None])[..., 0]
    g = np.empty(full, A.dtype)
    return lambda x: np.matmul(A, x[..., None], out=g[..., None])[..., 0]


def _explicit(prob: Quadratic) -> np.ndarray:
    """The problem's ``A_m`` as full matrices, ``(instances, M, d, d)``."""
    if prob.form == "dense":
        return prob.A
    return np.einsum("ij,nmj,kj->nmik", prob.Q, prob.A, prob.Q)


def check_problems(runs=3, clients=5, dim=24, seed=0) -> dict:
    """Small problems of each path (host data): dense per run, dense shared, eigenbasis."""
    def rand(form, s, M=clients):
        return Quadratic.random(dim=dim, n_clients=M, L=1.0, mu=0.05, heterogeneity=1.0,
                                form=form, client_spectra="random", seed=seed + s)
    return {"dense, per run": _per_run(rand("dense", 0, clients * runs), runs),
            "dense, shared A": rand("dense", 1), "eigenbasis": rand("eigenbasis", 2)}


def check_gradients(xp=np, problems=None, runs=3) -> dict:
    """Largest relative gap of ``matrix_op(x) − b`` to ``einsum(A_m, x_m) − b`` per path (float64).

    Raises ``AssertionError`` when a gap exceeds ``CHECK_RTOL``.
    """
    problems = check_problems(runs) if problems is None else problems
    gaps = {}
    for name, prob in problems.items():
        o = prob.bind(xp, xp.float64)
        x = np.random.default_rng(1).standard_normal((runs, prob.n_clients, prob.dim))
        A = np.broadcast_to(_explicit(prob), (runs,) + x.shape[1:] + (prob.dim,))
        ref = np.einsum("rmij,rmj->rmi", A, x) - prob.b
        op = matrix_op(xp, prob.form, o.A, runs, getattr(o, "Q", None))
        got = _host(op(xp.asarray(x)) - o.b)
        gaps[name] = float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))
        if not gaps[name] <= CHECK_RTOL:
            raise AssertionError(f"{name}: the timed operation does not compute the simulator's "
                                 f"gradient: relative gap {gaps[name]:.2e}")
    return gaps


# ------------------------------------------------------------------------------------ measurements
def _measure(xp, row, fn, *args) -> dict:
    """``row`` updated with ``fn(*args)``; out of memory, or another error of this one point
    (a library's own allocation failure), is recorded in its ``note``, and device memory freed."""
    try:
        row.update(fn(*args))
    except _out_of_memory(xp):
        row["note"] = "out of memory"
    except Exception as exc:  # one point lost, not the rows measured before it
        row["note"] = f"{type(exc).__name__}: {exc}"
    _free(xp)
    return row


def _on_all_cores(xp, fn, *arrays):
    """``fn`` over the arrays, on the CPU split into one contiguous block per core (the BLAS
    mat-vec uses every core, so its roofline must too); one call on the GPU."""
    if _gpu(xp):
        return lambda: fn(*arrays)
    pool, n = _pool(), _cores()
    parts = [np.array_split(a.reshape(-1), n) for a in arrays]
    return lambda: list(pool.map(lambda i: fn(*(p[i] for p in parts)), range(n)))


@functools.lru_cache(maxsize=1)
def _pool():
    """One thread per core, kept for the suite (NumPy releases the GIL in copies and sums)."""
    from concurrent.futures import ThreadPoolExecutor

    return ThreadPoolExecutor(max_workers=_cores())


def _cores() -> int:
    return os.cpu_count() or 1


def _streamed_point(xp, time, R, M, d, dtype) -> dict:
    A, x = _random(xp, (R, M, d, d), dtype), _random(xp, (R, M, d), dtype, seed=1)
    y = xp.empty_like(A)
    copy_GBps = 2 * A.nbytes / time(_on_all_cores(xp, xp.copyto, y, A)) / 1e9
    y = None  # free the copy target before the mat-vec
    # a copy also reads each written line first on most CPUs, so a kernel that mostly reads can
    # beat "copy bandwidth"; the read rate of the same array (a sum over A) is the tighter roof
    read_GBps = A.nbytes / time(_on_all_cores(xp, xp.sum, A)) / 1e9
    op = matrix_op(xp, "dense", A, R)
    t = time(lambda: op(x))
    GBps = A.itemsize * (R * M * d * d + 2 * R * M * d) / t / 1e9
    return {"ms": 1e3 * t, "GBps": GBps, "copy_GBps": copy_GBps, "fraction_of_copy": GBps / copy_GBps,
            "read_GBps": read_GBps, "fraction_of_read": GBps / read_GBps}


def streamed(xp=np, shapes=STREAMED_CPU, dtypes=("float64", "float32"), repeats=7, log=print) -> list[dict]:
    """Batched mat-vec with ``A`` of shape ``(R, M, d, d)``: GB/s against a copy of ``A``'s size
    and against reading it once (a sum)."""
    time = timer(xp, repeats)
    rows = []
    for dtype in dtypes:
        for R, M, d in shapes:
            row = {"dtype": dtype, "shape": (R, M, d),
                   "A_MiB": R * M * d * d * np.dtype(dtype).itemsize / 2**20}
            rows.append(_measure(xp, row, _streamed_point, xp, time, R, M, d, dtype))
            log("  " + _line(row))
    return rows


def _reference_point(xp, n, dtype, repeats) -> dict:
    a, b = _random(xp, (n, n), dtype), _random(xp, (n, n), dtype, seed=1)
    c = xp.empty_like(a)
    fn = (lambda: np.matmul(a, b, out=c)) if not _gpu(xp) else (lambda: xp.matmul(a, b))
    t = timer(xp, repeats)(fn, inner=3)
    return {"ms": 1e3 * t, "GFLOPs": 2 * n**3 / t / 1e9}


def reference_gemm(xp=np, n=2048, dtype="float64", repeats=3) -> dict:
    """GFLOP/s of one square ``n × n × n`` product (``2n³`` flops): the device's GEMM rate."""
    return _measure(xp, {"n": n, "dtype": dtype}, _reference_point, xp, n, dtype, repeats)


def _gemm_point(xp, time, path, R, M, d, dtype, ref_GFLOPs) -> dict:
    x = _random(xp, (R, M, d), dtype, seed=1)
    if path == "eigenbasis":  # any (d, d) matrix takes the time of an orthogonal one
        op = matrix_op(xp, "eigenbasis", _random(xp, (1, M, d), dtype, seed=2), R,
                       _random(xp, (d, d), dtype, seed=3))
    else:
        op = matrix_op(xp, "dense", _random(xp, (1, M, d, d), dtype, seed=2), R)
    t = time(lambda: op(x))
    GFLOPs = (2 if path == "eigenbasis" else 1) * 2 * R * M * d * d / t / 1e9
    return {"ms": 1e3 * t, "GFLOPs": GFLOPs, "fraction_of_gemm": GFLOPs / ref_GFLOPs}


def gemm(xp=np, shapes=GEMM_CPU, dtypes=("float64", "float32"), reference_n=2048, repeats=5,
         log=print) -> dict:
    """GFLOP/s of the shared-A and eigenbasis gradients against the reference GEMM rate."""
    time = timer(xp, repeats)
    refs, rows = {}, []
    for dtype in dtypes:
        refs[dtype] = ref = reference_gemm(xp, reference_n, dtype, repeats)
        log(f"  reference GEMM {reference_n}³ {dtype}: {ref.get('GFLOPs', float('nan')):.3g} GFLOP/s")
        for R, M, d in shapes:
            for path in PATHS[1:]:
                row = {"path": path, "dtype": dtype, "shape": (R, M, d)}
                rows.append(_measure(xp, row, _gemm_point, xp, time, path, R, M, d, dtype,
                                     ref.get("GFLOPs", float("nan"))))
                log("  " + _line(row))
    return {"reference": refs, "rows": rows}


def step_problems(step=STEP_CPU, seed=0) -> dict:
    """Problems for whole-step timing: dense shared A and eigenbasis at ``step["shared"]``,
    dense per-run instances at ``step["instances"]``; each with its run count."""
    def rand(form, M, d):
        return Quadratic.random(dim=d, n_clients=M, L=1.0, mu=0.01, heterogeneity=1.0, form=form,
                                client_spectra="random", seed=seed)
    R, M, d = step["shared"]
    Ri, Mi, di = step["instances"]
    return {"dense, per run": (_per_run(rand("dense", Ri * Mi, di), Ri), Ri),
            "dense, shared A": (rand("dense", M, d), R), "eigenbasis": (rand("eigenbasis", M, d), R)}


def _per_run(prob: Quadratic, runs: int) -> Quadratic:
    """The ``runs · M`` clients of a dense ``prob`` as ``runs`` instances of ``M`` clients."""
    M, d = prob.n_clients // runs, prob.dim
    return Quadratic(A=prob.A.reshape(runs, M, d, d), b=prob.b.reshape(runs, M, d))


def _simulate(xp, prob, runs, n_steps, dtype):
    x0 = None if not _gpu(xp) else xp.zeros(prob.dim)
    res = simulate(prob, rules.adam(beta=0.99, e=0.1), gamma=0.1, steps=n_steps, sync_every=10,
                   runs=runs, record_every=n_steps, x0=x0, dtype=dtype, fused=True)
    if res.diverged:  # a stopped run would time fewer steps than asked for
        raise AssertionError("benchmark runs diverged")
    return res


def steps(xp=np, step=STEP_CPU, dtype="float64", repeats=3, log=print) -> list[dict]:
    """Whole fused step (adam, global, H = 10, set-up excluded) against its gradient's matrix work."""
    time = timer(xp, repeats)
    rows = []
    for path, (prob, R) in step_problems(step).items():
        row = {"path": path, "dtype": dtype, "shape": (R, prob.n_clients, prob.dim)}
        rows.append(_measure(xp, row, _step_point, xp, time, prob, R, dtype, repeats))
        log("  " + _line(row))
    return rows


def _step_point(xp, time, prob, R, dtype, repeats) -> dict:
    o = prob.bind(xp, getattr(xp, dtype))
    op = matrix_op(xp, prob.form, o.A, R, getattr(o, "Q", None))
    x = _random(xp, (R, prob.n_clients, prob.dim), dtype, seed=1)
    grad_ms = 1e3 * time(lambda: op(x))
    step_ms = 1e3 * steady_step_time(lambda n: _simulate(xp, prob, R, n, dtype), repeats)
    return {"grad_ms": grad_ms, "step_ms": step_ms, "grad_fraction_of_step": grad_ms / step_ms}


def suite(xp=np, quick=False, log=print, keep=None) -> dict:
    """All of the above at the sizes of ``xp``'s device (``QUICK`` ones with ``quick``);
    ``keep(result so far)`` is called after each part (to save it)."""
    keep = keep or (lambda _: None)
    dev = "gpu" if _gpu(xp) else "cpu"
    if quick:
        sizes = dict(QUICK[dev], repeats=(3, 2, 1))
    else:
        sizes = dict(streamed=STREAMED_GPU if dev == "gpu" else STREAMED_CPU,
                     gemm=GEMM_GPU if dev == "gpu" else GEMM_CPU, reference_n=REFERENCE_N[dev],
                     step=STEP_GPU if dev == "gpu" else STEP_CPU, dtypes=("float64", "float32"),
                     repeats=(7, 5, 3))
    r_stream, r_gemm, r_step = sizes["repeats"]
    out = {"checks_relative_gap": check_gradients(xp)}
    log(f"  timed operations against einsum, relative gap: {out['checks_relative_gap']}")
    log("  streamed mat-vec (A per run and client):")
    out["streamed"] = streamed(xp, sizes["streamed"], sizes["dtypes"], r_stream, log)
    keep(out)
    log("  shared A and eigenbasis products:")
    out["gemm"] = gemm(xp, sizes["gemm"], sizes["dtypes"], sizes["reference_n"], r_gemm, log)
    keep(out)
    log("  whole fused steps through simulate:")
    out["steps"] = steps(xp, sizes["step"], "float64", r_step, log)
    return out


def tables(result: dict) -> str:
    """The three Markdown tables of a :func:`suite` result."""
    refs = result["gemm"]["reference"]
    n = next(iter(refs.values()))["n"]
    rates = ", ".join(f"{k} {_fmt_rate(v)}" for k, v in refs.items())
    return "\n\n".join([
        _table(result["streamed"], [("dtype", "dtype"), ("shape", "R, M, d"), ("A_MiB", "A (MiB)"),
                                    ("ms", "ms"), ("GBps", "GB/s"), ("copy_GBps", "copy GB/s"),
                                    ("fraction_of_copy", "fraction of copy"),
                                    ("read_GBps", "read GB/s"), ("fraction_of_read", "fraction of read")]),
        f"reference GEMM {n}³: {rates}\n\n" + _table(
            result["gemm"]["rows"], [("path", "path"), ("dtype", "dtype"), ("shape", "R, M, d"),
                                     ("ms", "ms"), ("GFLOPs", "GFLOP/s"),
                                     ("fraction_of_gemm", "fraction of GEMM")]),
        _table(result["steps"], [("path", "path"), ("dtype", "dtype"), ("shape", "R, M, d"),
                                 ("grad_ms", "A x (ms)"), ("step_ms", "step (ms)"),
                                 ("grad_fraction_of_step", "A x / step")]),
    ])


def _table(rows, columns):
    """``table`` with a note column where some point ran out of memory."""
    return table(rows, columns + [("note", "note")] if any("note" in r for r in rows) else columns)


def _fmt_rate(ref: dict) -> str:
    return f"{ref['GFLOPs']:.3g} GFLOP/s" if "GFLOPs" in ref else ref.get("note", "–")


def _line(row: dict) -> str:
    return ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())
