r"""Convergence theorems for SAVIC with global scaling, derived by SymPy from the lemmas.

Every theorem here is *derived*, not typed in: the functions below take the coefficients of the
one-step lemma and of a consensus lemma (``savic_theory.theory.lemmas``), collect the step-size
conditions with ``solve``, unroll the per-step recursion inside a round with ``summation``
(a geometric sum), multiply the ``(1 + δ)`` factors of the syncs with ``Product`` (a power) and
sum the rounds with ``summation`` again. The result is the bound on ``E‖x̄_t − x*‖²`` at every
step ``t`` for strongly convex ``f``:

.. math::
    E\|\bar x_t - x^*\|^2 \le \frac1\alpha\Bigl[(1-\rho)^{n} q^{p}\,\Gamma r_0
        + (1-\rho)^{n}(1+\delta)\,\varepsilon S_H \sum_{j<p} q^j + \varepsilon S_n\Bigr],
    \quad \rho = \frac{\gamma\mu}{\Gamma},\; q = (1+\delta)(1-\rho)^H,\; S_m = \frac{1-(1-\rho)^m}{\rho},

with ``p = ⌊t/H⌋``, ``n = t − pH`` and ``ε`` the per-step noise of the recursion (identical or
heterogeneous data). Local scaling has no theorem here. These are this project's derivations,
not the paper's (whose statements are not available); ``docs/theory.md`` writes them out.

``THEOREMS`` is the read-only registry. Each :class:`Theorem` exposes ``bound`` (a SymPy
expression), ``conditions`` (named SymPy inequalities), ``evaluate(**numbers)``, ``latex()``,
``gamma_max(**numbers)`` and, for the rate theorems, ``curve(...)``: the same unrolled recursion
evaluated along any sync schedule with per-sync drifts ``δ_k`` (β schedules, adam's bias
correction), which equals ``bound`` for periodic syncs and constant ``δ``.

Example
-------
>>> from savic_theory.theory import THEOREMS
>>> thm = THEOREMS["identical"]
>>> nums = dict(L=1.0, mu=0.1, alpha=1.0, Gamma=1.0, gamma=0.05, delta=0.0, M=4, H=4,
...             sigma2=0.01, A_nu=0.0, B_nu=1.0, r0=1.0)
>>> round(float(thm.evaluate(t=0, **nums)), 12)
1.0
>>> round(float(thm.evaluate(t=2000, **nums)), 4)   # noise floor γσ²/(μM) + O(γ²L(H−1)σ²/μ)
0.0024
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import sympy as sp

from .lemmas import LEMMAS, RULE_BOUNDS
from .symbols import (
    SYMBOLS,
    Gamma,
    H,
    T,
    alpha,
    beta,
    delta,
    eps,
    gamma,
    k,
    n,
    p,
    r0,
    rho,
    t,
)

__all__ = ["Theorem", "ComplexityTheorem", "THEOREMS", "evaluate", "noise_floor"]

_i = sp.Symbol("i", integer=True, nonnegative=True)
_j = sp.Symbol("j", integer=True, nonnegative=True)
_Psi0 = sp.Symbol("Psi_0", nonnegative=True)
_Psi_p = sp.Symbol("Psi_p", nonnegative=True)
gamma_max_sym = sp.Symbol("gamma_max", positive=True)
_X = sp.Symbol("X", positive=True)  # 1 + δ_max in the β conditions


# =========================================================================================
# The theorem object
# =========================================================================================
@dataclass(frozen=True)
class Theorem:
    r"""A derived bound with its conditions.

    Attributes
    ----------
    name, title : registry key and one-line title.
    statement : the theorem in words.
    bound : SymPy expression bounding ``E‖x̄_t − x*‖²`` (the complexity theorem: ``T_ε``).
    conditions : name -> SymPy inequality ``lhs ≤ rhs`` that must hold.
    gamma_conditions : names of the conditions that are upper limits on ``γ`` (increasing in γ).
    assumptions : the assumptions in words.
    lemmas : names of the lemmas used.
    derivation : ``(description, expression)`` pairs: the SymPy steps.
    extras : named expressions (``rho``, per-step noise ``eps_step``, ...).

    Example
    -------
    >>> from savic_theory.theory import THEOREMS
    >>> sorted(THEOREMS["heterogeneous"].conditions)
    ['coupling', 'step_size']
    """

    name: str
    title: str
    statement: str
    bound: sp.Expr
    conditions: Mapping[str, sp.Basic]
    gamma_conditions: tuple
    assumptions: tuple
    lemmas: tuple
    derivation: tuple = ()
    extras: Mapping[str, Any] = field(default_factory=dict)

    # ---------------------------------------------------------------- evaluation
    @property
    def parameters(self) -> tuple[str, ...]:
        """Keyword names ``evaluate`` needs (sorted)."""
        return _names(self.bound)

    def evaluate(self, **numbers):
        """The bound at the given numbers (NumPy broadcasting over arrays).

        Parameters
        ----------
        **numbers : float or array
            One keyword per symbol of the bound (``parameters``); names of other known symbols
            are ignored, unknown names raise ``TypeError``. A value outside its symbol's domain
            (sign, integrality: ``symbols.py``) or against ``μ ≤ L`` or ``α ≤ Γ`` raises
            ``ValueError`` naming the parameter.
        """
        return _evaluate(self.bound, numbers, f"theorem {self.name!r}")

    def check(self, rtol: float = 1e-12, **numbers) -> dict[str, np.ndarray]:
        """Whether each condition holds at the numbers: name -> bool (array)."""
        out = {}
        for name, rel in self.conditions.items():
            lhs = _evaluate(rel.lhs, numbers, f"condition {name!r} of {self.name!r}")
            rhs = _evaluate(rel.rhs, numbers, f"condition {name!r} of {self.name!r}")
            out[name] = np.asarray(lhs <= rhs + rtol * np.abs(rhs))
        return out

    def holds(self, **numbers) -> np.ndarray:
        """True where every condition holds."""
        return np.logical_and.reduce([np.asarray(v) for v in self.check(**numbers).values()])

    def gamma_max(self, **numbers) -> np.ndarray:
        """The largest ``γ`` satisfying the step-size conditions (bisection in ``log γ``).

        Every condition in ``gamma_conditions`` is increasing in ``γ``; the search starts
        from the closed-form cap of the one-step lemma.
        """
        numbers = {k_: v for k_, v in numbers.items() if k_ != "gamma"}
        hi = np.asarray(_evaluate(self.extras["gamma_cap"], numbers, "gamma cap"), dtype=np.float64)
        lo = hi * 1e-12
        ok_hi = self._gamma_ok(hi, numbers)
        for _ in range(80):
            mid = np.sqrt(lo * hi)
            ok = self._gamma_ok(mid, numbers)
            lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
        return np.where(ok_hi, np.asarray(_evaluate(self.extras["gamma_cap"], numbers, "gamma cap")), lo)

    def _gamma_ok(self, g, numbers):
        res = True
        for name in self.gamma_conditions:
            rel = self.conditions[name]
            lhs = _evaluate(rel.lhs, {**numbers, "gamma": g}, name)
            rhs = _evaluate(rel.rhs, {**numbers, "gamma": g}, name)
            res = res & (lhs <= rhs * (1 + 1e-12))
        return res

    def latex(self) -> str:
        """``E‖x̄_t − x*‖² ≤ bound`` in LaTeX, followed by the conditions."""
        lhs = r"\mathbb{E}\|\bar x_t - x^*\|^2"
        conds = r",\quad ".join(sp.latex(c) for c in self.conditions.values())
        return f"{lhs} \\le {sp.latex(self.bound)}" + (f"\\quad\\text{{if }} {conds}" if conds else "")

    # ---------------------------------------------------------------- schedules
    def curve(self, steps, sync_steps, drift, Phi0=None, **numbers) -> np.ndarray:
        """The unrolled recursion along an arbitrary sync schedule (bound at each recorded step).

        ``b_0 = Γ r_0``; ``b_{t+1} = (1 − ρ) b_t + ε``; at the ``s``-th sync moment
        ``b ← (1 + δ_s) b``; the bound is ``b_t/α``. For periodic syncs and constant ``δ`` this
        is ``bound`` exactly.

        Parameters
        ----------
        steps : int array (n_records,)
            Steps at which to report the bound (increasing, starting anywhere ≥ 0).
        sync_steps : int array (n_syncs,)
            Sync moments (the step count after which the clients average).
        drift : array (n_syncs,) or (n_syncs, runs)
            ``1 + δ_s`` at each sync (NaN is read as 1: a run that did not synchronise).
        Phi0 : float or array, optional
            ``Φ_0`` (default ``Γ r_0``).
        **numbers
            Values for ``rho`` and ``eps_step`` (``gamma, mu, Gamma, L, alpha, M, H, sigma2, ...``).

        Returns
        -------
        array (n_records,) or (n_records, runs)
        """
        if "eps_step" not in self.extras:
            raise ValueError(f"theorem {self.name!r} has no step recursion")
        rho_v = np.asarray(_evaluate(self.extras["rho"], numbers, "rho"), dtype=np.float64)
        eps_v = np.asarray(_evaluate(self.extras["eps_step"], numbers, "eps_step"), dtype=np.float64)
        alpha_v = np.asarray(_evaluate(alpha, numbers, "alpha"), dtype=np.float64)
        b = np.asarray(Phi0 if Phi0 is not None else _evaluate(Gamma * r0, numbers, "Phi0"), dtype=np.float64)
        steps, sync_steps = _step_array(steps, "steps"), _step_array(sync_steps, "sync_steps")
        drift = np.asarray(drift, dtype=np.float64)
        if drift.shape[:1] != sync_steps.shape:
            raise ValueError(f"drift has {drift.shape[:1]} rows for {sync_steps.shape[0]} sync moments")
        drift = np.where(np.isnan(drift), 1.0, drift)
        shape = np.broadcast_shapes(rho_v.shape, eps_v.shape, alpha_v.shape, b.shape, drift.shape[1:])
        b = np.broadcast_to(b, shape).astype(np.float64)
        out = np.empty((len(steps),) + shape)
        sync_at = {int(s): i for i, s in enumerate(sync_steps)}
        if len(sync_at) != len(sync_steps):
            raise ValueError(f"sync_steps must not repeat a step, got {sync_steps.tolist()}")
        want: dict[int, list[int]] = {}
        for i, s in enumerate(steps):
            want.setdefault(int(s), []).append(i)  # a step asked for twice gets its value twice
        T_end = int(steps.max()) if steps.size else 0
        with np.errstate(over="ignore"):
            for tt in range(T_end + 1):
                if tt in sync_at:
                    b = b * drift[sync_at[tt]]
                if tt in want:
                    out[want[tt]] = b / alpha_v
                b = (1.0 - rho_v) * b + eps_v
        return out

    def __repr__(self) -> str:
        return f"Theorem({self.name}: {self.title})"


def _step_array(values, name: str) -> np.ndarray:
    """``values`` as a 1-D array of step counts ``≥ 0`` (an error naming ``name`` otherwise)."""
    arr = np.atleast_1d(np.asarray(values))
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of steps, got shape {arr.shape}")
    if arr.size and not (np.issubdtype(arr.dtype, np.number) and np.all(np.isfinite(arr))
                         and np.all(arr == np.round(arr)) and np.all(arr >= 0)):
        raise ValueError(f"{name} must be integers >= 0, got {arr.tolist()}")
    return arr.astype(np.int64)


class ComplexityTheorem(Theorem):
    """A theorem whose ``bound`` is an iteration count ``T_ε`` and that plans ``(γ, T, rounds)``."""

    def plan(self, **numbers) -> dict[str, np.ndarray]:
        """``gamma`` (``γ_ε``), ``steps`` (``T_ε``, rounded up) and ``rounds`` (``⌈T_ε/H⌉``).

        Parameters
        ----------
        **numbers
            The constants, ``eps`` (target ``E‖x̄_T − x*‖² ≤ ε``) and ``delta``; ``γ_max`` is
            computed from the rate theorem's step-size conditions.
        """
        base = self.extras["rate_theorem"]
        gmax = base.gamma_max(**numbers)
        g = _evaluate(self.extras["gamma_eps"], {**numbers, "gamma_max": gmax}, "gamma_eps")
        steps = np.ceil(_evaluate(self.bound, {**numbers, "gamma": g}, "T_eps") - 1e-9)
        steps = np.maximum(steps, 1)
        if np.any(~(steps < 2.0**62)):  # also NaN; int64 would wrap to nonsense
            worst = float(np.max(np.where(np.isnan(steps), np.inf, steps)))
            raise ValueError(f"T_eps = {worst:.3g} steps does not fit a 64-bit integer "
                             f"(eps = {numbers.get('eps')!r} is too small for these constants)")
        rounds = np.ceil(steps / np.asarray(numbers["H"], dtype=np.float64))
        return {"gamma": np.asarray(g, dtype=np.float64), "steps": steps.astype(np.int64),
                "rounds": rounds.astype(np.int64)}

    def latex(self) -> str:
        return (f"T_\\varepsilon = {sp.latex(self.bound)},\\quad \\gamma_\\varepsilon = "
                f"{sp.latex(self.extras['gamma_eps'])}")


# =========================================================================================
# Numerical evaluation of SymPy expressions by keyword
# =========================================================================================
_KNOWN_EXTRA = ("gamma_max",)


def _names(expr) -> tuple[str, ...]:
    lookup = {v: k_ for k_, v in SYMBOLS.items()}
    lookup[gamma_max_sym] = "gamma_max"
    out = []
    for s in expr.free_symbols:
        if s not in lookup:
            raise ValueError(f"symbol {s} of the expression is not a symbol of the theory; "
                             f"known: {', '.join(SYMBOLS)}")
        out.append(lookup[s])
    return tuple(sorted(out))


#: keyword -> symbol, also under the symbol's own printed name (``sigma^2``, ``zeta_*^2``, ...), so
#: that a string expression means the theory's symbols (with their signs), not fresh ones
_STRING_LOCALS = {**{s.name: s for s in SYMBOLS.values()}, **dict(SYMBOLS), "gamma_max": gamma_max_sym}


def _sympify(expr):
    if isinstance(expr, str):
        return sp.sympify(expr, locals=_STRING_LOCALS)
    return sp.sympify(expr)


def _check_domain(name: str, val: np.ndarray, given, what: str) -> None:
    """``val`` satisfies the sign and integrality of the symbol ``name`` (``symbols.py``)."""
    sym = SYMBOLS.get(name, gamma_max_sym)
    if sym.is_positive and np.any(val <= 0):
        raise ValueError(f"{what}: parameter {name} must be > 0, got {given!r}")
    if sym.is_nonnegative and np.any(val < 0):
        raise ValueError(f"{what}: parameter {name} must be >= 0, got {given!r}")
    if sym.is_integer and np.any(val != np.round(val)):
        raise ValueError(f"{what}: parameter {name} must be an integer, got {given!r}")


#: (smaller, larger): relations every theorem assumes (A1: μ ≤ L; A2: α ≤ Γ)
_ORDERED = (("mu", "L"), ("alpha", "Gamma"))


@functools.lru_cache(maxsize=256)
def _compiled(expr):
    names = _names(expr)
    syms = [SYMBOLS.get(n_, gamma_max_sym) for n_ in names]
    return names, sp.lambdify(syms, expr, modules=["numpy", {"Max": np.maximum, "Min": np.minimum}])


def evaluate(expr, **numbers):
    """Evaluate any expression of the theory at numbers given by keyword (NumPy broadcasting).

    ``expr`` is a SymPy expression of the theory or a string in its keywords (``"gamma*sigma2/M"``).
    Numbers are checked against their symbols' signs and integrality and against ``μ ≤ L`` and
    ``α ≤ Γ``; a bad one raises ``ValueError`` naming it.

    Example
    -------
    >>> from savic_theory.theory import evaluate, LEMMAS
    >>> float(evaluate(LEMMAS["one_step"].extras["gamma_cap"], alpha=1.0, L=2.0, A_nu=0.0, M=3))
    0.25
    """
    return _evaluate(expr, numbers, "expression")


def _evaluate(expr, numbers: Mapping[str, Any], what: str):
    unknown = sorted(set(numbers) - set(SYMBOLS) - set(_KNOWN_EXTRA))
    if unknown:
        raise TypeError(f"{what}: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(SYMBOLS)}")
    expr = _sympify(expr)
    names, fn = _compiled(expr)
    missing = [n_ for n_ in names if n_ not in numbers]
    if missing:
        raise ValueError(f"{what}: missing parameter(s) {', '.join(missing)}")
    values = {}
    for n_ in sorted(set(names) | {a for pair in _ORDERED for a in pair if a in numbers}):
        try:
            val = np.asarray(numbers[n_], dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{what}: parameter {n_} must be a number or an array of numbers, "
                             f"got {numbers[n_]!r}") from None
        if not np.all(np.isfinite(val)):
            raise ValueError(f"{what}: parameter {n_} must be finite, got {numbers[n_]!r}")
        _check_domain(n_, val, numbers[n_], what)
        values[n_] = val
    for small, large in _ORDERED:
        if small in values and large in values and np.any(values[small] > values[large]):
            raise ValueError(f"{what}: parameter {small} must be <= {large} "
                             f"(got {small}={numbers[small]!r}, {large}={numbers[large]!r})")
    args = [values[n_] for n_ in names]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        return np.asarray(fn(*args), dtype=np.float64) if names else np.asarray(float(expr))


# =========================================================================================
# Derivations
# =========================================================================================
def _geometric(base, count):
    """``Σ_{i<count} base^i`` by SymPy."""
    return sp.summation(base**_i, (_i, 0, count - 1))


def _derive_rate(name: str, consensus: str, title: str, statement: str, assumptions: tuple) -> Theorem:
    """Unroll one step + consensus into a bound on ``E‖x̄_t − x*‖²`` (the rate theorems)."""
    one, cons = LEMMAS["one_step"], LEMMAS[consensus]
    steps = []
    # (1) the H̄ budget of the one-step lemma: coefficient ≤ −γ/2
    cap = one.extras["gamma_cap_half"]
    steps.append(("step-size cap from the H̄ coefficient ≤ −γ/2 (solve)", cap))
    # (2) the consensus error's constant part over the longest round, n ≤ H − 1
    Vbar = sp.factor(cons.extras["const_total"].subs(n, H - 1))
    steps.append(("consensus constant, summed and taken at n = H − 1", Vbar))
    # (3) coupling: Σ_t w_t γ(2L−μ) V_t charges each H̄_j at most (H−1)(1−ρ)^{1−H} times its own weight;
    #     absorbed by the spare −(γ/2) H̄_j when this is ≤ 1
    cH = cons.extras["coef_Hbar"].subs(n, H - 1)
    coupling = one.extras["coef_V"] * sp.factor(cH) * (H - 1) * (1 - rho) ** (1 - H) / (gamma / 2)
    steps.append(("coupling of H̄_j through V (≤ 1)", coupling))
    # (4) per-step recursion Φ_{t+1} ≤ (1 − ρ) Φ_t + ε
    eps_step = sp.expand(one.extras["const"] + one.extras["coef_V"] * Vbar)
    steps.append(("per-step noise ε of Φ_{t+1} ≤ (1−ρ)Φ_t + ε", eps_step))
    # (5) inside round p: Φ_{pH+n} ≤ (1−ρ)^n Ψ_p + ε S_n
    S_n, S_H = _geometric(1 - rho, n), _geometric(1 - rho, H)
    in_round = (1 - rho) ** n * _Psi_p + eps_step * S_n
    steps.append(("inside a round (geometric sum)", in_round))
    # (6) across rounds: Ψ_{p+1} ≤ (1+δ)[(1−ρ)^H Ψ_p + ε S_H]; unrolled with a product and a sum
    q = (1 + delta) * (1 - rho) ** H
    powers = sp.Product(q, (k, 1, p)).doit()
    Psi = powers * _Psi0 + (1 + delta) * eps_step * S_H * sp.summation(q**_j, (_j, 0, p - 1))
    steps.append(("rounds unrolled (product of (1+δ) factors, geometric sum)", Psi))
    # (7) start Φ_0 ≤ Γ r_0 and convert ‖·‖² ≤ Φ/α; p = ⌊t/H⌋, n = t − pH
    Phi_t = in_round.subs(_Psi_p, Psi).subs(_Psi0, Gamma * r0)
    pt = sp.floor(t / H)
    bound = (Phi_t / alpha).subs({p: pt, n: t - H * pt}, simultaneous=True)
    steps.append(("bound on E‖x̄_t − x*‖²", bound))
    conditions = {"step_size": sp.Le(gamma, cap), "coupling": sp.Le(coupling, 1)}
    return Theorem(
        name=name, title=title, statement=statement, bound=bound, conditions=MappingProxyType(conditions),
        gamma_conditions=("step_size", "coupling"), assumptions=assumptions,
        lemmas=("one_step", consensus, "norm_change", "dhat_bounds[*]", "drift[*]"),
        derivation=tuple(steps),
        extras=MappingProxyType({"rho": rho, "eps_step": eps_step, "Vbar": Vbar, "gamma_cap": cap,
                                 "q": q, "S_H": S_H, "in_round": in_round, "Psi_p": Psi}),
    )


_COMMON = ("every f_m μ-strongly convex and L-smooth (L, μ over all clients)",
           "global scaling: αI ⪯ D̂ ⪯ ΓI, D̂ fixed inside a round and built from the past only",
           "D̂ after a sync ⪯ (1 + δ) D̂ before it (δ from the rule's drift lemma)",
           "syncs at most H steps apart; clients start at x⁰ with ‖x⁰ − x*‖² = r_0",
           "independent unbiased client noise, E‖g_m(x) − ∇f_m(x)‖² ≤ 2A_ν h_m(x) + B_ν σ_m²")


def _identical() -> Theorem:
    return _derive_rate(
        "identical", "consensus_identical",
        "identical data: E‖x̄_t − x*‖² with Γ/α scaling and (1+δ) per sync",
        "With identical data (f_m = f) and γ satisfying the conditions, E‖x̄_t − x*‖² is at most the "
        "bound for every t; at α = Γ = 1, δ = 0 it is Local SGD's (1−γμ)^t r_0 + O(γσ²/(μM)) "
        "+ O(γ²L(H−1)σ²/μ).",
        _COMMON + ("identical data: f_m = f for all m (ζ*² = 0)",))


def _heterogeneous() -> Theorem:
    return _derive_rate(
        "heterogeneous", "consensus_heterogeneous",
        "heterogeneous data: E‖x̄_t − x*‖² with ζ*² and (H−1)², no gradient similarity",
        "For arbitrary client functions (only ζ*² = (1/M)Σ‖∇f_m(x*)‖² enters) and γ satisfying the "
        "conditions (γ ≲ α/(L(H−1))), E‖x̄_t − x*‖² is at most the bound for every t; at α = Γ = 1, "
        "δ = 0 it is (1−γμ)^t r_0 + O(γσ²/(μM)) + O(γ²L(H−1)²σ_dif²/μ).",
        _COMMON)


def _beta_condition(base: Theorem) -> Theorem:
    """The rate ``1 − γμ/(2Γ)`` survives the syncs when ``(1+δ)(1−ρ)^H ≤ (1−ρ/2)^H``."""
    steps = []
    q_bar = (1 - rho / 2) ** H
    delta_max = sp.solve(sp.Eq((1 + delta) * (1 - rho) ** H, q_bar), delta, simplify=False, rational=False)[0]
    steps.append(("largest δ with (1+δ)(1−ρ)^H ≤ (1−ρ/2)^H (solve)", delta_max))
    # the noise part of the unrolled bound, p → ∞ with q ≤ q̄: ε Λ/ρ
    Lam = (1 + delta) * rho * base.extras["S_H"] / (1 - q_bar)
    steps.append(("Λ = (1+δ) ρ S_H /(1 − q̄); Λ ≥ 1 and Λ ≤ 2(1+δ)", Lam))
    # Λ − 1 = [δ(1 − (1−ρ)^H) + ((1−ρ/2)^H − (1−ρ)^H)]/(1 − q̄): both terms ≥ 0
    Lam_minus_one = sp.expand(Lam * (1 - q_bar) - (1 - q_bar))
    steps.append(("(Λ − 1)(1 − q̄) (≥ 0 because δ ≥ 0 and (1−ρ/2)^H ≥ (1−ρ)^H)", Lam_minus_one))
    eps_step = base.extras["eps_step"]
    bound = (q_bar ** (t / H) * Gamma * r0 + 2 * (1 + delta) * eps_step / rho) / alpha
    bound = sp.powsimp(bound)
    steps.append(("bound with the halved rate", bound))
    beta_min = {}
    for rule, rb in RULE_BOUNDS.items():
        if rb.drift == 1:
            continue  # no drift, no condition
        sol = sp.solve(sp.Eq(rb.drift, _X), beta, simplify=False, rational=False)  # drift is decreasing in β: β ≥ this root
        beta_min[rule] = sol[0].subs(_X, 1 + delta)
    steps.append(("β giving drift exactly 1 + δ, per rule (solve drift(β) = 1 + δ); β_min = its value at δ_max",
                  sp.Tuple(*beta_min.values())))
    conditions = dict(base.conditions)
    conditions["beta"] = sp.Le(delta, delta_max)
    data = base.name
    return Theorem(
        name=f"beta_condition[{data}]",
        title=f"{data} data: the condition on β (or β_k) under which the Γ/α rate survives",
        statement=("If every sync's drift satisfies (1+δ_k)(1−γμ/Γ)^H ≤ (1−γμ/(2Γ))^H — for the rules: "
                   "β_k ≥ β_min(γ, H, Γ/α), adam with β̃_k in place of β_k — then "
                   "E‖x̄_t − x*‖² ≤ (Γ/α)(1 − γμ/(2Γ))^t r_0 + 2(1+δ) ε Γ/(αγμ)."),
        bound=bound, conditions=MappingProxyType(conditions), gamma_conditions=base.gamma_conditions,
        assumptions=base.assumptions + ("δ_k ≤ δ_max(γ) at every sync",),
        lemmas=base.lemmas + (base.name,), derivation=tuple(steps),
        extras=MappingProxyType({**base.extras, "delta_max": delta_max, "Lambda": Lam, "beta_min": beta_min,
                                 "rate_theorem": base}),
    )


def _complexity(rate: Theorem) -> ComplexityTheorem:
    """Iteration and communication complexity from the β-condition bound."""
    steps = []
    decay = Gamma * r0 / alpha * sp.exp(-rho * T / 2)  # (1 − ρ/2)^T ≤ exp(−ρT/2)
    noise = sp.expand(rate.bound.subs(r0, 0))
    poly = sp.Poly(noise, gamma)
    coeffs = dict(zip(poly.monoms(), poly.coeffs()))
    if set(coeffs) - {(1,), (2,)}:
        raise AssertionError(f"noise term is not c1 γ + c2 γ²: {noise}")  # pragma: no cover
    c1, c2 = (sp.factor(coeffs.get(m, sp.Integer(0))) for m in ((1,), (2,)))
    steps.append(("noise floor = c1 γ + c2 γ²: c1", c1))
    steps.append(("c2", c2))
    T_eps = sp.solve(sp.Eq(decay, eps / 3), T, simplify=False, rational=False)[0]
    steps.append(("T with decay term = ε/3 (solve)", T_eps))
    g1 = sp.solve(sp.Eq(c1 * gamma, eps / 3), gamma, simplify=False, rational=False)[0]
    g2 = sp.sqrt(eps / (3 * c2))  # the positive root of c2 γ² = ε/3
    assert sp.expand(c2 * g2**2 - eps / 3) == 0
    gamma_eps = sp.Min(gamma_max_sym, g1, g2)
    steps.append(("γ_ε = min(γ_max, γ with c1γ = ε/3, γ with c2γ² = ε/3)", gamma_eps))
    g_opt = [s for s in sp.solve(sp.diff(decay + c1 * gamma, gamma, simplify=False, rational=False), gamma)]
    steps.append(("γ minimising decay + c1γ for a given T (solve d/dγ = 0)", sp.Tuple(*g_opt)))
    data = rate.extras["rate_theorem"].name
    conditions = dict(rate.conditions)
    return ComplexityTheorem(
        name=f"complexity[{data}]",
        title=f"{data} data: iterations and communication rounds to reach E‖x̄_T − x*‖² ≤ ε",
        statement=("With γ = γ_ε and T ≥ T_ε = (2Γ/(γ_ε μ)) log(3Γr_0/(αε)) steps (⌈T_ε/H⌉ rounds), "
                   "E‖x̄_T − x*‖² ≤ ε, under the conditions of the β-condition theorem at γ_ε. At "
                   "α = Γ = 1, δ = 0: T_ε = Õ(L/μ + σ²/(μ²Mε) + √(L(H−1)σ²/(μ³ε))) (identical data)."),
        bound=T_eps, conditions=MappingProxyType(conditions), gamma_conditions=rate.gamma_conditions,
        assumptions=rate.assumptions, lemmas=rate.lemmas + (rate.name,), derivation=tuple(steps),
        extras=MappingProxyType({**rate.extras, "c1": c1, "c2": c2, "gamma_eps": gamma_eps,
                                 "gamma_opt": g_opt[0] if g_opt else None, "rate_theorem": rate.extras["rate_theorem"],
                                 "beta_theorem": rate}),
    )


def _registry():
    ident, het = _identical(), _heterogeneous()
    b_ident, b_het = _beta_condition(ident), _beta_condition(het)
    return MappingProxyType({
        ident.name: ident,
        het.name: het,
        b_ident.name: b_ident,
        b_het.name: b_het,
        f"complexity[{ident.name}]": _complexity(b_ident),
        f"complexity[{het.name}]": _complexity(b_het),
    })


#: theorem name -> :class:`Theorem` (read-only)
THEOREMS = _registry()


def noise_floor(theorem: Theorem, **numbers):
    """``lim_{t→∞}`` of a rate theorem's bound when ``q < 1`` (``εΛ/(αρ)`` form), for reports."""
    th = theorem
    eps_v = _evaluate(th.extras["eps_step"], numbers, "eps_step")
    rho_v = _evaluate(th.extras["rho"], numbers, "rho")
    q_v = _evaluate(th.extras["q"], numbers, "q")
    S_H = _evaluate(th.extras["S_H"], numbers, "S_H")
    a = np.asarray(numbers["alpha"], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lam = np.where(q_v < 1, (1 + np.asarray(numbers["delta"])) * rho_v * S_H / (1 - q_v), np.inf)
    return eps_v * np.maximum(lam, 1.0) / (rho_v * a)

