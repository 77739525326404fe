"""Array-namespace dispatch: NumPy, CuPy and ``array_api_strict`` through one code path.

CuPy is never imported at module import; it is looked up only when asked for by name or when
an input array already lives on the GPU. Host/device transfers happen only at explicit
boundaries: ``asarray`` when a problem is bound, ``to_numpy`` when results come back.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["namespace", "namespace_name", "to_numpy", "dtype_of"]

_BACKENDS = ("numpy", "cupy", "array_api_strict")


def namespace(backend: Any = None, like: Any = None) -> ModuleType:
    """Return the array namespace for ``backend`` (a name or a module).

    ``None`` picks the namespace of ``like`` when it is a non-NumPy array (a CuPy ``x0`` runs
    on the GPU), otherwise NumPy.
    """
    if backend is None:
        if like is not None and not isinstance(like, (np.ndarray, np.generic, list, tuple, float, int)):
            import array_api_compat

            return array_api_compat.array_namespace(like)
        return np
    if isinstance(backend, ModuleType):
        return backend
    if backend == "numpy":
        return np
    if backend == "cupy":
        try:
            return importlib.import_module("array_api_compat.cupy")
        except ImportError as exc:  # name what is missing: CuPy itself, or array-api-compat
            missing = getattr(exc, "name", None) or str(exc)
            raise ValueError(f"backend 'cupy' needs CuPy, array-api-compat and a CUDA device ({missing} could "
                             "not be imported): pip install 'savic-theory[gpu]'") from exc
    if backend == "array_api_strict":
        try:
            return importlib.import_module("array_api_strict")
        except ImportError as exc:
            raise ValueError("backend 'array_api_strict' needs the array-api-strict package") from exc
    raise ValueError(f"unknown backend {backend!r}; known backends: {', '.join(_BACKENDS)}")


def namespace_name(xp: ModuleType) -> str:
    name = xp.__name__
    return name.split(".")[-1] if name.startswith("array_api_compat.") else name.split(".")[0]


def to_numpy(a: Any) -> np.ndarray:
    """Copy an array of any supported namespace to a host NumPy array."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "get") and type(a).__module__.startswith("cupy"):
        return a.get()
    try:
        return np.from_dlpack(a)
    except (TypeError, AttributeError, BufferError, RuntimeError):
        return np.asarray(a)


def dtype_of(xp: ModuleType, dtype: Any):
    """The namespace's float dtype for ``"float64"``/``"float32"`` (or NumPy dtypes of those)."""
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in ("float64", "float32"):
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    return getattr(xp, name)
