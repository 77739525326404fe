r"""Compiled CPU kernels (Numba) for the fused path: global scaling on diagonal quadratics, and
the compiler of the generated local-scaling kernels.

Between synchronisations ``D̂`` is fixed, so a client's local step on a diagonal quadratic is the
affine map ``x ← P ⊙ x + q`` with ``c = γ/D̂``, ``P = 1 − c ⊙ a_m``, ``q = c ⊙ b_m``. NumPy needs
two passes over the ``(runs, clients, d)`` iterate per step; these kernels keep one client's row
in cache and take all the steps up to the next event on it, and fold the sync step (gradient,
statistic ``g ⊙ g``, step, average over clients, client mean of the statistic) into one pass.

Every kernel performs the NumPy path's operations on the same operands in the same order (no
fused multiply-add, no reassociation: Numba's default floating-point semantics), and sums over
clients in client order as ``mean(axis=1)`` does; the tests check agreement with the reference
loop. Each kernel is sequential and releases the GIL; the caller splits the runs (which are
independent) over a few Python threads, so the numbers do not depend on the thread count.
(Numba's own ``parallel=True`` thread pool was tried and stalled for milliseconds at every
barrier whenever another process shared the two cores.) The thread count is
:func:`threads`: Numba's setting, ``NUMBA_NUM_THREADS`` or ``numba.set_num_threads``.

This module imports Numba; :mod:`savic_theory.simulator.fused` imports it only when Numba is
installed (``pip install 'savic-theory[fast]'``) and runs the NumPy path otherwise.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import sys
from pathlib import Path

import numba
import numpy as np
from numba import njit

__all__ = ["affine_steps", "noisy_step", "sync_step", "client_spread", "compile_generated", "kernel_cache_dir", "threads"]


def threads() -> int:
    """Threads the fused path may split a kernel call over (Numba's thread setting)."""
    return int(numba.get_num_threads())


@njit(nogil=True, inline="always")
def _affine_pass(xr, ar, br, cr, k, one):  # pragma: no cover - compiled
    """``k`` (at most 8) steps ``x ← x ⊙ p + q`` in one pass over a client row, each element's
    steps in registers; ``p = 1 − c ⊙ a`` and ``q = c ⊙ b`` are formed on the fly (the same
    operations, so the same numbers, as forming them once)."""
    for j in range(xr.shape[0]):
        cj = cr[j]
        pj = one - cj * ar[j]
        qj = cj * br[j]
        v = xr[j]
        for _ in range(k):  # a constant trip count at every call site: unrolled
            v = v * pj + qj
        xr[j] = v


@njit(nogil=True, inline="always")
def _affine_row(xr, ar, br, cr, n, one):  # pragma: no cover - compiled
    """``n`` times ``x ← x ⊙ p + q`` on one client row, in place: passes of eight steps, then
    one each of four, two and one as ``n`` needs (so ``H − 1 = 9`` steps take two passes). The
    row, ``a``, ``b`` and ``c`` are loaded once per pass instead of once per step."""
    for _ in range(n // 8):
        _affine_pass(xr, ar, br, cr, 8, one)
    if n & 4:
        _affine_pass(xr, ar, br, cr, 4, one)
    if n & 2:
        _affine_pass(xr, ar, br, cr, 2, one)
    if n & 1:
        _affine_pass(xr, ar, br, cr, 1, one)


@njit(nogil=True, inline="always")
def _grad_row(g, xr, ar, br, xir, noisy):  # pragma: no cover - compiled
    """``g ← a ⊙ x − b`` on one client row, then ``g ← g + ξ`` when ``noisy`` (the oracle's order)."""
    for j in range(g.shape[0]):
        g[j] = ar[j] * xr[j] - br[j]
    if noisy:
        for j in range(g.shape[0]):
            g[j] = g[j] + xir[j]


@njit(cache=True, nogil=True, error_model="numpy")
def affine_steps(x, a, b, c, n, one):  # pragma: no cover - compiled
    """``n`` times ``x ← P ⊙ x + q`` in place; ``a, b`` (1 or runs, M, d), ``c`` (runs, 1, d).

    One client row at a time: the row, ``a``, ``b`` and ``c`` stay in cache for all ``n`` steps.
    """
    R, M, d = x.shape
    many = a.shape[0] > 1
    per_client = c.shape[1] > 1
    for r in range(R):
        ra = r if many else 0
        for m in range(M):
            _affine_row(x[r, m], a[ra, m], b[ra, m], c[r, m if per_client else 0], n, one)


@njit(cache=True, nogil=True, error_model="numpy")
def noisy_step(x, a, b, c, xi, one):  # pragma: no cover - compiled
    """One step ``x ← P ⊙ x + q − c ⊙ ξ`` in place (``xi`` of the shape of ``x``, ``c`` as above)."""
    R, M, d = x.shape
    many, per_client = a.shape[0] > 1, c.shape[1] > 1
    for r in range(R):
        ra = r if many else 0
        for m in range(M):
            mc = m if per_client else 0
            for j in range(d):
                cj = c[r, mc, j]
                p = one - cj * a[ra, m, j]
                v = x[r, m, j] * p
                v = v + cj * b[ra, m, j]
                x[r, m, j] = v - xi[r, m, j] * cj


@njit(nogil=True, inline="always")
def _sync_row(v, ar, br, cr, xir, noisy, first, one, xb, sb):  # pragma: no cover - compiled
    """The step before a sync on one client row, in one pass: with ``g = a ⊙ v − b (+ ξ)`` at
    the pre-step row ``v`` (read, not written), the stepped row ``v ⊙ (1 − c ⊙ a) + c ⊙ b
    (− ξ ⊙ c)`` is added into ``xb`` and ``s = g ⊙ g`` into ``sb``; ``first`` (the run's first
    client) writes the two instead. The
    stepped row itself is not stored: the average overwrites every client's row. Each of the
    four variants is one loop without a branch on the data, so that it vectorises."""
    d = v.shape[0]
    if noisy:
        if first:
            for j in range(d):
                vj, aj, bj, cj, xj = v[j], ar[j], br[j], cr[j], xir[j]
                g = (aj * vj - bj) + xj
                xb[j] = (vj * (one - cj * aj) + cj * bj) - xj * cj
                s = g * g
                sb[j] = s
        else:
            for j in range(d):
                vj, aj, bj, cj, xj = v[j], ar[j], br[j], cr[j], xir[j]
                g = (aj * vj - bj) + xj
                xb[j] += (vj * (one - cj * aj) + cj * bj) - xj * cj
                s = g * g
                sb[j] += s
    elif first:
        for j in range(d):
            vj, aj, bj, cj = v[j], ar[j], br[j], cr[j]
            g = aj * vj - bj
            xb[j] = vj * (one - cj * aj) + cj * bj
            s = g * g
            sb[j] = s
    else:
        for j in range(d):
            vj, aj, bj, cj = v[j], ar[j], br[j], cr[j]
            g = aj * vj - bj
            xb[j] += vj * (one - cj * aj) + cj * bj
            s = g * g
            sb[j] += s


@njit(nogil=True, inline="always")
def _mean_and_max(sb, count):  # pragma: no cover - compiled
    """The clients' sum ``sb`` of ``s = g ⊙ g`` divided by ``count`` in place; returns the largest
    entry of that mean (the statistic ``D̂`` is built from), NaN when one is NaN (as ``np.max``)."""
    top = count - count  # s ≥ 0: the maximum starts from 0
    for j in range(sb.shape[0]):
        sb[j] = sb[j] / count
        top = sb[j] if sb[j] > top else top
    for j in range(sb.shape[0]):
        top = sb[j] if sb[j] != sb[j] else top
    return top


@njit(cache=True, nogil=True, error_model="numpy")
def sync_step(x, a, b, c, xi, noisy, before, from_mean, write_rows, count, xbar, sbar, smax,
              with_spread, spread_xbar, consensus):  # pragma: no cover
    """``before`` noise-free steps (as :func:`affine_steps`), the step before a sync, the average.

    With ``g = a ⊙ x − b (+ ξ)`` at the pre-step iterate: ``s = g ⊙ g``,
    ``x ← P ⊙ x + q (− c ⊙ ξ)``, then ``x̄ = mean_m x_m`` into ``xbar`` (runs, 1, d) and
    ``x_m ← x̄``; ``sbar ← mean_m s_m`` (runs, 1, d) and ``smax ← max sbar`` (runs,). ``count`` is
    ``M`` in the dtype of ``x``; ``xi`` is read only when ``noisy``. One pass over each client
    row (:func:`_sync_row`), which stays in cache from the ``before`` steps to the sync step.

    The rows of ``x`` after an average are all ``x̄``. ``write_rows = False`` leaves them
    unwritten (``xbar`` holds them), and ``from_mean`` starts every client from ``xbar``
    instead of reading ``x``: the steps then run on a private row in cache, so that a round
    that follows a round this way neither reads nor writes ``x`` (the same numbers: each
    client starts from the very values the write-back would have stored).

    ``with_spread`` also writes what :func:`client_spread` would return for the averaged ``x``
    (a record right after the sync) into ``spread_xbar`` (runs, d) and ``consensus`` (runs,),
    with its operations in its order, from the cached ``x̄`` instead of another pass over ``x``.
    """
    R, M, d = x.shape
    many, per_client = a.shape[0] > 1, c.shape[1] > 1
    one = count / count
    acc = np.empty(8, dtype=x.dtype)
    src = np.empty(d, dtype=x.dtype)
    t = np.empty(d, dtype=x.dtype)
    for r in range(R):
        ra = r if many else 0
        xb, sb = xbar[r, 0], sbar[r, 0]
        if from_mean:  # every client's row: the last average, before xb is overwritten
            for j in range(d):
                src[j] = xb[j]
        for m in range(M):  # the row stays in cache from the `before` steps to the sync step
            ar, br, cr = a[ra, m], b[ra, m], c[r, m if per_client else 0]
            if from_mean:
                for j in range(d):
                    t[j] = src[j]
            row = t if from_mean else x[r, m]
            _affine_row(row, ar, br, cr, before, one)
            _sync_row(row, ar, br, cr, xi[r, m], noisy, m == 0, one, xb, sb)
        for j in range(d):
            xb[j] = xb[j] / count
        smax[r] = _mean_and_max(sb, count)
        if write_rows:
            for m in range(M):
                xr = x[r, m]
                for j in range(d):
                    xr[j] = xb[j]
        if with_spread:
            consensus[r] = _spread_of_copies(xb, M, count, spread_xbar[r], acc)


@njit(cache=True, nogil=True, error_model="numpy")
def mean_grad_squared(x, a, b, xi, noisy, from_mean, xbar, count, sbar, smax,
                      with_spread, spread_xbar, consensus):  # pragma: no cover - compiled
    """The statistic of global scaling's ``D̂⁰`` in one pass and without a full-size buffer:
    ``sbar ← mean_m s_m`` (runs, 1, d) and ``smax ← max sbar`` (runs,) with ``s = g ⊙ g``,
    ``g = a ⊙ x − b (+ ξ)``, in the NumPy path's operations and order (the clients summed in
    order as ``mean(axis=1)`` does); a NaN statistic gives a NaN maximum, as ``np.max``.

    ``with_spread`` also writes :func:`client_spread`'s numbers for ``x`` (the record at step
    0) into ``spread_xbar`` and ``consensus``, while the run's rows are still in cache.
    ``from_mean``: every client's row is ``xbar`` (runs, 1, d), and ``x`` is not read (the
    rows of ``x⁰`` before they are written out; see :func:`sync_step`)."""
    R, M, d = x.shape
    many = a.shape[0] > 1
    g = np.empty(d, dtype=x.dtype)
    acc = np.empty(8, dtype=x.dtype)
    for r in range(R):
        ra = r if many else 0
        sb = sbar[r, 0]
        for m in range(M):
            _grad_row(g, xbar[r, 0] if from_mean else x[r, m], a[ra, m], b[ra, m], xi[r, m], noisy)
            for j in range(d):
                g[j] = g[j] * g[j]
            if m == 0:
                sb[:] = g
            else:
                for j in range(d):
                    sb[j] += g[j]
        smax[r] = _mean_and_max(sb, count)
        if with_spread and from_mean:
            consensus[r] = _spread_of_copies(xbar[r, 0], M, count, spread_xbar[r], acc)
        elif with_spread:
            consensus[r] = _spread_run(x[r], count, spread_xbar[r], acc)


@njit(nogil=True, inline="always")
def _sq_dist(u, v, acc):  # pragma: no cover - compiled
    """``‖u − v‖²`` summed in the eight interleaved partial sums ``acc``, so that its rounding
    error grows like ``d/8``."""
    d = u.shape[0]
    acc[:] = 0
    for j0 in range(0, d - d % 8, 8):
        for k in range(8):
            e = u[j0 + k] - v[j0 + k]
            acc[k] += e * e
    for j in range(d - d % 8, d):
        e = u[j] - v[j]
        acc[0] += e * e
    return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))


@njit(nogil=True, inline="always")
def _spread_run(xr, count, sx, acc):  # pragma: no cover - compiled
    """One run's clients ``xr`` (M, d): ``sx ← mean_m x_m``; returns ``(1/M) Σ_m ‖x_m − x̄‖²``.

    The client mean sums in client order as ``mean(axis=1)`` does; each ``‖x_m − x̄‖²`` is
    :func:`_sq_dist`.
    """
    M, d = xr.shape
    sx[:] = xr[0]
    for m in range(1, M):
        for j in range(d):
            sx[j] += xr[m, j]
    for j in range(d):
        sx[j] = sx[j] / count
    total = count - count
    for m in range(M):
        total += _sq_dist(xr[m], sx, acc)
    return total / count


@njit(nogil=True, inline="always")
def _spread_of_copies(v, M, count, sx, acc):  # pragma: no cover - compiled
    """:func:`_spread_run` of ``M`` clients whose rows are all ``v``, without reading them:
    the same sums in the same order (``sx ← mean_m v``; returns the consensus error)."""
    d = v.shape[0]
    sx[:] = v
    for m in range(1, M):
        for j in range(d):
            sx[j] += v[j]
    for j in range(d):
        sx[j] = sx[j] / count
    row = _sq_dist(v, sx, acc)
    total = count - count
    for m in range(M):  # every client contributes the same row sum
        total += row
    return total / count


@njit(cache=True, nogil=True)
def fill_rows(x, xbar):  # pragma: no cover - compiled
    """``x_m ← x̄`` for every run and client: ``xbar`` (runs, 1, d) written out into ``x``."""
    R, M, d = x.shape
    for r in range(R):
        v = xbar[r, 0]
        for m in range(M):
            xr = x[r, m]
            for j in range(d):
                xr[j] = v[j]


@njit(cache=True, nogil=True, error_model="numpy")
def client_spread(x, count, xbar, consensus):  # pragma: no cover - compiled
    """``xbar ← mean_m x_m`` (runs, d) and ``consensus ← (1/M) Σ_m ‖x_m − x̄‖²`` (runs,), by
    :func:`_spread_run`."""
    acc = np.empty(8, dtype=x.dtype)
    for r in range(x.shape[0]):
        consensus[r] = _spread_run(x[r], count, xbar[r], acc)


# NumPy's maximum/minimum propagate NaN (the first NaN operand), unlike Python's max/min.
@njit(nogil=True, inline="always")
def _nan_max(a, b):  # pragma: no cover - compiled
    return a if a != a else (b if b != b else (a if a > b else b))


@njit(nogil=True, inline="always")
def _nan_min(a, b):  # pragma: no cover - compiled
    return a if a != a else (b if b != b else (a if a < b else b))


def kernel_cache_dir() -> Path:
    """Where generated kernels and their Numba caches are kept: ``$SAVIC_KERNEL_CACHE``, else
    ``$XDG_CACHE_HOME/savic_theory/kernels`` (``~/.cache/savic_theory/kernels``)."""
    if os.environ.get("SAVIC_KERNEL_CACHE"):
        return Path(os.environ["SAVIC_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "savic_theory" / "kernels"


_HEADER = """# Generated by savic_theory.simulator; a cache entry, safe to delete.
import numpy as np
from numba import njit
from savic_theory.simulator._cpu_kernels import _nan_max, _nan_min

"""


@functools.lru_cache(maxsize=1)
def _helpers_stamp() -> str:
    """A line naming this module's version by a hash of its source: the generated module calls
    ``_nan_max``/``_nan_min`` from here, and Numba's cache of a generated module would not see a
    change to them, so a changed helper gives every generated module a new name."""
    digest = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    return f"# helpers: savic_theory.simulator._cpu_kernels {digest} (Numba {numba.__version__})\n\n"


@functools.lru_cache(maxsize=64)
def compile_generated(source: str, name: str):
    """The generated kernel ``name`` defined by ``source``, compiled by Numba.

    ``source`` (for example the local-scaling kernel of
    :func:`savic_theory.simulator.fused.local_numba_source`) may use ``np``, ``_nan_max`` and
    ``_nan_min``. It is written once, atomically, to a module named by its hash in
    :func:`kernel_cache_dir`, so that Numba's on-disk cache serves later processes: the first
    compilation of a kernel takes about a second, a cached one loads in a fraction of that.
    Where that folder cannot be written the kernel is compiled in memory for this process.
    """
    text = _HEADER + _helpers_stamp() + "@njit(cache=True, nogil=True, error_model='numpy')\n" + source
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    module_name = f"savic_kernel_{digest}"
    folder = kernel_cache_dir()
    path = folder / f"{module_name}.py"
    try:
        if not path.exists():
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{module_name}.{os.getpid()}.tmp"
            tmp.write_text(text)
            os.replace(tmp, path)
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # Numba's cache finds the module by name on load
        spec.loader.exec_module(module)
        return getattr(module, name)
    except OSError:  # no writable cache folder: compile for this process only
        namespace = {"np": np, "_nan_max": _nan_max, "_nan_min": _nan_min}
        exec(compile(source, f"<generated {name}>", "exec"), namespace)  # noqa: S102 - our source
        return njit(nogil=True, error_model="numpy")(namespace[name])
