"""CPU suite: the simulator against per-client loops, and time per step against runs, clients, d.

``python -m benchmarks cpu`` runs both parts in one process and writes ``cpu.json`` and
``cpu_scaling.png`` into the output folder. The comparison problem is a diagonal quadratic with
heterogeneous clients (``Quadratic.random(..., heterogeneity=1, client_spectra="random")``),
the Adam-like rule with global scaling, ``H = 10``, noise-free (so every method must produce
the simulator's numbers, which is checked before any time is reported), then the same with
noise ``σ² = 1`` (no check: the baselines draw their own noise).
"""
from __future__ import annotations

import time

import numpy as np

from savic_theory import Quadratic, rules, simulate

from . import baselines
from ._common import median_time, steady_step_time

#: the comparison configuration (γ step size, β EMA weight, e clip level, H sync period); with
#: L = 1 and γ/e ≤ 1 no run diverges (a diverged run stops early and would be timed short).
#: e lies below the gradients' size, so that D̂ adapts (0.01 to about 0.09 over the coordinates)
#: and the check below sees the rule: with e above it, D̂ = e·I and every method would be Local
#: SGD with step γ/e, whatever its β, bias correction or statistic.
CONFIG = dict(runs=32, clients=64, dim=256, beta=0.99, e=0.01, gamma=0.01, H=10, steps=100, seed=0)

#: sweeps for the scaling curves: each varies one axis around CONFIG
SWEEPS = {"runs": [1, 2, 4, 8, 16, 32, 64, 128], "clients": [1, 4, 16, 64, 256],
          "dim": [16, 64, 256, 1024, 4096]}
QUICK_SWEEPS = {"runs": [1, 8, 32], "clients": [4, 64], "dim": [64, 256, 1024]}

# Noise-free, every method computes the same numbers up to round-off (different summation
# orders over clients and steps); 1e-9 relative (norm-wise) is far above round-off and far
# below any difference in what is computed.
CHECK_RTOL = 1e-9
#: float32 runs against the float64 iterates: 30 steps of float32 round-off (6e-8 each)
FLOAT32_RTOL = 1e-5


def problem(cfg=CONFIG, noise=0.0) -> Quadratic:
    return Quadratic.random(dim=cfg["dim"], n_clients=cfg["clients"], L=1.0, mu=0.01,
                            heterogeneity=1.0, client_spectra="random", noise=noise, seed=cfg["seed"])


def _simulate(prob, cfg, steps=None, scaling="global", **kw):
    res = simulate(prob, rules.adam(beta=cfg["beta"], e=cfg["e"]), gamma=cfg["gamma"],
                   steps=steps or cfg["steps"], sync_every=cfg["H"], runs=cfg["runs"],
                   record_every=cfg["H"], scaling=scaling, seed=cfg["seed"], **kw)
    if res.diverged:  # a stopped run would time fewer steps than asked for
        raise AssertionError(f"benchmark runs diverged: {cfg}")
    return res


def _loop_args(prob, cfg, steps=None):
    return dict(A=prob.A[0], b=prob.b[0], x0=np.zeros(prob.dim), gamma=cfg["gamma"], beta=cfg["beta"],
                e=cfg["e"], steps=steps or cfg["steps"], H=cfg["H"], noise=prob.noise,
                runs=cfg["runs"], seed=cfg["seed"])


def _check(name, x, ref, rtol=CHECK_RTOL):
    err = float(np.max(np.abs(np.asarray(x) - ref)) / np.max(np.abs(ref)))
    if not err <= rtol:
        raise AssertionError(f"{name} does not compute the simulator's iterates: relative gap {err:.2e}")
    return err


def compare(cfg=CONFIG, repeats=5, slow_repeats=3, torch=True, log=print) -> dict:
    """Time every method on ``cfg``, interleaved (one call of each per round, so that a change
    in machine load hits all of them alike); returns ms per step (whole run / steps) and ratios.
    """
    prob, noisy = problem(cfg), problem(cfg, noise=1.0)
    steps = cfg["steps"]
    log(f"CPU comparison: {cfg['runs']} runs × {cfg['clients']} clients × d = {cfg['dim']}, "
        f"adam, H = {cfg['H']}, {steps} steps")
    # (name, group, callable, slow): group "global"/"local"/"noisy" says what it is compared with
    methods = [
        ("simulate, fused (float64)", "global", lambda: _simulate(prob, cfg, fused=True), False),
        ("simulate, fused (float32)", "global", lambda: _simulate(prob, cfg, fused=True, dtype="float32"), False),
        ("simulate, fused, NumPy ufuncs only (float64)", "global", lambda: _simulate(prob, cfg, fused="numpy"), False),
        ("simulate, reference loop (float64)", "global", lambda: _simulate(prob, cfg, fused=False), False),
        ("NumPy per-client loop (float64)", "global", lambda: baselines.numpy_loop(**_loop_args(prob, cfg)), True),
        ("NumPy per-client loop (float32)", "global",
         lambda: baselines.numpy_loop(**_loop_args(prob, cfg), dtype=np.float32), True),
        ("NumPy per-client loop, γ/D̂ once per sync, in place (float64)", "global",
         lambda: baselines.numpy_loop(**_loop_args(prob, cfg), hoist=True), True),
    ]
    if torch:
        methods += [
            ("PyTorch per-client optimizer loop (autograd)", "global",
             lambda: baselines.torch_loop(**_loop_args(prob, cfg), autograd=True), True),
            ("PyTorch per-client optimizer loop (gradient written into .grad)", "global",
             lambda: baselines.torch_loop(**_loop_args(prob, cfg), autograd=False), True),
            ("simulate, fused, local scaling (float64)", "local",
             lambda: _simulate(prob, cfg, scaling="local", fused=True), False),
            ("torch.optim.Adam(betas=(0, β)) per client, autograd", "local",
             lambda: baselines.torch_adam_loop(**_loop_args(prob, cfg)), True),
        ]
    methods += [
        ("simulate, fused (float64), σ² = 1", "noisy", lambda: _simulate(noisy, cfg, fused=True), False),
        ("NumPy per-client loop (float64), σ² = 1", "noisy",
         lambda: baselines.numpy_loop(**_loop_args(noisy, cfg)), True),
    ]

    # noise-free, every method must compute the simulator's iterates, over three syncs (the
    # rule's updates reach the iterates), on a run where D̂ adapts (else the rule is not seen)
    short = dict(cfg, steps=3 * cfg["H"])
    ref = _simulate(prob, short, fused=True)
    ref_x = ref.x
    changes = np.nanmax(ref.drift) > 1 + 1e-6 or np.nanmin(ref.drift_min) < 1 - 1e-6
    if not (np.all(ref.history["Gamma_hat"] > cfg["e"] * (1 + 1e-6)) and changes):
        raise AssertionError("the check would not see the rule: D̂ stays at e or does not change at a sync")
    checks = {
        "reference loop": _check("reference loop", _simulate(prob, short, fused=False).x, ref_x),
        "numpy loop": _check("numpy loop", baselines.numpy_loop(**_loop_args(prob, short))[0], ref_x),
        "numpy loop, γ/D̂ once per sync": _check(
            "numpy loop (hoisted)", baselines.numpy_loop(**_loop_args(prob, short), hoist=True)[0], ref_x),
    }
    if torch:
        for autograd in (True, False):
            xt, _ = baselines.torch_loop(**_loop_args(prob, short), autograd=autograd)
            checks[f"torch loop (autograd={autograd})"] = _check("torch loop", xt, ref_x)
    # the other timed rows: the NumPy-only fused path, float32 (30 steps of float32 round-off,
    # 6e-8 each, stay far below 1e-5) and local scaling against the reference loop's
    checks["fused, NumPy ufuncs only"] = _check("fused NumPy path", _simulate(prob, short, fused="numpy").x, ref_x)
    checks["fused (float32)"] = _check("fused float32", _simulate(prob, short, fused=True, dtype="float32").x,
                                       ref_x, FLOAT32_RTOL)
    checks["numpy loop (float32)"] = _check(
        "numpy loop (float32)", baselines.numpy_loop(**_loop_args(prob, short), dtype=np.float32)[0], ref_x,
        FLOAT32_RTOL)
    checks["fused, local scaling"] = _check(
        "fused local scaling", _simulate(prob, short, scaling="local", fused=True).x,
        _simulate(prob, short, scaling="local", fused=False).x)

    times = {name: [] for name, *_ in methods}
    for _, _, fn, slow in methods:  # warm-up (imports, caches)
        if not slow:
            fn()
    for rnd in range(repeats):
        for name, _, fn, slow in methods:
            if slow and rnd >= slow_repeats:
                continue
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    rows = []
    for name, group, _, _ in methods:
        med = float(np.median(times[name]))
        rows.append(dict(method=name, group=group, ms_per_step=1e3 * med / steps, total_s=med,
                         repeats=len(times[name])))
        log(f"  {name}: {1e3 * med / steps:.3f} ms/step (median of {len(times[name])})")
    t = {r["method"]: r["total_s"] for r in rows}
    f64, f32 = t["simulate, fused (float64)"], t["simulate, fused (float32)"]
    ratios = {"numpy loop / fused (float64)": t["NumPy per-client loop (float64)"] / f64,
              "numpy loop, γ/D̂ once per sync / fused (float64)":
                  t["NumPy per-client loop, γ/D̂ once per sync, in place (float64)"] / f64,
              "numpy loop / fused (float32)": t["NumPy per-client loop (float32)"] / f32,
              "reference loop / fused (float64)": t["simulate, reference loop (float64)"] / f64,
              "numpy loop / fused NumPy ufuncs only (float64)": t["NumPy per-client loop (float64)"]
              / t["simulate, fused, NumPy ufuncs only (float64)"],
              "numpy loop / fused, σ² = 1": t["NumPy per-client loop (float64), σ² = 1"]
              / t["simulate, fused (float64), σ² = 1"]}
    if torch:
        ratios["torch loop (autograd) / fused (float64)"] = t["PyTorch per-client optimizer loop (autograd)"] / f64
        ratios["torch loop (.grad written) / fused (float64)"] = (
            t["PyTorch per-client optimizer loop (gradient written into .grad)"] / f64)
        ratios["torch.optim.Adam loop / fused local (float64)"] = (
            t["torch.optim.Adam(betas=(0, β)) per client, autograd"] / t["simulate, fused, local scaling (float64)"])
    for k, v in ratios.items():
        log(f"  ratio {k}: {v:.1f}×")
    rng = np.random.default_rng(0)
    buf = np.empty((cfg["runs"], cfg["clients"], cfg["dim"]))
    return {
        "config": dict(cfg), "rows": rows, "ratios": ratios, "checks_relative_gap": checks,
        "fused_steady_ms_per_step": 1e3 * steady_step_time(
            lambda n: _simulate(prob, cfg, steps=n, fused=True), repeats),
        "normal_draws_ms_per_step": 1e3 * median_time(lambda: rng.standard_normal(out=buf), repeats)[0],
    }


def scaling(sweeps=SWEEPS, repeats=3, log=print) -> dict:
    """Time per step (set-up excluded) against runs, clients and d, for each method."""
    curves = {}
    for axis, values in sweeps.items():
        pts = []
        for v in values:
            cfg = dict(CONFIG, **{axis: v})
            prob = problem(cfg)
            R, M, d = cfg["runs"], cfg["clients"], cfg["dim"]
            row = {axis: v, "coordinates": R * M * d}
            for label, kw in (("fused float64", dict(fused=True)),
                              ("fused float32", dict(fused=True, dtype="float32")),
                              ("fused NumPy-only float64", dict(fused="numpy")),
                              ("reference float64", dict(fused=False))):
                row[label] = 1e3 * steady_step_time(
                    lambda n: _simulate(prob, cfg, steps=n, **kw), repeats)
            row["numpy loop"] = 1e3 * steady_step_time(
                lambda n: baselines.numpy_loop(**_loop_args(prob, cfg, steps=n)), max(1, repeats - 1),
                target_s=0.6)
            x, y = np.ones((R, M, d)), np.empty((R, M, d))
            row["one pass over x (copy)"] = 1e3 * median_time(lambda: np.copyto(y, x), 5)[0]
            pts.append(row)
            log(f"  {axis} = {v}: " + ", ".join(f"{k} {row[k]:.3g} ms" for k in row
                                                 if k not in (axis, "coordinates")))
        curves[axis] = pts
    return curves


def _numbers(point: dict, axis: str) -> list[str]:
    """The measured methods of one scaling point (numbers other than its coordinates)."""
    return [k for k, v in point.items() if k not in (axis, "coordinates") and isinstance(v, (int, float))
            and not isinstance(v, bool)]


def plot_scaling(curves: dict, path, title: str) -> None:
    """Time per step against each swept axis (log-log), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # a point that failed (its "note") or was not measured for a method is left out of that
    # method's line; an axis with no measured point yet is not drawn
    curves = {axis: pts for axis, pts in curves.items() if any(_numbers(p, axis) for p in pts)}
    if not curves:
        raise ValueError("no measured point to plot")
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4), squeeze=False)
    for ax, (axis, pts) in zip(axes[0], curves.items()):
        keys = list(dict.fromkeys(k for p in pts for k in _numbers(p, axis)))
        for key in keys:
            style = ":" if key.startswith("one pass") else "-"
            xy = [(p[axis], max(p[key], 1e-4)) for p in pts if key in _numbers(p, axis)]
            ax.loglog(*zip(*xy), style, marker="o", label=key)
        ax.set_xscale("log", base=2)
        ax.set_xlabel({"runs": "runs R", "clients": "clients M", "dim": "dimension d"}[axis])
        ax.set_ylabel("ms per step")
        others = {k: v for k, v in CONFIG.items() if k in ("runs", "clients", "dim") and k != axis}
        ax.set_title(", ".join(f"{k}={v}" for k, v in others.items()), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
