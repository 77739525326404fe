"""savic_theory: simulate SAVIC (Local SGD with adaptive scaling) and verify its theory.

>>> from savic_theory import Quadratic, simulate, rules

The names below are imported on first use (PEP 562), so that ``import savic_theory.cli`` (the
``savic`` command) starts without NumPy's and SciPy's import time, inside which an interrupt
could not be reported as one line.
"""
import importlib
import importlib.util

__version__ = "0.1.0"

#: public name -> the submodule that defines it
_EXPORTS = {"rules": ".rules", "RULES": ".rules", "Problem": ".problems", "Constants": ".problems",
            "Quadratic": ".problems", "Logistic": ".problems", "simulate": ".simulator",
            "SimulationResult": ".simulator", "SyncSchedule": ".simulator", "SCALINGS": ".simulator"}

__all__ = ["rules", "RULES", "Problem", "Constants", "Quadratic", "Logistic", "simulate", "SimulationResult",
           "SyncSchedule", "SCALINGS", "__version__"]


def __getattr__(name: str):
    if name not in _EXPORTS:
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
            return importlib.import_module(f".{name}", __name__)  # a subpackage, as if imported eagerly
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name], __name__)
    value = module if name == "rules" else getattr(module, name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
