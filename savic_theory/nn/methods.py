"""The methods compared on networks: Local SGD and SAVIC with global or local scaling.

A method is a scaling rule from :mod:`savic_theory.rules`, a scaling variant and a step size.
The rule code itself runs on torch tensors: the rules take an array namespace and use only
array-API operations, so :class:`TorchScaling` passes them ``array_api_compat.torch`` and the
update semantics are those of the simulator by construction (``docs/algorithm.md``).

:class:`Objective` is ``f_m`` on the flat parameter vector ``x ∈ ℝ^P`` of a model: the loss of
a minibatch plus ``(λ/2)‖x‖²``. It gives stochastic gradients and, for OASIS, Hutchinson
probes ``z ⊙ (∇²f_m(x, ξ) z)`` with the Hessian-vector product taken by double backward
(reverse over reverse: the vector-Jacobian product of the gradient map), for all clients at
once through ``torch.func.vmap`` or in a Python loop over clients.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch.func import functional_call, grad_and_value, vjp, vmap
from torch.nn import functional as F

from ..rules import RULES, ScalingRule, Statistic, clip, make
from .model import ParamLayout

__all__ = ["METHOD_NAMES", "SCALINGS", "PRECISIONS", "TOGETHER", "Method", "make_method",
           "parse_method", "TorchScaling", "Objective", "statistic"]

SCALINGS = ("global", "local")
#: ``"auto"``: bf16 autocast on CUDA, float32 elsewhere; ``"fp64"``: float64 parameters (tests)
PRECISIONS = ("auto", "bf16", "fp32", "fp64")
#: how the clients of one process are computed: one vmapped call, or a Python loop
TOGETHER = ("vmap", "loop")
#: ``local_sgd`` (identity rule) and ``<rule>-<scaling>`` for every rule with a statistic
METHOD_NAMES = ("local_sgd",) + tuple(f"{r}-{s}" for r in RULES if r != "identity" for s in SCALINGS)


class Method(NamedTuple):
    """A method: a scaling rule, a scaling variant and a step size ``γ``.

    Attributes
    ----------
    name : str
        ``"local_sgd"`` or ``"<rule>-<scaling>"``.
    rule : ScalingRule
    scaling : {"global", "local"}
    gamma : float
    """

    name: str
    rule: ScalingRule
    scaling: str
    gamma: float


def parse_method(name: str) -> tuple[str, str]:
    """``(rule name, scaling)`` of a method name (``local_sgd`` is the identity rule).

    Example
    -------
    >>> parse_method("oasis-local"), parse_method("local_sgd")
    (('oasis', 'local'), ('identity', 'global'))
    """
    if name not in METHOD_NAMES:
        raise ValueError(f"unknown method {name!r}; known methods: {', '.join(METHOD_NAMES)}")
    if name == "local_sgd":
        return "identity", "global"
    rule, scaling = name.rsplit("-", 1)
    return rule, scaling


def make_method(name: str, gamma: float, beta: float | None = None, e: float | None = None) -> Method:
    """Build a :class:`Method` by name, with the rule's ``beta`` and clip level ``e``.

    Example
    -------
    >>> m = make_method("adam-local", gamma=1e-3, beta=0.99, e=1e-6)
    >>> m.rule.name, m.scaling, m.gamma
    ('adam', 'local', 0.001)
    """
    rule_name, scaling = parse_method(name)
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not np.isfinite(gamma) or gamma <= 0:
        raise ValueError(f"gamma must be a finite number > 0, got {gamma!r}")
    params = {k: v for k, v in (("beta", beta), ("e", e)) if v is not None}
    rule = make(rule_name, **({} if rule_name == "identity" else params))
    return Method(name, rule, scaling, float(gamma))


class TorchScaling:
    """A rule's ``init``/``update``/``D̂`` on torch tensors (``array_api_compat.torch``).

    ``D̂ = clip(D(state)) = max(e, |D|)``; ``k`` counts the state's updates as in the simulator
    (``init`` consumes ``β₁``; the ``k``-th update uses ``β_k``).

    Example
    -------
    >>> import torch
    >>> from savic_theory import rules
    >>> sc = TorchScaling(rules.rmsprop(beta=0.5, e=0.1))
    >>> st = sc.init(torch.tensor([4.0, 0.0]))
    >>> sc.D(sc.update(st, torch.tensor([0.0, 0.0]), 1)).tolist()
    [1.4142135381698608, 0.10000000149011612]
    """

    def __init__(self, rule: ScalingRule):
        import array_api_compat.torch as xp

        self.rule, self.xp = rule, xp
        if rule.runs is not None:
            raise ValueError(f"rule {rule.name}: beta and e must be scalars here (no run axis)")
        self.e = float(rule.e)

    @property
    def static(self) -> bool:
        return self.rule.is_static

    def beta(self, k: int) -> float:
        """``β_k`` as a Python float (0 for the identity rule)."""
        if self.rule.beta is None:
            return 0.0
        return float(self.rule.beta.values(np.array([k], dtype=np.int64))[0])

    def init(self, s):
        return self.rule.init(s, self.beta(1), self.xp)

    def update(self, state, s, k: int):
        return self.rule.update(state, s, self.beta(k), self.xp)

    def D(self, state):
        return clip(self.rule.diagonal(state, self.xp), self.e, self.xp)


def statistic(rule: ScalingRule, g, z=None, hz=None):
    """The rule's per-client statistic ``S``: ``g ⊙ g`` or ``z ⊙ (∇²f z)``."""
    return _STATISTICS[rule.statistic](g, z, hz)


_STATISTICS = {
    Statistic.GRAD_SQUARED: lambda g, z, hz: g * g,
    Statistic.HESSIAN_PROBE: lambda g, z, hz: z * hz,
}


class Objective:
    r"""``f_m(x; ξ) = loss(model_x(inputs), targets) + (λ/2)‖x‖²`` on a flat vector ``x ∈ ℝ^P``.

    Parameters
    ----------
    model : torch.nn.Module
        Used through ``torch.func.functional_call``; its own parameters are ignored.
    layout : ParamLayout, optional
        Defaults to ``ParamLayout(model)``.
    loss : callable ``(outputs, targets) -> scalar``, optional
        Mean loss over the batch; cross-entropy by default (in float32 at least).
    weight_decay : float
        ``λ ≥ 0``, part of ``f_m`` (so of the gradient and of the Hessian probes).
    precision : {"auto", "bf16", "fp32", "fp64"}
        ``bf16`` runs the model under ``torch.autocast`` (bfloat16); ``auto`` means ``bf16`` on
        CUDA and ``fp32`` elsewhere. Parameters keep their dtype (float32, float64 for ``fp64``).

    Example
    -------
    >>> import torch
    >>> obj = Objective(torch.nn.Linear(2, 3))
    >>> x = torch.zeros(obj.layout.size)
    >>> g, loss = obj.grad(x, torch.ones(4, 2), torch.zeros(4, dtype=torch.long))
    >>> tuple(g.shape), round(float(loss), 4)
    ((9,), 1.0986)
    """

    def __init__(self, model: torch.nn.Module, layout: ParamLayout | None = None,
                 loss: Callable | None = None, weight_decay: float = 0.0, precision: str = "auto"):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or weight_decay < 0:
            raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
        self.model = model
        self.layout = layout or ParamLayout(model)
        self.loss = loss or _cross_entropy
        self.weight_decay = float(weight_decay)
        self.precision = precision

    def autocast(self, device: torch.device):
        """The autocast context of this precision on ``device``."""
        bf16 = self.precision == "bf16" or (self.precision == "auto" and device.type == "cuda")
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)

    def outputs(self, x: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """The model's outputs with parameters ``x`` (under this precision's autocast)."""
        with self.autocast(inputs.device):
            return functional_call(self.model, self.layout.unflatten(x), (inputs,))

    def __call__(self, x, inputs, targets):
        out = self.loss(self.outputs(x, inputs), targets)
        if self.weight_decay:
            out = out + 0.5 * self.weight_decay * torch.sum(x * x)
        return out

    def grad(self, x, inputs, targets):
        """``(∇f_m(x; ξ), f_m(x; ξ))`` for one client."""
        return grad_and_value(self.__call__)(x, inputs, targets)

    def grad_hvp(self, x, inputs, targets, z):
        """``(∇f_m, ∇²f_m z, f_m)`` for one client; the product by double backward."""
        g, pullback, value = vjp(lambda p: grad_and_value(self.__call__)(p, inputs, targets), x, has_aux=True)
        (hz,) = pullback(z)
        return g, hz, value

    def clients(self, X, inputs, targets, Z=None, together: str = "vmap"):
        """Gradients (and probes) of ``m`` clients: ``X (m, P)``, ``inputs (m, b, ...)``.

        Returns ``(G (m, P), HZ (m, P) or None, losses (m,))``; ``together`` chooses one
        ``vmap`` call or a Python loop (same numbers up to floating-point reassociation).
        """
        if together not in TOGETHER:
            raise ValueError(f"together must be one of {', '.join(TOGETHER)}, got {together!r}")
        args = (X, inputs, targets) if Z is None else (X, inputs, targets, Z)
        fn = self.grad if Z is None else self.grad_hvp
        if together == "vmap":
            out = vmap(fn)(*args)
        else:
            per = [fn(*(a[i] for a in args)) for i in range(X.shape[0])]
            out = tuple(torch.stack(parts) for parts in zip(*per))
        if Z is None:
            return out[0], None, out[1]
        return out

    @torch.no_grad()
    def evaluate(self, x, batches) -> torch.Tensor:
        """``[Σ loss, Σ correct, count]`` over ``batches`` of ``(inputs, targets)`` (no weight decay).

        ``correct`` counts ``argmax = target`` for integer targets and is 0 otherwise; it is NaN
        once an output is NaN or infinite (the argmax of such outputs means nothing).
        """
        total = torch.zeros(3, dtype=torch.float64, device=x.device)
        for inputs, targets in batches:
            out = self.outputs(x, inputs)
            n = targets.shape[0]
            total[0] += float(n) * self.loss(out, targets).double()
            if not targets.is_floating_point() and out.ndim == 2:
                correct = (out.argmax(dim=1) == targets).sum().double()
                total[1] += torch.where(torch.isfinite(out).all(), correct, math.nan)  # no host sync
            total[2] += n
        return total


def _cross_entropy(outputs, targets):
    if outputs.dtype in (torch.float16, torch.bfloat16):  # autocast: the loss in float32
        outputs = outputs.float()
    return F.cross_entropy(outputs, targets)
