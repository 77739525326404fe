r"""The verification suites declared as data: problems, and cases (theorem × problem × rule × H).

A :class:`Case` names a theorem of ``savic_theory.theory.THEOREMS``, a problem of ``PROBLEMS``,
a rule with its ``β`` and ``e``, the sync period ``H``, step sizes as fractions of the theorem's
largest allowed ``γ`` (``gamma_max``), the horizon and the number of seeds. Every case of a suite
satisfies its theorem's assumptions by construction: identical-data theorems get identical
data; ``β = "auto"`` picks the smallest β allowed by the β-condition theorem; the complexity
theorem's ``γ`` and ``T`` come from its own plan. Each case is one batched ``simulate`` call
(seeds × step sizes on the run axis), plus one with local scaling when ``local`` is set.

Example
-------
>>> from savic_theory.verify.suite import SUITES, PROBLEMS
>>> len(SUITES["default"]) > len(SUITES["quick"]) > 0
True
>>> PROBLEMS["quad-identical"]().identical
True
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ..problems._base import Problem

__all__ = ["Case", "PROBLEMS", "SUITES", "get_problem", "select_cases"]


@dataclass(frozen=True)
class Case:
    """One verification case (all numbers explicit, so a report reproduces it).

    Attributes
    ----------
    name : unique label.
    theorem : key of ``THEOREMS``.
    problem : key of ``PROBLEMS``.
    rule : key of ``savic_theory.rules.RULES``.
    beta : float, callable ``k -> β_k``, or ``"auto"`` (the smallest β the β-condition theorem allows).
    e : clip level (``α = e``).
    H : sync period.
    gamma_fracs : step sizes as fractions of ``gamma_max``.
    steps : horizon ``T`` (the complexity theorem plans its own).
    seeds : independent runs per step size.
    eps_frac : complexity theorem only: target ``ε = eps_frac · r0``.
    local : also run local scaling (reported, no theorem).
    seed : seed of the simulation's generator.
    """

    name: str
    theorem: str
    problem: str
    rule: str = "identity"
    beta: Any = 0.999
    e: float = 0.5
    H: int = 4
    gamma_fracs: tuple = (1.0, 0.25)
    steps: int = 400
    seeds: int = 64
    eps_frac: float | None = None
    local: bool = False
    seed: int = 0

    def describe(self) -> dict:
        """JSON-ready parameters of the case."""
        beta = self.beta if isinstance(self.beta, (int, float, str)) else getattr(self.beta, "__name__", "schedule")
        return {"name": self.name, "theorem": self.theorem, "problem": self.problem, "rule": self.rule,
                "beta": beta, "e": self.e, "H": self.H, "gamma_fracs": list(self.gamma_fracs),
                "steps": self.steps, "seeds": self.seeds, "eps_frac": self.eps_frac, "seed": self.seed}


# ----------------------------------------------------------------------------- problems
def _quad(**kw) -> Callable[[], Problem]:
    def make():
        from ..problems.quadratic import Quadratic

        return Quadratic.random(**kw)
    return make


def _logistic_random(**kw) -> Callable[[], Problem]:
    def make():
        from ..problems.logistic import Logistic

        return Logistic.random(**kw)
    return make


def _breast_cancer_identical() -> Problem:
    """Every client holds all 569 rows: real data, identical clients."""
    from ..problems.data import load_data
    from ..problems.logistic import Logistic

    X, y = load_data("breast_cancer")
    return Logistic([X, X], [y, y], lam=0.1, batch_size=16)


def _breast_cancer_dirichlet() -> Problem:
    from ..problems.logistic import Logistic

    return Logistic.from_dataset("breast_cancer", n_clients=4, split="dirichlet", alpha=0.5, lam=0.1,
                                 batch_size=16, seed=0)


def _searched(kappa, q, scale, heterogeneity) -> Callable[[], Problem]:
    """An instance of the counterexample search's class (``verify.adversarial``, d = 6, M = 4)."""
    def make():
        from .adversarial import instance_problem

        return instance_problem(kappa, q, scale, heterogeneity)
    return make


#: name -> factory of the problem (built once per process, see :func:`get_problem`)
PROBLEMS = MappingProxyType({
    "quad-identical": _quad(dim=8, n_clients=4, L=1.0, mu=0.1, noise=0.02, seed=1),
    "quad-identical-dense": _quad(dim=8, n_clients=4, L=1.0, mu=0.1, form="dense", noise=0.02, seed=2),
    "quad-heterogeneous": _quad(dim=8, n_clients=4, L=1.0, mu=0.1, heterogeneity=1.0,
                                client_spectra="random", noise=0.02, seed=3),
    "quad-heterogeneous-mild": _quad(dim=8, n_clients=4, L=1.0, mu=0.2, heterogeneity=0.05,
                                     client_spectra="random", noise=0.002, seed=4),
    "logistic-identical": _logistic_random(n_clients=4, n_per_client=64, dim=8, lam=0.05, batch_size=4, seed=4),
    "logistic-heterogeneous": _logistic_random(n_clients=4, n_per_client=64, dim=8, lam=0.05, heterogeneity=1.0,
                                               batch_size=4, seed=5),
    "breast-cancer-identical": _breast_cancer_identical,
    "breast-cancer-dirichlet": _breast_cancer_dirichlet,
    # the worst instances that `savic verify --adversarial-only --min-spread 2` finds (seed 0;
    # natural parameters κ, q, ‖x*‖ scale, heterogeneity to four digits): D̂ adapts about 2×
    "searched-rmsprop-identical": _searched(249.8, 7.462, 9.396, 0.0),
    "searched-rmsprop-heterogeneous": _searched(110.5, 1.942, 6.552, 0.1412),
    "searched-adam-identical": _searched(211.2, 6.141, 9.922, 0.0),
    "searched-adam-heterogeneous": _searched(18.37, 2.362, 3.806, 0.03148),
    "searched-oasis-identical": _searched(208.4, 7.478, 2.221, 0.0),
    "searched-oasis-heterogeneous": _searched(143.1, 5.895, 0.01, 0.008934),
})


@functools.cache
def get_problem(name: str) -> Problem:
    """The problem registered as ``name`` (built once)."""
    try:
        factory = PROBLEMS[name]
    except KeyError:
        raise ValueError(f"unknown problem {name!r}; known problems: {', '.join(PROBLEMS)}") from None
    return factory()


# ----------------------------------------------------------------------------- suites
def _default() -> tuple[Case, ...]:
    I, Hh = "identical", "heterogeneous"
    cases = [
        # identical data: every rule, several H, quadratics (diagonal and dense) and logistic
        Case("id/quad/identity/H1", I, "quad-identical", "identity", H=1, local=False),
        Case("id/quad/identity/H8", I, "quad-identical", "identity", H=8),
        # e below the gradients' size (G ≈ 0.3 here, ≈ 1.5 on the logistic and breast-cancer data), so that
        # D̂ = max(e, ·) really adapts and drifts: with e ≥ G it stays at e, the identity rule in disguise.
        # Not far below: the bound carries Γ/α and the drift product, and with e ≪ G it is vacuous (e = 0.1
        # keeps rmsprop's bound decaying here; adam's grows with its early bias-corrected syncs at any e < G)
        Case("id/quad/rmsprop/H4", I, "quad-identical", "rmsprop", beta=0.999, e=0.1, H=4, local=True),
        Case("id/quad/adam/H4", I, "quad-identical", "adam", beta=0.999, e=0.1, H=4, local=True),
        Case("id/quad/oasis/H4", I, "quad-identical", "oasis", beta=0.99, e=0.1, H=4, local=True),
        Case("id/quad-dense/oasis/H8", I, "quad-identical-dense", "oasis", beta=0.999, e=0.2, H=8),
        Case("id/logistic/identity/H4", I, "logistic-identical", "identity", H=4),
        Case("id/logistic/rmsprop/H8", I, "logistic-identical", "rmsprop", beta=0.999, e=0.3, H=8, local=True),
        Case("id/breast-cancer/identity/H4", I, "breast-cancer-identical", "identity", H=4, gamma_fracs=(1.0,),
             seeds=32, steps=300),
        # heterogeneous data
        Case("het/quad/identity/H2", Hh, "quad-heterogeneous", "identity", H=2),
        Case("het/quad/identity/H8", Hh, "quad-heterogeneous", "identity", H=8, steps=600),
        Case("het/quad/rmsprop/H4", Hh, "quad-heterogeneous", "rmsprop", beta=0.999, e=0.5, H=4, local=True),
        Case("het/quad/adam/H4", Hh, "quad-heterogeneous", "adam", beta=0.999, e=0.5, H=4, local=True),
        Case("het/quad/oasis/H4", Hh, "quad-heterogeneous", "oasis", beta=0.99, e=0.1, H=4, local=True),
        Case("het/logistic/oasis/H4", Hh, "logistic-heterogeneous", "oasis", beta=0.999, e=0.5, H=4),
        Case("het/logistic/identity/H1", Hh, "logistic-heterogeneous", "identity", H=1),
        Case("het/breast-cancer/identity/H4", Hh, "breast-cancer-dirichlet", "identity", H=4, gamma_fracs=(1.0,),
             seeds=32, steps=300),
        Case("het/breast-cancer/adam/H2", Hh, "breast-cancer-dirichlet", "adam", beta=0.999, e=0.3, H=2,
             gamma_fracs=(1.0,), seeds=32, steps=300),
        # the condition on β: β = β_min (rates survive), and a schedule β_k → 1
        Case("beta/quad/oasis-auto/H4", f"beta_condition[{I}]", "quad-identical", "oasis", beta="auto", e=0.1, H=4),
        Case("beta/quad-het/oasis-auto/H4", f"beta_condition[{Hh}]", "quad-heterogeneous", "oasis", beta="auto",
             e=0.1, H=4, steps=600),
        Case("beta/quad/identity/H4", f"beta_condition[{I}]", "quad-identical", "identity", H=4),
        # complexity: the planned γ and T reach ε
        Case("complexity/quad/identity/H4", f"complexity[{I}]", "quad-identical", "identity", H=4, eps_frac=0.05,
             gamma_fracs=(1.0,)),
        Case("complexity/quad/oasis-auto/H4", f"complexity[{I}]", "quad-identical", "oasis", beta="auto", e=0.5,
             H=4, eps_frac=0.1, gamma_fracs=(1.0,)),
        Case("complexity/quad-het/identity/H2", f"complexity[{Hh}]", "quad-heterogeneous-mild", "identity", H=2,
             eps_frac=0.1, gamma_fracs=(1.0,)),
        # where the adaptive bounds are close: the search's worst instances on which D̂ adapts about 2×
        # (with its β, e, H and γ/γ_max); the bound stays within 2.5× of rmsprop's and oasis's runs there,
        # which shows the size of its Γ/α factor (D̂ barely moves after the start: not its drift factor)
        Case("searched/rmsprop/identical", I, "searched-rmsprop-identical", "rmsprop", beta=0.9999, e=0.8621, H=5,
             gamma_fracs=(0.07522,), steps=200),
        Case("searched/rmsprop/heterogeneous", Hh, "searched-rmsprop-heterogeneous", "rmsprop", beta=0.99979,
             e=0.6652, H=14, gamma_fracs=(0.09804,), steps=200),
        Case("searched/adam/identical", I, "searched-adam-identical", "adam", beta=0.99982, e=0.9155, H=15,
             gamma_fracs=(0.04058,), steps=200),
        Case("searched/adam/heterogeneous", Hh, "searched-adam-heterogeneous", "adam", beta=0.99957, e=0.3651,
             H=16, gamma_fracs=(0.06705,), steps=200),
        Case("searched/oasis/identical", I, "searched-oasis-identical", "oasis", beta=0.99972, e=0.4999, H=5,
             gamma_fracs=(0.03162,), steps=200),
        Case("searched/oasis/heterogeneous", Hh, "searched-oasis-heterogeneous", "oasis", beta=0.99910, e=0.4986,
             H=2, gamma_fracs=(0.1131,), steps=200),
    ]
    return tuple(cases)


def _quick() -> tuple[Case, ...]:
    """A few small cases (tests, smoke runs): one per theorem."""
    I, Hh = "identical", "heterogeneous"
    return (
        Case("id/quad/rmsprop/H4", I, "quad-identical", "rmsprop", beta=0.999, e=0.1, H=4, steps=150, seeds=32,
             local=True),
        Case("het/quad/oasis/H4", Hh, "quad-heterogeneous", "oasis", beta=0.99, e=0.1, H=4, steps=150, seeds=32),
        Case("beta/quad/oasis-auto/H4", f"beta_condition[{I}]", "quad-identical", "oasis", beta="auto", e=0.1, H=4,
             steps=150, seeds=32, gamma_fracs=(1.0,)),
        Case("complexity/quad/identity/H4", f"complexity[{I}]", "quad-identical", "identity", H=4, eps_frac=0.3,
             gamma_fracs=(1.0,), seeds=32),
    )


#: suite name -> tuple of cases
SUITES = MappingProxyType({"default": _default(), "quick": _quick()})


def select_cases(suite="default", theorems=None) -> tuple[str, tuple[Case, ...]]:
    """``(suite name, cases)`` of a key of ``SUITES`` or a sequence of cases, kept to ``theorems``.

    Example
    -------
    >>> name, cases = select_cases("quick", theorems=["identical"])
    >>> name, [c.theorem for c in cases]
    ('quick', ['identical'])
    """
    if isinstance(suite, str):
        if suite not in SUITES:
            raise ValueError(f"unknown suite {suite!r}; known suites: {', '.join(SUITES)}")
        name, cases = suite, SUITES[suite]
    else:
        name, cases = "custom", tuple(suite)
        if not all(isinstance(c, Case) for c in cases):
            raise TypeError("suite must be a suite name or a sequence of savic_theory.verify.Case")
    if theorems:
        from ..theory import THEOREMS

        unknown = sorted(set(theorems) - set(THEOREMS))
        if unknown:
            raise ValueError(f"unknown theorem(s) {', '.join(unknown)}; known: {', '.join(THEOREMS)}")
        cases = tuple(c for c in cases if c.theorem in set(theorems))
    return name, cases
