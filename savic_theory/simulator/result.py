"""The typed result of a simulation."""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .._json import finite_or_none

__all__ = ["SimulationResult", "HISTORY_KEYS"]

#: quantities recorded every ``record_every`` steps, one value per run
HISTORY_KEYS = ("dist_sq", "f_gap", "consensus", "alpha_hat", "Gamma_hat", "G_hat", "dist_sq_D")


def _array(values: list) -> np.ndarray:
    """A saved list of parameters as the array it was: numbers, strings, or (mixed, as a
    per-run β of numbers and schedule names) an object array that keeps each entry's type."""
    kinds = {isinstance(v, str) for v in values}
    if len(kinds) > 1:
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    return np.asarray(values)


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`savic_theory.simulate` returns (host NumPy arrays).

    Shapes below are for a batched call; a call without a run axis drops the ``runs`` axis.

    Attributes
    ----------
    x : (runs, M, d) final client iterates.
    x_bar : (runs, d) final average ``x̄ = (1/M) Σ_m x_m``.
    D : (runs, 1, d) global or (runs, M, d) local final scaling ``D̂``.
    steps : (n_records,) steps ``t`` at which ``history`` was recorded (0 and ``T`` included).
    history : name -> (n_records, runs): ``dist_sq`` ‖x̄−x*‖², ``f_gap`` f(x̄)−f*, ``consensus``
        (1/M)Σ‖x_m−x̄‖², ``alpha_hat`` min D̂, ``Gamma_hat`` max D̂, ``G_hat`` the largest
        ``|S_i|`` folded into D̂ so far: in global scaling of the clients' mean statistic, in
        local scaling of each client's own (``√`` of it for ``g ⊙ g`` rules: the ``G`` of the
        bound ``D̂ ≤ max(e, G)``, at most the spec's ``sup‖g‖_∞`` over the gradients used; 0 for
        identity), ``dist_sq_D``
        ‖x̄−x*‖²_D̂ = Σ_i D̂_i (x̄−x*)_i² with the D̂ in force at that step (the clients' mean D̂
        in local scaling) (and ``x_bar`` (n, runs, d) when ``keep_iterates``). Values after a
        run diverged are NaN.
    sync_steps : (n_syncs,) moments at which some run synchronised.
    drift, drift_min : (n_syncs, runs) max and min over coordinates (and clients, for local
        scaling, and over the steps since the last sync) of ``D̂ᵏ⁺¹_i / D̂ᵏ_i``; NaN where a run
        did not synchronise.
    status : (runs,) ``"ok"`` or ``"diverged"``.
    diverged_at : (runs,) first recorded step at which divergence was detected, −1 if none.
    params : the call's parameters (gamma, H, scaling, rule, seed, ...).
    """

    x: np.ndarray
    x_bar: np.ndarray
    D: np.ndarray
    steps: np.ndarray
    history: Mapping[str, np.ndarray]
    sync_steps: np.ndarray
    drift: np.ndarray
    drift_min: np.ndarray
    status: Any
    diverged_at: Any
    problem: Any
    rule: Any
    params: Mapping[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0

    @property
    def batched(self) -> bool:
        """True when the call carried a run axis (arrays keep it even for one run)."""
        return bool(self.params.get("batched", True))

    @property
    def diverged(self) -> bool:
        """True when any run diverged."""
        return bool(np.any(np.asarray(self.status) == "diverged"))

    _ARRAYS = ("x", "x_bar", "D", "steps", "sync_steps", "drift", "drift_min", "status", "diverged_at")

    def save(self, path) -> None:
        """Write the arrays and parameters to an ``.npz`` file atomically (not the problem)."""
        import json
        import os
        import tempfile
        from pathlib import Path

        path = Path(path)
        arrays = {k: np.asarray(getattr(self, k)) for k in self._ARRAYS}
        arrays.update({f"history.{k}": np.asarray(v) for k, v in self.history.items()})
        params = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.params.items()}
        arrays["meta"] = np.array(json.dumps({"params": params, "elapsed": self.elapsed}))
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **arrays)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise

    @classmethod
    def load(cls, path, problem, rule) -> "SimulationResult":
        """Read a result written by :meth:`save`; ``problem`` and ``rule`` are supplied again."""
        import json

        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        meta = json.loads(str(arrays.pop("meta")))
        params = {k: (_array(v) if isinstance(v, list) else v) for k, v in meta["params"].items()}
        history = {k.split(".", 1)[1]: arrays.pop(k) for k in list(arrays) if k.startswith("history.")}
        fields_ = {k: arrays[k] for k in cls._ARRAYS}
        if not params.get("batched", True):
            fields_["status"] = str(fields_["status"])
            fields_["diverged_at"] = int(fields_["diverged_at"])
        return cls(history=history, problem=problem, rule=rule, params=params,
                   elapsed=meta["elapsed"], **fields_)

    def summary(self) -> dict:
        """Final values and statuses as plain Python (JSON-ready).

        Non-finite numbers (a diverged run's NaN, an infinite drift) are written as ``None`` in
        ``final`` and ``max_drift``, so the dictionary passes ``json.dumps(..., allow_nan=False)``.
        """
        final = {k: finite_or_none(np.asarray(v[-1], dtype=np.float64))
                 for k, v in self.history.items() if k != "x_bar"}
        if self.drift.size and not np.all(np.isnan(self.drift)):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a run that never synced: all-NaN
                max_drift = finite_or_none(np.nanmax(self.drift, axis=0))
        else:
            max_drift = None
        c = self.problem.constants
        return {
            "problem": repr(self.problem),
            "rule": list(self.rule.run_names) if getattr(self.rule, "parts", ()) else self.rule.name,
            "params": {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.params.items()},
            "constants": {k: np.asarray(v).tolist() for k, v in c.as_dict().items() if k != "x_star"},
            "final": final,
            "max_drift": max_drift,
            "status": np.asarray(self.status).tolist(),
            "diverged_at": np.asarray(self.diverged_at).tolist(),
            "elapsed_s": self.elapsed,
        }
