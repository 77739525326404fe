"""What every problem gives the simulator and the theory: oracles and exact constants.

A problem is ``f(x) = (1/M) Σ_m f_m(x)`` over ``M`` clients in dimension ``d``. It lives on the
host in float64 NumPy arrays; ``bind(xp, dtype)`` moves its data once to an array namespace
(NumPy, CuPy, ``array_api_strict``) and returns an :class:`Oracle` whose methods use only
array-API operations on arrays of shape ``(runs, clients, d)``.

Randomness (gradient noise, minibatch indices, Rademacher probes) is always drawn on the host
from a ``numpy.random.Generator`` and moved with ``xp.asarray``, so every backend sees the same
numbers for the same seed.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .._validation import check_nonnegative

__all__ = ["Problem", "Oracle", "Constants", "check_noise", "check_finite", "as_real_array", "as_generator"]


@dataclass(frozen=True)
class Constants:
    """Exact constants of a problem (float64; arrays of shape (instances,) for batched problems).

    Attributes
    ----------
    L : smoothness, max over clients of ``λ_max(∇²f_m)`` (sup over x for non-quadratics).
    mu : strong convexity, min over clients of ``λ_min(∇²f_m)`` (inf over x).
    x_star : minimiser of ``f``, shape ``(d,)`` (or ``(instances, d)``).
    f_star : ``f(x*)``.
    sigma2 : gradient noise at the optimum, ``(1/M) Σ_m E‖g_m(x*) − ∇f_m(x*)‖²``; for identical
        data this is ``E‖g(x*)‖²``.
    sigma_dif2 : ``(1/M) Σ_m E‖g_m(x*)‖² = sigma2 + zeta2`` (Khaled, Mishchenko, Richtárik 2020).
    zeta2 : heterogeneity ``(1/M) Σ_m ‖∇f_m(x*)‖²``.
    """

    L: Any
    mu: Any
    x_star: np.ndarray
    f_star: Any
    sigma2: Any
    sigma_dif2: Any
    zeta2: Any

    def as_dict(self) -> dict:
        """The constants as a ``name -> value`` dictionary (field order)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Oracle(abc.ABC):
    """A problem bound to an array namespace; all methods are vectorised over runs and clients."""

    xp: Any
    dtype: Any

    @abc.abstractmethod
    def draw(self, rng: np.random.Generator, runs: int) -> Any:
        """Draw the randomness of one stochastic-gradient call for every run and client."""

    @abc.abstractmethod
    def grad(self, x, sample):
        """Stochastic gradients ``g_m(x_m, ξ)``; ``x`` has shape ``(runs, M, d)``."""

    @abc.abstractmethod
    def probe(self, x, sample, z):
        """Hutchinson probes ``z ⊙ (∇²f_m(x_m, ξ) z)`` (exact Hessian-vector products)."""

    def hessian_diag(self, x, sample):
        """Exact ``diag ∇²f_m(x_m, ξ)`` = ``E_z[z ⊙ (∇²f_m z)]`` (the noise-free OASIS statistic)."""
        raise NotImplementedError(f"{type(self).__name__} has no exact Hessian diagonal")

    #: True when ``grad`` is deterministic (no additive noise, no minibatch sampling)
    deterministic: bool = False

    @abc.abstractmethod
    def loss(self, x):
        """Full objective ``f(x)`` for ``x`` of shape ``(runs, d)``; returns ``(runs,)``."""


class Problem(abc.ABC):
    """Base class of the problems: ``M`` clients, dimension ``d``, additive noise ``σ²``."""

    n_clients: int
    dim: int
    noise: float  # σ² = E‖ξ‖² of the additive Gaussian noise added to every gradient

    #: number of independent problem instances on a leading axis (1: one problem)
    instances: int = 1

    @property
    def batched(self) -> bool:
        """True when the problem carries several independent instances on a leading axis."""
        return self.instances > 1

    @abc.abstractmethod
    def bind(self, xp, dtype) -> Oracle:
        """Move the data to namespace ``xp`` in ``dtype`` and return the oracle."""

    @abc.abstractmethod
    def with_noise(self, noise: float) -> "Problem":
        """The same problem with additive gradient noise ``E‖ξ‖² = noise``."""

    @property
    @abc.abstractmethod
    def constants(self) -> Constants:
        """Exact constants (computed once, cached)."""

    # Convenience accessors ---------------------------------------------------------------
    @property
    def L(self):
        """Smoothness ``L``: the largest ``λ_max(∇²f_m)`` over clients (``constants.L``)."""
        return self.constants.L

    @property
    def mu(self):
        """Strong convexity ``μ``: the smallest ``λ_min(∇²f_m)`` over clients (``constants.mu``)."""
        return self.constants.mu

    @property
    def x_star(self):
        """The minimiser ``x*`` of ``f = (1/M) Σ f_m`` (``constants.x_star``)."""
        return self.constants.x_star

    @property
    def f_star(self):
        """The minimum ``f* = f(x*)`` (``constants.f_star``)."""
        return self.constants.f_star

    @property
    def sigma2(self):
        """Gradient noise ``σ²`` at ``x*`` (``constants.sigma2``)."""
        return self.constants.sigma2

    @property
    def sigma_dif2(self):
        """``σ²_dif`` at ``x*``: noise plus heterogeneity (``constants.sigma_dif2``)."""
        return self.constants.sigma_dif2

    @property
    def zeta2(self):
        """Heterogeneity ``ζ*² = (1/M) Σ ‖∇f_m(x*)‖²`` (``constants.zeta2``)."""
        return self.constants.zeta2

    @abc.abstractmethod
    def full_grad(self, x: np.ndarray) -> np.ndarray:
        """Exact per-client gradients ``∇f_m(x)`` on the host: ``x`` (d,) -> (M, d)
        (batched problems: ``x`` (instances, d) -> (instances, M, d))."""

    def hessian_bound(self):
        """An upper bound on ``max_m max_i Σ_j |∇²f_m|_ij`` over the domain (exact for quadratics):
        the OASIS Γ before clipping when the probes see the full Hessian ``∇²f_m``. A minibatch's
        Hessian can exceed it row by row; ``savic_theory.verify.constants.hessian_row_bound``
        bounds every probe the simulator draws."""
        raise NotImplementedError


def check_noise(noise) -> float:
    """Validate ``σ² ≥ 0``."""
    return check_nonnegative("noise", noise, "σ² = E‖ξ‖²")


def check_finite(name: str, arr: np.ndarray) -> None:
    """Raise a ValueError naming ``name`` when ``arr`` holds NaN or inf."""
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")


def as_real_array(name: str, a) -> np.ndarray:
    """``a`` as a finite float64 array; TypeError naming ``name`` unless it holds real numbers.

    Complex, string, object and ``None`` inputs are refused rather than cast (a cast would drop
    imaginary parts or turn ``None`` into NaN); NaN and inf are a ValueError.
    """
    try:
        raw = np.asarray(a)
    except (TypeError, ValueError) as exc:  # ragged nested sequences
        raise TypeError(f"{name} must be an array of real numbers, got {type(a).__name__}") from exc
    if raw.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be an array of real numbers, got dtype {raw.dtype}")
    arr = raw.astype(np.float64, copy=False)
    check_finite(name, arr)
    return arr


def as_generator(seed) -> np.random.Generator:
    """``seed`` (an int ``>= 0``, a sequence of them, a ``SeedSequence`` or a ``Generator``) as a
    ``numpy.random.Generator``; the error names ``seed`` otherwise."""
    if isinstance(seed, np.random.Generator):
        return seed
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise type(exc)("seed must be a non-negative integer, a SeedSequence or a numpy.random.Generator, "
                        f"got {seed!r}") from exc


def additive_noise(rng: np.random.Generator, noise: float, shape) -> np.ndarray | None:
    """ξ ~ N(0, (σ²/d) I) for each leading index, so that E‖ξ‖² = σ²; None when σ² = 0."""
    if noise == 0.0:
        return None
    return rng.standard_normal(shape) * np.sqrt(noise / shape[-1])
