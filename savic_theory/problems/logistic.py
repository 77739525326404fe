r"""L2-regularised logistic regression over clients, with exact constants.

Client ``m`` holds ``n_m`` rows ``(a_i, y_i)``, ``y_i ∈ {−1, +1}``, and

.. math:: f_m(x) = \frac{1}{n_m}\sum_{i=1}^{n_m} \log\bigl(1 + e^{-y_i a_i^\top x}\bigr)
          + \frac{\lambda}{2}\|x\|^2, \qquad f = \frac1M \sum_m f_m .

Clients may hold different numbers of rows: the rows are stored padded to ``(M, n_max, d)``
with zero rows and a per-client weight ``1/n_m`` on real rows (0 on padding), so one batched
product serves all clients. Only the signed rows ``b_i = y_i a_i`` enter the maths:
``∇ℓ_i = −σ(−b_iᵀx) b_i`` and ``∇²ℓ_i = σ(b_iᵀx) σ(−b_iᵀx) b_i b_iᵀ``.

Stochastic gradients: the full client gradient (``batch_size=None``), or the mean over ``b``
rows drawn uniformly **with replacement** from the client's rows, independently per run, client
and call; additive Gaussian noise ``ξ ~ N(0, (σ²/d) I)`` may be added on top. Hutchinson probes
use the exact Hessian-vector product of the same minibatch.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
import scipy.linalg
from scipy.special import expit

from .._validation import check_int, check_nonnegative, check_positive
from ._base import Constants, Oracle, Problem, additive_noise, as_generator, as_real_array, check_noise
from .data import _check_alpha, binary_labels, load_data, split_clients

__all__ = ["Logistic"]

#: Newton's method stops when ‖∇f(x)‖ ≤ this (float64)
NEWTON_TOL = 1e-12
NEWTON_MAX_ITER = 100


class _Sample(NamedTuple):
    index: np.ndarray | None  # host (runs, M, b) row indices within each client; None: full batch
    rows: object  # xp (runs, M, b, d) signed rows y_i a_i of the minibatch; None: full batch
    noise: object  # xp (runs, M, d) additive noise, or None


class Logistic(Problem):
    r"""``f(x) = (1/M) Σ_m [(1/n_m) Σ_i log(1 + exp(−y_i a_iᵀx)) + (λ/2)‖x‖²]`` over ``M`` clients.

    Constants (exact): ``L = max_m λ_max(A_mᵀA_m)/(4 n_m) + λ`` (the sup over ``x`` of
    ``λ_max ∇²f_m``, attained at ``x = 0`` where every ``σ(1−σ) = 1/4``); ``μ = λ``; ``x*`` by
    Newton's method to ``‖∇f(x*)‖ ≤ 1e-12``; ``σ² = (1/M) Σ_m V_m / b + σ²_ξ`` with ``V_m`` the
    variance of one row's gradient at ``x*`` (minibatch of ``b`` rows with replacement; 0 for
    the full gradient); ``ζ*² = (1/M) Σ_m ‖∇f_m(x*)‖²``; ``σ_dif² = σ² + ζ*²``.

    Parameters
    ----------
    features_per_client : sequence of M arrays (n_m, d)
        Client ``m``'s feature rows ``a_i``.
    labels_per_client : sequence of M arrays (n_m,)
        Labels in ``{−1, +1}`` (map other labellings with ``data.binary_labels``).
    lam : float
        ``λ > 0``, the L2 weight (and the strong convexity ``μ``).
    batch_size : int, optional
        ``b ≥ 1`` rows per stochastic gradient, drawn with replacement; ``None`` (default) uses
        all of the client's rows (deterministic gradients when ``noise = 0``).
    noise : float
        ``σ²_ξ = E‖ξ‖²`` of additive Gaussian noise added to every stochastic gradient.

    Example
    -------
    >>> import numpy as np
    >>> from savic_theory.problems.logistic import Logistic
    >>> A = [np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[1.0, 1.0]])]
    >>> y = [np.array([1.0, -1.0]), np.array([1.0])]
    >>> prob = Logistic(A, y, lam=0.1)
    >>> float(prob.L), float(prob.mu)          # max(4/(4·2), 2/(4·1)) + 0.1
    (0.6, 0.1)
    >>> bool(np.linalg.norm(prob.full_grad(prob.x_star).mean(axis=0)) <= 1e-12)
    True
    """

    def __init__(self, features_per_client, labels_per_client, lam: float = 1e-2,
                 batch_size: int | None = None, noise: float = 0.0):
        feats = _client_arrays("features_per_client", features_per_client, ndim=2)
        labels = _client_arrays("labels_per_client", labels_per_client, ndim=1)
        if len(labels) != len(feats):
            raise ValueError(f"labels_per_client has {len(labels)} clients, features_per_client {len(feats)}")
        d = feats[0].shape[1]
        for m, (a, y) in enumerate(zip(feats, labels)):
            if a.shape[0] < 1 or a.shape[1] != d:
                raise ValueError(f"features_per_client[{m}] has shape {a.shape}; every client needs "
                                 f">= 1 row and the same d = {d}")
            if y.shape[0] != a.shape[0]:
                raise ValueError(f"labels_per_client[{m}] has {y.shape[0]} labels for {a.shape[0]} rows")
            if not np.all((y == 1.0) | (y == -1.0)):
                raise ValueError(f"labels_per_client[{m}] must hold only -1 and +1; map other "
                                 "labellings with savic_theory.problems.data.binary_labels")
        if d < 1:
            raise ValueError("features_per_client must have d >= 1 columns")
        self.lam = _check_lam(lam)
        self.batch_size = None if batch_size is None else check_int("batch_size", batch_size, 1)
        self.noise = check_noise(noise)
        M = len(feats)
        counts = np.array([a.shape[0] for a in feats], dtype=np.int64)
        n_max = int(counts.max())
        A = np.zeros((M, n_max, d))
        y = np.zeros((M, n_max))
        for m, (a, lab) in enumerate(zip(feats, labels)):
            A[m, : a.shape[0]] = a
            y[m, : a.shape[0]] = lab
        self.A, self.y, self.counts = A, y, counts
        self.mask = np.arange(n_max)[None, :] < counts[:, None]  # (M, n_max) real rows
        self.signed = y[:, :, None] * A  # b_i = y_i a_i, zero on padding
        self.weights = self.mask / counts[:, None]  # 1/n_m on real rows, 0 on padding
        self.n_clients, self.dim = M, d

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_arrays(cls, X, y, n_clients: int = 1, split: str = "iid", *, lam: float = 1e-2,
                    batch_size: int | None = None, noise: float = 0.0, alpha: float = 0.5,
                    shards_per_client: int = 2, seed=0) -> "Logistic":
        """One data set ``X (n, d)``, ``y (n,)`` (any two-class labelling) split over ``n_clients``.

        ``split``, ``alpha``, ``shards_per_client`` and ``seed`` are those of
        :func:`savic_theory.problems.data.split_clients`.

        Example
        -------
        >>> import numpy as np
        >>> from savic_theory.problems.logistic import Logistic
        >>> rng = np.random.default_rng(0)
        >>> X, y = rng.standard_normal((40, 3)), rng.integers(0, 2, 40)
        >>> Logistic.from_arrays(X, y, n_clients=4, split="dirichlet", alpha=0.1).counts.sum().item()
        40
        """
        _check_options(lam, batch_size, noise)
        y = binary_labels(y, name="y")
        feats, labels = split_clients(X, y, n_clients, split, alpha=alpha,
                                      shards_per_client=shards_per_client, seed=seed)
        return cls(feats, labels, lam=lam, batch_size=batch_size, noise=noise)

    @classmethod
    def from_dataset(cls, name_or_path, n_clients: int = 1, split: str = "iid", *, lam: float = 1e-2,
                     batch_size: int | None = None, noise: float = 0.0, alpha: float = 0.5,
                     shards_per_client: int = 2, seed=0) -> "Logistic":
        """A bundled scikit-learn data set (by name) or a LIBSVM file (by path) over ``n_clients``.

        Names are those of ``data.DATASETS`` (standardised features); any path is read with
        ``data.load_libsvm``. The other arguments are those of :meth:`from_arrays`.

        Example
        -------
        >>> from savic_theory.problems.logistic import Logistic
        >>> prob = Logistic.from_dataset("breast_cancer", n_clients=4, split="shards", lam=0.01)
        >>> prob.n_clients, prob.dim, int(prob.counts.sum())
        (4, 30, 569)
        """
        _check_options(lam, batch_size, noise)
        check_int("n_clients", n_clients, 1)
        if split == "dirichlet":
            _check_alpha(alpha)
        X, y = load_data(name_or_path)
        return cls.from_arrays(X, y, n_clients, split, lam=lam, batch_size=batch_size, noise=noise,
                               alpha=alpha, shards_per_client=shards_per_client, seed=seed)

    @classmethod
    def random(cls, n_clients: int, n_per_client, dim: int, lam: float = 1e-2, *,
               heterogeneity: float = 0.0, batch_size: int | None = None, noise: float = 0.0,
               seed=0) -> "Logistic":
        r"""Synthetic data: Gaussian features, labels from a planted logistic model.

        With common draws ``g_i ~ N(0, I_d)``, ``u_i ~ U(0, 1)`` (shared by all clients),
        ``w₀ ~ N(0, 4I/d)``, and per-client directions ``s_m ~ N(0, I/d)``, ``v_m ~ N(0, 4I/d)``:
        client ``m`` has rows ``a_{m,i} = g_i + h s_m`` (``h`` = ``heterogeneity``) and labels
        ``y_{m,i} = +1`` if ``u_i < σ(a_{m,i}ᵀ(w₀ + h v_m))`` else ``−1``. Thus ``h = 0`` gives
        every client exactly the same rows (identical data, ``ζ*² = 0`` up to round-off; this
        needs equal ``n_per_client``), and growing ``h`` shifts each client's feature mean and
        planted model apart so ``ζ*²`` grows. All draws are made whatever ``h``, so problems
        with the same seed and different ``h`` share their random numbers.

        Parameters
        ----------
        n_clients : int
        n_per_client : int or sequence of M ints
            Rows per client (client ``m`` uses the first ``n_m`` common draws).
        dim : int
        lam, batch_size, noise : as in :class:`Logistic`
        heterogeneity : float
            ``h ≥ 0``.
        seed : int or numpy.random.Generator

        Example
        -------
        >>> from savic_theory.problems.logistic import Logistic
        >>> same = Logistic.random(n_clients=3, n_per_client=20, dim=4, lam=0.1)
        >>> same.identical, float(same.zeta2) < 1e-24
        (True, True)
        >>> bool(Logistic.random(3, 20, 4, lam=0.1, heterogeneity=1.0).zeta2 > 1e-3)
        True
        """
        M = check_int("n_clients", n_clients, 1)
        d = check_int("dim", dim, 1)
        if isinstance(n_per_client, (int, np.integer)) and not isinstance(n_per_client, (bool, np.bool_)):
            counts = [check_int("n_per_client", n_per_client, 1)] * M
        else:
            counts = list(n_per_client) if isinstance(n_per_client, (list, tuple, np.ndarray)) else None
            if counts is None or len(counts) != M:
                raise TypeError(f"n_per_client must be an integer or a sequence of {M} integers, got {n_per_client!r}")
            counts = [check_int(f"n_per_client[{m}]", c, 1) for m, c in enumerate(counts)]
        h = check_nonnegative("heterogeneity", heterogeneity)
        _check_options(lam, batch_size, noise)
        rng = as_generator(seed)
        n = max(counts)
        base = rng.standard_normal((n, d))
        u = rng.random(n)
        w0 = rng.standard_normal(d) * (2.0 / np.sqrt(d))
        shift = rng.standard_normal((M, d)) / np.sqrt(d)
        dw = rng.standard_normal((M, d)) * (2.0 / np.sqrt(d))
        feats, labels = [], []
        for m, n_m in enumerate(counts):
            a = base[:n_m] + h * shift[m]
            feats.append(a)
            labels.append(np.where(u[:n_m] < expit(a @ (w0 + h * dw[m])), 1.0, -1.0))
        return cls(feats, labels, lam=lam, batch_size=batch_size, noise=noise)

    def with_noise(self, noise: float) -> "Logistic":
        """The same data and minibatch size with additive noise ``E‖ξ‖² = noise``."""
        new = object.__new__(Logistic)
        new.__dict__.update({k: v for k, v in self.__dict__.items() if k != "constants"})
        new.noise = check_noise(noise)
        return new

    # ------------------------------------------------------------------ host-side maths
    def _margins(self, x: np.ndarray) -> np.ndarray:
        """``t_i = b_iᵀx`` for every client and row: (M, n_max)."""
        return self.signed @ x

    def objective(self, x) -> float:
        """``f(x)`` on the host for ``x`` of shape ``(d,)``."""
        x = self._check_point(x)
        t = self._margins(x)
        return float(np.mean(np.sum(self.weights * np.logaddexp(0.0, -t), axis=1)) + 0.5 * self.lam * x @ x)

    def full_grad(self, x) -> np.ndarray:
        """Exact per-client gradients ``∇f_m(x) = −(1/n_m) Σ_i σ(−b_iᵀx) b_i + λx``: (d,) -> (M, d)."""
        x = self._check_point(x)
        c = self.weights * expit(-self._margins(x))
        return self.lam * x - np.einsum("mi,mid->md", c, self.signed)

    def client_hessians(self, x) -> np.ndarray:
        """Exact ``∇²f_m(x) = (1/n_m) Σ_i σ(t_i)σ(−t_i) b_i b_iᵀ + λI`` for every client: (M, d, d)."""
        x = self._check_point(x)
        t = self._margins(x)
        c = self.weights * expit(t) * expit(-t)
        return np.einsum("mi,mij,mik->mjk", c, self.signed, self.signed) + self.lam * np.eye(self.dim)

    def _check_point(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape != (self.dim,):
            raise ValueError(f"x must have shape ({self.dim},), got {x.shape}")
        return x

    @functools.cached_property
    def _optimum(self):
        """``x*``, ``f*``, per-client gradients at ``x*`` and per-client row-gradient variances."""
        x = _newton(self)
        t = self._margins(x)
        rows = -expit(-t)[:, :, None] * self.signed  # ∇ℓ_i(x*) without the λx* term
        mean = np.einsum("mi,mid->md", self.weights, rows)
        dev = (rows - mean[:, None, :]) * self.mask[:, :, None]
        row_var = np.einsum("mi,mid->m", self.weights, dev**2)  # (1/n_m) Σ_i ‖∇ℓ_i − ∇ℓ̄‖²
        return x, self.objective(x), mean + self.lam * x, row_var

    @functools.cached_property
    def constants(self) -> Constants:
        x_star, f_star, grads, row_var = self._optimum
        top = []
        for m in range(self.n_clients):
            a = self.A[m, : self.counts[m]]
            gram = a.T @ a if a.shape[1] <= a.shape[0] else a @ a.T  # same nonzero spectrum
            top.append(scipy.linalg.eigvalsh(gram, subset_by_index=[gram.shape[0] - 1] * 2)[0] / self.counts[m])
        L = 0.25 * max(top) + self.lam
        zeta2 = float(np.mean(np.sum(grads**2, axis=1)))
        sampling = 0.0 if self.batch_size is None else float(np.mean(row_var)) / self.batch_size
        sigma2 = sampling + self.noise
        return Constants(L=float(L), mu=self.lam, x_star=x_star, f_star=f_star, sigma2=sigma2,
                         sigma_dif2=sigma2 + zeta2, zeta2=zeta2)

    @property
    def L_sample(self) -> float:
        """``max_i ‖a_i‖²/4 + λ``: smoothness of one row's loss ``ℓ_i + (λ/2)‖x‖²`` (sup over x)."""
        return float(0.25 * np.max(np.sum(self.A**2, axis=-1)) + self.lam)

    def hessian_bound(self) -> float:
        r"""``max_m max_j [(1/(4n_m)) Σ_i |a_ij| ‖a_i‖₁] + λ ≥ sup_x max_j Σ_k |∇²f_m(x)|_jk``.

        Uses ``σ(1−σ) ≤ 1/4`` and ``|Σ_i w_i a_ij a_ik| ≤ Σ_i w_i |a_ij||a_ik|``: the OASIS
        ``Γ`` before clipping for full-batch probes. With ``batch_size`` set the probes take a
        minibatch's Hessian, whose row sums may exceed this (up to ``max_i |a_ij| ‖a_i‖₁/4 + λ``,
        ``savic_theory.verify.constants.hessian_row_bound``).
        """
        absA = np.abs(self.A)
        rows = np.einsum("mij,mi->mj", absA, absA.sum(axis=-1)) / (4.0 * self.counts[:, None])
        return float(np.max(rows) + self.lam)

    @property
    def identical(self) -> bool:
        """True when every client holds exactly the same rows and labels."""
        return bool(np.all(self.counts == self.counts[0]) and np.all(self.A == self.A[:1])
                    and np.all(self.y == self.y[:1]))

    def bind(self, xp, dtype) -> Oracle:
        return _LogisticOracle(self, xp, dtype)

    def __repr__(self) -> str:
        b = "full" if self.batch_size is None else self.batch_size
        return (f"Logistic(clients={self.n_clients}, dim={self.dim}, rows={int(self.counts.sum())}, "
                f"lam={self.lam:g}, batch_size={b}, noise={self.noise:g})")


def _newton(prob: Logistic) -> np.ndarray:
    """Minimise ``f`` by Newton's method with Armijo backtracking, from ``x = 0``."""
    x = np.zeros(prob.dim)
    gnorm = np.inf
    for _ in range(NEWTON_MAX_ITER):
        g = prob.full_grad(x).mean(axis=0)
        gnorm = np.linalg.norm(g)
        if gnorm <= NEWTON_TOL:
            break
        H = prob.client_hessians(x).mean(axis=0)
        p = -scipy.linalg.solve(H, g, assume_a="pos")
        decrement = -g @ p  # (Newton decrement)², > 0
        step = 1.0
        if decrement > 1e-10:  # backtrack while decreases of f are resolvable in float64
            f0 = prob.objective(x)
            while prob.objective(x + step * p) > f0 - 0.25 * step * decrement and step > 1e-12:
                step *= 0.5
        x = x + step * p
    else:
        g = prob.full_grad(x).mean(axis=0)
        gnorm = np.linalg.norm(g)
    if not gnorm <= NEWTON_TOL:
        raise ValueError(f"Newton's method reached only ‖∇f(x)‖ = {gnorm:.3g} > {NEWTON_TOL:g} after "
                         f"{NEWTON_MAX_ITER} iterations; standardise the features or increase lam")
    return x


class _LogisticOracle(Oracle):
    def __init__(self, prob: Logistic, xp, dtype):
        self.xp, self.dtype = xp, dtype
        self.lam, self.noise, self.batch_size = prob.lam, prob.noise, prob.batch_size
        self.n_clients, self.dim = prob.n_clients, prob.dim
        self.deterministic = prob.batch_size is None and prob.noise == 0.0
        a = lambda arr: xp.asarray(np.ascontiguousarray(arr), dtype=dtype)  # noqa: E731
        M, n, d = prob.signed.shape
        self.B = a(prob.signed)  # (M, n, d)
        self.Bt = a(np.swapaxes(prob.signed, 1, 2))  # (M, d, n)
        self.weights = a(prob.weights[:, None, :])  # (M, 1, n)
        self._B2 = None  # b_i ⊙ b_i, made on first use by hessian_diag
        self._counts = prob.counts[:, None]  # host (M, 1)
        self._offsets = (np.arange(M) * n)[:, None]  # host (M, 1): row of client m in the flat array
        self._flat = a(prob.signed.reshape(M * n, d)) if prob.batch_size is not None else None
        self._prob = prob

    def draw(self, rng, runs):
        xp, M, d = self.xp, self.n_clients, self.dim
        index = rows = None
        if self.batch_size is not None:
            b = self.batch_size
            index = rng.integers(0, self._counts, size=(runs, M, b))
            flat = xp.asarray((index + self._offsets).reshape(-1), dtype=xp.int64)
            rows = xp.reshape(xp.take(self._flat, flat, axis=0), (runs, M, b, d))
        xi = additive_noise(rng, self.noise, (runs, M, d))
        return _Sample(index, rows, None if xi is None else xp.asarray(xi, dtype=self.dtype))

    def _data(self, sample):
        """Rows ``(…, n, d)``, their transpose ``(…, d, n)`` and row weights of ``f_m(·; ξ)``."""
        if sample.rows is None:
            return self.B, self.Bt, self.weights
        return sample.rows, self.xp.permute_dims(sample.rows, (0, 1, 3, 2)), 1.0 / self.batch_size

    def _margins(self, x, rows_t):
        """``t = b_iᵀx`` as (runs, M, 1, n)."""
        return self.xp.matmul(x[:, :, None, :], rows_t)

    def grad(self, x, sample):
        xp = self.xp
        rows, rows_t, w = self._data(sample)
        c = w * _sigmoid(xp, -self._margins(x, rows_t))
        g = self.lam * x - xp.matmul(c, rows)[:, :, 0, :]
        return g if sample.noise is None else g + sample.noise

    def _curvature(self, x, rows_t, w):
        """Row weights of the Hessian, ``w_i σ(t_i) σ(−t_i)``: (runs, M, 1, n)."""
        xp = self.xp
        e = xp.exp(-xp.abs(self._margins(x, rows_t)))
        return w * (e / ((1.0 + e) * (1.0 + e)))  # σ(t)σ(−t) = e^{−|t|} / (1 + e^{−|t|})²

    def probe(self, x, sample, z):
        xp = self.xp
        rows, rows_t, w = self._data(sample)
        c = self._curvature(x, rows_t, w) * xp.matmul(z[:, :, None, :], rows_t)  # w_i σσ' b_iᵀz
        return z * (xp.matmul(c, rows)[:, :, 0, :] + self.lam * z)

    def hessian_diag(self, x, sample):
        xp = self.xp
        rows, rows_t, w = self._data(sample)
        if sample.rows is None:
            if self._B2 is None:
                self._B2 = self.B * self.B
            sq = self._B2
        else:
            sq = rows * rows
        return xp.matmul(self._curvature(x, rows_t, w), sq)[:, :, 0, :] + self.lam

    def loss(self, x):
        xp = self.xp
        t = xp.matmul(x[:, None, None, :], self.Bt)  # (runs, M, 1, n)
        per_client = xp.sum(self.weights * _softplus(xp, -t), axis=(2, 3))
        return xp.mean(per_client, axis=1) + (0.5 * self.lam) * xp.sum(x * x, axis=-1)


def _softplus(xp, t):
    """``log(1 + exp(t)) = max(t, 0) + log1p(exp(−|t|))`` without overflow."""
    a = xp.abs(t)
    return 0.5 * (t + a) + xp.log1p(xp.exp(-a))


def _sigmoid(xp, t):
    """``σ(t) = 1/(1 + exp(−t))`` without overflow: ``1/(1+e)`` or ``e/(1+e)``, ``e = exp(−|t|)``."""
    e = xp.exp(-xp.abs(t))
    r = 1.0 / (1.0 + e)
    return xp.where(t >= 0, r, e * r)


def _client_arrays(name, seq, ndim):
    if isinstance(seq, np.ndarray) or not isinstance(seq, (list, tuple)):
        raise TypeError(f"{name} must be a list with one array per client, got {type(seq).__name__}")
    if len(seq) == 0:
        raise ValueError(f"{name} must hold at least one client")
    out = []
    for m, arr in enumerate(seq):
        arr = as_real_array(f"{name}[{m}]", arr)
        if arr.ndim != ndim:
            raise ValueError(f"{name}[{m}] must be {ndim}-D, got shape {arr.shape}")
        out.append(arr)
    return out


def _check_lam(lam):
    return check_positive("lam", lam, "the L2 weight λ = μ")


def _check_options(lam, batch_size, noise) -> None:
    """Check the constructor's numeric options before any data is made or loaded."""
    _check_lam(lam)
    if batch_size is not None:
        check_int("batch_size", batch_size, 1)
    check_noise(noise)
