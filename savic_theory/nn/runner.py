"""Run a network experiment: every (split, method, seed) of a config, with checkpoints and results.

Layout of the result folder ``OUT``::

    OUT/config.toml                               the validated config (re-runnable)
    OUT/runs/<split>/<method>/seed<k>/history.json   per-round metrics, status running|done|diverged
    OUT/runs/<split>/<method>/seed<k>/checkpoint.pt  while a run is unfinished (and kept on request)
    OUT/results.csv                               every round of every run, one row each (after each run);
                                                  its status column is "diverged" on a diverged run's last round
    OUT/summary.json                              final metrics per run and mean/std over seeds (same)
    OUT/figures/rounds.png, OUT/figures/scaling.png

A checkpoint is written every ``train.checkpoint_every`` rounds (default: every round);
``resume=True`` skips finished runs and continues unfinished ones from their checkpoint, with
the same numbers as an uninterrupted run; the config may add seeds, methods and splits to the
experiment (not change what the runs made so far were). With several processes (``torch.distributed``),
process 0 reads and writes the files and sends what the others need, so the folder need not be
shared between machines.

A run is ``diverged``, and stops, after the first round whose ``batch_loss`` or whose
``test_loss`` of ``x̄`` is NaN or infinite.

The JSON files are strict JSON: a NaN or infinite metric (round 0 has no ``batch_loss`` or
``drift``; a diverged run has no losses and no test accuracy) is written as ``null``. The
mean/std over seeds in ``summary.json`` take the finished runs only (``runs``, ``diverged`` and
``unfinished`` say how many runs a method has, how many of them diverged and how many are still
running, as under ``--report`` of an interrupted experiment).

Under torchrun an error that every process meets alike (a bad input, the data, the result
folder) carries ``savic_alike = True``, so the CLI prints it once per machine; any other error
may be one process's alone and is printed by the process it hits.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch

from .._json import finite_or_none
from ..cli._common import atomic_write, first_line, progress as _progress, remove_stale_write, write_json
from .config import NNConfig, load_nn_config
from .data import DeviceData, ImageSet, client_parts, load_images
from .engine import METRICS, LocalComm, Trainer
from .methods import Objective, make_method
from .model import ResNet18, init_params

__all__ = ["run_experiment", "pick_device", "load_run_images", "REPORTED"]

#: metrics summarised over seeds in ``summary.json``
#: the last round's metrics that ``summary.json`` reports per run and as mean ± std per method
#: (α̂, Γ̂ and the drift of D̂ too: how far the scaling moved, next to what it achieved)
REPORTED = ("test_acc", "test_loss", "train_loss", "batch_loss", "alpha_hat", "Gamma_hat", "drift",
            "images_per_second")


def pick_device(preference: str = "auto", local_rank: int = 0, world: int = 1) -> torch.device:
    """The device of ``train.device``: ``auto`` is CUDA (GPU ``local_rank``) when available, else CPU.

    ``cuda`` is GPU ``local_rank`` (modulo the GPUs there are); ``cuda:N`` is GPU ``N``, for one
    process only: with ``world > 1`` processes it would put all of them on the same GPU, so it is
    an error there (``cuda`` gives each process its own GPU ``LOCAL_RANK``).

    Example
    -------
    >>> pick_device("cpu")
    device(type='cpu')
    """
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if preference.startswith("cuda:") and world > 1:  # before the CUDA check: wrong on any machine
        raise ValueError(f"train.device = {preference!r} would put all {world} processes on one GPU; "
                         f"use train.device = \"cuda\" with torchrun (each process takes GPU LOCAL_RANK)")
    if not torch.cuda.is_available():
        raise ValueError(f"train.device = {preference!r} but CUDA is not available here")
    if preference.startswith("cuda:"):
        return torch.device(preference)
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def load_run_images(cfg: NNConfig) -> ImageSet:
    """The config's data set, restricted to the ``train_size``/``test_size`` subsets."""
    d = cfg.data
    images = load_images(d.dataset, d.root, n_train=d.synthetic_train, n_test=d.synthetic_test,
                         classes=d.synthetic_classes, channels=d.synthetic_channels, size=d.synthetic_size,
                         seed=d.split_seed)
    rng = np.random.default_rng(np.random.SeedSequence([d.split_seed, 13]))
    train_x, train_y, test_x, test_y = images.train_x, images.train_y, images.test_x, images.test_y
    for key, size in (("train_size", d.train_size), ("test_size", d.test_size)):
        if not size:
            continue
        n = (train_x if key == "train_size" else test_x).shape[0]
        if size > n:
            raise ValueError(f"data.{key} = {size} exceeds the {n} images of {images.name}")
        rows = np.sort(rng.permutation(n)[:size])
        if key == "train_size":
            train_x, train_y = train_x[rows], train_y[rows]
        else:
            test_x, test_y = test_x[rows], test_y[rows]
    return ImageSet(train_x, train_y, test_x, test_y, images.classes, images.name)


def run_experiment(cfg: NNConfig, out: str | os.PathLike, *, resume: bool = False, progress: bool = True,
                   comm=None, device: torch.device | str | None = None,
                   on_round: Callable[[str, str, int, dict], None] | None = None,
                   log: Callable[[str], None] | None = None, report: bool = False) -> dict:
    """Run every ``(split, method, seed)`` of ``cfg`` and write the result folder ``out``.

    Parameters
    ----------
    cfg : NNConfig
    out : path
        Result folder; an existing experiment there needs ``resume=True``.
    resume : bool
        Skip finished runs and continue unfinished ones from their checkpoints. ``cfg`` must
        be the config saved in ``out`` (apart from ``data.root``, ``train.device`` and
        ``train.threads``), except that it may add seeds, methods and splits, keeping the
        saved methods' parameters; the saved config is then replaced by ``cfg``. A
        checkpoint continues only on the device type (CPU or CUDA) it was written on.
    progress : bool
        Show a progress bar (process 0, on a terminal).
    comm : LocalComm or DistComm
        Communicator; several processes run every run together, sharing its clients.
    device : optional
        Overrides ``cfg.train.device``.
    on_round : callable ``(split, method, seed, record)``, optional
        Called after each round once its checkpoint is written.
    log : callable ``(str)``, optional
        Receives one line per finished run (process 0 only).
    report : bool
        Train nothing: write ``results.csv``, ``summary.json`` and the figures from the
        histories already in ``out`` (finished or not), e.g. after an interrupted run. As
        with ``resume``, ``cfg`` must be the config saved in ``out`` (apart from ``data.root``,
        ``train.device`` and ``train.threads``).

    Returns
    -------
    dict
        The content of ``summary.json``.
    """
    comm = comm or LocalComm()
    lead = comm.rank == 0
    out = Path(out)
    if report:  # process 0 writes; its error reaches every process (none waits for a broadcast)
        return _collective(comm, lambda: _report(cfg, out))
    made = _collective(comm, lambda: _prepare_out(cfg, out, resume))
    try:
        summary = _run_all(cfg, out, resume, progress, comm, device, on_round, log)
    except BaseException:
        if lead and isinstance(made, _Extended):  # failed before an added run began: the saved config back
            if not any((out / "runs" / s / m / f"seed{k}").exists() for s, m, k in cfg.runs()
                       if (s, m, k) not in made.old_runs):
                with atomic_write(out / "config.toml", "w") as fh:
                    fh.write(made.old_text)
        elif lead and made is not None and not (out / "runs").exists():  # failed before a run was kept
            _undo_prepare(out, made)
        raise
    comm.barrier()
    return comm.broadcast_object(summary)


def _run_all(cfg, out, resume, progress, comm, device, on_round, log):
    """Every run of ``cfg`` into the prepared folder ``out``, then the tables and figures."""
    lead = comm.rank == 0
    if device is None:
        from .distributed import local_rank

        device = pick_device(cfg.train.device, local_rank(), comm.world)
    device = torch.device(device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    with _alike():  # the same files and checks on every process
        images = load_run_images(cfg)
        _check_split_sizes(cfg, images, comm.world)
    dtype = torch.float64 if cfg.train.precision == "fp64" else torch.float32
    runs = cfg.runs()
    bar = _progress(len(runs) * cfg.train.rounds, "savic nn", enabled=progress and lead)
    histories = {}
    try:
        for split in cfg.data.splits:
            parts = client_parts(images.train_y, cfg.data.clients, split, alpha=cfg.data.alpha,
                                 shards_per_client=cfg.data.shards_per_client, seed=cfg.data.split_seed)
            data = DeviceData(images.train_x, images.train_y, parts, images.test_x, images.test_y, device=device,
                              augment=cfg.data.augment, train_eval_size=min(cfg.data.train_eval_size,
                                                                            images.train_x.shape[0]),
                              seed=cfg.data.split_seed)
            for method in cfg.train.methods:
                for seed in cfg.train.seeds:
                    histories[(split, method, seed)] = _run_one(cfg, out, data, images, split, method, seed,
                                                                comm, device, dtype, resume, bar, on_round, log)
                    if lead:  # tables after every run, so an interrupted experiment still has them
                        _write_results(cfg, out, histories, figures=False)
            del data
    finally:
        bar.close()
    summary = None
    if lead:
        summary = _write_results(cfg, out, histories)
    return summary


def _check_split_sizes(cfg: NNConfig, images: ImageSet, world: int) -> None:
    """Errors naming the config keys for clients the data or the processes cannot be split over."""
    d, n = cfg.data, int(images.train_x.shape[0])
    if d.clients > n:
        raise ValueError(f"data.clients = {d.clients} exceeds the {n} training images of {images.name}")
    if "shards" in d.splits and d.clients * d.shards_per_client > n:
        raise ValueError(f"data.clients × data.shards_per_client = {d.clients * d.shards_per_client} exceeds "
                         f"the {n} training images of {images.name} (split 'shards')")
    if d.clients % world:
        raise ValueError(f"data.clients = {d.clients} cannot be shared equally by {world} processes")
    # minibatches are drawn with replacement, so any size would run; one above the whole
    # training set is a slip (and a large one is killed for memory without a message)
    if d.batch_size > n:
        raise ValueError(f"data.batch_size = {d.batch_size} exceeds the {n} training images of {images.name} "
                         f"(0 takes each client's full data)")
    # every split here, before the first run: found at its turn, it came after earlier splits
    # were trained and saved, and --resume then refused the corrected config
    for split in d.splits if d.batch_size == 0 else ():
        sizes = [len(p) for p in client_parts(images.train_y, d.clients, split, alpha=d.alpha,
                                              shards_per_client=d.shards_per_client, seed=d.split_seed)]
        if min(sizes) != max(sizes):
            raise ValueError(f"data.batch_size = 0 (each client's full data) needs clients with equally many "
                             f"training images; split {split!r} gives from {min(sizes)} to {max(sizes)}")


# ------------------------------------------------------------------------------ one run
def _run_one(cfg, out, data, images, split, method_name, seed, comm, device, dtype, resume, bar, on_round, log):
    lead = comm.rank == 0
    run_dir = out / "runs" / split / method_name / f"seed{seed}"
    kind, payload = _collective(comm, lambda: _read_run(run_dir, resume))
    if kind == "finished":
        bar.update(cfg.train.rounds)
        return payload
    model = ResNet18(images.classes, cfg.model.width, int(images.train_x.shape[1]), cfg.model.norm,
                     cfg.model.norm_groups).to(device)
    objective = Objective(model, weight_decay=cfg.train.weight_decay, precision=cfg.train.precision)
    params = cfg.method_params(method_name)
    method = make_method(method_name, **params)
    trainer = Trainer(objective, data, method, init_params(model, seed, dtype), local_steps=cfg.train.local_steps,
                      batch_size=cfg.data.batch_size, seed=seed, comm=comm, together=cfg.train.together,
                      channels_last=cfg.train.channels_last and device.type == "cuda",
                      eval_batch=cfg.train.eval_batch, dtype=dtype)
    status = "running"
    if kind == "checkpoint":
        try:
            trainer.load_state_dict(payload)
        except ValueError as exc:  # another device type, method, ...: name the file
            raise ValueError(f"--resume: {run_dir / 'checkpoint.pt'}: {exc}") from None
        except (KeyError, TypeError, AttributeError, IndexError) as exc:  # a damaged or edited file
            raise ValueError(f"--resume: {run_dir / 'checkpoint.pt'} does not fit this run ({type(exc).__name__}: "
                             f"{first_line(exc, 'no detail')}); delete "
                             f"it to train this run from round 0, or use another --out") from None
        if trainer.round > 0 and _diverged(trainer.history[-1]):  # cut off before its history said so
            status = "diverged"
    else:
        trainer.history.append(trainer.initial_metrics())
    bar.update(trainer.round)
    info = {"split": split, "method": method_name, "seed": seed, "params": params}
    while trainer.round < cfg.train.rounds and status == "running":
        record = trainer.run_round()
        bar.update(1)
        bar.set_postfix_str(f"{split}/{method_name}/seed{seed} acc {record['test_acc']:.3f}")
        if _diverged(record):
            status = "diverged"
            record["test_acc"] = math.nan  # (also in trainer.history) no accuracy of a diverged model
        if status == "diverged" or trainer.round == cfg.train.rounds or trainer.round % cfg.train.checkpoint_every == 0:
            sd = trainer.state_dict()
            if lead:
                run_dir.mkdir(parents=True, exist_ok=True)
                with atomic_write(run_dir / "checkpoint.pt", "wb") as fh:
                    torch.save(sd, fh)
                write_json(run_dir / "history.json", finite_or_none({**info, "status": "running",
                                                                     "history": trainer.history}))
        if on_round is not None:
            on_round(split, method_name, seed, record)
    if status == "diverged":
        bar.update(cfg.train.rounds - trainer.round)
    status = "diverged" if status == "diverged" else "done"
    payload = {**info, "status": status, "history": trainer.history}
    if lead:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "history.json", finite_or_none(payload))
        if not cfg.train.keep_checkpoints:
            (run_dir / "checkpoint.pt").unlink(missing_ok=True)
        if log is not None:
            last = trainer.history[-1]
            if status == "diverged":  # its losses and accuracy are nan: the status says it all
                log(f"{split}/{method_name}/seed{seed}: diverged in round {trainer.round} (loss not finite)")
            else:
                log(f"{split}/{method_name}/seed{seed}: {status} after {trainer.round} rounds, test acc "
                    f"{last['test_acc']:.4f}, train loss {last['train_loss']:.4g}, "
                    f"{last['images_per_second']:,.0f} img/s")
    return payload


def _diverged(record: dict) -> bool:
    """Whether a round (not round 0) left the run diverged: a minibatch loss of the round, or the
    test loss of ``x̄`` after it, is NaN or infinite. The test loss catches a last step that
    overflowed the parameters after the round's final minibatch loss was taken."""
    return not (math.isfinite(record["batch_loss"]) and math.isfinite(record["test_loss"]))


def _read_run(run_dir: Path, resume: bool):
    hist = run_dir / "history.json"
    ckpt = run_dir / "checkpoint.pt"
    if resume:  # a killed process's half-written checkpoint or history
        for name in ("checkpoint.pt", "history.json"):
            remove_stale_write(run_dir / name)
    if resume and hist.is_file():
        payload = _read_history(hist)
        if payload.get("status") in ("done", "diverged"):
            return "finished", payload
    if resume and ckpt.is_file():
        try:
            payload = torch.load(ckpt, map_location="cpu", weights_only=True)
        except (OSError, MemoryError):  # the disk or the machine, not the file
            raise
        except Exception as exc:  # truncated (RuntimeError), not a checkpoint (UnpicklingError), empty (EOFError)
            raise ValueError(f"--resume: the checkpoint {ckpt} cannot be read ({type(exc).__name__}); delete it to "
                             f"train this run from round 0, or use another --out") from None
        if not isinstance(payload, dict):
            raise ValueError(f"--resume: {ckpt} is not a checkpoint of savic nn; delete it to train this run "
                             f"from round 0, or use another --out")
        return "checkpoint", payload
    return "new", None


class _Extended(NamedTuple):
    """A resumed experiment whose config grew: the saved config's text and runs before."""
    old_text: str
    old_runs: frozenset


def _check_is_experiment(saved: Path) -> None:
    """An error unless ``saved`` is the config of a ``savic nn`` experiment (``[train]`` table):
    the folder of another command, or a user's own file, is neither resumed nor offered to be."""
    import tomllib

    try:
        tables = set(tomllib.loads(saved.read_text()))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError):
        tables = set()
    if "train" not in tables:
        raise ValueError(f"{saved.parent} is not a savic nn result folder ({saved} has no [train] table): "
                         "choose another --out")


def _prepare_out(cfg: NNConfig, out: Path, resume: bool) -> Path | _Extended | None:
    """Check ``out`` and write its ``config.toml``; what :func:`_undo_prepare` would remove.

    That is the highest folder made (``out`` or a new folder above it), ``out / "config.toml"``
    when ``out`` was an empty folder, None when an existing experiment is continued, or
    :class:`_Extended` when it is continued with more runs (its config rewritten).
    """
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is a file; choose another --out")
    saved = out / "config.toml"
    if saved.is_file():
        _check_is_experiment(saved)
        if not resume:
            raise ValueError(f"{out} already holds an experiment; pass --resume to continue it or choose "
                             "another --out")
        old = _check_extends_config(cfg, saved)
        for name in ("config.toml", "results.csv", "summary.json", "figures/rounds.png", "figures/scaling.png"):
            remove_stale_write(out / name)  # left by a killed process
        if old is not None:  # added (or reordered) seeds, methods or splits: the folder's config grows
            import tomli_w

            extended = _Extended(saved.read_text(), frozenset(old.runs()))
            with atomic_write(saved, "wb") as fh:
                tomli_w.dump(cfg.to_dict(), fh)
            return extended
        return None
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not an experiment folder (no config.toml); choose another --out")
    import tomli_w

    made = saved if out.exists() else out
    while not made.parent.exists():
        made = made.parent
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(saved, "wb") as fh:
        tomli_w.dump(cfg.to_dict(), fh)
    return made


#: where the runs happen, not what they are: free to differ from the saved config (but a
#: checkpoint resumes only on the device type it was written on: Trainer.load_state_dict)
_WHERE = ("train.threads", "train.device", "data.root")


def _check_same_config(cfg: NNConfig, saved: Path, flag: str) -> None:
    """Raise a ValueError naming every key in which ``cfg`` differs from the config file ``saved``,
    apart from where the runs happen (:data:`_WHERE`)."""
    diff = sorted(_differing(load_nn_config(saved), cfg, lambda key: key in _WHERE))
    if diff:
        raise ValueError(f"{flag}: the config differs from {saved} in {', '.join(diff)}")


#: what a resumed experiment may add to (the runs already made stay what they were)
_EXTENSIBLE = ("train.seeds", "train.methods", "data.splits")


#: keys that only a split reads: free to set while no saved run used that split
_SPLIT_KEYS = {"data.alpha": "dirichlet", "data.shards_per_client": "shards"}


def _check_extends_config(cfg: NNConfig, saved: Path) -> NNConfig | None:
    """The saved config when ``cfg`` changes the lists of seeds, methods or splits of the
    experiment saved in ``saved``, None when the lists are the same. ``cfg`` may add to them
    (and reorder them), keeping every saved entry and the parameters of the saved methods, and
    set the parameter of a split no saved run used; any other difference (apart from
    :data:`_WHERE`) is a ValueError naming the keys."""
    old_cfg = load_nn_config(saved)
    free = _WHERE + _EXTENSIBLE + tuple(k for k, split in _SPLIT_KEYS.items() if split not in old_cfg.data.splits)
    # the methods' parameters are compared per saved method below
    diff = _differing(old_cfg, cfg, lambda key: key in free or key.startswith("method."))
    lists = {"train.seeds": (old_cfg.train.seeds, cfg.train.seeds),
             "train.methods": (old_cfg.train.methods, cfg.train.methods),
             "data.splits": (old_cfg.data.splits, cfg.data.splits)}
    diff |= {key for key, (was, now) in lists.items() if not set(was) <= set(now)}
    diff |= {f"the parameters of {m}" for m in old_cfg.train.methods
             if m in cfg.train.methods and old_cfg.method_params(m) != cfg.method_params(m)}
    if diff:
        raise ValueError(f"--resume: the config differs from {saved} in {', '.join(sorted(diff))} "
                         f"(a resumed experiment may only add seeds, methods and splits)")
    return old_cfg if any(tuple(now) != tuple(was) for was, now in lists.values()) else None


_MISSING = object()


def _differing(old: NNConfig, new: NNConfig, ignored) -> set:
    """The flat keys (``"data.clients"``) whose values differ between two configs, or that only
    one of them has, apart from those for which ``ignored(key)`` is true."""
    a, b = _flat(old.to_dict()), _flat(new.to_dict())
    return {k for k in set(a) | set(b) if not ignored(k) and a.get(k, _MISSING) != b.get(k, _MISSING)}


def _flat(tables: dict, prefix: str = "") -> dict:
    """``{"data.clients": 8, "method.adam.gamma": 0.001, ...}`` of nested tables."""
    out = {}
    for key, value in tables.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _undo_prepare(out: Path, made: Path) -> None:
    """Remove what :func:`_prepare_out` made, so that a start that failed leaves nothing new."""
    if made == out / "config.toml":
        made.unlink(missing_ok=True)
        return
    shutil.rmtree(out, ignore_errors=True)
    for folder in out.parents:  # the new folders above out, while nothing else came into them
        if folder == made.parent:
            break
        with contextlib.suppress(OSError):
            folder.rmdir()


def _collective(comm, fn):
    """Run ``fn`` on process 0 and hand its result, or its error, to every process."""
    payload = None
    if comm.rank == 0:
        try:
            payload = ("ok", fn())
        except Exception as exc:  # handed to every process, which raise it
            payload = ("error", exc)
    payload = comm.broadcast_object(payload)
    if payload[0] == "error":
        payload[1].savic_alike = True  # every process raises it: printed once per machine
        raise payload[1]
    return payload[1]


@contextlib.contextmanager
def _alike():
    """Mark an error of the enclosed code as one every process meets alike (see the module text)."""
    try:
        yield
    except Exception as exc:
        exc.savic_alike = True
        raise


# ------------------------------------------------------------------------------ results
def _report(cfg: NNConfig, out: Path) -> dict:
    saved = out / "config.toml"
    if not saved.is_file():
        raise FileNotFoundError(f"{out} holds no experiment (no config.toml) to report on")
    _check_same_config(cfg, saved, "--report")
    histories = {}
    for split, method, seed in cfg.runs():
        path = out / "runs" / split / method / f"seed{seed}" / "history.json"
        if path.is_file():
            histories[(split, method, seed)] = _read_history(path)
    if not histories:
        raise ValueError(f"{out} holds no run history yet")
    return _write_results(cfg, out, histories)


def _write_results(cfg: NNConfig, out: Path, histories: dict, figures: bool = True) -> dict:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("split", "method", "seed") + METRICS + ("status",))
    for (split, method, seed), payload in histories.items():
        last = len(payload["history"]) - 1
        for i, rec in enumerate(payload["history"]):
            # the round that made a run diverge says so (its losses are nan); every other row is ok
            status = "diverged" if i == last and payload["status"] == "diverged" else "ok"
            writer.writerow((split, method, seed) + tuple(rec.get(k, math.nan) for k in METRICS) + (status,))
    with atomic_write(out / "results.csv") as fh:
        fh.write(buf.getvalue())
    runs, table = [], {}
    for (split, method, seed), payload in histories.items():
        last = payload["history"][-1]
        accs = [r["test_acc"] for r in payload["history"]]
        runs.append({"split": split, "method": method, "seed": seed, "status": payload["status"],
                     "rounds": last["round"], "params": payload["params"],
                     "final": {k: last.get(k, math.nan) for k in REPORTED},
                     "best_test_acc": float(np.nanmax(accs)) if np.isfinite(accs).any() else math.nan})
    for split in cfg.data.splits:
        for method in cfg.train.methods:
            rows = [r for r in runs if r["split"] == split and r["method"] == method]
            if not rows:
                continue
            # a diverged run's numbers mean nothing; an unfinished one's (--report of an
            # interrupted experiment) are of an earlier round than the others'
            kept = [r for r in rows if r["status"] == "done"]
            table.setdefault(split, {})[method] = {
                k: _stats([r["final"][k] for r in kept]) for k in REPORTED} | {
                "best_test_acc": _stats([r["best_test_acc"] for r in kept]),
                "runs": len(rows), "diverged": sum(r["status"] == "diverged" for r in rows),
                "unfinished": sum(r["status"] not in ("done", "diverged") for r in rows)}
    summary = {"runs": runs, "table": table, "config": cfg.to_dict()}
    write_json(out / "summary.json", finite_or_none(summary))
    if not figures:
        return summary
    from .figures import plot_rounds, plot_scaling

    plot_rounds(histories, out / "figures" / "rounds.png", cfg.data.splits, cfg.train.methods)
    plot_scaling(histories, out / "figures" / "scaling.png", cfg.data.splits, cfg.train.methods)
    return summary


def _read_history(path: Path) -> dict:
    """A run's ``history.json``, its ``null`` metrics back as NaN."""
    payload = json.loads(path.read_text())
    payload["history"] = [{k: math.nan if v is None else v for k, v in rec.items()} for rec in payload["history"]]
    return payload


def _stats(values) -> dict:
    v = np.asarray(values, dtype=np.float64)
    ok = v[np.isfinite(v)]
    if ok.size == 0:
        return {"mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan, "n": 0}
    return {"mean": float(ok.mean()), "std": float(ok.std(ddof=1)) if ok.size > 1 else 0.0,
            "min": float(ok.min()), "max": float(ok.max()), "n": int(ok.size)}
