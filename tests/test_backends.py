"""One code path, several array namespaces: NumPy and array_api_strict give the same numbers."""
from __future__ import annotations

import numpy as np
import pytest

from savic_theory import RULES, SCALINGS, Quadratic, rules, simulate

pytest.importorskip("array_api_strict")


@pytest.mark.parametrize("rule", list(RULES))
@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize("form", ["diagonal", "dense", "eigenbasis"])
def test_numpy_and_array_api_strict_agree(rule, scaling, form):
    prob = Quadratic.random(dim=4, n_clients=3, heterogeneity=1.0, form=form,
                            client_spectra="random", noise=0.2, seed=1)
    r = rules.identity() if rule == "identity" else rules.make(rule, beta=np.array([0.5, 0.9]), e=1e-2)
    kw = dict(gamma=np.array([0.05, 0.1]), steps=15, sync_every=np.array([2, 3]), scaling=scaling,
              seed=4, record_every=1, probes="rademacher")
    a = simulate(prob, r, backend="numpy", **kw)
    b = simulate(prob, r, backend="array_api_strict", **kw)
    # same operations in the same order on the same host data: equal up to round-off
    np.testing.assert_allclose(a.x, b.x, rtol=1e-13, atol=1e-15)
    for k in a.history:
        np.testing.assert_allclose(a.history[k], b.history[k], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(a.drift, b.drift, rtol=1e-13)
    assert b.params["backend"] == "array_api_strict"


def test_cupy_is_never_imported_at_module_import():
    import subprocess
    import sys

    code = ("import sys, savic_theory, savic_theory.cli, savic_theory.experiment; "
            "print('cupy' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_cupy_backend_without_cupy_is_a_clear_error():
    import importlib.util

    if importlib.util.find_spec("cupy") is not None:
        pytest.skip("CuPy is installed here; tests/test_gpu.py covers it")
    prob = Quadratic.random(dim=2, n_clients=1, mu=1.0)
    with pytest.raises(ValueError, match="backend 'cupy' needs CuPy"):
        simulate(prob, rules.adam(), gamma=0.1, steps=2, backend="cupy")
