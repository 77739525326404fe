# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Verifying a theorem: bound vs observed, lemma by lemma, and a counterexample search
#
# `savic_theory.theory` holds this project's bounds for SAVIC with global scaling, derived in
# SymPy from stated lemmas (`docs/theory.md`). Here we take the heterogeneous-data theorem,
# look at its statement and conditions, run one verification case (many seeds in one batched
# simulation), compare the observed E‖x̄_t − x*‖² with the bound at every recorded step, read the
# lemma checks made along the same trajectories, and finally let an optimiser hunt for the
# instance that comes closest to breaking the bound.

# %%
import matplotlib.pyplot as plt
import numpy as np
import sympy as sp

from savic_theory.theory import THEOREMS
from savic_theory.verify import Case, run_case, search

thm = THEOREMS["heterogeneous"]
print(thm.title)
print(thm.statement)

# %% [markdown]
# The bound is a SymPy expression; its conditions are named inequalities (step size, coupling).

# %%
sp.pprint(thm.bound, use_unicode=True)
for name, cond in thm.conditions.items():
    print(f"{name}: {cond}")

# %% [markdown]
# ## One case, many seeds
#
# A `Case` fixes everything: problem, rule, β, e (so α = e), H, step sizes as fractions of the
# largest step the theorem allows, horizon and seeds. `run_case` simulates all seeds of all step
# sizes in one call and checks the theorem and every lemma.

# %%
case = Case(name="demo/het-quad/rmsprop", theorem="heterogeneous", problem="quad-heterogeneous",
            rule="rmsprop", beta=0.999, e=0.5, H=4, gamma_fracs=(1.0, 0.25), steps=300, seeds=64)
result = run_case(case)
print("status:", result.status, f"({result.elapsed:.1f} s)")
for g in result.groups:
    print(f"γ = {g.gamma:.4g}: theorem {g.theorem.verdict} (late ratio {g.theorem.ratio_late:.3g}); "
          + ", ".join(f"{c.name} {c.verdict}" for c in g.lemmas))

# %%
fig, axes = plt.subplots(1, len(result.groups), figsize=(11, 4), squeeze=False)
for ax, g in zip(axes[0], result.groups):
    s = g.series
    ax.fill_between(s.steps, np.maximum(s.lower, 1e-300), s.upper, alpha=0.3, label="observed 99% band")
    ax.plot(s.steps, s.mean, label="observed mean")
    ax.plot(s.steps, s.bound, "k--", label="bound")
    ax.set(yscale="log", xlabel="step t", title=f"γ = {g.gamma:.3g}")
axes[0][0].set_ylabel("E‖x̄_t − x*‖²")
axes[0][0].legend()
plt.show()

# %% [markdown]
# ## Searching for a counterexample
#
# `search` evaluates a population of instances (spectra, heterogeneity, noise, β, e, γ, H) per
# batched call, maximises observed/bound with differential evolution, refines with Nelder–Mead
# and confirms the best instance on fresh seeds. A bound that a search breaks is a finding to fix
# in the derivation; here we run a deliberately small search.

# %%
found = search("identity", "heterogeneous", d=4, M=3, steps=60, seeds=8, popsize=2, maxiter=2,
               refine=0, confirm_seeds=64, seed=1, progress=False)
print(found.verdict, f"confirmed late ratio {found.ratio_late_confirmed:.3g}")
print("instance:", found.params_text())
assert found.verdict != "violated"
