"""OASIS-like scaling: ``D₀ = S(x⁰)``, ``D_k = β_k D_{k−1} + (1−β_k) s_k``, ``D̂ = clip(D)``.

``s = z ⊙ (∇²f_m(x, ξ) z)`` with Rademacher ``z`` (Hutchinson's estimate of diag ∇²f_m).
"""
from __future__ import annotations

from typing import NamedTuple

from ._base import BetaSchedule, ScalingRule, Statistic, check_e
from ._numerics import ema

__all__ = ["oasis"]


class OASISState(NamedTuple):
    D: object  # running average of Hutchinson probes


def _init(s, beta, xp):
    return OASISState(s)


def _update(state, s, beta, xp):
    return OASISState(ema(state.D, s, beta))


def _diagonal(state, xp):
    return state.D


def oasis(beta=0.999, e=1e-2) -> ScalingRule:
    r"""OASIS-like rule on Hutchinson probes of the Hessian diagonal.

    .. math:: D_0 = z\odot\nabla^2 f(x^0) z,\quad D_k = \beta_k D_{k-1} + (1-\beta_k) s_k,\quad
              \hat D = \max(e, |D_k|)

    Parameters
    ----------
    beta : float, array (runs,) or callable ``k -> beta_k``
        In ``[0, 1)``.
    e : float or array (runs,)
        Clip level ``> 0``; ``α = e``.

    Example
    -------
    >>> from savic_theory import rules
    >>> rules.oasis(beta=0.99).statistic.value
    'hessian_probe'
    """
    return ScalingRule("oasis", Statistic.HESSIAN_PROBE, _init, _update, _diagonal,
                       BetaSchedule(beta), check_e(e), 0)
