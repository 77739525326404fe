"""The dense-gradient benchmark (``benchmarks/dense.py``) at tiny sizes: it times the simulator's
own gradient, and its result has the fields the suite writes (no assertion about speed)."""
from __future__ import annotations

import types

import numpy as np
import pytest

from benchmarks import dense


def _quiet(*_):
    pass


def _numpy_as_device():
    """NumPy under another name, so that ``dense`` takes its CuPy branches on the host."""
    mod = types.ModuleType("fake_cupy")
    mod.__getattr__ = lambda name: getattr(np, name)
    return mod


@pytest.mark.parametrize("xp", [np, _numpy_as_device()], ids=["numpy", "cupy branches"])
def test_timed_operations_compute_the_gradient(xp):
    gaps = dense.check_gradients(xp)
    assert set(gaps) == set(dense.PATHS)
    assert all(0 <= g <= dense.CHECK_RTOL for g in gaps.values())


def test_a_wrong_operation_is_caught(monkeypatch):
    op = dense.matrix_op
    monkeypatch.setattr(dense, "matrix_op", lambda *a, **k: (lambda x, f=op(*a, **k): 2 * f(x)))
    with pytest.raises(AssertionError, match="does not compute the simulator's gradient"):
        dense.check_gradients()


def test_matrix_op_shapes_follow_the_simulator():
    R, M, d = 3, 2, 5
    x = np.ones((R, M, d))
    assert dense.matrix_op(np, "dense", np.ones((R, M, d, d)), R)(x).shape == (R, M, d)
    assert dense.matrix_op(np, "dense", np.ones((1, M, d, d)), R)(x).shape == (R, M, d)
    assert dense.matrix_op(np, "eigenbasis", np.ones((1, M, d)), R, np.eye(d))(x).shape == (R, M, d)


def test_result_fields_at_tiny_sizes():
    result = {
        "checks_relative_gap": dense.check_gradients(),
        "streamed": dense.streamed(np, [(2, 2, 16)], ("float64", "float32"), repeats=1, log=_quiet),
        "gemm": dense.gemm(np, [(2, 3, 8)], ("float64",), reference_n=64, repeats=1, log=_quiet),
        "steps": dense.steps(np, dict(shared=(2, 3, 6), instances=(2, 2, 6)), repeats=1, log=_quiet),
    }
    for row in result["streamed"]:
        assert {"dtype", "shape", "A_MiB", "ms", "GBps", "copy_GBps", "fraction_of_copy"} <= set(row)
        assert row["fraction_of_copy"] > 0
        assert row["A_MiB"] == 2 * 2 * 16 * 16 * np.dtype(row["dtype"]).itemsize / 2**20
    assert set(result["gemm"]["reference"]) == {"float64"}
    assert result["gemm"]["reference"]["float64"]["GFLOPs"] > 0
    assert [r["path"] for r in result["gemm"]["rows"]] == list(dense.PATHS[1:])
    assert all(r["fraction_of_gemm"] > 0 for r in result["gemm"]["rows"])
    assert [r["path"] for r in result["steps"]] == list(dense.PATHS)
    assert all(r["grad_ms"] > 0 and np.isfinite(r["grad_fraction_of_step"]) for r in result["steps"])
    text = dense.tables(result)
    assert text.count("\n|---|") == 3 and "fraction of copy" in text and "A x / step" in text


def test_out_of_memory_is_recorded_not_raised(monkeypatch):
    def too_big(*_):
        raise MemoryError

    monkeypatch.setattr(dense, "_streamed_point", too_big)
    rows = dense.streamed(np, [(2, 2, 16)], ("float64",), repeats=1, log=_quiet)
    assert rows[0]["note"] == "out of memory" and "GBps" not in rows[0]
    assert "| note |" in dense._table(rows, [("dtype", "dtype")])
