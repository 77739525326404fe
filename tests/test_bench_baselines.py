"""The benchmark baselines compute what the simulator computes (else their timings compare
different work), and the suite's own check would notice if one did not."""
import numpy as np
import pytest

from benchmarks import baselines, cpu

TINY = dict(cpu.CONFIG, runs=2, clients=4, dim=8, H=3, steps=30)


def test_tiny_config_lets_dhat_adapt():
    """The premise of every check below: D̂ leaves e and changes at syncs (else any β passes)."""
    res = cpu._simulate(cpu.problem(TINY), dict(TINY, steps=3 * TINY["H"]))
    assert np.all(res.history["Gamma_hat"] > TINY["e"] * 1.5)
    assert np.nanmax(res.drift) > 1.01 or np.nanmin(res.drift_min) < 0.99


@pytest.mark.parametrize("loop", ["numpy", "numpy hoisted", "numpy float32", "torch autograd", "torch .grad"])
def test_baselines_compute_the_simulators_iterates(loop):
    if loop.startswith("torch"):
        pytest.importorskip("torch")
    prob = cpu.problem(TINY)
    ref = cpu._simulate(prob, TINY).x
    args = cpu._loop_args(prob, TINY)
    x = {"numpy": lambda: baselines.numpy_loop(**args)[0],
         "numpy hoisted": lambda: baselines.numpy_loop(**args, hoist=True)[0],
         "numpy float32": lambda: baselines.numpy_loop(**args, dtype=np.float32)[0],
         "torch autograd": lambda: baselines.torch_loop(**args, autograd=True)[0],
         "torch .grad": lambda: baselines.torch_loop(**args, autograd=False)[0]}[loop]()
    gap = float(np.max(np.abs(x - ref)) / np.max(np.abs(ref)))
    # float64: round-off only (summation orders); float32: 30 steps of unit-roundoff 6e-8 errors
    assert gap <= (1e-5 if loop == "numpy float32" else cpu.CHECK_RTOL), gap


def test_the_numpy_loop_records_the_simulators_history():
    """Six of the seven history quantities, G as the simulator takes it (the clients' mean)."""
    prob = cpu.problem(TINY)
    ref = cpu._simulate(prob, TINY)
    _, hist = baselines.numpy_loop(**cpu._loop_args(prob, TINY), record_every=TINY["H"])
    for i, key in enumerate(("dist_sq", "f_gap", "consensus", "alpha_hat", "Gamma_hat", "G_hat")):
        want = ref.history[key].T  # (runs, records)
        np.testing.assert_allclose(hist[..., i], want, rtol=1e-9, atol=1e-12 * np.max(np.abs(want)), err_msg=key)


@pytest.mark.parametrize("change", [dict(beta=0.9), dict(e=0.1), dict(H=4)])
def test_a_baseline_computing_something_else_is_caught(change):
    """A loop run with another β, clip level (0.1 lies inside D̂'s range here) or sync period
    fails the suite's check."""
    prob = cpu.problem(TINY)
    ref = cpu._simulate(prob, dict(TINY, steps=3 * TINY["H"])).x
    other = dict(TINY, steps=3 * TINY["H"], **change)
    x = baselines.numpy_loop(**cpu._loop_args(prob, other))[0]
    with pytest.raises(AssertionError, match="does not compute the simulator's iterates"):
        cpu._check("numpy loop", x, ref)


def test_compare_checks_then_reports_every_ratio():
    pytest.importorskip("torch")
    out = cpu.compare(TINY, repeats=1, slow_repeats=1, log=lambda *_: None)
    assert set(out["checks_relative_gap"]) == {"reference loop", "numpy loop", "numpy loop, γ/D̂ once per sync",
                                               "torch loop (autograd=True)", "torch loop (autograd=False)",
                                               "fused, NumPy ufuncs only", "fused (float32)", "numpy loop (float32)",
                                               "fused, local scaling"}
    assert all(0 <= g <= (cpu.FLOAT32_RTOL if "float32" in name else cpu.CHECK_RTOL)
               for name, g in out["checks_relative_gap"].items())
    assert all(np.isfinite(v) and v > 0 for v in out["ratios"].values())
    assert {r["method"] for r in out["rows"]} >= {"simulate, fused (float64)", "NumPy per-client loop (float64)"}
