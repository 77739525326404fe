r"""The numbers a theorem needs, read off a problem, a rule and a finished simulation.

Theoretical constants come from the lemmas: ``α`` and ``Γ`` from the rule's ``dhat_bounds``
lemma (``Γ = max(e, G)`` with ``G²`` the largest entry of the statistic the runs folded into
``D̂``, the clients' mean of ``g ⊙ g`` in global scaling, which the simulator records as
``G_hat``; ``Γ = max(e, G_H)`` for OASIS with ``G_H`` from the problem's Hessian), ``δ_k`` from the rule's drift lemma with the β of every state update. Empirical
constants are what the runs show: ``α̂ = min D̂``, ``Γ̂ = max D̂`` and the largest drift at each
sync.

The noise model ``E‖g_m(x) − ∇f_m(x)‖² ≤ 2A_ν h_m(x) + B_ν σ_m²``:

* additive noise only (quadratics, full-batch logistic regression): ``(A_ν, B_ν) = (0, 1)``,
  an equality;
* logistic minibatches of ``b`` rows drawn with replacement (plus additive noise): each row loss
  ``ℓ_i`` is convex and ``L_ℓ``-smooth with ``L_ℓ = max_i ‖a_i‖²/4``, so
  ``Var ≤ (2/b)E‖∇ℓ_i(x) − ∇ℓ_i(x*)‖² + 2σ_m² ≤ (4L_ℓ/b) h_m(x) + 2σ_m²``:
  ``(A_ν, B_ν) = (2L_ℓ/b, 2)``.

Example
-------
>>> from savic_theory import Quadratic
>>> from savic_theory.verify.constants import noise_model
>>> noise_model(Quadratic.random(dim=3, n_clients=2, noise=0.1))
(0.0, 1.0)
"""
from __future__ import annotations

import numpy as np

from ..problems._base import Problem
from ..theory import RULE_BOUNDS, evaluate

__all__ = ["noise_model", "hessian_row_bound", "rule_alpha", "rule_Gamma", "update_betas", "problem_numbers"]


def noise_model(problem: Problem) -> tuple[float, float]:
    """``(A_ν, B_ν)`` of the problem's stochastic gradients (see the module docstring)."""
    if not isinstance(problem, Problem):
        raise TypeError(f"problem must be a savic_theory Problem, got {type(problem).__name__}")
    batch = getattr(problem, "batch_size", None)
    if batch is None:
        return 0.0, 1.0
    L_row = float(problem.L_sample) - float(problem.lam)  # max_i ‖a_i‖²/4
    return 2.0 * L_row / batch, 2.0


def hessian_row_bound(problem: Problem) -> float:
    """``G_H``: a bound on every Hutchinson probe ``|z ⊙ (∇²f_m(x, ξ) z)|_i`` the simulator can draw.

    Full-batch problems: the problem's ``hessian_bound()`` (Gershgorin row sums of ``∇²f_m``).
    Logistic minibatches: the Hessian of a minibatch averages the rows'
    ``σσ' a_i a_iᵀ + λI``, so each row sum is at most ``max_i |a_ij| ‖a_i‖₁ / 4 + λ``.
    """
    if getattr(problem, "batch_size", None) is not None:
        A = np.abs(problem.A)
        return float(np.max(0.25 * A * A.sum(axis=-1, keepdims=True)) + problem.lam)
    return float(np.max(problem.hessian_bound()))


def rule_alpha(rule) -> np.ndarray:
    """``α`` of the rule's ``dhat_bounds`` lemma (``e``; 1 for the identity rule)."""
    return np.asarray(evaluate(RULE_BOUNDS[rule.name].alpha, e=rule.e), dtype=np.float64)


def rule_Gamma(rule, problem: Problem, G) -> np.ndarray:
    """``Γ`` of the rule's ``dhat_bounds`` lemma, with ``G`` the recorded ``G_hat``: ``√`` of the
    largest entry of the statistic folded into ``D̂`` (the clients' mean of ``g ⊙ g`` in global
    scaling)."""
    expr = RULE_BOUNDS[rule.name].Gamma
    names = {s.name for s in expr.free_symbols}
    nums = {"e": rule.e}
    if "G" in names:
        nums["G"] = G
    if "G_H" in names:
        nums["G_H"] = hessian_row_bound(problem)
    return np.asarray(evaluate(expr, **nums), dtype=np.float64)


def update_betas(rule, n_updates: int, runs: int | None = None) -> np.ndarray:
    """β of state updates ``k = 1 … n_updates`` (shape ``(n_updates,)`` or ``(n_updates, runs)``)."""
    if rule.beta is None:
        return np.zeros(n_updates)
    R = runs or 1
    out = np.stack([rule.beta.values(np.full(R, kk, dtype=np.int64)) for kk in range(1, n_updates + 1)]) \
        if n_updates else np.zeros((0, R))
    return out if runs else out[:, 0]


def problem_numbers(problem: Problem, x0=None) -> dict:
    """``L, mu, M, sigma2, zeta2, sigma_dif2, A_nu, B_nu, r0, d`` of a problem (one instance)."""
    c = problem.constants
    A_nu, B_nu = noise_model(problem)
    x_star = np.asarray(c.x_star, dtype=np.float64)
    x0 = np.zeros(problem.dim) if x0 is None else np.asarray(x0, dtype=np.float64)
    return dict(L=np.asarray(c.L, dtype=np.float64), mu=np.asarray(c.mu, dtype=np.float64), M=problem.n_clients,
                sigma2=np.asarray(c.sigma2, dtype=np.float64), zeta2=np.asarray(c.zeta2, dtype=np.float64),
                sigma_dif2=np.asarray(c.sigma_dif2, dtype=np.float64), A_nu=A_nu, B_nu=B_nu,
                r0=np.sum((x0 - x_star) ** 2, axis=-1), d=problem.dim)
