"""The configuration of a network experiment: TOML tables read into validated dataclasses.

A config file has the tables ``[data]``, ``[model]``, ``[train]`` and ``[method.NAME]``, every
key optional (defaults and meanings in :data:`HELP` and ``docs/nn-results.md``, to which
``savic nn --help`` points; the help itself does not list them, as it must not import torch)::

    [data]
    dataset = "fashion_mnist"        # synthetic | fashion_mnist | cifar10
    clients = 8
    splits = ["iid", "dirichlet"]    # one experiment per split
    alpha = 0.1

    [train]
    rounds = 30
    local_steps = 10                 # H
    seeds = [0, 1, 2]
    methods = ["local_sgd", "adam-global", "adam-local", "oasis-global"]

    [method.adam]                    # every adam-* method ...
    gamma = 1e-3
    beta = 0.99
    [method.adam-local]              # ... and this one only (wins)
    gamma = 5e-4

Unknown tables or keys, and values of the wrong type or range, raise errors that name the key.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..config import key_not_in_table, unknown_key
from ..problems.data import SPLITS
from ..rules import RULES
from .data import DATASETS
from .methods import METHOD_NAMES, PRECISIONS, TOGETHER, parse_method
from .model import NORMS

__all__ = ["DataConfig", "ModelConfig", "TrainConfig", "NNConfig", "METHOD_DEFAULTS", "HELP",
           "load_nn_config"]


def _f(default, help_: str, **extra):
    if isinstance(default, tuple):
        return field(default_factory=lambda: default, metadata={"help": help_, **extra})
    return field(default=default, metadata={"help": help_, **extra})


@dataclass(frozen=True)
class DataConfig:
    """``[data]``: the data set, its split over clients and the minibatches."""

    dataset: str = _f("synthetic", "data set: synthetic, fashion_mnist or cifar10", choices=DATASETS)
    root: str = _f("", "folder of the data files; '' = /usr/share/datasets/fashion-mnist or "
                       "data/cifar-10-batches-py")
    clients: int = _f(8, "number of clients M", low=1)
    splits: tuple = _f(("iid", "dirichlet"), "splits over clients, one experiment each: iid, dirichlet, shards",
                       items=str, choices=SPLITS)
    alpha: float = _f(0.1, "Dirichlet concentration α of the label split (smaller: more heterogeneous)",
                      positive=True)
    shards_per_client: int = _f(2, "label-sorted shards per client (split 'shards')", low=1)
    split_seed: int = _f(0, "seed of the split and of the data subsets (the same for every method and seed)",
                         low=0)
    batch_size: int = _f(128, "minibatch per client and local step (0: the client's full data, in order and "
                              "unaugmented: needs data.augment = false and clients with equally many images)", low=0)
    augment: bool = _f(True, "random crop (padding 4) and horizontal flip of training images")
    train_size: int = _f(0, "use a random subset of this many training images (0: all)", low=0)
    test_size: int = _f(0, "use a random subset of this many test images (0: all)", low=0)
    train_eval_size: int = _f(10000, "training images on which the loss of x̄ is measured each round (0: none)",
                              low=0)
    synthetic_train: int = _f(4096, "synthetic: training images", low=1)
    synthetic_test: int = _f(1024, "synthetic: test images", low=1)
    synthetic_classes: int = _f(10, "synthetic: classes", low=2)
    synthetic_channels: int = _f(3, "synthetic: channels", low=1)
    synthetic_size: int = _f(32, "synthetic: image side in pixels", low=4)


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: the ResNet18."""

    # at most 64 × the standard: far beyond any one GPU's memory already, while a huge width
    # failed inside torch ("Storage size calculation overflowed") instead of naming the key
    width: int = _f(64, "channels of the first stage (64: the standard ResNet18; at most 4096)", low=1, high=4096)
    norm: str = _f("group", "normalization: group (GroupNorm) or batch (batch statistics, no running stats)",
                   choices=NORMS)
    norm_groups: int = _f(32, "GroupNorm groups (gcd with the layer's channels)", low=1)


@dataclass(frozen=True)
class TrainConfig:
    """``[train]``: rounds, methods, seeds and how the computation runs."""

    rounds: int = _f(30, "communication rounds", low=1)
    local_steps: int = _f(10, "H: local steps per round (clients average after each H steps)", low=1)
    seeds: tuple = _f((0,), "seeds; each gives the initial model and the clients' random streams",
                      items=int, low=0)
    methods: tuple = _f(METHOD_NAMES, "methods: " + ", ".join(METHOD_NAMES), items=str, choices=METHOD_NAMES)
    weight_decay: float = _f(5e-4, "λ of the (λ/2)‖x‖² term of every f_m", low=0.0)
    precision: str = _f("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), bf16, fp32 or fp64",
                        choices=PRECISIONS)
    together: str = _f("vmap", "clients of a process: one vmap call or a Python loop", choices=TOGETHER)
    channels_last: bool = _f(True, "channels-last image batches (on CUDA)")
    device: str = _f("auto", "auto (CUDA when available), cpu, cuda or cuda:N (one process only: under torchrun, "
                             "cuda gives each process GPU LOCAL_RANK)")
    eval_batch: int = _f(1000, "batch size of evaluations", low=1)
    checkpoint_every: int = _f(1, "write a checkpoint every this many rounds", low=1)
    keep_checkpoints: bool = _f(False, "keep each run's final checkpoint (model and rule state)")
    threads: int = _f(0, "torch CPU threads (0: torch's default)", low=0)


#: step size, β and clip level e of each rule when the config does not set them (untuned)
METHOD_DEFAULTS: dict[str, dict[str, float]] = {
    "identity": {"gamma": 0.1},
    "rmsprop": {"gamma": 1e-3, "beta": 0.99, "e": 1e-4},
    "adam": {"gamma": 1e-3, "beta": 0.99, "e": 1e-4},
    "oasis": {"gamma": 1e-3, "beta": 0.99, "e": 1e-2},
}


@dataclass(frozen=True)
class NNConfig:
    """A whole network experiment: data, model, training and per-method parameters.

    ``method`` maps a rule name (``rmsprop``, ``adam``, ``oasis``, or ``local_sgd``) or a method
    name (``adam-local``) to ``{"gamma", "beta", "e"}`` overrides; see :meth:`method_params`.

    Example
    -------
    >>> cfg = NNConfig.from_dict({"train": {"methods": ["adam-local"], "rounds": 2},
    ...                           "method": {"adam": {"gamma": 0.01}}})
    >>> cfg.method_params("adam-local")
    {'gamma': 0.01, 'beta': 0.99, 'e': 0.0001}
    """

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict) -> "NNConfig":
        """Validate a ``{table: {key: value}}`` mapping (as read from TOML)."""
        if not isinstance(raw, dict):
            raise TypeError("a config must be a table of tables: [data], [model], [train], [method.NAME]")
        tables = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
        unknown = set(raw) - set(tables) - {"method"}
        loose = sorted(k for k in unknown if not isinstance(raw[k], dict))
        if loose:
            keys = {t: [f.name for f in dataclasses.fields(klass)] for t, klass in tables.items()}
            raise ValueError(key_not_in_table(loose[0], keys, "the tables are [data], [model], [train], [method.NAME]"))
        if unknown:
            raise ValueError(f"unknown config table [{sorted(unknown)[0]}]; known: data, model, train, method")
        parts = {name: _build(klass, raw.get(name, {}), name) for name, klass in tables.items()}
        methods = raw.get("method", {})
        if not isinstance(methods, dict):
            raise TypeError("[method] must hold tables [method.NAME] with gamma, beta, e")
        checked = {}
        names = ("local_sgd",) + tuple(r for r in RULES if r != "identity") + METHOD_NAMES
        for name, values in methods.items():
            if name not in names:
                raise ValueError(f"unknown table [method.{name}]; known names: {', '.join(dict.fromkeys(names))}")
            if not isinstance(values, dict):
                raise TypeError(f"[method.{name}] must be a table with gamma, beta, e")
            allowed = ("gamma",) if name == "local_sgd" else ("gamma", "beta", "e")
            out = {}
            for key, value in values.items():
                if key not in allowed:
                    raise ValueError(unknown_key(f"method.{name}.{key}", allowed))
                out[key] = _check_method_value(f"method.{name}.{key}", key, value, parts["train"].precision)
            checked[name] = out
        if parts["data"].batch_size == 0 and parts["data"].augment:
            raise ValueError("data.batch_size = 0 takes each client's full data, unaugmented; "
                             "set data.augment = false with it")
        return cls(parts["data"], parts["model"], parts["train"], checked)

    def method_params(self, name: str) -> dict:
        """``{"gamma", "beta", "e"}`` of a method: rule defaults, then ``[method.RULE]``, then
        ``[method.NAME]``."""
        rule, _ = parse_method(name)
        out = dict(METHOD_DEFAULTS[rule])
        out.update(self.method.get("local_sgd" if rule == "identity" else rule, {}))
        out.update(self.method.get(name, {}))
        return out

    def to_dict(self) -> dict:
        """Plain ``{table: {key: value}}`` (lists for tuples), re-readable by :meth:`from_dict`."""
        out = {}
        for name in ("data", "model", "train"):
            out[name] = {k: list(v) if isinstance(v, tuple) else v
                         for k, v in dataclasses.asdict(getattr(self, name)).items()}
        out["method"] = {k: dict(v) for k, v in self.method.items()}
        return out

    def runs(self) -> list[tuple[str, str, int]]:
        """Every ``(split, method, seed)`` of the experiment, in the order they run."""
        return [(s, m, seed) for s in self.data.splits for m in self.train.methods for seed in self.train.seeds]


def load_nn_config(path: str | Path) -> NNConfig:
    """Read and validate a TOML config file (errors name the file or the key).

    Example
    -------
    >>> load_nn_config("/nonexistent.toml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    FileNotFoundError: config file not found: /nonexistent.toml
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None
    return NNConfig.from_dict(raw)


#: ``(table, key) -> (default, help)`` of every dataclass key, the source of the docs' key table
HELP = {(t, f.name): (f.default if f.default is not dataclasses.MISSING else f.default_factory(),
                      f.metadata["help"])
        for t, k in (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig))
        for f in dataclasses.fields(k)}


def _build(klass, values, table: str):
    if not isinstance(values, dict):
        raise TypeError(f"[{table}] must be a table of keys")
    fields_ = {f.name: f for f in dataclasses.fields(klass)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields_:
            raise ValueError(unknown_key(f"{table}.{key}", fields_))
        kwargs[key] = _check(f"{table}.{key}", fields_[key], value)
    return klass(**kwargs)


def _check(name: str, f, value: Any):
    meta = f.metadata
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if isinstance(default, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise TypeError(f"{name} must be a list, got {value!r}")
        if not value:
            raise ValueError(f"{name} must not be empty")
        items = tuple(_scalar(f"{name}[{i}]", meta["items"](), meta, v) for i, v in enumerate(value))
        if len(set(items)) != len(items):
            raise ValueError(f"{name} lists a value twice: {list(value)}")
        return items
    return _scalar(name, default, meta, value)


def _scalar(name: str, default, meta: dict, value: Any):
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    else:
        ok = isinstance(value, type(default))
    if not ok:
        raise TypeError(f"{name} must be of type {type(default).__name__}, got {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        raise ValueError(f"{name} must be one of {', '.join(meta['choices'])}, got {value!r}")
    if "low" in meta and value < meta["low"]:
        raise ValueError(f"{name} must be >= {meta['low']}, got {value}")
    if "high" in meta and value > meta["high"]:
        raise ValueError(f"{name} must be <= {meta['high']}, got {value}")
    if meta.get("positive") and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if name == "train.device" and not (value in ("auto", "cpu", "cuda") or
                                       (value.startswith("cuda:") and value[5:].isdigit())):
        raise ValueError(f"train.device must be auto, cpu, cuda or cuda:N, got {value!r}")
    return value


def _check_method_value(name: str, key: str, value: Any, precision: str = "auto") -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    value = float(value)
    if key == "beta" and not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must lie in [0, 1), got {value}")
    if key != "beta" and not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if key != "beta":  # γ and e enter the update as numbers of the training dtype
        dtype = "float64" if precision == "fp64" else "float32"
        lo, hi = float(np.finfo(dtype).tiny), float(np.finfo(dtype).max)
        if not lo <= value <= hi:
            more = "" if dtype == "float64" else "; train.precision = \"fp64\" allows more"
            raise ValueError(f"{name} = {value:g} is outside [{lo:.3g}, {hi:.3g}], the range of the training "
                             f"dtype {dtype} (train.precision = \"{precision}\"){more}")
    return value
