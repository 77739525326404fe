"""Numerics shared by the scaling rules: the exponential moving average."""
from __future__ import annotations

__all__ = ["ema"]


def ema(previous, new, beta):
    """``β·previous + (1 − β)·new`` (β broadcastable to the arrays)."""
    return beta * previous + (1.0 - beta) * new
