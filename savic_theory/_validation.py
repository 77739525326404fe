"""Argument checks shared by the problems, the simulator and the data loaders."""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_int", "check_positive"]


def check_int(name: str, value, low: int) -> int:
    """``value`` as an ``int ≥ low``; TypeError/ValueError naming ``name`` otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def check_positive(name: str, value, meaning: str = "") -> float:
    """``value`` as a finite ``float > 0``; the error names ``name`` (and its meaning)."""
    what = f" ({meaning})" if meaning else ""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number{what}, got {value!r}")
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be finite and > 0{what}, got {value}")
    return float(value)
