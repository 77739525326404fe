"""Experiments declared as data: a problem, a rule and a run, validated before anything runs.

A config is a mapping with three tables, each key optional (defaults below), e.g. in TOML::

    [problem]
    kind = "quadratic"      # or "logistic"
    dim = 20
    clients = 8
    heterogeneity = 1.0

    [rule]
    name = "adam"
    beta = 0.99
    e = 0.01

    [run]
    gamma = 0.05
    steps = 2000
    sync_every = 10
    scaling = ["global", "local"]

``run.gamma``, ``run.sync_every``, ``rule.beta``, ``rule.e`` and ``rule.name`` also take a list:
a grid, expanded by :mod:`savic_theory.experiment` into one batched call per rule and scaling
(whose runs, over all grid points, draw from one random stream seeded by ``run.seed``).
``run.scaling`` takes ``"global"``, ``"local"``, ``"both"`` (the two) or a list of the first two.
Unknown tables or keys, values of the wrong type and non-finite numbers are errors that name
the key.
"""
from __future__ import annotations

import copy
import math
import numbers
import tomllib
from pathlib import Path
from typing import Any, Iterable, Mapping

from .problems import Quadratic
from .rules import RULES

__all__ = ["CHOICES", "DEFAULTS", "GRID_KEYS", "HELP", "PROBLEM_KEYS", "load_config", "resolve", "applicable", "build_problem"]

#: every key with its default; the type of the default is the type a value must have
DEFAULTS: dict[str, dict[str, Any]] = {
    "problem": {
        "kind": "quadratic",        # quadratic | logistic
        "dim": 20,                  # quadratic: dimension d
        "clients": 8,               # number of clients M
        "L": 1.0,                   # quadratic: smoothness
        "mu": 0.05,                 # quadratic: strong convexity
        "heterogeneity": 1.0,       # spread of the clients' minimisers (0: identical data)
        "form": "diagonal",         # quadratic: diagonal | dense | eigenbasis
        "client_spectra": "random",  # quadratic: identical | random
        "noise": 0.01,              # additive gradient noise σ² = E‖ξ‖²
        "dataset": "breast_cancer",  # logistic: bundled name or a LIBSVM file path
        "split": "dirichlet",       # logistic: iid | dirichlet | shards
        "alpha": 0.5,               # logistic: Dirichlet concentration
        "lam": 1e-2,                # logistic: L2 weight λ (= μ)
        "batch_size": 16,           # logistic: minibatch size (0: full gradients)
        "seed": 0,                  # problem generator seed
    },
    "rule": {"name": "adam", "beta": 0.99, "e": 1e-2, "probes": "auto"},
    "run": {
        "gamma": 0.05,
        "steps": 2000,
        "sync_every": 10,
        "scaling": ["global", "local"],
        "runs": 8,
        "paired": False,            # runs with the same index share their draws across grid points
        "seed": 0,
        "record_every": 0,          # 0: automatic (about 500 records)
        "dtype": "float64",
        "backend": "numpy",
    },
}

#: the allowed values of the keys that take a name
CHOICES = {
    ("problem", "kind"): ("quadratic", "logistic"),
    ("problem", "form"): ("diagonal", "dense", "eigenbasis"),
    ("problem", "client_spectra"): ("identical", "random"),
    ("problem", "split"): ("iid", "dirichlet", "shards"),
    ("rule", "name"): tuple(RULES),
    ("rule", "probes"): ("auto", "rademacher", "exact"),
    ("run", "dtype"): ("float64", "float32"),
    ("run", "backend"): ("numpy", "cupy", "array_api_strict"),
}


def key_not_in_table(key: str, tables: Mapping[str, Iterable[str]], otherwise: str) -> str:
    """The message for ``key`` written above every table of a config file: the tables of
    ``tables`` (name -> its keys) that hold such a key, or ``otherwise`` when none does."""
    owners = [f"[{t}]" for t, keys in tables.items() if key in keys]
    return f"{key} is not in a table: {'put it under ' + ' or '.join(owners) if owners else otherwise}"


def unknown_key(name: str, known: Iterable[str]) -> str:
    """The message for a key ``name`` (``table.key``) that its table does not have."""
    return f"unknown key {name}; known keys: {', '.join(known)}"


def load_config(path: str | Path) -> dict:
    """Read a TOML config file (errors name the file)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not a config file")
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None
    _anchor_dataset_path(data, path.parent)
    return data


def _anchor_dataset_path(data: dict, folder: Path) -> None:
    """A relative LIBSVM path in ``problem.dataset`` that names a file beside the config is made
    absolute, so the config works from any directory and the written ``config.toml`` reruns
    anywhere; any other value is left as it is (a bundled name, or a path from the working
    directory)."""
    from .problems.data import DATASETS

    problem = data.get("problem")
    dataset = problem.get("dataset") if isinstance(problem, dict) else None
    if not isinstance(dataset, str) or dataset in DATASETS or Path(dataset).is_absolute():
        return
    beside = folder / dataset
    if beside.is_file():
        problem["dataset"] = str(beside.resolve())


def resolve(config: dict | None = None, overrides: dict | None = None) -> dict:
    """Defaults, updated by ``config`` then by ``overrides`` (both ``{table: {key: value}}``),
    with every key and value checked."""
    out = copy.deepcopy(DEFAULTS)
    given: set[str] = set()  # [problem] keys set by the config or the overrides
    for source in (config or {}, overrides or {}):
        if not isinstance(source, dict):
            raise TypeError("a config must be a table of tables: [problem], [rule], [run]")
        for table, values in source.items():
            if table not in DEFAULTS and not isinstance(values, dict):  # a key above every table
                raise ValueError(key_not_in_table(
                    table, DEFAULTS, f"the tables are {', '.join(f'[{t}]' for t in DEFAULTS)}"))
            if table not in DEFAULTS:
                raise ValueError(f"unknown config table [{table}]; known: {', '.join(DEFAULTS)}")
            if not isinstance(values, dict):
                raise TypeError(f"[{table}] must be a table of keys")
            for key, value in values.items():
                if key not in DEFAULTS[table]:
                    raise ValueError(unknown_key(f"{table}.{key}", DEFAULTS[table]))
                out[table][key] = _check(table, key, value)
                if table == "problem":
                    given.add(key)
    kind = out["problem"]["kind"]
    other = next(k for k in PROBLEM_KEYS if k != kind)
    stray = sorted(given & set(PROBLEM_KEYS[other]))
    if stray:
        raise ValueError(f"problem.{stray[0]} applies to kind = \"{other}\", not to kind = \"{kind}\" "
                         f"(keys of {kind} problems: {', '.join(PROBLEM_KEYS[kind])}, and the shared ones)")
    return out


#: the [problem] keys that only one kind of problem reads (the others are shared)
PROBLEM_KEYS = {"quadratic": ("dim", "L", "mu", "heterogeneity", "form", "client_spectra"),
                "logistic": ("dataset", "split", "alpha", "lam", "batch_size")}


def applicable(cfg: dict) -> dict:
    """A resolved config without the ``[problem]`` keys its kind does not read (what a result's
    ``config.toml`` holds, so that it reruns as it is)."""
    kind = cfg["problem"]["kind"]
    unused = {k for other, keys in PROBLEM_KEYS.items() if other != kind for k in keys}
    return {table: ({k: v for k, v in values.items() if k not in unused} if table == "problem" else values)
            for table, values in cfg.items()}


#: keys that accept a list of values: a grid axis, expanded into one batched run
GRID_KEYS = (("run", "gamma"), ("run", "sync_every"), ("rule", "beta"), ("rule", "e"), ("rule", "name"))


def _check(table: str, key: str, value: Any) -> Any:
    name = f"{table}.{key}"
    if isinstance(value, list) and key != "scaling":
        if (table, key) not in GRID_KEYS:
            grid = ", ".join(f"{t}.{k}" for t, k in GRID_KEYS)
            raise TypeError(f"{name} takes one value; lists (grids) are accepted for {grid}")
        if not value:
            raise ValueError(f"{name}: an empty list gives an empty grid")
        values = [_check_one(table, key, v) for v in value]
        if len(set(values)) != len(values):
            raise ValueError(f"{name}: the grid lists a value twice")
        return values
    return _check_one(table, key, value)


#: integer keys that size arrays or loops, and their largest value (beyond it int64 arithmetic wraps)
_SIZES = ("dim", "clients", "steps", "sync_every", "runs", "record_every", "batch_size")
_SIZE_MAX = 2**62


def _check_one(table: str, key: str, value: Any) -> Any:
    default = DEFAULTS[table][key]
    name = f"{table}.{key}"
    if key == "scaling":
        # "both" means what --scaling both means, so a config file can say what the flag says
        vals = ["global", "local"] if value == "both" else [value] if isinstance(value, str) else value
        if not isinstance(vals, list) or not vals or any(v not in ("global", "local") for v in vals):
            raise ValueError(f"{name} must be 'global', 'local', 'both' or a list of 'global' and 'local', "
                             f"got {value!r}")
        return list(dict.fromkeys(vals))
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise TypeError(f"{name} must be of type {type(default).__name__}, got {value!r}")
    choices = CHOICES.get((table, key))
    if choices and value not in choices and not (name == "problem.dataset"):
        raise ValueError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    if isinstance(value, (int, float)) and key in ("dim", "clients", "steps", "sync_every", "runs") and value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    if isinstance(value, int) and key in _SIZES and value > _SIZE_MAX:  # arrays index with int64
        raise ValueError(f"{name} must be at most 2**62, got {value}")
    # inf or NaN would pass the range checks below (or fail only mid-experiment, after other blocks ran)
    if key in ("gamma", "L", "mu", "lam", "e") and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be > 0 and finite, got {value}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if key in ("noise", "heterogeneity", "batch_size", "record_every", "seed") and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    if key == "beta" and not 0 <= value < 1:
        raise ValueError(f"{name} must lie in [0, 1), got {value}")
    return value


def build_problem(cfg: dict):
    """The problem described by a resolved config's ``[problem]`` table."""
    p = cfg["problem"]
    if p["kind"] == "quadratic":
        return Quadratic.random(p["dim"], p["clients"], L=p["L"], mu=p["mu"],
                                heterogeneity=p["heterogeneity"], form=p["form"],
                                client_spectra=p["client_spectra"], noise=p["noise"], seed=p["seed"])
    from .problems import Logistic

    return Logistic.from_dataset(p["dataset"], n_clients=p["clients"], split=p["split"],
                                 alpha=p["alpha"], lam=p["lam"],
                                 batch_size=p["batch_size"] or None, noise=p["noise"], seed=p["seed"])




#: one line of help per key (shown by ``savic simulate --help`` with the default)
HELP = {
    ("problem", "kind"): "problem family",
    ("problem", "dim"): "quadratic: dimension d",
    ("problem", "clients"): "number of clients M",
    ("problem", "L"): "quadratic: smoothness L (largest eigenvalue)",
    ("problem", "mu"): "quadratic: strong convexity μ (smallest eigenvalue)",
    ("problem", "heterogeneity"): "spread of the clients' minimisers (0 = identical data)",
    ("problem", "form"): "quadratic storage: diagonal, dense or eigenbasis (one eigenbasis shared by the clients)",
    ("problem", "client_spectra"): "quadratic: identical or random spectra per client",
    ("problem", "noise"): "additive gradient noise σ² = E‖ξ‖²",
    ("problem", "dataset"): "logistic: breast_cancer, digits or a LIBSVM file path (relative: from the config "
                            "file's folder, else from the working directory)",
    ("problem", "split"): "logistic: split of the rows over clients",
    ("problem", "alpha"): "logistic: Dirichlet concentration of the label split",
    ("problem", "lam"): "logistic: L2 weight λ (the strong convexity μ)",
    ("problem", "batch_size"): "logistic: minibatch size, 0 for full gradients",
    ("problem", "seed"): "seed of the problem generator / data split",
    ("rule", "name"): "scaling rule",
    ("rule", "beta"): "β of the rule's moving average, in [0, 1)",
    ("rule", "e"): "clip level e > 0 (α = e)",
    ("rule", "probes"): "oasis's statistic: rademacher (Hutchinson probes z ⊙ (∇²f z)), exact (the "
                        "Hessian diagonal) or auto (exact when the gradients are noise-free and full-batch)",
    ("run", "gamma"): "step size γ",
    ("run", "steps"): "number of local steps T",
    ("run", "sync_every"): "H: clients average every H steps",
    ("run", "scaling"): "global, local, or both (each with `runs` runs)",
    ("run", "runs"): "runs per grid point, all drawn in one batched call per rule and scaling",
    ("run", "paired"): "common random numbers: run i of every grid point of a rule and scaling gets "
                       "the same noise, minibatches and probes, so grid points compare run by run "
                       "(global-scaling OASIS over a grid of sync_every draws its probes at every "
                       "run's syncs, so there a point differs from the point run alone)",
    ("run", "seed"): "seed of the random stream (noise, minibatches, probes) that each batched call "
                     "draws all its runs from",
    ("run", "record_every"): "record the history every this many steps (0 = about 500 records)",
    ("run", "dtype"): "floating-point type",
    ("run", "backend"): "array backend",
}
