r"""Exact ``E‖x̄_t − x*‖²`` for diagonal quadratics with additive noise and a prescribed ``D̂``.

When ``D̂`` does not depend on the noise (the identity rule, a fixed preconditioner, or any
deterministic sequence ``D̂⁰, D̂¹, …`` changed at syncs), SAVIC on a diagonal quadratic is a
linear-Gaussian system: every coordinate ``i`` evolves independently,

.. math:: x_{m,i} \leftarrow (1 - \gamma a_{m,i}/\hat D_i)\,x_{m,i} + \gamma b_{m,i}/\hat D_i
          - \gamma \xi_{m,i}/\hat D_i, \qquad \xi_{m,i} \sim N(0, \sigma^2/d),

and averaging at a sync is the projection ``P = 11ᵀ/M`` over the clients. The mean (M, d) and
the client covariance of each coordinate (d, M, M) follow exactly, and
``E‖x̄ − x*‖² = ‖E x̄ − x*‖² + Σ_i 1ᵀC_i1/M²``. This gives sampling-free checks of the theorems
(tests, and the confirmation of adversarial instances of the identity rule).

Example
-------
>>> import numpy as np
>>> from savic_theory.verify.exact import exact_dist_sq
>>> lam = np.array([[1.0, 0.5]]); b = lam * np.array([[1.0, -1.0]])
>>> exact_dist_sq(lam, b, gamma=0.5, steps=2, sync_every=1, noise=0.0).round(6).tolist()
[2.0, 0.8125, 0.378906]
"""
from __future__ import annotations

import numpy as np

from .._validation import check_int

__all__ = ["exact_dist_sq"]


def exact_dist_sq(lam, b, gamma: float, steps: int, sync_every: int = 1, noise: float = 0.0, D=None,
                  x0=None) -> np.ndarray:
    """``E‖x̄_t − x*‖²`` for ``t = 0 … steps``.

    Parameters
    ----------
    lam, b : arrays (M, d)
        Diagonal client Hessians and linear terms, ``f_m = ½ Σ_i lam_mi x_i² − b_mi x_i``.
    gamma : float
    steps : int
    sync_every : int
        ``H``: the clients average after every ``H`` steps.
    noise : float
        ``σ² = E‖ξ‖²`` per client and step.
    D : array (d,) or (n_rounds, d), optional
        The scaling used in each round (row ``p`` from the ``p``-th sync on; the last row is
        reused); default ``I``.
    x0 : array (d,), optional
        Start point of every client (default 0).
    """
    lam = np.asarray(lam, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if lam.ndim != 2 or lam.size == 0:
        raise ValueError(f"lam must be an array (M, d) of diagonal client Hessians, got shape {lam.shape}")
    M, d = lam.shape
    if b.shape != lam.shape:
        raise ValueError(f"b must have the shape of lam {lam.shape}, got {b.shape}")
    if not (np.all(np.isfinite(lam)) and np.all(lam > 0)):
        raise ValueError("lam must be finite and > 0 (positive definite diagonal Hessians)")
    if not np.all(np.isfinite(b)):
        raise ValueError("b must be finite")
    for name, val in (("gamma", gamma), ("noise", noise)):
        if isinstance(val, (bool, str)) or np.ndim(val) != 0 or not np.isfinite(np.asarray(val, dtype=np.float64)):
            raise ValueError(f"{name} must be a finite number, got {val!r}")
    gamma, noise = float(gamma), float(noise)
    if gamma <= 0:
        raise ValueError(f"gamma must be > 0, got {gamma!r}")
    if noise < 0:
        raise ValueError(f"noise (σ²) must be >= 0, got {noise!r}")
    steps, sync_every = check_int("steps", steps, 0), check_int("sync_every", sync_every, 1)
    Ds = np.ones((1, d)) if D is None else np.atleast_2d(np.asarray(D, dtype=np.float64))
    if Ds.ndim != 2 or Ds.shape[1] != d or Ds.shape[0] == 0:
        raise ValueError(f"D must have shape ({d},) or (n_rounds, {d}), got {np.shape(D)}")
    if not (np.all(np.isfinite(Ds)) and np.all(Ds > 0)):
        raise ValueError("D must be finite and > 0")
    if x0 is not None:
        x0 = np.asarray(x0, dtype=np.float64)
        if x0.shape != (d,) or not np.all(np.isfinite(x0)):
            raise ValueError(f"x0 must be a finite array of shape ({d},), got shape {x0.shape}")
    x_star = b.sum(0) / lam.sum(0)
    mean = np.zeros((M, d)) + (0.0 if x0 is None else x0)
    C = np.zeros((d, M, M))
    P = np.full((M, M), 1.0 / M)
    eye = np.eye(M)
    out = np.empty(steps + 1)
    rnd = 0
    for t in range(steps + 1):
        xb = mean.mean(axis=0)
        out[t] = np.sum((xb - x_star) ** 2) + np.einsum("imn->", C) / M**2
        if t == steps:
            break
        step = gamma / Ds[min(rnd, len(Ds) - 1)]
        F = 1.0 - step * lam  # (M, d)
        mean = F * mean + step * b
        C = np.einsum("mi,imn,ni->imn", F, C, F) + (step**2 * noise / d)[:, None, None] * eye
        if (t + 1) % sync_every == 0:
            mean = P @ mean
            C = np.einsum("mk,ikl,nl->imn", P, C, P)
            rnd += 1
    return out
