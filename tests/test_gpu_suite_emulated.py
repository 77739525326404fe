"""The GPU benchmark suite (``python -m benchmarks gpu``) end to end on an emulated CuPy.

The suite runs once, unattended, on a machine with a CUDA device; a Python-level slip in it (a
misspelt CuPy call, a NumPy-only keyword, a float32/float64 mix handed to a kernel, a JSON that
cannot be written, a crash after the measurements) would cost that run. Here every function of
``benchmarks/gpu.py``, the dense roofline of ``benchmarks/dense.py`` on the CuPy path and the
rules-axis comparison with ``backend="cupy"`` run through :func:`benchmarks.__main__.run_gpu`
at tiny sizes, with CuPy replaced by NumPy dressed as CuPy (``_fake_cupy`` of
``tests/test_fused.py``, extended here with the CUDA events, device queries, memory pool and
random functions the suite calls, with CuPy's signatures).

What this checks is the code path: every call the suite makes exists with the arguments it
passes, every section lands in ``gpu.json`` with finite numbers where numbers are expected, the
plot is written, and the agreement check compares a GPU-path run with the CPU reference. The
timings produced by the emulation are meaningless (NumPy on the host, events read off the wall
clock) and are not looked at beyond being finite and positive. Device numerics are the business
of ``tests/test_gpu.py`` on a real GPU.
"""
from __future__ import annotations

import json
import math
import sys
import time
import types

import numpy as np
import pytest

from savic_theory import _backend
from savic_theory.simulator import engine, fused

from .test_fused import _dev, _fake_cupy, _FakeDeviceArray, _FakeRawKernel


# ----------------------------------------------------------------------------- the emulated CuPy
class _OutOfMemoryError(MemoryError):
    """``cupy.cuda.memory.OutOfMemoryError`` (a ``MemoryError`` in CuPy too)."""


class _Event:
    """``cupy.cuda.Event``: ``record`` stamps the wall clock (the host has finished by then)."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self.disable_timing = disable_timing
        self.t = None

    def record(self, stream=None):
        self.t = time.perf_counter()

    def synchronize(self):
        assert self.t is not None, "synchronize() on an event never recorded"

    @property
    def done(self):
        return self.t is not None


def _get_elapsed_time(start_event, end_event):
    """Milliseconds between two recorded events, as ``cupy.cuda.get_elapsed_time``."""
    assert isinstance(start_event, _Event) and isinstance(end_event, _Event)
    assert not (start_event.disable_timing or end_event.disable_timing), "events without timing"
    assert start_event.t is not None and end_event.t is not None, "event not recorded"
    return 1e3 * (end_event.t - start_event.t)


class _Device:
    """``cupy.cuda.Device``: the current device, id 0."""

    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)

    def synchronize(self):
        pass


class _MemoryPool:
    def __init__(self):
        self.freed = 0

    def free_all_blocks(self, stream=None):
        self.freed += 1

    def used_bytes(self):
        return 0

    def total_bytes(self):
        return 0


def _random_namespace():
    """``cupy.random`` with CuPy's signatures (NumPy's ``np.random`` has no ``dtype``)."""
    state = {"rng": np.random.default_rng(0)}

    def seed(seed=None):
        state["rng"] = np.random.default_rng(seed)

    def _check(dtype):
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"cupy.random supports float32 and float64 only, got {dtype}")
        return dtype

    def standard_normal(size=None, dtype=float):
        return _dev(np.asarray(state["rng"].standard_normal(size, dtype=_check(dtype))))

    def uniform(low=0.0, high=1.0, size=None, dtype=float):
        dtype = _check(dtype)
        return _dev(np.asarray(state["rng"].uniform(low, high, size).astype(dtype)))

    def rand(*shape, dtype=float):
        return _dev(np.asarray(state["rng"].random(shape).astype(_check(dtype))))

    return types.SimpleNamespace(seed=seed, standard_normal=standard_normal, uniform=uniform,
                                 rand=rand, __name__="cupy.random")


def rich_fake_cupy():
    """``_fake_cupy("python")`` plus what the benchmark suite calls (see the module docstring)."""
    mod = _fake_cupy("python")
    mod.RawKernel = _raw_kernel
    mod.__version__ = "13.0.0-emulated"
    mod.bool_ = np.bool_
    pool = _MemoryPool()
    mod.get_default_memory_pool = lambda: pool
    mod.random = _random_namespace()

    def asarray(a, dtype=None, order=None, *, blocking=False):
        """A host array is copied to the "device" (as a transfer does); a device one is kept."""
        if isinstance(a, _FakeDeviceArray) and (dtype is None or np.dtype(dtype) == a.dtype):
            return a
        return _dev(np.array(a, dtype=dtype, order=order or "K", copy=True))

    mod.asarray = asarray
    mod.array = lambda a, dtype=None, copy=True, order="K", **_: _dev(np.array(a, dtype=dtype, order=order))
    props = {"name": b"Emulated CUDA device (NumPy)", "totalGlobalMem": 141 * 2**30,
             "multiProcessorCount": 132}
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: 1,
        getDeviceProperties=lambda device: dict(props) if int(device) == 0 else _no_device(device),
        runtimeGetVersion=lambda: 12040, driverGetVersion=lambda: 12040)
    mod.cuda = types.SimpleNamespace(
        Event=_Event, get_elapsed_time=_get_elapsed_time, Device=_Device, runtime=runtime,
        memory=types.SimpleNamespace(OutOfMemoryError=_OutOfMemoryError),
        OutOfMemoryError=_OutOfMemoryError)
    return mod


class _FakeStepRows:
    """The benchmark's row-grid step (``benchmarks.gpu.STEP_ROWS_SRC``), emulated: one step of
    x ← x − (γ (a x − b))/D̂ in place, after checking that the grid covers the coordinates."""

    def __init__(self, code, name):
        assert name == "savic_step_rows" and "TYPE" not in code

    def __call__(self, grid, block, args):
        a, b, gamma, D, x, R, M, d = args
        assert len(grid) == 3 and grid[0] * block[0] >= d and 1 <= grid[1] <= 65535 and 1 <= grid[2] <= 65535
        assert x.shape == (int(R), int(M), int(d)) and all(v.flags.c_contiguous for v in (a, b, gamma, D, x))
        xs = np.asarray(x)
        np.copyto(xs, xs - (np.asarray(gamma) * (np.asarray(a) * xs - np.asarray(b))) / np.asarray(D))


def _raw_kernel(code, name):
    return _FakeStepRows(code, name) if name == "savic_step_rows" else _FakeRawKernel(code, name)


def _no_device(device):
    raise RuntimeError(f"cudaErrorInvalidDevice: no device {device}")


def _strict_ufunc(self, ufunc, method, *inputs, out=None, **kwargs):
    """CuPy refuses host NumPy arrays as operands of its ufuncs ("Unsupported type"): so do we."""
    for a in inputs + (out or ()):
        if isinstance(a, np.ndarray) and not isinstance(a, _FakeDeviceArray):
            raise TypeError(f"{ufunc.__name__}.{method}: host numpy.ndarray {a.shape} mixed with a "
                            "device array (CuPy raises 'Unsupported type <class numpy.ndarray>')")
    args = [a.view(np.ndarray) if isinstance(a, _FakeDeviceArray) else a for a in inputs]
    if out is not None:
        kwargs["out"] = tuple(o.view(np.ndarray) for o in out)
    res = getattr(ufunc, method)(*args, **kwargs)
    if out is not None:
        return out[0] if len(out) == 1 else out
    if isinstance(res, tuple):
        return tuple(_dev(r) for r in res)
    return _dev(res) if isinstance(res, np.ndarray) else res


def _library_caller():
    """The first frame outside NumPy and the emulation (``cp.f`` is a lambda in test_fused.py)."""
    frame = sys._getframe(2)
    while frame is not None and ("/numpy/" in frame.f_code.co_filename
                                 or (frame.f_code.co_filename.endswith("test_fused.py")
                                     and frame.f_code.co_name == "<lambda>")):
        frame = frame.f_back
    return frame.f_code.co_filename if frame is not None else ""


def _strict_function(self, func, types, args, kwargs):
    """A NumPy function that the suite or the simulator calls on device and host arrays together
    (``np.where(dev, host, …)``, ``cp.copyto(dev, host)``): CuPy dispatches it to its own
    function, which refuses the host array. The emulation's own NumPy calls are exempt."""
    if np.ndarray in types:
        where = _library_caller()
        if "/tests/" not in where.replace("\\", "/"):
            raise TypeError(f"numpy.{func.__name__} on device and host arrays together (from {where}): "
                            "CuPy refuses the host numpy.ndarray")
    return np.ndarray.__array_function__(self, func, types, args, kwargs)


@pytest.fixture
def cupy_emulated(monkeypatch):
    """The rich emulated CuPy as ``cupy`` (and ``array_api_compat.cupy``); a device array as
    ``x0`` or ``backend="cupy"`` sends ``simulate`` down the GPU path, as with the real one."""
    mod = rich_fake_cupy()
    monkeypatch.setitem(sys.modules, "cupy", mod)
    monkeypatch.setitem(sys.modules, "array_api_compat.cupy", mod)
    real = _backend.namespace

    def namespace(backend=None, like=None):
        if backend == "cupy" or (backend is None and isinstance(like, _FakeDeviceArray)):
            return mod
        return real(backend, like)

    monkeypatch.setattr(engine, "namespace", namespace)  # where simulate picks its namespace
    if getattr(fused, "namespace", None) is real:  # unsupported_reason(backend="cupy")
        monkeypatch.setattr(fused, "namespace", namespace)
    monkeypatch.setattr(_FakeDeviceArray, "__array_ufunc__", _strict_ufunc, raising=False)
    monkeypatch.setattr(_FakeDeviceArray, "__array_function__", _strict_function, raising=False)
    fused._cuda_elementwise.cache_clear()
    fused._cuda_mean_kernel.cache_clear()
    yield mod
    fused._cuda_elementwise.cache_clear()  # never leave emulated kernels in the caches
    fused._cuda_mean_kernel.cache_clear()


def test_emulation_routes_simulate_to_the_gpu_path(cupy_emulated):
    """The fixture's own check: a device ``x0`` and ``backend="cupy"`` both run ``_GPUOps``."""
    from savic_theory import Quadratic, rules, simulate

    prob = Quadratic.random(dim=5, n_clients=3, seed=0)
    for kw in (dict(x0=cupy_emulated.zeros(5)), dict(backend="cupy")):
        res = simulate(prob, rules.adam(), gamma=0.1, steps=4, runs=2, fused=True, **kw)
        assert res.params["backend"] == "cupy"
        assert type(res.x) is np.ndarray  # results come back to the host


# ------------------------------------------------------------------------------ the suite, tiny
def _steady_step_time(run, repeats, **_):
    """Stands in for ``steady_step_time``: runs ``run`` at two lengths once each (the code path)
    and returns a positive number; the real one can give NaN on a busy machine, by design, and
    the emulated times mean nothing anyway."""
    t0 = time.perf_counter()
    run(2)
    t1 = time.perf_counter()
    run(6)
    t2 = time.perf_counter()
    return max((t2 - t1) - (t1 - t0), 1e-9) / 4


@pytest.fixture
def tiny_suite(monkeypatch, cupy_emulated):
    from benchmarks import dense, gpu, rules_axis

    monkeypatch.setattr(gpu, "COORDINATES", [4096, 2 * 4096, 3 * 4096, 4 * 4096])
    monkeypatch.setattr(gpu, "QUICK_COORDINATES", [4096, 2 * 4096])
    monkeypatch.setattr(gpu, "END_TO_END", (2 * 4096, 4 * 4096))
    monkeypatch.setattr(gpu, "QUICK_END_TO_END", (2 * 4096,))
    monkeypatch.setattr(gpu, "SMALL", dict(runs=1, clients=4, dim=10))
    monkeypatch.setattr(gpu, "SCALING_BASE", dict(runs=2, clients=3, dim=8))
    monkeypatch.setattr(gpu, "QUICK_SWEEPS", {"runs": [1, 3], "clients": [2], "dim": [4, 16]})
    monkeypatch.setattr(gpu, "steady_step_time", _steady_step_time)
    monkeypatch.setattr(dense, "steady_step_time", _steady_step_time)
    monkeypatch.setitem(dense.QUICK, "gpu", dict(
        streamed=[(2, 2, 8)], gemm=[(2, 3, 8), (3, 2, 16)], reference_n=16,
        step=dict(shared=(2, 3, 8), instances=(2, 2, 8)), dtypes=("float64", "float32")))
    monkeypatch.setattr(rules_axis, "GPU_CONFIG", dict(rules_axis.GPU_CONFIG, runs=2, clients=3,
                                                       dim=6, steps=20))
    return cupy_emulated


def _finite_numbers(obj, where="gpu.json"):
    """Every number in ``obj`` (nested), with its path; NaN/inf fail."""
    if isinstance(obj, bool):
        return
    if isinstance(obj, (int, float)):
        assert math.isfinite(obj), f"{where} is {obj}"
        return
    if isinstance(obj, dict):
        for k, v in obj.items():
            _finite_numbers(v, f"{where}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _finite_numbers(v, f"{where}[{i}]")


def test_run_gpu_quick_writes_every_section(tiny_suite, tmp_path, capsys):
    from benchmarks.__main__ import run_gpu

    result = run_gpu(tmp_path, quick=True, command="python -m benchmarks gpu --quick")
    text = capsys.readouterr().out
    assert "failed" not in text, text
    data = json.loads((tmp_path / "gpu.json").read_text())
    assert (tmp_path / "gpu_scaling.png").stat().st_size > 0
    assert not list(tmp_path.glob("*.part"))
    assert list(data) == ["machine", "command", "agreement", "bandwidth", "small", "end_to_end",
                          "dense", "rules_axis", "scaling", "failed_rows"]
    assert data["failed_rows"] == {}
    assert set(result) == set(data)
    for key, value in data.items():
        assert not (isinstance(value, dict) and "error" in value), f"{key}: {value}"
    _finite_numbers(data)

    m = data["machine"]
    assert m["gpu"] == "Emulated CUDA device (NumPy)" and m["gpu_memory_GiB"] == 141.0
    assert m["cupy"] == "13.0.0-emulated" and m["cuda_runtime"] == 12040

    # the agreement check: both scalings, a GPU-path run against the reference, to round-off
    assert set(data["agreement"]) == {"global", "local"}
    assert all(0 <= gap <= 1e-12 for gap in data["agreement"].values()), data["agreement"]

    rates = ("copy_GBps", "step_us", "step_GBps", "step_fraction_of_copy", "average_GBps",
             "mean_axis1_GBps", "step_rows_us", "step_rows_GBps", "step_rows_fraction_of_copy")
    assert [(r["dtype"], r["coordinates"]) for r in data["bandwidth"]] == [
        (dt, n) for dt in ("float64", "float32") for n in (4096, 2 * 4096)]
    for row in data["bandwidth"]:
        assert "note" not in row and all(row[k] > 0 for k in rates), row
        assert 0 <= row["step_rows_checked_gap"] <= (1e-12 if row["dtype"] == "float64" else 1e-5), row
        assert row["shape"] == [64, 64, row["coordinates"] // 4096]

    small = data["small"]
    assert small["shape"] == [1, 4, 10]
    assert {"launch_floor_us", "fused_kernel_us", "simulate fused, H = 10 (us/step)",
            "simulate fused, no sync (us/step)", "simulate reference loop, H = 10 (us/step)",
            "CPU simulate fused, H = 10 (us/step)"} <= set(small)

    assert [r["coordinates"] for r in data["end_to_end"]] == [2 * 4096]
    assert {"fused no sync (ms/step)", "fused H = 10 (ms/step)"} <= set(data["end_to_end"][0])

    assert set(data["scaling"]) == {"runs", "clients", "dim"}
    for axis, pts in data["scaling"].items():
        assert [p[axis] for p in pts] == tiny_suite_sweeps()[axis]
        for p in pts:
            assert {"fused float64", "reference float64", "fused float32",
                    "one pass over x (copy)"} <= set(p), p

    d = data["dense"]
    assert set(d["checks_relative_gap"]) == {"dense, per run", "dense, shared A", "eigenbasis"}
    assert all(g <= 1e-12 for g in d["checks_relative_gap"].values())
    assert len(d["streamed"]) == 2 and all("note" not in r for r in d["streamed"])
    assert set(d["gemm"]["reference"]) == {"float64", "float32"}
    assert len(d["gemm"]["rows"]) == 2 * 2 * 2 and all("GFLOPs" in r for r in d["gemm"]["rows"])
    assert [r["path"] for r in d["steps"]] == ["dense, per run", "dense, shared A", "eigenbasis"]
    assert all({"grad_ms", "step_ms"} <= set(r) for r in d["steps"])

    rows = data["rules_axis"]["rows"]
    assert len(rows) == 4 and all(r["mixed_path"] == "fused" for r in rows)
    assert all(r["max_rel_gap"] <= 1e-9 for r in rows)


def tiny_suite_sweeps():
    return {"runs": [1, 3], "clients": [2], "dim": [4, 16]}


def test_agreement_compares_a_gpu_path_run_with_the_reference(tiny_suite, monkeypatch):
    """``check_agreement`` really runs one side on the GPU path and one on the CPU reference
    loop, and reports their gap: a wrong GPU side shows up in the number."""
    from benchmarks import gpu
    from savic_theory import simulate as real_simulate

    seen = []

    def spy(*args, **kw):
        res = real_simulate(*args, **kw)
        seen.append((res.params["backend"], kw.get("fused")))
        return res

    monkeypatch.setattr(gpu, "simulate", spy)
    gaps = gpu.check_agreement(log=lambda *_: None)
    assert seen == [("cupy", True), ("numpy", False)] * 2
    assert all(g <= 1e-12 for g in gaps.values())

    def off_by_a_step(*args, **kw):  # a GPU side that computes something else
        if kw.get("fused") is True:
            kw = dict(kw, steps=kw["steps"] - 1)
        return real_simulate(*args, **kw)

    monkeypatch.setattr(gpu, "simulate", off_by_a_step)
    assert all(g > 1e-6 for g in gpu.check_agreement(log=lambda *_: None).values())


def test_a_failing_section_keeps_the_others(tiny_suite, tmp_path, monkeypatch, capsys):
    """A section that raises is recorded and the suite goes on; ``gpu.json`` is written after
    each section, so what was measured before a stop (a time limit) is on disk."""
    from benchmarks import gpu
    from benchmarks.__main__ import run_gpu

    def boom(*a, **k):
        raise RuntimeError("cudaErrorLaunchFailure (emulated)")

    monkeypatch.setattr(gpu, "end_to_end", boom)
    snapshots = []
    import benchmarks.__main__ as main_mod

    real_write = main_mod.write_json

    def write(path, obj):
        real_write(path, obj)
        data = json.loads(path.read_text())
        snapshots.append((sorted(data), len(data.get("scaling", {}).get("dim", []))))

    monkeypatch.setattr(main_mod, "write_json", write)
    result = run_gpu(tmp_path, quick=True)
    assert result["end_to_end"] == {"error": "RuntimeError: cudaErrorLaunchFailure (emulated)"}
    assert "scaling" in result and "rules_axis" in result
    assert snapshots[0] == (["agreement", "command", "machine"], 0)  # before the bandwidth ran
    # every write keeps each section finished before it; a section's rows are written as they
    # come, marked <section>_incomplete until it ends
    done: set = set()
    for keys, _ in snapshots:
        assert done <= set(keys), (done, keys)
        done = {k for k in keys if not k.endswith("_incomplete") and f"{k}_incomplete" not in keys}
    sections = ["agreement", "bandwidth", "command", "dense", "end_to_end", "machine", "rules_axis",
                "small"]
    scaling_points = [n for keys, n in snapshots if "scaling_incomplete" in keys]
    assert scaling_points == [0, 0, 0, 1, 2]  # the quick sweeps: runs (3 points), dim (2)
    assert snapshots[-1] == (sorted(sections + ["failed_rows", "scaling"]), 2)
    assert result["failed_rows"] == {"end_to_end": [1, 1]}
    assert any("bandwidth_incomplete" in keys for keys, _ in snapshots)
    assert any("rules_axis_incomplete" in keys for keys, _ in snapshots)
    assert json.loads((tmp_path / "gpu.json").read_text())["end_to_end"] == result["end_to_end"]
    assert "end_to_end failed: RuntimeError" in capsys.readouterr().out


def test_a_section_failing_part_way_keeps_its_rows(tiny_suite, tmp_path, monkeypatch):
    """An error after some rows of a section (not one point's) keeps those rows as ``partial``."""
    from benchmarks import gpu
    from benchmarks.__main__ import run_gpu

    def second_row_fails(coordinates, repeats=3, log=print, keep=None):
        keep([{"coordinates": 1, "fused no sync (ms/step)": 0.5}])
        raise RuntimeError("cudaErrorIllegalAddress (emulated)")

    monkeypatch.setattr(gpu, "end_to_end", second_row_fails)
    result = run_gpu(tmp_path, quick=True)
    expected = {"error": "RuntimeError: cudaErrorIllegalAddress (emulated)",
                "partial": [{"coordinates": 1, "fused no sync (ms/step)": 0.5}]}
    assert result["end_to_end"] == expected
    assert json.loads((tmp_path / "gpu.json").read_text())["end_to_end"] == expected


def test_the_scaling_plot_is_drawn_as_points_come_and_survives_failed_points(tiny_suite, tmp_path, monkeypatch):
    """The plot is redrawn after every scaling point, so a run cut off part-way keeps a plot of
    what it measured; a failed point (a ``note``) and a method measured only at some points are
    left out of their lines, and a section that failed keeps the plot of its partial rows."""
    from benchmarks import cpu, gpu
    from benchmarks.__main__ import run_gpu

    drawn = []
    real_plot = cpu.plot_scaling
    monkeypatch.setattr(cpu, "plot_scaling", lambda curves, path, title: drawn.append(
        sum(len(p) for p in curves.values())) or real_plot(curves, path, title))

    def sweep(sweeps, repeats=3, log=print, on_point=None):
        curves = {"runs": [{"runs": 1, "coordinates": 8, "fused float64": 0.1, "reference float64": 0.3},
                           {"runs": 2, "coordinates": 16, "note": "OutOfMemoryError (emulated)"}]}
        on_point(curves)
        curves["dim"] = [{"dim": 4, "coordinates": 8, "fused float64": 0.1},
                         {"dim": 8, "coordinates": 16, "fused float64": 0.2, "reference float64": 0.4}]
        on_point(curves)
        raise RuntimeError("stopped (emulated)")

    monkeypatch.setattr(gpu, "scaling", sweep)
    result = run_gpu(tmp_path, quick=True)
    assert result["scaling"]["error"] == "RuntimeError: stopped (emulated)"
    assert drawn == [2, 4, 4]  # after each point, then once more at the end from the partial rows
    assert (tmp_path / "gpu_scaling.png").stat().st_size > 0 and not list(tmp_path.glob(".*"))
    with pytest.raises(ValueError, match="no measured point"):
        real_plot({"runs": [{"runs": 1, "coordinates": 8, "note": "failed"}]}, tmp_path / "x.png", "")


def test_a_point_failing_otherwise_is_noted_too(tiny_suite, monkeypatch):
    """Not only out of memory: any error of one point (a library's allocation failure) is its
    row's note, and the rows before and after it are measured."""
    from benchmarks import gpu

    real = gpu._step_arrays

    def fails_at_second(R, M, d, dtype, seed=0):
        if d == 2:
            raise RuntimeError("CURAND_STATUS_ALLOCATION_FAILED (emulated)")
        return real(R, M, d, dtype, seed)

    monkeypatch.setattr(gpu, "_step_arrays", fails_at_second)
    kept = []
    rows = gpu.bandwidth([4096, 2 * 4096, 3 * 4096], dtypes=("float32",), log=lambda *_: None,
                         keep=lambda r: kept.append(len(r)))
    assert [r.get("note") for r in rows] == [None, "RuntimeError: CURAND_STATUS_ALLOCATION_FAILED (emulated)", None]
    assert kept == [1, 2, 3]


def test_out_of_memory_points_are_noted_not_fatal(tiny_suite, monkeypatch):
    """A point that runs out of device memory is a note in its row; the next point runs."""
    from benchmarks import gpu

    real = gpu._step_arrays

    def oom_at_second(R, M, d, dtype, seed=0):
        if d == 2:
            raise tiny_suite.cuda.memory.OutOfMemoryError("out of memory allocating (emulated)")
        return real(R, M, d, dtype, seed)

    monkeypatch.setattr(gpu, "_step_arrays", oom_at_second)
    rows = gpu.bandwidth([4096, 2 * 4096, 3 * 4096], dtypes=("float32",), log=lambda *_: None)
    assert [r.get("note") for r in rows] == [None, "out of device memory", None]
    assert rows[2]["step_GBps"] > 0


# ------------------------------------------------------------------- tests/test_gpu.py, emulated
@pytest.fixture
def test_gpu_module(cupy_emulated, monkeypatch):
    """``tests/test_gpu.py`` imported with the emulated CuPy (it is skipped without CuPy)."""
    import importlib

    monkeypatch.delitem(sys.modules, "tests.test_gpu", raising=False)
    mod = importlib.import_module("tests.test_gpu")
    yield mod
    sys.modules.pop("tests.test_gpu", None)  # never keep the emulated module for a later import
    vars(sys.modules[__package__]).pop("test_gpu", None)


def test_gpu_tests_run_on_the_emulation(test_gpu_module):
    """Every test of ``tests/test_gpu.py`` once on the emulated device: a Python-level slip in
    them (a wrong keyword, a host/device mix CuPy refuses) shows here, not on the GPU machine.
    The emulation computes on the host, so this says nothing about device rounding."""
    import itertools

    from savic_theory import RULES, SCALINGS

    t = test_gpu_module
    assert t.cp is sys.modules["cupy"] and t._device_count() == 1
    for rule, scaling, form, noise in itertools.product(RULES, SCALINGS, t.FORMS, (0.0, 0.3)):
        t.test_gpu_agrees_with_cpu_reference(rule, scaling, form, noise)
    for scaling in SCALINGS:
        t.test_gpu_same_draws_probes_and_divergence(scaling)
        t.test_gpu_rules_mixed_on_the_run_axis(scaling)
        t.test_gpu_common_draws_agree_with_cpu_reference(scaling)
    for rule, scaling, form in itertools.product(RULES, SCALINGS, t.FORMS):
        t.test_gpu_float32(rule, scaling, form)
    for rule, (dtype, rtol) in itertools.product(("rmsprop", "adam", "oasis"), (("float64", t.RTOL), ("float32", 1e-5))):
        t.test_gpu_global_update_kernel_agrees_with_cpu_reference(rule, dtype, rtol)
    for dtype, ctype in ((np.float64, "double"), (np.float32, "float")):
        t.test_client_mean_kernel_is_numpys_sequential_mean(dtype, ctype)
    t.test_problem_instances_on_the_run_axis_on_gpu()
    t.test_kernels_index_past_two_to_the_31(d=1000)  # the logic at a host-sized d
    tested = {name for name in dir(t) if name.startswith("test_")}
    assert tested == {"test_gpu_agrees_with_cpu_reference", "test_gpu_same_draws_probes_and_divergence",
                      "test_gpu_float32", "test_client_mean_kernel_is_numpys_sequential_mean",
                      "test_problem_instances_on_the_run_axis_on_gpu", "test_gpu_rules_mixed_on_the_run_axis",
                      "test_kernels_index_past_two_to_the_31", "test_gpu_global_update_kernel_agrees_with_cpu_reference",
                      "test_gpu_common_draws_agree_with_cpu_reference"}, \
        "a new test in test_gpu.py: add it here"


# ------------------------------------------------------------------- benchmarks/nn_throughput.py
def test_nn_throughput_keeps_rows_when_a_mode_fails(tmp_path, capsys):
    """A mode that raises is a row with its error and the others still run; ``--json`` is
    rewritten after every row (the GPU run is stopped at its time share, perhaps mid-way)."""
    pytest.importorskip("torch")
    from benchmarks import nn_throughput

    out = tmp_path / "throughput.json"
    rc = nn_throughput.main(["--quick", "--device", "cpu", "--modes", "round:no_such_method,single-flat",
                             "--steps", "2", "--local-steps", "2", "--warmup", "0", "--json", str(out)])
    assert rc == 1  # a failed mode is a failed command, after everything was written
    data = json.loads(out.read_text())
    assert [r["mode"] for r in data["rows"]] == ["single-flat", "round:no_such_method"]
    assert data["rows"][0]["images_per_second"] > 0 and "ValueError" in data["rows"][1]["error"]
    assert "round:no_such_method  failed: ValueError" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.part"))


def test_a_row_grid_step_that_computes_something_else_stops_the_bandwidth_table(tiny_suite, monkeypatch):
    """The row-grid step is timed only after it computed the simulator's step on the same numbers."""
    from benchmarks import gpu

    real = _FakeStepRows.__call__

    def off_by_a_bit(self, grid, block, args):
        real(self, grid, block, args)
        args[4][...] *= 1.001

    monkeypatch.setattr(_FakeStepRows, "__call__", off_by_a_bit)
    with pytest.raises(AssertionError, match="savic_step_rows does not compute the simulator's step"):
        gpu.bandwidth([4096], dtypes=("float64",), log=lambda *_: None)


def test_failed_rows_are_counted_per_section():
    """What the end of the GPU suite prints and records (``failed_rows``), and what makes its exit
    status 1: a section whose every row failed."""
    from benchmarks.__main__ import failures

    result = {"machine": {"gpu": "x", "gpu_memory_GiB": 80}, "command": "python -m benchmarks gpu",
              "bandwidth": [{"coordinates": 1, "step_us": 2.0}, {"coordinates": 2, "note": "out of device memory"}],
              "end_to_end": {"error": "RuntimeError: boom", "partial": [{"coordinates": 1, "ms": 1.0}]},
              "dense": {"checks_relative_gap": {"dense": 0.0}, "streamed": [{"ms": 1.0}, {"ms": 2.0}],
                        "steps": [{"shape": [1, 2, 3], "note": "ValueError: x"}]},
              "scaling": {"runs": [{"runs": 1, "note": "a"}], "dim": [{"dim": 4, "note": "b"}]},
              "small": {"launch_floor_us": 13.0}}
    assert failures(result) == {"bandwidth": (1, 2), "end_to_end": (1, 1), "dense": (1, 4), "scaling": (2, 2)}
