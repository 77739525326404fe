"""Strongly convex quadratics ``f_m(x) = ½ xᵀA_m x − b_mᵀx`` with exact constants.

Three storage forms share one oracle interface:

* ``"diagonal"``: ``A`` of shape ``(M, d)`` holds the diagonals (cheapest: one multiply a step);
* ``"dense"``: ``A`` of shape ``(M, d, d)`` symmetric positive definite (a batched mat-vec);
* ``"eigenbasis"``: one orthogonal ``Q`` and per-client spectra ``(M, d)``,
  ``A_m = Q diag(λ_m) Qᵀ`` (two matrix products a step, whatever M).

A leading instance axis (``A`` of shape ``(I, M, d)`` etc., ``b`` ``(I, M, d)``) holds ``I``
independent problems, one per simulated run, so that a search over problems is one call.
Gradient noise is additive, ``g_m = A_m x − b_m + ξ`` with ``ξ ~ N(0, (σ²/d) I)``.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from .._validation import check_int, check_nonnegative, check_positive
from ._base import Constants, Oracle, Problem, additive_noise, as_generator, as_real_array, check_noise

__all__ = ["Quadratic"]

_FORMS = ("diagonal", "dense", "eigenbasis")


class _Sample(NamedTuple):
    noise: object  # xp array (runs, M, d) or None


class Quadratic(Problem):
    r"""``f(x) = (1/M) Σ_m ½ xᵀA_m x − b_mᵀx`` over ``M`` clients.

    Parameters
    ----------
    A : array (M, d) diagonal, (M, d, d) dense; with a leading instance axis (I, M, d[, d])
        Client Hessians, symmetric positive definite.
    b : array (M, d) or (I, M, d)
        Linear terms.
    noise : float
        ``σ² = E‖ξ‖²`` of the additive Gaussian gradient noise.
    Q : array (d, d), optional
        Orthogonal eigenbasis; then ``A`` holds per-client spectra ``λ_m`` and
        ``A_m = Q diag(λ_m) Qᵀ`` (form ``"eigenbasis"``).

    Example
    -------
    >>> import numpy as np
    >>> from savic_theory import Quadratic
    >>> prob = Quadratic(A=np.array([[1.0, 4.0], [3.0, 2.0]]), b=np.ones((2, 2)))
    >>> float(prob.L), float(prob.mu), prob.x_star.tolist()
    (4.0, 1.0, [0.5, 0.3333333333333333])
    """

    def __init__(self, A, b, noise: float = 0.0, Q=None):
        A = as_real_array("A", A)
        b = as_real_array("b", b)
        self.noise = check_noise(noise)
        if Q is not None:
            Q = as_real_array("Q", Q)
            if Q.ndim != 2 or Q.shape[0] != Q.shape[1]:
                raise ValueError(f"Q must be a square (d, d) matrix, got shape {Q.shape}")
            if not np.allclose(Q.T @ Q, np.eye(Q.shape[0]), atol=1e-10):
                raise ValueError("Q must be orthogonal (QᵀQ = I within 1e-10)")
            form = "eigenbasis"
            if A.ndim != b.ndim:
                raise ValueError(f"with Q, A holds spectra of b's shape {b.shape}; got A of shape {A.shape}")
        elif A.ndim == b.ndim:
            form = "diagonal"
        elif A.ndim == b.ndim + 1:
            form = "dense"
        else:
            raise ValueError(f"A of shape {A.shape} does not fit b of shape {b.shape}: expected "
                             "A (M, d) diagonal or (M, d, d) dense for b (M, d)")
        if b.ndim not in (2, 3):
            raise ValueError(f"b must have shape (M, d) or (instances, M, d), got {b.shape}")
        if b.size == 0:
            what = "instance, one client" if b.ndim == 3 else "client"
            raise ValueError(f"b must have at least one {what} and one coordinate, got shape {b.shape}")
        batched = b.ndim == 3
        if not batched:
            A, b = A[None], b[None]
        inst, M, d = b.shape
        expected = (inst, M, d, d) if form == "dense" else (inst, M, d)
        if A.shape != expected:
            got, want = (A.shape[1:], expected[1:]) if not batched else (A.shape, expected)
            raise ValueError(f"A of shape {got} and b of shape {b.shape[1:] if not batched else b.shape} do "
                             f"not fit: b of this shape needs A of shape {want} ({form}); check both")
        if form == "eigenbasis" and Q.shape[0] != d:
            raise ValueError(f"Q has shape {Q.shape}, expected ({d}, {d})")
        if form == "dense":
            scale = np.max(np.abs(A), axis=(-2, -1), keepdims=True)
            if np.any(np.abs(A - np.swapaxes(A, -1, -2)) > 1e-12 * scale):  # relative: any scale
                raise ValueError("A must be symmetric: A_m ≠ A_mᵀ for some client")
            eig = np.linalg.eigvalsh(A)
        else:
            eig = A
        if np.any(eig <= 0.0):
            raise ValueError("A must be positive definite: some client has an eigenvalue <= 0 "
                             f"(smallest {float(np.min(eig)):.3g})")
        # An eigenvalue must be resolved in float64: a subnormal one loses its digits (and 1/λ
        # overflows); a dense A_m's computed eigenvalues are exact only to about d·ε·‖A_m‖, so
        # a smaller one may as well be 0 (then neither μ nor x* is known).
        floor = (d * np.finfo(np.float64).eps * np.max(np.abs(eig), axis=-1, keepdims=True) if form == "dense"
                 else np.finfo(np.float64).tiny)
        if np.any(eig < floor):
            where = ("within round-off of 0 for a dense A_m (below d·ε·‖A_m‖)" if form == "dense"
                     else "subnormal in float64")
            raise ValueError(f"A is numerically singular: an eigenvalue of {float(np.min(eig)):.3g} is {where}; "
                             "rescale the problem or raise its smallest eigenvalue")
        self.form, self.A, self.b, self.Q = form, A, b, Q
        self.instances, self.n_clients, self.dim = inst, M, d
        self._batched_input = batched
        self._eig = eig

    # ------------------------------------------------------------------ constructors
    @classmethod
    def random(cls, dim: int, n_clients: int = 1, L: float = 1.0, mu: float = 0.1, *,
               heterogeneity: float = 0.0, form: str = "diagonal", client_spectra: str = "identical",
               noise: float = 0.0, seed=0) -> "Quadratic":
        """A random quadratic with the given ``L`` and ``μ`` (exactly; to round-off for ``"dense"``).

        Spectra are log-uniform in ``[μ, L]`` with both ends attained (by client 0 when
        ``client_spectra="random"``). Client minimisers are ``u + heterogeneity · v_m`` with
        ``u, v_m ~ N(0, I/d)``, so ``heterogeneity = 0`` with identical spectra is identical data.

        Parameters
        ----------
        form : {"diagonal", "dense", "eigenbasis"}
            Storage form; dense uses a random orthogonal basis per client (shared when spectra
            are identical), eigenbasis one shared basis.
        client_spectra : {"identical", "random"}
        """
        if form not in _FORMS:
            raise ValueError(f"unknown form {form!r}; known forms: {', '.join(_FORMS)}")
        if client_spectra not in ("identical", "random"):
            raise ValueError(f"client_spectra must be 'identical' or 'random', got {client_spectra!r}")
        dim = check_int("dim", dim, 1)
        n_clients = check_int("n_clients", n_clients, 1)
        L = check_positive("L", L, "the largest eigenvalue")
        mu = check_positive("mu", mu, "the smallest eigenvalue")
        if mu > L:
            raise ValueError(f"need 0 < mu <= L, got mu={mu}, L={L}")
        heterogeneity = check_nonnegative("heterogeneity", heterogeneity)
        noise = check_noise(noise)
        rng = as_generator(seed)
        n_spec = n_clients if client_spectra == "random" else 1
        lam = np.exp(rng.uniform(np.log(mu), np.log(L), size=(n_spec, dim)))
        lam[0, 0] = L
        lam[0, -1] = mu if dim > 1 else L
        if dim == 1 and mu != L:
            raise ValueError("dim = 1 needs mu == L")
        lam = np.broadcast_to(lam, (n_clients, dim)).copy()
        u = rng.standard_normal(dim) / np.sqrt(dim)
        v = rng.standard_normal((n_clients, dim)) / np.sqrt(dim)
        xs = u + heterogeneity * v
        if form == "diagonal":
            return cls(A=lam, b=lam * xs, noise=noise)
        if form == "eigenbasis":
            Q = _orthogonal(rng, dim)
            return cls(A=lam, b=((xs @ Q) * lam) @ Q.T, noise=noise, Q=Q)
        Qs = [_orthogonal(rng, dim) for _ in range(n_spec)]
        A = np.stack([Qs[m % n_spec] @ np.diag(lam[m]) @ Qs[m % n_spec].T for m in range(n_clients)])
        A = 0.5 * (A + np.swapaxes(A, -1, -2))
        return cls(A=A, b=np.einsum("mij,mj->mi", A, xs), noise=noise)

    def with_noise(self, noise: float) -> "Quadratic":
        new = object.__new__(Quadratic)
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k != "constants"})
        new.noise = check_noise(noise)
        return new

    # ------------------------------------------------------------------ host-side maths
    def _matvec(self, x: np.ndarray) -> np.ndarray:
        """``A_m x`` on the host for x of shape (I, d) -> (I, M, d)."""
        if self.form == "diagonal":
            return self.A * x[:, None, :]
        if self.form == "dense":
            return np.einsum("imjk,ik->imj", self.A, x)
        return ((x @ self.Q)[:, None, :] * self.A) @ self.Q.T

    def _squeeze(self, a):
        return a if self._batched_input else a[0]

    def _check_point(self, x) -> np.ndarray:
        """``x`` as float64 of shape ``(d,)`` (``(I, d)`` for batched problems), as ``(I, d)``."""
        x = np.asarray(x, dtype=np.float64)
        want = (self.instances, self.dim) if self._batched_input else (self.dim,)
        if x.shape != want:
            raise ValueError(f"x must have shape {want}, got {x.shape}")
        return x if self._batched_input else x[None]

    def full_grad(self, x: np.ndarray) -> np.ndarray:
        xi = self._check_point(x)
        return self._squeeze(self._matvec(xi) - self.b)

    def objective(self, x: np.ndarray):
        """``f(x)`` on the host, x of shape (d,) (or (I, d) for batched problems)."""
        xi = self._check_point(x)
        val = np.mean(0.5 * np.sum(self._matvec(xi) * xi[:, None, :], -1)
                      - np.sum(self.b * xi[:, None, :], -1), axis=1)
        return self._squeeze(val)

    @functools.cached_property
    def constants(self) -> Constants:
        eig = self._eig
        L = np.max(eig, axis=(1, 2))
        mu = np.min(eig, axis=(1, 2))
        with np.errstate(over="ignore", invalid="ignore"):  # overflow: checked below, named in one error
            bsum = self.b.sum(axis=1)
            if self.form == "diagonal":
                xs = bsum / self.A.sum(axis=1)
            elif self.form == "dense":
                xs = np.linalg.solve(self.A.sum(axis=1), bsum[..., None])[..., 0]
            else:
                xs = (((bsum @ self.Q) / self.A.sum(axis=1)) @ self.Q.T)
            grads = self._matvec(xs) - self.b
            zeta2 = np.mean(np.sum(grads**2, axis=-1), axis=1)
            f_star = np.mean(0.5 * np.sum(self._matvec(xs) * xs[:, None, :], -1)
                             - np.sum(self.b * xs[:, None, :], -1), axis=1)
            size = np.sum(xs**2, axis=-1)
        if not (np.all(np.isfinite(size)) and np.all(np.isfinite(zeta2)) and np.all(np.isfinite(f_star))):
            raise ValueError(f"the problem's constants overflow float64 (x* has entries up to "
                             f"{float(np.max(np.abs(xs))):.3g}, ‖x*‖² = {float(np.max(size)):.3g}): rescale b")
        sigma2 = np.full_like(L, self.noise)
        s = self._squeeze
        return Constants(L=s(L), mu=s(mu), x_star=s(xs), f_star=s(f_star), sigma2=s(sigma2),
                         sigma_dif2=s(sigma2 + zeta2), zeta2=s(zeta2))

    def hessian_bound(self):
        """``max_m max_i Σ_j |A_m,ij|``: the OASIS ``Γ`` before clipping (Gershgorin)."""
        if self.form == "diagonal":
            rows = self.A
        elif self.form == "dense":
            rows = np.abs(self.A).sum(axis=-1)
        else:
            full = np.einsum("aj,imj,bj->imab", self.Q, self.A, self.Q)
            rows = np.abs(full).sum(axis=-1)
        return self._squeeze(np.max(rows, axis=(1, 2)))

    @property
    def identical(self) -> bool:
        """True when every client has the same ``A_m`` and ``b_m``."""
        return bool(np.all(self.A == self.A[:, :1]) and np.all(self.b == self.b[:, :1]))

    def bind(self, xp, dtype) -> Oracle:
        return _QuadraticOracle(self, xp, dtype)

    def __repr__(self) -> str:
        inst = f", instances={self.instances}" if self._batched_input else ""
        return (f"Quadratic(form={self.form!r}, clients={self.n_clients}, dim={self.dim}"
                f"{inst}, noise={self.noise:g})")


class _QuadraticOracle(Oracle):
    def __init__(self, prob: Quadratic, xp, dtype):
        self.xp, self.dtype, self.form = xp, dtype, prob.form
        self.noise, self.dim = prob.noise, prob.dim
        self.runs_of_instances = prob.instances
        a = lambda arr: xp.asarray(np.ascontiguousarray(arr), dtype=dtype)  # noqa: E731
        self.A, self.b = a(prob.A), a(prob.b)
        self.A_mean, self.b_mean = a(prob.A.mean(axis=1)), a(prob.b.mean(axis=1))
        if prob.form == "eigenbasis":
            self.Q, self.QT = a(prob.Q), a(prob.Q.T)
        self.deterministic = prob.noise == 0.0
        self._diag = None
        self._prob = prob

    def draw(self, rng, runs):
        xi = additive_noise(rng, self.noise, (runs, self.A.shape[1], self.dim))
        return _Sample(None if xi is None else self.xp.asarray(xi, dtype=self.dtype))

    def _hess_vec(self, v):
        xp = self.xp
        if self.form == "diagonal":
            return self.A * v
        if self.form == "dense":
            return xp.matmul(self.A, v[..., None])[..., 0]
        return xp.matmul(xp.matmul(v, self.Q) * self.A, self.QT)

    def grad(self, x, sample):
        g = self._hess_vec(x) - self.b
        return g if sample.noise is None else g + sample.noise

    def probe(self, x, sample, z):
        return z * self._hess_vec(z)

    def hessian_diag(self, x, sample):
        if self._diag is None:
            p = self._prob
            if p.form == "diagonal":
                diag = p.A
            elif p.form == "dense":
                diag = np.diagonal(p.A, axis1=-2, axis2=-1)
            else:
                diag = p.A @ (p.Q**2).T  # Σ_j Q_ij² λ_j
            self._diag = self.xp.asarray(np.ascontiguousarray(diag), dtype=self.dtype)
        return self._diag

    def loss(self, x):
        xp = self.xp
        if self.form == "diagonal":
            Ax = self.A_mean * x
        elif self.form == "dense":
            Ax = xp.matmul(self.A_mean, x[..., None])[..., 0]
        else:
            Ax = xp.matmul(xp.matmul(x, self.Q) * self.A_mean, self.QT)
        return xp.sum(0.5 * Ax * x - self.b_mean * x, axis=-1)


def _orthogonal(rng, d):
    from scipy.stats import ortho_group

    return ortho_group.rvs(d, random_state=rng) if d > 1 else np.ones((1, 1))
