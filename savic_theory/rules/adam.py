"""Adam-like scaling with bias correction (no first moment).

``v₀ = 0``, ``v_k = β_k v_{k−1} + (1−β_k) s_k`` with ``s₁ = S(x⁰)``, ``c_k = β_k c_{k−1} + (1−β_k)``
(so ``c_k = 1 − β^k`` for constant β), ``D̂ = clip(√(v_k / c_k))``. For constant β this is the
rmsprop rule on ``D²`` whose update ``k − 1`` uses ``(β − β^k)/(1 − β^k)``: Adam's update ``k``
(``k ≥ 2``; its update 1 is rmsprop's initialisation).
"""
from __future__ import annotations

from typing import NamedTuple

from ._base import BetaSchedule, ScalingRule, Statistic, check_e
from ._numerics import ema

__all__ = ["adam"]


class AdamState(NamedTuple):
    v: object  # biased running average of g ⊙ g
    c: object  # bias-correction mass 1 − Π β_j, shape broadcastable to v


def _init(s, beta, xp):
    # Initialisation is update k = 1 from v₀ = 0, c₀ = 0.
    return AdamState((1.0 - beta) * s, (1.0 - beta) + 0.0 * beta)


def _update(state, s, beta, xp):
    return AdamState(ema(state.v, s, beta), ema(state.c, 1.0, beta))


def _diagonal(state, xp):
    return xp.sqrt(state.v / state.c)


def adam(beta=0.999, e=1e-2) -> ScalingRule:
    r"""Adam-like rule (second moment with bias correction) on ``s = g ⊙ g``.

    .. math:: v_k = \beta_k v_{k-1} + (1-\beta_k) s_k,\; v_0 = 0,\; s_1 = S(x^0),\quad
              \hat D = \max\Bigl(e, \sqrt{v_k / (1 - \prod_{j\le k}\beta_j)}\Bigr)

    Parameters
    ----------
    beta : float, array (runs,) or callable ``k -> beta_k``
        In ``[0, 1)``; initialisation consumes ``β₁``, the first sync uses ``β₂``.
    e : float or array (runs,)
        Clip level ``> 0``; ``α = e``.

    Example
    -------
    >>> from savic_theory import rules
    >>> rules.adam(beta=0.9, e=1e-2).init_updates
    1
    """
    return ScalingRule("adam", Statistic.GRAD_SQUARED, _init, _update, _diagonal,
                       BetaSchedule(beta), check_e(e), 1)
