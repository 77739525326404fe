"""The SAVIC simulator: many runs × clients × d as array axes."""
from .engine import SCALINGS, simulate
from .result import HISTORY_KEYS, SimulationResult
from .schedule import SyncSchedule

__all__ = ["simulate", "SimulationResult", "SyncSchedule", "SCALINGS", "HISTORY_KEYS"]
