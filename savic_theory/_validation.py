"""Argument checks shared by the problems, the simulator and the data loaders."""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_bool", "check_int", "check_positive", "check_nonnegative"]


def check_bool(name: str, value) -> bool:
    """``value`` as a ``bool``; TypeError naming ``name`` for anything else (``"no"`` is not false)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def check_int(name: str, value, low: int) -> int:
    """``value`` as an ``int ≥ low``; TypeError/ValueError naming ``name`` otherwise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{name} must be >= {low}, got {value}")
    return int(value)


def check_positive(name: str, value, meaning: str = "") -> float:
    """``value`` as a finite ``float > 0``; the error names ``name`` (and its meaning)."""
    return _check_real(name, value, meaning, strict=True)


def check_nonnegative(name: str, value, meaning: str = "") -> float:
    """``value`` as a finite ``float ≥ 0``; the error names ``name`` (and its meaning)."""
    return _check_real(name, value, meaning, strict=False)


def _check_real(name: str, value, meaning: str, strict: bool) -> float:
    """A real number (or a 0-d real array) above 0 (``strict``) or at least 0, as a float.

    TypeError for anything that is not a real number (strings, None, bools, arrays with axes),
    ValueError for NaN, inf and values below the bound; both name ``name``.
    """
    what = f" ({meaning})" if meaning else ""
    word, op = ("positive", ">") if strict else ("non-negative", ">=")
    if isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf":
        value = value[()]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a {word} number{what}, got {value!r}")
    try:
        value = float(value)
    except OverflowError:  # an int beyond the float range
        value = float("inf") if value > 0 else float("-inf")
    if not np.isfinite(value) or (value <= 0 if strict else value < 0):
        raise ValueError(f"{name} must be finite and {op} 0{what}, got {value}")
    return value
