"""The identity rule: ``D̂ = I``, which makes SAVIC plain Local SGD (α = Γ = 1)."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._base import ScalingRule, Statistic

__all__ = ["identity"]


class IdentityState(NamedTuple):
    ones: object


def _init(s, beta, xp):
    return IdentityState(xp.ones_like(s))


def _update(state, s, beta, xp):
    return state


def _diagonal(state, xp):
    return state.ones


def identity() -> ScalingRule:
    """``D̂ = I``: no statistic, no state update; SAVIC with it is Local SGD.

    Example
    -------
    >>> from savic_theory import rules
    >>> rules.identity().name
    'identity'
    """
    return ScalingRule("identity", Statistic.NONE, _init, _update, _diagonal, None,
                       np.asarray(1.0), 0)
