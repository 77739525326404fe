r"""The assumptions of the theory as SymPy symbols with their signs.

Every constant of a lemma or theorem is one of these symbols; ``SYMBOLS`` maps the Python
keyword used by ``evaluate(**numbers)`` to the symbol, so ``evaluate(L=1.0, mu=0.1, ...)``
substitutes numbers by name.

========================  ===========================================================
keyword                   meaning (sign)
========================  ===========================================================
``L``                     smoothness of every client ``f_m`` (``> 0``)
``mu``                    strong convexity of every ``f_m`` (``> 0``)
``alpha``, ``Gamma``      ``αI ⪯ D̂ ⪯ ΓI`` at all times (``> 0``)
``gamma``                 step size ``γ`` (``> 0``)
``beta``                  averaging weight ``β ∈ [0, 1)`` of a rule (``≥ 0``)
``e``                     clip level of the rules, ``D̂ = max(e, |D|)`` (``> 0``)
``M``, ``H``, ``T``, ``d`` clients, largest gap between syncs, steps, dimension (integers ``≥ 1``)
``t``                     a step ``0 ≤ t ≤ T``
``n``                     steps since the last sync, ``0 ≤ n ≤ H − 1``
``k``                     index of a state update of a rule (``≥ 1``)
``sigma2``                ``σ² = (1/M) Σ_m E‖g_m(x*) − ∇f_m(x*)‖²`` (``≥ 0``)
``sigma_dif2``            ``σ_dif² = (1/M) Σ_m E‖g_m(x*)‖² = σ² + ζ*²`` (``≥ 0``)
``zeta2``                 ``ζ*² = (1/M) Σ_m ‖∇f_m(x*)‖²`` (``≥ 0``)
``delta``                 drift per sync, ``D̂ᵏ⁺¹ ⪯ (1+δ) D̂ᵏ`` (``≥ 0``)
``G``                     ``√ sup max_i s_i`` over the statistics ``s`` folded into ``D̂`` (``≥ 0``; the
                          clients' mean of ``g ⊙ g`` in global scaling, so ``G ≤ sup ‖g‖_∞``)
``G_H``                   ``sup max_i Σ_j |∇²f_m(x, ξ)|_ij`` (Hessian row sums, ``> 0``)
``r0``                    ``‖x⁰ − x*‖²`` (``≥ 0``)
``A_nu``, ``B_nu``        noise model ``E‖g_m(x) − ∇f_m(x)‖² ≤ 2A_ν h_m(x) + B_ν σ_m²``
``eps``                   target accuracy ``ε`` of the complexity theorem (``> 0``)
========================  ===========================================================

Here ``h_m(x) = f_m(x) − f_m(x*) − ⟨∇f_m(x*), x − x*⟩`` (the Bregman distance of ``f_m`` to
``x*``). Additive noise gives ``(A_ν, B_ν) = (0, 1)``; a stochastic gradient that is the
gradient of a convex ``L_s``-smooth sample loss gives ``(A_ν, B_ν) = (2L_s, 2)``.

Example
-------
>>> from savic_theory.theory.symbols import SYMBOLS, gamma, mu, Gamma
>>> SYMBOLS["gamma"] is gamma, bool((1 - gamma * mu / Gamma).is_real)
(True, True)
"""
from __future__ import annotations

from types import MappingProxyType

import sympy as sp

__all__ = [
    "L", "mu", "alpha", "Gamma", "gamma", "beta", "e", "M", "H", "T", "d", "t", "k", "n", "p",
    "sigma2", "sigma_dif2", "zeta2", "delta", "G", "G_H", "r0", "A_nu", "B_nu", "eps",
    "Phi", "Phi_next", "V", "Hbar", "rho", "SYMBOLS",
]

# problem constants
L = sp.Symbol("L", positive=True)
mu = sp.Symbol("mu", positive=True)
sigma2 = sp.Symbol("sigma^2", nonnegative=True)
sigma_dif2 = sp.Symbol("sigma_dif^2", nonnegative=True)
zeta2 = sp.Symbol("zeta_*^2", nonnegative=True)
r0 = sp.Symbol("r_0", nonnegative=True)
A_nu = sp.Symbol("A_nu", nonnegative=True)
B_nu = sp.Symbol("B_nu", positive=True)
d = sp.Symbol("d", positive=True, integer=True)

# the scaling
alpha = sp.Symbol("alpha", positive=True)
Gamma = sp.Symbol("Gamma", positive=True)
beta = sp.Symbol("beta", nonnegative=True)
e = sp.Symbol("e", positive=True)
delta = sp.Symbol("delta", nonnegative=True)
G = sp.Symbol("G", nonnegative=True)
G_H = sp.Symbol("G_H", positive=True)

# the method and time
gamma = sp.Symbol("gamma", positive=True)
M = sp.Symbol("M", positive=True, integer=True)
H = sp.Symbol("H", positive=True, integer=True)
T = sp.Symbol("T", positive=True, integer=True)
t = sp.Symbol("t", nonnegative=True, integer=True)
k = sp.Symbol("k", positive=True, integer=True)
n = sp.Symbol("n", nonnegative=True, integer=True)
p = sp.Symbol("p", nonnegative=True, integer=True)
eps = sp.Symbol("epsilon", positive=True)

# random quantities along a trajectory (expectations of them appear in the lemmas)
Phi = sp.Symbol("Phi_t", nonnegative=True)          # ‖x̄_t − x*‖²_D̂ (the Lyapunov function)
Phi_next = sp.Symbol("Phi_t+1", nonnegative=True)   # ‖x̄_{t+1} − x*‖²_D̂ (same D̂ inside a round)
V = sp.Symbol("V_t", nonnegative=True)              # (1/M) Σ_m ‖x_m − x̄‖² (consensus error)
Hbar = sp.Symbol("Hbar_t", nonnegative=True)        # (1/M) Σ_m h_m(x_m)

#: the contraction per step in the D̂-norm, ρ = γμ/Γ
rho = gamma * mu / Gamma

#: keyword of ``evaluate(**numbers)`` -> symbol
SYMBOLS = MappingProxyType({
    "L": L, "mu": mu, "alpha": alpha, "Gamma": Gamma, "gamma": gamma, "beta": beta, "e": e,
    "M": M, "H": H, "T": T, "d": d, "t": t, "k": k, "n": n, "sigma2": sigma2, "sigma_dif2": sigma_dif2,
    "zeta2": zeta2, "delta": delta, "G": G, "G_H": G_H, "r0": r0, "A_nu": A_nu, "B_nu": B_nu,
    "eps": eps,
})
