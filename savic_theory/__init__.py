"""savic_theory: simulate SAVIC (Local SGD with adaptive diagonal scaling) and verify its theory.

>>> from savic_theory import Quadratic, simulate, rules
"""
from . import rules
from .problems import Constants, Logistic, Problem, Quadratic
from .rules import RULES
from .simulator import SCALINGS, SimulationResult, SyncSchedule, simulate

__version__ = "0.1.0"

__all__ = ["rules", "RULES", "Problem", "Constants", "Quadratic", "Logistic", "simulate", "SimulationResult",
           "SyncSchedule", "SCALINGS", "__version__"]
