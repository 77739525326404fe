"""SAVIC on a network: M clients, H local steps per round, averaging at synchronisation.

One :class:`Trainer` holds the clients of one process (all ``M`` in a single process, ``M/W``
each under ``torch.distributed`` with ``W`` processes) as rows of a tensor ``X (m, P)`` of flat
parameters. Per round of ``H`` local steps (the algorithm of ``docs/algorithm.md``)::

    every client m: ξ ← own minibatch; g_m ← ∇f_m(x_m; ξ)          (vmap over clients, or a loop)
                    x_m ← x_m − γ g_m / D̂                           (D̂ shared, or D̂_m: local)
                    local scaling: state_m ← update(state_m, S_m); D̂_m ← clip(D(state_m))
    after step H:   x̄ ← mean_m x_m;  x_m ← x̄                        (all-reduce of Σ x_m)
                    global scaling: s ← mean_m S_m (of step H);      (same all-reduce)
                                    state ← update(state, s); D̂ ← clip(D(state))

so communication happens only at synchronisation, through a communicator: :class:`LocalComm`
here, :class:`savic_theory.nn.distributed.DistComm` across processes. Every client draws its
minibatches, augmentations and Hutchinson probes from its own generator seeded by
``(seed, client)``, so the result does not depend on how clients are spread over processes.

Per-round metrics (the simulator's names where they exist): ``batch_loss`` (mean of the
minibatch losses of the round over clients and steps), ``train_loss`` (loss of ``x̄`` on a
fixed training subset), ``test_loss``, ``test_acc``, ``alpha_hat``/``Gamma_hat`` (min/max of
``D̂`` after the round), ``drift``/``drift_min`` (max/min of ``D̂_new/D̂`` over the round's
updates), ``consensus`` (``(1/M) Σ_m ‖x_m − x̄‖²`` just before averaging), timings and
throughput. A round ends synchronised, so :meth:`Trainer.state_dict` at a round boundary is
the whole state and :meth:`Trainer.load_state_dict` continues identically.
"""
from __future__ import annotations

import math
import time

import torch

from .._validation import check_int
from ..rules import Statistic
from .data import DeviceData
from .methods import TOGETHER, Method, Objective, TorchScaling, statistic
from .model import _stream_seed

__all__ = ["LocalComm", "Trainer", "METRICS", "to_channels_last"]

#: per-round metrics recorded by :meth:`Trainer.run_round`
METRICS = ("round", "step", "batch_loss", "train_loss", "test_loss", "test_acc", "alpha_hat",
           "Gamma_hat", "drift", "drift_min", "consensus", "train_seconds", "eval_seconds",
           "images_per_second")

_CHECKPOINT_VERSION = 1


class LocalComm:
    """Communication within one process that holds all clients (every reduction is the identity).

    Example
    -------
    >>> LocalComm().world
    1
    """

    rank = 0
    world = 1

    def sum_(self, t):
        return t

    def max_(self, t):
        return t

    def min_(self, t):
        return t

    def gather_clients(self, t):
        return t

    def gather_objects(self, objs):
        return list(objs)

    def broadcast_object(self, obj):
        return obj

    def barrier(self):
        pass


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """Channels-last strides for images ``(n, C, H, W)`` or per-client stacks ``(m, n, C, H, W)``."""
    if x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.ndim == 5:
        return x.permute(0, 1, 3, 4, 2).contiguous().permute(0, 1, 4, 2, 3)
    return x


class Trainer:
    r"""SAVIC (or Local SGD) on a model for the clients of this process.

    Parameters
    ----------
    objective : Objective
        ``f_m`` on the flat parameters.
    data : DeviceData
        Training rows of all ``M`` clients (and test data) on this process's device.
    method : Method
        Rule, scaling variant and ``γ``.
    x0 : tensor (P,)
        Initial parameters, the same on every process (moved to the data's device).
    local_steps : int
        ``H``, local steps per round (a sync after each ``H`` steps).
    batch_size : int
        Minibatch per client and step (0: each client's full data).
    seed : int
        Seed of the clients' generators (minibatches, augmentation, probes).
    comm : LocalComm or DistComm
    together : {"vmap", "loop"}
        Compute this process's clients in one ``vmap`` call or in a loop.
    channels_last : bool
        Feed image batches with channels-last strides.
    eval_batch : int
        Batch size of the evaluations.
    dtype : torch dtype
        Dtype of parameters and optimizer state (float32; float64 in tests).

    Example
    -------
    >>> import torch
    >>> from savic_theory.nn import DeviceData, Objective, ResNet18, client_parts, init_params, \
    ...     make_method, synthetic_images
    >>> s = synthetic_images(32, 16, classes=4, size=8)
    >>> data = DeviceData(s.train_x, s.train_y, client_parts(s.train_y, 2), s.test_x, s.test_y)
    >>> net = ResNet18(classes=4, width=2)
    >>> tr = Trainer(Objective(net), data, make_method("adam-global", 1e-3), init_params(net, 0),
    ...              local_steps=2, batch_size=4, seed=0)
    >>> sorted(tr.run_round())[:3]
    ['Gamma_hat', 'alpha_hat', 'batch_loss']
    """

    def __init__(self, objective: Objective, data: DeviceData, method: Method, x0: torch.Tensor, *,
                 local_steps: int, batch_size: int, seed: int = 0, comm=None, together: str = "vmap",
                 channels_last: bool = False, eval_batch: int = 1000, dtype=torch.float32):
        self.comm = comm or LocalComm()
        self.objective, self.data, self.method = objective, data, method
        local_steps, batch_size = check_int("local_steps", local_steps, 1), check_int("batch_size", batch_size, 0)
        eval_batch, seed = check_int("eval_batch", eval_batch, 1), check_int("seed", seed, 0)
        if together not in TOGETHER:
            raise ValueError(f"together must be one of {', '.join(TOGETHER)}, got {together!r}")
        self.H, self.batch_size, self.eval_batch = local_steps, batch_size, eval_batch
        self.together, self.channels_last = together, bool(channels_last)
        self.M = data.n_clients
        if self.M % self.comm.world:
            raise ValueError(f"the {self.M} clients cannot be shared equally by {self.comm.world} processes")
        per = self.M // self.comm.world
        self.clients = range(self.comm.rank * per, (self.comm.rank + 1) * per)
        self.device, self.dtype = data.device, dtype
        x0 = torch.as_tensor(x0)
        if x0.ndim != 1 or x0.shape[0] != objective.layout.size:
            raise ValueError(f"x0 must have shape ({objective.layout.size},), got {tuple(x0.shape)}")
        self.P = objective.layout.size
        self.x = x0.to(self.device, dtype).expand(per, -1).clone()
        self.generators = [torch.Generator(self.device).manual_seed(_stream_seed(seed, 1, m))
                           for m in self.clients]
        self.scaling = TorchScaling(method.rule)
        info = torch.finfo(dtype)
        for name, value in (("gamma", method.gamma), ("e", self.scaling.e)):  # numbers of dtype in each step
            if not info.tiny <= value <= info.max:
                raise ValueError(f"{name} = {value:g} does not fit {dtype} (from {info.tiny:.3g} to {info.max:.3g})")
        self.local = method.scaling == "local"
        self.probe = method.rule.statistic is Statistic.HESSIAN_PROBE
        self.round, self.k, self.history = 0, 0, []
        self.state = None
        self.D = torch.ones((1, 1), dtype=dtype, device=self.device)
        if not self.scaling.static:
            _, s, _ = self._client_step(with_statistic=True)
            if not self.local:
                s = self._mean_over_clients(s)
            self.k = method.rule.init_updates
            self.state = self.scaling.init(s)
            self.D = self.scaling.D(self.state)

    # ------------------------------------------------------------------ one step of every client
    def _client_step(self, with_statistic: bool):
        xb, yb = self.data.client_batch(self.clients, self.generators, self.batch_size, self.dtype)
        if self.channels_last:
            xb = to_channels_last(xb)
        Z = None
        if with_statistic and self.probe:
            Z = torch.stack([torch.randint(0, 2, (self.P,), generator=g, device=self.device).to(self.dtype)
                             for g in self.generators]) * 2 - 1
        G, HZ, losses = self.objective.clients(self.x, xb, yb, Z, self.together)
        s = statistic(self.method.rule, G, Z, HZ) if with_statistic else None
        return G, s, losses

    def _mean_over_clients(self, t):
        total = t.sum(0, keepdim=True)
        self.comm.sum_(total)
        return total / self.M

    # ------------------------------------------------------------------ a round
    def run_round(self) -> dict:
        """``H`` local steps, then averaging; returns this round's metrics (also in ``history``)."""
        _sync(self.device)
        t0 = time.perf_counter()
        gamma, static = self.method.gamma, self.scaling.static
        loss_sum = torch.zeros(len(self.clients), dtype=torch.float64, device=self.device)
        hi = lo = None
        s = None
        for h in range(self.H):
            last = h == self.H - 1
            with_stat = not static and (self.local or last)
            G, s, losses = self._client_step(with_stat)
            loss_sum += losses.detach().double()
            if static:
                self.x.add_(G, alpha=-gamma)
            else:
                self.x.addcdiv_(G, self.D, value=-gamma)
            if self.local and with_stat:
                self.k += 1
                self.state = self.scaling.update(self.state, s, self.k)
                hi, lo = self._new_D(hi, lo)
        # --- synchronisation: one all-reduce of Σ_m x_m (and Σ_m S_m in global scaling) ---
        shared = not static and not self.local
        buf = torch.cat([self.x.sum(0), s.sum(0)]) if shared else self.x.sum(0)
        self.comm.sum_(buf)
        x_bar = buf[:self.P] / self.M
        consensus = ((self.x - x_bar) ** 2).sum().double()
        self.x.copy_(x_bar.expand_as(self.x))
        if shared:
            self.k += 1
            self.state = self.scaling.update(self.state, (buf[self.P:] / self.M)[None], self.k)
            hi, lo = self._new_D(hi, lo)
        # --- metrics ---
        stats = torch.stack([loss_sum.sum(), consensus])
        self.comm.sum_(stats)
        ext = torch.stack([self.D.max().double(), -self.D.min().double(),
                           torch.as_tensor(1.0 if hi is None else hi, dtype=torch.float64, device=self.device),
                           torch.as_tensor(-1.0 if lo is None else -lo, dtype=torch.float64, device=self.device)])
        self.comm.max_(ext)
        _sync(self.device)
        train_seconds = time.perf_counter() - t0
        self.round += 1
        record = {"round": self.round, "step": self.round * self.H,
                  "batch_loss": float(stats[0]) / (self.M * self.H),
                  "consensus": float(stats[1]) / self.M,
                  "Gamma_hat": float(ext[0]), "alpha_hat": -float(ext[1]),
                  "drift": float(ext[2]), "drift_min": -float(ext[3]),
                  "train_seconds": train_seconds,
                  "images_per_second": self.M * self.H * (self.batch_size or self.data.sizes[0]) / train_seconds}
        record.update(self.evaluate())
        self.history.append(record)
        return record

    def _new_D(self, hi, lo):
        D_new = self.scaling.D(self.state)
        ratio = D_new / self.D
        r_hi, r_lo = ratio.max().double(), ratio.min().double()
        hi = r_hi if hi is None else torch.maximum(hi, r_hi)
        lo = r_lo if lo is None else torch.minimum(lo, r_lo)
        self.D = D_new
        return hi, lo

    def initial_metrics(self) -> dict:
        """Metrics of the starting point (round 0): evaluations and ``D̂``; no training losses."""
        ext = torch.stack([self.D.max().double(), -self.D.min().double()])
        self.comm.max_(ext)
        record = {"round": 0, "step": 0, "batch_loss": math.nan, "consensus": 0.0,
                  "Gamma_hat": float(ext[0]), "alpha_hat": -float(ext[1]), "drift": math.nan,
                  "drift_min": math.nan, "train_seconds": 0.0, "images_per_second": math.nan}
        record.update(self.evaluate())
        return record

    def evaluate(self) -> dict:
        """Loss of ``x̄`` on the training subset, loss and accuracy on the test set (all processes)."""
        t0 = time.perf_counter()
        x_bar = self.x[0]
        r, w = self.comm.rank, self.comm.world
        test = self.objective.evaluate(
            x_bar, self._eval_inputs(self.data.test_batches(self.eval_batch, r, w, self.dtype)))
        train = self.objective.evaluate(
            x_bar, self._eval_inputs(self.data.train_eval_batches(self.eval_batch, r, w, self.dtype)))
        both = torch.cat([test, train])
        self.comm.sum_(both)
        both = both.tolist()
        _sync(self.device)

        def ratio(a, n):
            return a / n if n else math.nan

        return {"test_loss": ratio(both[0], both[2]), "test_acc": ratio(both[1], both[2]),
                "train_loss": ratio(both[3], both[5]), "eval_seconds": time.perf_counter() - t0}

    def _eval_inputs(self, batches):
        for xb, yb in batches:
            yield (to_channels_last(xb) if self.channels_last else xb), yb

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        """The whole state at a round boundary, independent of how clients are spread over processes.

        Holds ``x̄`` (clients agree after a sync), the rule state (shared, or one row per
        client for local scaling, gathered from all processes), the ``M`` generator states,
        the device type they belong to, the update counter and the history, all copies (not
        views of the training state, which the next round changes). Collective: every
        process must call it.
        """
        state = None
        if self.state is not None:
            state = {}
            for name, value in zip(self.state._fields, self.state):
                if torch.is_tensor(value):
                    # copy=True: on the CPU ``.cpu()`` alone would return the live tensor
                    value = (self.comm.gather_clients(value) if self.local else value).detach().to("cpu", copy=True)
                state[name] = value
        gens = self.comm.gather_objects([g.get_state() for g in self.generators])
        return {"version": _CHECKPOINT_VERSION, "method": self.method.name, "clients": self.M,
                "params": self.P, "device": self.device.type, "round": self.round, "k": self.k,
                "x": self.x[0].detach().to("cpu", copy=True), "state": state, "generators": gens,
                "history": [dict(r) for r in self.history]}

    def load_state_dict(self, sd: dict) -> None:
        """Continue from :meth:`state_dict` (possibly written with another number of processes).

        The checkpoint must come from the same device type (``cpu`` or ``cuda``; another GPU
        index is fine): the generator states of one type cannot be loaded into the other's
        generators, whose random streams differ anyway.
        """
        if sd.get("version") != _CHECKPOINT_VERSION:
            raise ValueError(f"checkpoint version {sd.get('version')!r} is not {_CHECKPOINT_VERSION}")
        for key, mine in (("method", self.method.name), ("clients", self.M), ("params", self.P)):
            if sd[key] != mine:
                raise ValueError(f"checkpoint is for {key} = {sd[key]!r}, this run has {mine!r}")
        written = sd.get("device") or _generator_device(sd["generators"])
        if written != self.device.type:
            raise ValueError(f"checkpoint was written on {written} and this run is on {self.device.type}; the "
                             f"clients' random generators differ between device types, so it resumes only on "
                             f"{written}")
        gens, size = sd["generators"], self.generators[0].get_state().numel()
        if len(gens) != self.M or any(st.numel() != size for st in gens):  # damaged, or edited by hand
            raise ValueError(f"checkpoint does not hold {self.M} generator states of {size} bytes, as the "
                             f"{self.device.type} generators of this run need")
        x = sd["x"]
        if not torch.is_tensor(x) or tuple(x.shape) != (self.P,):
            raise ValueError(f"checkpoint's x has shape {tuple(getattr(x, 'shape', ()))}, this run's model "
                             f"needs ({self.P},)")
        self.x = x.to(self.device, self.dtype).expand(len(self.clients), -1).clone()
        if (sd["state"] is None) != (self.state is None):
            raise ValueError(f"checkpoint {'has no' if sd['state'] is None else 'has a'} scaling state, "
                             f"this run's method {self.method.name} {'has' if sd['state'] is None else 'has none'}")
        if sd["state"] is not None:
            values = []
            mine = list(self.state)
            if len(mine) != len(sd["state"]):
                raise ValueError(f"checkpoint's scaling state has {len(sd['state'])} parts, this run's {len(mine)}")
            for (key, value), own in zip(sd["state"].items(), mine):
                if torch.is_tensor(value) and torch.is_tensor(own):
                    # the whole tensor (all M clients' rows in local scaling), so that every
                    # process of a distributed run finds the same fault
                    want = (self.M, *own.shape[1:]) if self.local else tuple(own.shape)
                    if tuple(value.shape) != want:
                        raise ValueError(f"checkpoint's scaling state {key} has shape {tuple(value.shape)}, this "
                                         f"run needs {want}")
                if torch.is_tensor(value):
                    # a copy: the rounds to come must not change the checkpoint handed in
                    value = value[self.clients.start:self.clients.stop] if self.local else value
                    value = value.to(self.device, self.dtype, copy=True)
                values.append(value)
            self.state = type(self.scaling.init(torch.zeros(1, dtype=self.dtype)))(*values)
            self.D = self.scaling.D(self.state)
        for g, st in zip(self.generators, sd["generators"][self.clients.start:self.clients.stop]):
            g.set_state(st)
        self.round, self.k, self.history = int(sd["round"]), int(sd["k"]), [dict(r) for r in sd["history"]]


def _generator_device(states) -> str:
    """The device type of generator states saved without it (checkpoints before the ``device``
    key): a CPU generator's state has the size of a fresh one (the Mersenne Twister's 5056 bytes),
    a CUDA generator's is 16 (seed and Philox offset)."""
    cpu = torch.Generator("cpu").get_state().numel()
    return "cpu" if all(st.numel() == cpu for st in states) else "cuda"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
