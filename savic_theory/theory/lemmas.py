r"""The lemmas of SAVIC's theory as SymPy inequalities, each with hypotheses and a proof sketch.

Notation: ``x̄ = (1/M) Σ_m x_m`` (the virtual average, also between syncs), ``r = x̄ − x*``,
``‖v‖²_D = vᵀD v``, ``Φ_t = ‖x̄_t − x*‖²_{D̂}`` with the ``D̂`` used by step ``t`` (global scaling:
fixed inside a round, changed only at syncs), ``V_t = (1/M) Σ_m ‖x_m − x̄‖²`` (consensus
error), ``h_m(x) = f_m(x) − f_m(x*) − ⟨∇f_m(x*), x − x*⟩`` and ``H̄_t = (1/M) Σ_m h_m(x_m^t)``.

Two kinds of lemma live here:

* per scaling rule (``RULE_BOUNDS``): ``αI ⪯ D̂ ⪯ ΓI`` and the drift ``D̂ᵏ⁺¹ ⪯ (1+δ_k) D̂ᵏ`` at
  every sync, with ``δ_k`` a function of ``β_k``, ``α`` and ``Γ``;
* for the method (``LEMMAS``): the change of norm at a sync, the one-step descent in the
  ``D̂``-norm inside a round, and the consensus error for identical and heterogeneous data.

The sums and recursions in the statements are carried out by SymPy (``summation``, ``rsolve``,
``solve``); ``Lemma.derivation`` keeps the intermediate expressions. These are this project's
derivations (the paper's statements are not available to it), written down in
``docs/theory.md``.

Example
-------
>>> from savic_theory.theory.lemmas import LEMMAS, RULE_BOUNDS
>>> LEMMAS["one_step"].extras["gamma_cap"]
M*alpha/(2*(A_nu + L*M))
>>> RULE_BOUNDS["oasis"].drift
-Gamma*beta/alpha + Gamma/alpha + beta
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import sympy as sp

from .._validation import check_int
from .symbols import (
    G_H,
    A_nu,
    B_nu,
    G,
    Gamma,
    Hbar,
    L,
    M,
    Phi,
    Phi_next,
    V,
    alpha,
    beta,
    delta,
    e,
    gamma,
    k,
    mu,
    n,
    rho,
    sigma2,
    zeta2,
)

__all__ = ["Lemma", "RuleBounds", "LEMMAS", "RULE_BOUNDS", "drift_factors"]

_j = sp.Symbol("j", integer=True, nonnegative=True)
#: E H̄_{t_p + j}, the Bregman average j steps into a round (an indexed family)
Hbar_j = sp.IndexedBase("Hbar")
#: f(x̄) − f*, recorded by the simulator as ``f_gap``
f_gap = sp.Symbol("f_gap", nonnegative=True)


@dataclass(frozen=True)
class Lemma:
    r"""A lemma: a SymPy inequality ``lhs ≤ rhs`` with its hypotheses and a proof sketch.

    Attributes
    ----------
    name : registry key.
    statement : sympy relational ``lhs ≤ rhs`` (expectations are implicit: every random
        quantity stands for its expectation when the lemma is stated in expectation).
    hypotheses : tuple of sympy relationals or plain-text assumptions.
    proof : the proof sketch (the docstring of the function that derives the lemma).
    checked_by : which verification check tests the lemma along simulated trajectories.
    extras : named expressions the theorems reuse (coefficients, derived caps).
    derivation : ``(description, expression)`` pairs of the SymPy steps.

    Example
    -------
    >>> from savic_theory.theory.lemmas import LEMMAS
    >>> lem = LEMMAS["norm_change"]
    >>> lem.latex().startswith("\\left\\|")
    True
    """

    name: str
    statement: sp.Basic
    hypotheses: tuple
    proof: str
    checked_by: str
    extras: Mapping[str, Any] = field(default_factory=dict)
    derivation: tuple = ()

    @property
    def lhs(self):
        """Left side of the inequality ``statement`` (a SymPy expression)."""
        return self.statement.lhs

    @property
    def rhs(self):
        """Right side of the inequality ``statement`` (a SymPy expression)."""
        return self.statement.rhs

    def latex(self) -> str:
        """The statement in LaTeX."""
        return sp.latex(self.statement)

    def __repr__(self) -> str:
        return f"Lemma({self.name}: {self.statement})"


def _doc(fn: Callable) -> str:
    import inspect

    return inspect.cleandoc(fn.__doc__ or "")


# =========================================================================================
# Per-rule lemmas: D̂ bounds and drift
# =========================================================================================
class RuleBounds:
    """``α``, ``Γ`` and the drift bound ``1 + δ`` of one scaling rule.

    Attributes
    ----------
    rule : name in ``savic_theory.rules.RULES``.
    alpha, Gamma : sympy expressions (``α = e`` for the clipped rules).
    drift : ``1 + δ`` for one sync whose state update uses the weight ``β`` (the symbol
        ``beta``; for adam the bias-corrected weight ``β̃_k``, see ``effective_betas``).
    delta_linear : a bound on ``δ`` linear in ``1 − β``.
    bounds, drift_lemma : the two :class:`Lemma` objects.
    effective_betas : callable ``(betas, init_updates) -> betas per sync``: turns the β of
        each state update ``k = 1, 2, …`` into the weight that multiplies the old ``D̂``
        at each sync (the identity map except for adam's bias correction).
    """

    def __init__(self, rule, alpha_, Gamma_, drift_, delta_linear, bounds, drift_lemma,
                 effective_betas=None):
        self.rule, self.alpha, self.Gamma, self.drift = rule, alpha_, Gamma_, drift_
        self.delta_linear, self.bounds, self.drift_lemma = delta_linear, bounds, drift_lemma
        self.effective_betas = effective_betas or _same_betas
        self._drift_fn = sp.lambdify((beta, alpha, Gamma), drift_, "numpy")

    def drift_bound(self, betas, alpha_, Gamma_):
        """``1 + δ`` for effective weights ``betas`` (array) and numbers ``α``, ``Γ``."""
        betas = np.asarray(betas, dtype=np.float64)
        return np.broadcast_to(np.asarray(self._drift_fn(betas, alpha_, Gamma_), dtype=np.float64),
                               np.broadcast_shapes(betas.shape, np.shape(alpha_), np.shape(Gamma_)))

    def __repr__(self) -> str:
        return f"RuleBounds({self.rule}: alpha={self.alpha}, Gamma={self.Gamma}, 1+delta={self.drift})"


def _same_betas(betas, init_updates):
    """The β of update ``k = init_updates + s`` is the weight of sync ``s``."""
    betas = np.asarray(betas, dtype=np.float64)
    return betas[init_updates:]


def _adam_effective_betas(betas, init_updates):
    """Adam's bias correction as a schedule: ``β̃_k = β_k c_{k−1}/c_k``, ``c_k = β_k c_{k−1} + 1 − β_k``."""
    betas = np.asarray(betas, dtype=np.float64)
    c_prev = np.zeros(betas.shape[1:])
    out = np.empty_like(betas)
    for i, b in enumerate(betas):
        c = b * c_prev + (1.0 - b)
        out[i] = b * c_prev / c
        c_prev = c
    return out[init_updates:]


def _Dk():
    D_prev = sp.Symbol("Dhat_k", positive=True)
    D_next = sp.Symbol("Dhat_k+1", positive=True)
    return D_prev, D_next


def _bounds_lemma(rule: str, Gamma_expr, why: str) -> Lemma:
    D_i = sp.Symbol("Dhat_i", positive=True)
    alpha_expr = sp.Integer(1) if rule == "identity" else e
    stmt = sp.And(sp.Le(alpha_expr, D_i), sp.Le(D_i, Gamma_expr))
    return Lemma(
        name=f"dhat_bounds[{rule}]",
        statement=stmt,
        hypotheses=(why,),
        proof=why,
        checked_by="history alpha_hat >= alpha and Gamma_hat <= Gamma at every record and run",
        extras={"alpha": alpha_expr, "Gamma": Gamma_expr},
    )


def _rule_identity() -> RuleBounds:
    """Identity: ``D̂ = I``, so ``α = Γ = 1`` and ``δ = 0``."""
    D_prev, D_next = _Dk()
    bounds = _bounds_lemma("identity", sp.Integer(1), "D̂ = I at all times.")
    drift = Lemma("drift[identity]", sp.Le(D_next / D_prev, sp.Integer(1)), ("D̂ = I",),
                  _doc(_rule_identity), "res.drift == 1 at every sync")
    return RuleBounds("identity", sp.Integer(1), sp.Integer(1), sp.Integer(1), sp.Integer(0), bounds, drift)


def _sqrt_rule_drift(rule: str, fn: Callable) -> tuple[sp.Expr, sp.Expr, Lemma, tuple]:
    """Drift of a rule with ``D̂ = max(e, √w)``, ``w ← β w + (1 − β) s``, ``0 ≤ s ≤ G²``."""
    D_prev, D_next = _Dk()
    # D̂_{k+1}² = max(e², βw + (1−β)s) ≤ β D̂_k² + (1−β)G² (the max with e² is absorbed since
    # βD̂_k² + (1−β)G² ≥ e² when G ≥ e; when G < e every D̂ equals e).
    ratio_sq = (beta * D_prev**2 + (1 - beta) * Gamma**2) / D_prev**2
    dratio = sp.factor(sp.diff(ratio_sq, D_prev))  # = −2(1−β)Γ²/D³ ≤ 0: worst case at D̂_k = α
    worst = sp.sqrt(sp.expand(ratio_sq.subs(D_prev, alpha)))
    # √(1 + x) ≤ 1 + x/2 because (1 + x/2)² − (1 + x) = x²/4 ≥ 0
    x = sp.expand(worst**2 - 1)
    gap = sp.expand((1 + x / 2) ** 2 - (1 + x))
    delta_lin = sp.factor(x / 2)
    lemma = Lemma(
        name=f"drift[{rule}]",
        statement=sp.Le(D_next / D_prev, worst),
        hypotheses=(sp.Le(alpha, D_prev), sp.Le(D_prev, Gamma), "0 ≤ s_i ≤ G² ≤ Γ² (s = mean over clients of g ⊙ g)",
                    sp.Le(0, beta), sp.Lt(beta, 1)),
        proof=_doc(fn),
        checked_by="res.drift[k] <= 1 + delta_k at every sync and run",
        extras={"ratio_sq": ratio_sq, "d_ratio_sq_dD": dratio, "delta_linear": delta_lin, "sqrt_gap": sp.factor(gap)},
        derivation=(("squared ratio as a function of D̂_k", ratio_sq),
                    ("its derivative in D̂_k (≤ 0)", dratio),
                    ("worst case D̂_k = α", worst),
                    ("(1 + x/2)² − (1 + x) ≥ 0", gap)),
    )
    return worst, delta_lin, lemma, ()


def _rule_rmsprop() -> RuleBounds:
    """RMSProp: ``v ← βv + (1−β)s``, ``D̂ = max(e, √v)``, ``s = (1/M)Σ_m g_m ⊙ g_m``.

    Bounds: ``v`` is a convex combination of statistics ``0 ≤ s_i ≤ G²`` (including ``v₀ = S(x⁰)``),
    so ``e ≤ D̂_i ≤ max(e, G) = Γ``. Drift: ``D̂_{k+1,i}² = max(e², βv_i + (1−β)s_i) ≤ βD̂_{k,i}² +
    (1−β)Γ²``; dividing by ``D̂_{k,i}² ≥ α²`` gives ``(D̂_{k+1,i}/D̂_{k,i})² ≤ β + (1−β)Γ²/α²``, and
    ``√(1+x) ≤ 1 + x/2`` gives ``δ ≤ (1−β)(Γ²/α² − 1)/2``.
    """
    worst, dlin, drift, _ = _sqrt_rule_drift("rmsprop", _rule_rmsprop)
    bounds = _bounds_lemma("rmsprop", sp.Max(e, G),
                           "D̂ = max(e, √v) with v a convex combination of g ⊙ g averaged over clients, each ≤ G².")
    return RuleBounds("rmsprop", e, sp.Max(e, G), worst, dlin, bounds, drift)


def _rule_adam() -> RuleBounds:
    """Adam (second moment with bias correction): RMSProp on ``D²`` with the schedule ``β̃_k``.

    ``v_k = β_k v_{k−1} + (1−β_k) s_k``, ``c_k = β_k c_{k−1} + (1−β_k)``, ``v₀ = c₀ = 0``, and
    ``D² = v_k/c_k =: w_k`` obeys ``w_k = β̃_k w_{k−1} + (1 − β̃_k) s_k`` with
    ``β̃_k = β_k c_{k−1}/c_k``; for constant β, ``c_k = 1 − β^k`` (solved by ``rsolve``) and
    ``β̃_k = (β − β^k)/(1 − β^k)``. So the RMSProp lemma applies with ``β̃_k``: ``Γ = max(e, G)``
    and ``1 + δ_k = √(β̃_k + (1−β̃_k)Γ²/α²)``. Early syncs have ``1 − β̃_k ≈ 1/k`` (not ``1 − β``):
    the bias correction makes the first drifts large.
    """
    c = sp.Function("c")
    ck = sp.rsolve(c(k) - beta * c(k - 1) - (1 - beta), c(k), {c(0): 0})
    beta_tilde = sp.factor(beta * ck.subs(k, k - 1) / ck)
    worst, dlin, drift, _ = _sqrt_rule_drift("adam", _rule_adam)
    drift = Lemma(drift.name, drift.statement, drift.hypotheses + ("β replaced by β̃_k = β_k c_{k−1}/c_k",),
                  drift.proof, drift.checked_by,
                  extras={**drift.extras, "c_k": ck, "beta_tilde_k": beta_tilde},
                  derivation=drift.derivation + (("c_k = 1 − Π β (rsolve)", ck), ("β̃_k", beta_tilde)))
    bounds = _bounds_lemma("adam", sp.Max(e, G),
                           "D̂² = v_k/c_k is a convex combination (weights (1−β_j)Π_{i>j}β_i / c_k) of statistics ≤ G².")
    return RuleBounds("adam", e, sp.Max(e, G), worst, dlin, bounds, drift, _adam_effective_betas)


def _rule_oasis() -> RuleBounds:
    """OASIS: ``D ← βD + (1−β)s`` with Hutchinson probes ``s = z ⊙ (∇²f(x, ξ) z)``, ``D̂ = max(e, |D|)``.

    Bounds: ``|s_i| = |Σ_j z_i z_j ∇²f_ij| ≤ Σ_j |∇²f_ij| ≤ G_H`` (Rademacher ``z``, the sample
    Hessian of the minibatch), and ``D`` is a convex combination of such probes, so
    ``e ≤ D̂_i ≤ max(e, G_H) = Γ``. Drift: ``|D_{k+1,i}| ≤ β|D_{k,i}| + (1−β)G_H``, so
    ``D̂_{k+1,i} ≤ max(e, βD̂_{k,i} + (1−β)Γ) = βD̂_{k,i} + (1−β)Γ`` and dividing by
    ``D̂_{k,i} ≥ α``: ``1 + δ = β + (1−β)Γ/α``.
    """
    D_prev, D_next = _Dk()
    ratio = (beta * D_prev + (1 - beta) * Gamma) / D_prev
    dratio = sp.factor(sp.diff(ratio, D_prev))
    worst = sp.expand(ratio.subs(D_prev, alpha))
    drift = Lemma(
        name="drift[oasis]",
        statement=sp.Le(D_next / D_prev, worst),
        hypotheses=(sp.Le(alpha, D_prev), sp.Le(D_prev, Gamma), "|s_i| ≤ G_H ≤ Γ", sp.Le(0, beta), sp.Lt(beta, 1)),
        proof=_doc(_rule_oasis),
        checked_by="res.drift[k] <= 1 + delta_k at every sync and run",
        extras={"delta_linear": sp.factor(worst - 1)},
        derivation=(("ratio as a function of D̂_k", ratio), ("its derivative (≤ 0)", dratio),
                    ("worst case D̂_k = α", worst)),
    )
    bounds = _bounds_lemma("oasis", sp.Max(e, G_H),
                           "|z ⊙ (∇²f z)|_i ≤ Σ_j |∇²f_ij| ≤ G_H and D is a convex combination of probes.")
    return RuleBounds("oasis", e, sp.Max(e, G_H), worst, sp.factor(worst - 1), bounds, drift)


#: rule name -> :class:`RuleBounds` (the same keys as ``savic_theory.rules.RULES``)
RULE_BOUNDS = MappingProxyType({
    "identity": _rule_identity(),
    "rmsprop": _rule_rmsprop(),
    "adam": _rule_adam(),
    "oasis": _rule_oasis(),
})


def drift_factors(rule: str, betas, alpha, Gamma, init_updates: int = 0) -> np.ndarray:
    """``1 + δ_s`` for syncs ``s = 1, 2, …`` of ``rule``, from the β of every state update.

    .. math:: 1 + \\delta_s = \\text{drift}(\\tilde\\beta_{s + u}, \\alpha, \\Gamma)

    with ``u = init_updates`` (1 for adam, whose initialisation is update 1) and ``β̃`` the
    effective weight (adam's bias correction, the identity map otherwise).

    Parameters
    ----------
    rule : str
        A key of ``RULE_BOUNDS``.
    betas : array (n_updates,) or (n_updates, runs)
        ``β_k`` for updates ``k = 1 … n_updates`` (ignored by the identity rule); ``(n_updates,)``
        is shared by every run.
    alpha, Gamma : float or array (runs,)
        Broadcast against the run axis: with ``betas`` of shape ``(n_updates,)`` and an array
        ``alpha`` or ``Gamma`` the result has shape ``(n_updates − init_updates, runs)``.
    init_updates : int

    The lemma's hypotheses are checked: every ``β`` in ``[0, 1)``, ``0 < α ≤ Γ`` and
    ``init_updates ≥ 0`` (``ValueError`` naming the parameter otherwise).

    Returns
    -------
    numpy.ndarray
        ``1 + δ_s`` with syncs on the first axis: ``(n_updates − init_updates,)`` for scalar
        ``alpha``, ``Gamma`` and 1-D ``betas``, else ``(n_updates − init_updates, runs)``.

    Example
    -------
    >>> import numpy as np
    >>> from savic_theory.theory.lemmas import drift_factors
    >>> drift_factors("oasis", np.full(3, 0.9), 1.0, 2.0).round(6).tolist()
    [1.1, 1.1, 1.1]
    """
    try:
        rb = RULE_BOUNDS[rule]
    except KeyError:
        raise ValueError(f"unknown rule {rule!r}; known rules: {', '.join(RULE_BOUNDS)}") from None
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim == 0:
        raise ValueError("betas must be an array over state updates (k = 1, 2, ...)")
    if not np.all(np.isfinite(betas)) or np.any(betas < 0) or np.any(betas >= 1):
        raise ValueError(f"betas must lie in [0, 1) (the drift lemma's hypothesis), got {betas}")
    init_updates = check_int("init_updates", init_updates, 0)
    a_v, G_v = np.asarray(alpha, dtype=np.float64), np.asarray(Gamma, dtype=np.float64)
    if not np.all(np.isfinite(a_v)) or np.any(a_v <= 0):
        raise ValueError(f"alpha must be finite and > 0, got {alpha!r}")
    if not np.all(np.isfinite(G_v)) or np.any(G_v < a_v):
        raise ValueError(f"Gamma must be finite and >= alpha (αI ⪯ D̂ ⪯ ΓI), got Gamma={Gamma!r}, alpha={alpha!r}")
    eff = rb.effective_betas(betas, init_updates)
    if eff.ndim == 1 and max(np.ndim(alpha), np.ndim(Gamma)) > 0:
        eff = eff[:, None]  # shared β over syncs against a run axis of α or Γ
    return rb.drift_bound(eff, alpha, Gamma)


# =========================================================================================
# Method lemmas
# =========================================================================================
def _lemma_norm_change() -> Lemma:
    """Change of norm at a sync: if ``D' ⪯ (1+δ) D`` (diagonal, positive) then ``‖v‖²_{D'} ≤ (1+δ)‖v‖²_D``.

    Proof: ``Σ_i D'_i v_i² ≤ Σ_i (1+δ) D_i v_i²`` term by term. Averaging at a sync leaves ``x̄``
    unchanged, so ``Φ`` after the sync (new ``D̂``) is at most ``(1+δ_k)`` times ``Φ`` before it.
    Together with ``αI ⪯ D̂ ⪯ ΓI``: ``α‖v‖² ≤ ‖v‖²_{D̂} ≤ Γ‖v‖²`` and ``‖g‖²_{D̂⁻¹} ≤ ‖g‖²/α``.
    """
    v_D_new = sp.Symbol(r"\left\|v\right\|_{D'}^{2}", nonnegative=True)
    v_D = sp.Symbol(r"\left\|v\right\|_{D}^{2}", nonnegative=True)
    return Lemma("norm_change", sp.Le(v_D_new, (1 + delta) * v_D),
                 ("D' ⪯ (1+δ) D, both diagonal and positive",), _doc(_lemma_norm_change),
                 "one_step check across syncs (history dist_sq_D after the sync's update)")


def _lemma_one_step() -> Lemma:
    """One step inside a round in the ``D̂``-norm (global scaling, ``D̂`` fixed in the round).

    Hypotheses: every ``f_m`` is μ-strongly convex and L-smooth; ``αI ⪯ D̂ ⪯ ΓI`` and ``D̂`` is
    known at the start of the round (it depends only on the past); client noises are independent,
    unbiased, with ``E‖g_m(x) − ∇f_m(x)‖² ≤ 2A_ν h_m(x) + B_ν σ_m²`` and ``σ² = (1/M) Σ σ_m²``.

    Proof sketch. ``x̄_{t+1} = x̄_t − γ D̂⁻¹ ḡ`` with ``ḡ = (1/M) Σ g_m``, so
    ``Φ_{t+1} = Φ_t − 2γ⟨r, ḡ⟩ + γ²‖ḡ‖²_{D̂⁻¹}``: the cross term is the unscaled one.
    (i) Since ``Σ_m ∇f_m(x*) = 0``, ``E ḡ = (1/M) Σ ∇h_m(x_m)``; with ``⟨∇h_m(x), x − x*⟩ ≥ h_m(x) +
    (μ/2)‖x − x*‖²`` and Young ``⟨x_m − x̄, ∇h_m(x_m)⟩ ≤ ‖∇h_m‖²/(4L) + L‖x_m − x̄‖² ≤ h_m/2 +
    L‖x_m − x̄‖²``, and ``(1/M)Σ‖x_m − x*‖² = ‖r‖² + V``:
    ``−2γ⟨r, E ḡ⟩ ≤ −γH̄ − γμ‖r‖² + γ(2L − μ)V``.
    (ii) ``E‖ḡ‖² = ‖E ḡ‖² + (1/M²) Σ Var_m ≤ 2L H̄ + (2A_ν H̄ + B_ν σ²)/M`` (``‖∇h_m‖² ≤ 2L h_m``),
    and ``‖ḡ‖²_{D̂⁻¹} ≤ ‖ḡ‖²/α``. (iii) ``−γμ‖r‖² ≤ −(γμ/Γ)Φ``. The coefficient of ``H̄`` is
    ``−γ + 2γ²(L + A_ν/M)/α``; it is ``≤ −γ/2`` (what the theorems need to absorb the consensus
    error) exactly when ``γ ≤ α/(4(L + A_ν/M))``, and ``≤ 0`` when ``γ ≤ α/(2(L + A_ν/M))``.
    """
    coef_Phi = 1 - rho
    coef_Hbar = -gamma + 2 * gamma**2 * (L + A_nu / M) / alpha
    coef_V = gamma * (2 * L - mu)
    const = gamma**2 * B_nu * sigma2 / (alpha * M)
    rhs = coef_Phi * Phi + coef_Hbar * Hbar + coef_V * V + const
    cap_nonpos = next(s for s in sp.solve(sp.Eq(coef_Hbar, 0), gamma, simplify=False, rational=False) if s != 0)
    cap_half = sp.solve(sp.Eq(coef_Hbar, -gamma / 2), gamma, simplify=False, rational=False)[0]
    return Lemma(
        name="one_step",
        statement=sp.Le(Phi_next, rhs),
        hypotheses=(sp.Le(alpha, Gamma), "αI ⪯ D̂ ⪯ ΓI, D̂ fixed inside the round and known at its start",
                    "f_m μ-strongly convex, L-smooth", "E‖g_m(x) − ∇f_m(x)‖² ≤ 2A_ν h_m(x) + B_ν σ_m², independent over m"),
        proof=_doc(_lemma_one_step),
        checked_by="E Φ_{t+1} ≤ (1+δ·[sync])((1−γμ/Γ) E Φ_t + γ(2L−μ) E V_t + γ²B_νσ²/(αM)) step by step "
                   "from the history's dist_sq_D = ‖x̄_t − x*‖²_D̂, every rule",
        extras={"coef_Phi": coef_Phi, "coef_Hbar": coef_Hbar, "coef_V": coef_V, "const": const,
                "gamma_cap": cap_nonpos, "gamma_cap_half": cap_half},
        derivation=(("coefficient of H̄", coef_Hbar), ("γ with coefficient 0", cap_nonpos),
                    ("γ with coefficient −γ/2", cap_half)),
    )


def _lemma_consensus_identical() -> Lemma:
    """Consensus error with identical data (every ``f_m = f``), ``n = t − t_p`` steps into a round.

    Proof sketch. With ``e_m = x_m − x̄`` and ``g_m = ∇f(x_m) + ν_m``:
    ``e_m⁺ = [e_m − γD̂⁻¹(∇f(x_m) − mean)] − γD̂⁻¹(ν_m − ν̄)``. The noise is independent of the
    rest and ``(1/M) Σ E‖ν_m − ν̄‖²_{D̂⁻¹} ≤ (1 − 1/M)(1/M) Σ Var_m / α``. The deterministic part is
    centred, so its mean square is at most that of ``z_m = e_m − γD̂⁻¹(∇f(x_m) − ∇f(x̄))``, and
    ``‖z_m‖²_{D̂} = ‖e_m‖²_{D̂} − 2γ⟨e_m, Δ⟩ + γ²‖Δ‖²_{D̂⁻¹} ≤ ‖e_m‖²_{D̂}`` by co-coercivity
    (``⟨e_m, Δ⟩ ≥ ‖Δ‖²/L``) when ``γ ≤ 2α/L``. Summing from the sync (``V = 0``) and
    ``V ≤ V_{D̂}/α``: ``E V_{t_p+n} ≤ (γ²/α²)(1 − 1/M) Σ_{j<n} (2A_ν E H̄_j + B_ν σ²)``.
    """
    cH = gamma**2 / alpha**2 * (1 - 1 / M) * 2 * A_nu
    c0 = gamma**2 / alpha**2 * (1 - 1 / M) * B_nu * sigma2
    V_n = sp.Symbol("V_{t_p+n}", nonnegative=True)
    rhs = sp.Sum(cH * Hbar_j[_j] + c0, (_j, 0, n - 1))
    const_total = sp.summation(c0, (_j, 0, n - 1))
    return Lemma(
        name="consensus_identical",
        statement=sp.Le(V_n, rhs),
        hypotheses=("identical data: f_m = f for every m", sp.Le(gamma, 2 * alpha / L), "V_{t_p} = 0 (after a sync)"),
        proof=_doc(_lemma_consensus_identical),
        checked_by="E V_t ≤ RHS with E H̄_j ≤ 2 E f_gap_j + L E V_j, at every step",
        extras={"coef_Hbar": cH, "const": c0, "const_total": const_total},
        derivation=(("constant part summed over the round", const_total),),
    )


def _lemma_consensus_heterogeneous() -> Lemma:
    """Consensus error with heterogeneous data (no gradient-similarity assumption).

    Proof sketch. Inside a round ``e_m^{t_p+n} = −γD̂⁻¹ Σ_{j<n} [(a_m^j − ā^j) + (ν_m^j − ν̄^j)]``
    with ``a_m = ∇f_m(x_m)``. ``‖u + w‖² ≤ 2‖u‖² + 2‖w‖²``; the gradient part by Cauchy–Schwarz
    ``‖Σ_{j<n} ·‖² ≤ n Σ_{j<n} ‖·‖²`` and ``(1/M)Σ‖a_m − ā‖² ≤ (1/M)Σ‖a_m‖² ≤ 4L H̄ + 2ζ*²``
    (``∇f_m = ∇h_m + ∇f_m(x*)``, ``‖∇h_m‖² ≤ 2L h_m``); the noise part is a martingale, so its
    mean square is the sum of the per-step ones, ``≤ (1 − 1/M)(2A_ν H̄_j + B_ν σ²)``. With
    ``‖D̂⁻¹v‖² ≤ ‖v‖²/α²``: ``E V_{t_p+n} ≤ (γ²/α²) Σ_{j<n} [(8Ln + 4A_ν(1−1/M)) E H̄_j + 4nζ*² +
    2(1−1/M)B_ν σ²]``.
    """
    cH = gamma**2 / alpha**2 * (8 * L * n + 4 * A_nu * (1 - 1 / M))
    c0 = gamma**2 / alpha**2 * (4 * n * zeta2 + 2 * (1 - 1 / M) * B_nu * sigma2)
    V_n = sp.Symbol("V_{t_p+n}", nonnegative=True)
    rhs = sp.Sum(cH * Hbar_j[_j] + c0, (_j, 0, n - 1))
    const_total = sp.factor(sp.summation(c0, (_j, 0, n - 1)))
    return Lemma(
        name="consensus_heterogeneous",
        statement=sp.Le(V_n, rhs),
        hypotheses=("f_m μ-strongly convex and L-smooth, arbitrary ∇f_m(x*)", "V_{t_p} = 0 (after a sync)"),
        proof=_doc(_lemma_consensus_heterogeneous),
        checked_by="E V_t ≤ RHS with E H̄_j ≤ 2 E f_gap_j + L E V_j, at every step",
        extras={"coef_Hbar": cH, "const": c0, "const_total": const_total},
        derivation=(("constant part summed over the round", const_total),),
    )


def _lemma_bregman_average() -> Lemma:
    """``H̄ ≤ 2(f(x̄) − f*) + L V``: the Bregman average at the clients from recorded quantities.

    Proof: ``h_m(x_m) ≤ h_m(x̄) + ⟨∇h_m(x̄), x_m − x̄⟩ + (L/2)‖x_m − x̄‖²`` and
    ``⟨∇h_m(x̄), x_m − x̄⟩ ≤ ‖∇h_m(x̄)‖²/(2L) + (L/2)‖x_m − x̄‖² ≤ h_m(x̄) + (L/2)‖x_m − x̄‖²``;
    average over m and use ``(1/M) Σ h_m(x̄) = f(x̄) − f*`` (as ``Σ ∇f_m(x*) = 0``). The
    verification uses it to evaluate the consensus lemmas from the recorded ``f_gap`` and
    ``consensus``.
    """
    return Lemma("bregman_average", sp.Le(Hbar, 2 * f_gap + L * V), ("f_m convex and L-smooth",),
                 _doc(_lemma_bregman_average), "used inside the consensus checks")


#: lemma name -> :class:`Lemma` (the per-rule lemmas are in ``RULE_BOUNDS``)
LEMMAS = MappingProxyType({
    "norm_change": _lemma_norm_change(),
    "one_step": _lemma_one_step(),
    "consensus_identical": _lemma_consensus_identical(),
    "consensus_heterogeneous": _lemma_consensus_heterogeneous(),
    "bregman_average": _lemma_bregman_average(),
    **{rb.bounds.name: rb.bounds for rb in RULE_BOUNDS.values()},
    **{rb.drift_lemma.name: rb.drift_lemma for rb in RULE_BOUNDS.values()},
})
