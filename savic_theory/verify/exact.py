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

:func:`exact_dist_sq_dense` does the same for dense client Hessians ``A_m``, where coordinates
no longer evolve apart: after a sync every client holds ``x̄``, so a round of ``H`` steps under
one ``D̂`` is an affine map ``x̄ ← G x̄ + c`` plus independent noise of covariance ``N``, and only
the mean (d) and covariance (d × d) of ``x̄`` travel from round to round (``docs/theory.md`` §7
uses it for its counterexample).

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

__all__ = ["exact_dist_sq", "exact_dist_sq_dense"]


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
    gamma, noise, steps, sync_every, Ds, x0 = _check_run(gamma, noise, steps, sync_every, D, x0, d)
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


def exact_dist_sq_dense(A, b, gamma: float, steps: int, sync_every: int = 1, noise: float = 0.0, D=None,
                        x0=None) -> np.ndarray:
    """``E‖x̄_t − x*‖²`` for ``t = 0 … steps`` with dense client Hessians.

    Client ``m`` steps ``x_m ← x_m − γ D̂⁻¹(A_m x_m − b_m + ξ_m)``, ``ξ_m ~ N(0, (σ²/d) I)``
    independent over clients and steps; the clients average every ``H`` steps, and ``D̂`` changes
    only then. Parameters as :func:`exact_dist_sq`, but ``A`` has shape ``(M, d, d)`` (symmetric
    positive definite) and ``x* = (Σ A_m)⁻¹ Σ b_m``. The round maps are computed once per distinct
    row of ``D``: ``O(M d³ H)`` each, then ``O(d³)`` per round and ``O(d²)`` per step.

    Example
    -------
    >>> import numpy as np
    >>> from savic_theory.verify.exact import exact_dist_sq, exact_dist_sq_dense
    >>> lam = np.array([[1.0, 0.5], [2.0, 0.25]]); b = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> A = np.stack([np.diag(row) for row in lam])  # diagonal: both evaluators apply
    >>> bool(np.allclose(exact_dist_sq_dense(A, b, 0.3, 20, 4, noise=0.1),
    ...                  exact_dist_sq(lam, b, 0.3, 20, 4, noise=0.1), rtol=1e-12))
    True
    """
    A = np.asarray(A, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if A.ndim != 3 or A.shape[1] != A.shape[2] or A.size == 0:
        raise ValueError(f"A must be an array (M, d, d) of client Hessians, got shape {A.shape}")
    M, d, _ = A.shape
    if b.shape != (M, d):
        raise ValueError(f"b must have shape (M, d) = {(M, d)}, got {b.shape}")
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(b))):
        raise ValueError("A and b must be finite")
    if not np.allclose(A, np.swapaxes(A, 1, 2), rtol=0.0, atol=1e-12 * np.max(np.abs(A))):
        raise ValueError("A must be symmetric (each A_m a Hessian)")
    if np.min(np.linalg.eigvalsh(A)) <= 0:
        raise ValueError("A must be positive definite (every f_m strongly convex)")
    gamma, noise, steps, H, Ds, x0 = _check_run(gamma, noise, steps, sync_every, D, x0, d)
    x_star = np.linalg.solve(A.sum(0), b.sum(0))
    xb = np.zeros(d) if x0 is None else x0.copy()
    S = np.zeros((d, d))
    out = np.empty(steps + 1)
    out[0] = float(np.sum((xb - x_star) ** 2))
    maps, t, rnd = {}, 0, 0
    while t < steps:
        row = min(rnd, len(Ds) - 1)
        if row not in maps:
            maps[row] = _round_maps(A, b, gamma, H, noise, Ds[row])
        G, c, trN, N_H = maps[row]
        n = min(H, steps - t)
        e = np.einsum("jab,b->ja", G[1:n + 1], xb) + c[1:n + 1] - x_star
        out[t + 1:t + n + 1] = (np.sum(e * e, axis=1) + np.einsum("jab,bc,jac->j", G[1:n + 1], S, G[1:n + 1])
                                + trN[1:n + 1])
        xb, S = G[H] @ xb + c[H], G[H] @ S @ G[H].T + N_H
        t, rnd = t + H, rnd + 1
    return out


def _round_maps(A, b, gamma, H, noise, D):
    """A round with scaling ``D`` started from ``x̄`` on every client: after ``j = 0 … H`` steps
    ``x̄_j = G_j x̄ + c_j`` plus noise of covariance ``N_j``; returns ``G (H+1, d, d)``,
    ``c (H+1, d)``, ``tr N_j (H+1,)`` and ``N_H``."""
    M, d = b.shape
    Dinv = 1.0 / D
    B = np.eye(d) - gamma * Dinv[None, :, None] * A  # (M, d, d): one client step
    c_step, noise_step = gamma * Dinv * b, gamma**2 * noise / d * np.diag(Dinv**2)
    Bj, cj, Nj = np.broadcast_to(np.eye(d), (M, d, d)).copy(), np.zeros((M, d)), np.zeros((M, d, d))
    G, c, N = [np.eye(d)], [np.zeros(d)], [np.zeros((d, d))]
    for _ in range(H):
        cj = np.einsum("mij,mj->mi", B, cj) + c_step
        Nj = B @ Nj @ np.swapaxes(B, 1, 2) + noise_step
        Bj = B @ Bj
        G.append(Bj.mean(0))
        c.append(cj.mean(0))
        N.append(Nj.sum(0) / M**2)  # independent clients: the covariance of their mean
    G, c, N = np.array(G), np.array(c), np.array(N)
    return G, c, np.trace(N, axis1=1, axis2=2), N[H]


def _check_run(gamma, noise, steps, sync_every, D, x0, d):
    """The run arguments shared by both evaluators, checked: ``(γ, σ², T, H, D rows, x0)``."""
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
    return gamma, noise, steps, sync_every, Ds, x0
