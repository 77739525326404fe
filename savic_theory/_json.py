"""Plain-Python values for strict JSON: NaN and infinities become ``None`` (``null``)."""
from __future__ import annotations

import math

import numpy as np

__all__ = ["finite_or_none"]


def finite_or_none(obj):
    """``obj`` with dicts, lists and arrays walked, NumPy values as Python ones, and every
    non-finite float replaced by ``None``, so that ``json.dumps(..., allow_nan=False)`` accepts it.

    >>> finite_or_none({"a": [1.0, float("nan")], "b": np.array([np.inf, 2.0])})
    {'a': [1.0, None], 'b': [None, 2.0]}
    """
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite_or_none(obj.tolist())
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
