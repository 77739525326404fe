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
# # Global vs local scaling on heterogeneous data
#
# With heterogeneous clients (different minimisers, ζ*² > 0) Local SGD drifts between
# synchronisations, more so for larger H. Global scaling shares one D̂ built from the clients'
# mean statistic; local scaling lets each client precondition for its own function, which
# changes the fixed point of the average. This notebook sweeps the heterogeneity and H in one
# batched call per variant and rule.

# %%
import matplotlib.pyplot as plt
import numpy as np

from savic_theory import Quadratic, rules, simulate

H_values = np.array([1, 5, 20])
hetero = [0.0, 0.5, 2.0]
runs_per_point = 16

# %% [markdown]
# A problem with a leading instance axis holds one quadratic per run, so the whole
# heterogeneity × H × seed grid is one call.

# %%
probs = [Quadratic.random(dim=20, n_clients=8, L=1.0, mu=0.05, heterogeneity=h,
                          client_spectra="random", noise=0.01, seed=3) for h in hetero]
n = len(hetero) * len(H_values) * runs_per_point
A = np.stack([p.A[0] for p in probs for _ in H_values for _ in range(runs_per_point)])
b = np.stack([p.b[0] for p in probs for _ in H_values for _ in range(runs_per_point)])
batch = Quadratic(A=A, b=b, noise=0.01)
H_runs = np.tile(np.repeat(H_values, runs_per_point), len(hetero))
print(batch, "ζ*² per heterogeneity level:", [f"{p.zeta2:.3g}" for p in probs])

# %%
final = {}
for name, rule in {"adam": rules.adam(beta=0.999, e=0.05), "oasis": rules.oasis(beta=0.999, e=0.05)}.items():
    for scaling in ("global", "local"):
        res = simulate(batch, rule, gamma=0.02, steps=1500, sync_every=H_runs, scaling=scaling,
                       record_every=50, seed=0)
        tail = res.history["dist_sq"][-5:].mean(axis=0)  # average of the last records
        final[name, scaling] = tail.reshape(len(hetero), len(H_values), runs_per_point).mean(axis=2)
        print(f"{name:>5} {scaling:>6}: {res.elapsed:.2f} s for {n} runs")

# %%
fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True, layout="constrained")
for ax, name in zip(axes, ("adam", "oasis")):
    for scaling, style in (("global", "-o"), ("local", "--s")):
        for j, H in enumerate(H_values):
            ax.semilogy(hetero, final[name, scaling][:, j], style, color=f"C{j}",
                        label=f"{scaling}, H={H}")
    ax.set(title=f"{name}-like scaling", xlabel="heterogeneity (spread of client minimisers)")
axes[0].set_ylabel("E‖x̄ − x*‖² at the end")
fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right center", fontsize=8)
plt.show()

# %% [markdown]
# Reading the figure: with a shared minimiser (heterogeneity 0) H barely matters, and Adam's
# two variants nearly coincide: gradients vanish near x*, so D̂ = max(e, √v) falls to its clip
# level e on every client. As heterogeneity
# grows, the error floor of global scaling rises with H, the (H−1)-type term of Local SGD's
# theory. Local scaling adds a bias of its own under heterogeneity, because each client's D̂_m
# weights its own gradient differently and the average of the preconditioned steps no longer
# vanishes at x*: at the largest heterogeneity this bias dominates, local scaling ends above
# global scaling for every H, and its error does not grow with H.

# %%
for name in ("adam", "oasis"):
    g, lo = final[name, "global"], final[name, "local"]
    print(f"{name}, largest heterogeneity, H = {H_values.tolist()}: global {g[-1]} (grows with H), "
          f"local {lo[-1]} (above global, not growing with H)")
    assert np.all(np.diff(g[-1]) > 0)  # global: larger H, larger error under heterogeneity
    assert np.all(lo[-1] > g[-1]) and lo[-1, -1] <= lo[-1, 0]  # local: its own bias dominates
