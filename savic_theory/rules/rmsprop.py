"""RMSProp-like scaling: ``v₀ = S(x⁰)``, ``v_k = β_k v_{k−1} + (1−β_k) s_k``, ``D̂ = clip(√v)``."""
from __future__ import annotations

from typing import NamedTuple

from ._base import BetaSchedule, ScalingRule, Statistic, check_e
from ._numerics import ema

__all__ = ["rmsprop"]


class RMSPropState(NamedTuple):
    v: object  # running average of g ⊙ g


def _init(s, beta, xp):
    return RMSPropState(s)


def _update(state, s, beta, xp):
    return RMSPropState(ema(state.v, s, beta))


def _diagonal(state, xp):
    return xp.sqrt(state.v)


def rmsprop(beta=0.999, e=1e-2) -> ScalingRule:
    r"""RMSProp-like rule on the statistic ``s = g ⊙ g``.

    .. math:: v_0 = S(x^0),\quad v_k = \beta_k v_{k-1} + (1-\beta_k) s_k,\quad
              \hat D = \max(e, \sqrt{v_k})

    Parameters
    ----------
    beta : float, array (runs,) or callable ``k -> beta_k``
        Averaging weight in ``[0, 1)``; ``k ≥ 1`` counts updates after the initial one.
    e : float or array (runs,)
        Clip level ``> 0``; ``α = e``.

    Example
    -------
    >>> from savic_theory import rules
    >>> rules.rmsprop(beta=0.99, e=1e-3).name
    'rmsprop'
    """
    return ScalingRule("rmsprop", Statistic.GRAD_SQUARED, _init, _update, _diagonal,
                       BetaSchedule(beta), check_e(e), 0)
