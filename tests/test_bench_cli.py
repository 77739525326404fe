"""The benchmarking front ends: ``savic bench`` (one configuration, or ``--suite``) and
``python -m benchmarks``. Tiny sizes, one repeat; the suites themselves are replaced by stubs."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import benchmarks.__main__ as suite
from savic_theory.cli import bench, main
from savic_theory.simulator import fused

ROOT = Path(__file__).resolve().parents[1]
TINY = ["bench", "--runs", "2", "--clients", "3", "--dim", "4", "--steps", "6", "--repeats", "1",
        "--no-progress"]


def one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    return err


@pytest.fixture
def suite_calls(monkeypatch):
    """``python -m benchmarks`` as ``savic bench --suite`` calls it: the arguments, not a run."""
    calls = []
    monkeypatch.setattr(suite, "main", lambda argv: calls.append(argv) or 0)
    monkeypatch.setattr(suite, "gpu_unavailable", lambda: None)
    return calls


# ----------------------------------------------------------------------------- 1. default output
def test_savic_bench_suite_writes_to_results_by_default(suite_calls, capsys):
    assert main(["bench", "--suite", "cpu"]) == 0
    assert suite_calls == [["cpu", "--out", "results/benchmarks"]]
    assert bench.SUITE_OUT == suite.DEFAULT_OUT == "results/benchmarks"


def test_savic_bench_suite_passes_out_and_quick(suite_calls, tmp_path, capsys):
    assert main(["bench", "--suite", "all", "--quick", "--no-progress", "--out", str(tmp_path / "b")]) == 0
    assert suite_calls == [["all", "--out", str(tmp_path / "b"), "--quick"]]


def test_python_m_benchmarks_writes_to_results_by_default(monkeypatch, tmp_path, capsys):
    seen = []

    def fake_cpu(out, quick, torch, command):
        seen.append((out, command))
        for name in ("cpu.json", "cpu_scaling.png"):
            (out / name).write_text("")

    monkeypatch.setattr(suite, "run_cpu", fake_cpu)
    monkeypatch.chdir(tmp_path)
    assert suite.main(["cpu", "--quick"]) == 0
    assert seen == [(Path("results/benchmarks"), "python -m benchmarks cpu --out results/benchmarks --quick")]
    assert (tmp_path / "results" / "benchmarks").is_dir() and not (tmp_path / "docs").exists()
    assert "results in results/benchmarks/: cpu.json, cpu_scaling.png" in capsys.readouterr().out


def test_help_shows_the_default_output(capsys):
    with pytest.raises(SystemExit) as exc:
        suite.main(["--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: results/benchmarks;" in text
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    assert "(default: results/benchmarks)" in " ".join(capsys.readouterr().out.split())


def test_documented_suite_commands_name_their_output():
    """The commands that update the committed results say ``--out`` (the default is elsewhere)."""
    docs = (ROOT / "docs" / "performance.md").read_text()
    assert "python -m benchmarks cpu --out docs/performance" in docs
    assert "python -m benchmarks gpu --out docs/performance" in docs
    script = (ROOT / "benchmarks" / "gpu_checks.sh").read_text()
    runs = [line for line in script.splitlines()
            if not line.startswith("#") and re.search(r"-m benchmarks (cpu|gpu|all)\b", line)]
    assert runs and all('--out "$out"' in line for line in runs)


# ----------------------------------------------------------------------------- 2. options with --suite
@pytest.mark.parametrize("extra,named", [
    (["--runs", "2"], "--runs does"), (["--dim", "256"], "--dim does"),  # the default value too
    (["--reference"], "--reference does"), (["--json", "b.json"], "--json does"),
    (["--fused", "numpy", "--repeats", "1"], "--fused, --repeats do")])
def test_single_configuration_options_do_not_apply_with_suite(suite_calls, capsys, extra, named):
    assert main(["bench", "--suite", "cpu", *extra]) == 2
    err = one_line(capsys)
    assert err.startswith(f"savic bench: error: {named} not apply with --suite")
    assert "--out, --quick" in err and suite_calls == []


def test_single_configuration_options_from_a_config_do_not_apply_with_suite(suite_calls, tmp_path, capsys):
    cfg = tmp_path / "b.toml"
    cfg.write_text('[bench]\nsuite = "cpu"\nsteps = 6\n')
    assert main(["bench", "--config", str(cfg)]) == 2
    assert one_line(capsys).startswith("savic bench: error: --steps does not apply with --suite")
    assert suite_calls == []


@pytest.mark.parametrize("extra,named", [(["--out", "x"], "--out applies"), (["--quick"], "--quick applies"),
                                         (["--quick", "--out", "x"], "--out and --quick apply")])
def test_suite_options_apply_only_with_suite(capsys, extra, named):
    assert main([*TINY, *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    assert captured.err.startswith(f"savic bench: error: {named} only with --suite")


# ----------------------------------------------------------------------------- 3. GPU suite without CuPy
@pytest.mark.parametrize("name", ["gpu", "all"])
def test_gpu_suite_without_cupy_fails_and_claims_nothing(monkeypatch, tmp_path, capsys, name):
    monkeypatch.setattr(suite, "gpu_unavailable", lambda: "ModuleNotFoundError: No module named 'cupy'")
    ran = []
    monkeypatch.setattr(suite, "run_cpu", lambda *a, **k: ran.append(a))
    out = tmp_path / "res"
    assert suite.main([name, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert "results in" not in captured.out and "done" not in captured.out
    err = captured.err.strip()
    assert err.count("\n") == 0
    assert err.startswith("python -m benchmarks: error: the GPU suite needs CuPy and a CUDA device (")
    assert not out.exists() and ran == []


@pytest.mark.parametrize("name", ["gpu", "all"])
def test_savic_bench_gpu_suite_without_cupy_is_a_one_line_error(monkeypatch, capsys, name):
    monkeypatch.setattr(suite, "gpu_unavailable", lambda: "no CUDA device found")
    called = []
    monkeypatch.setattr(suite, "main", lambda argv: called.append(argv) or 0)
    assert main(["bench", "--suite", name]) == 2
    assert one_line(capsys).startswith(
        f"savic bench: error: --suite {name} needs CuPy and a CUDA device (no CUDA device found)")
    assert called == []


def test_gpu_unavailable_says_why_without_cupy():
    try:
        import cupy  # noqa: F401
    except ImportError:
        assert "cupy" in suite.gpu_unavailable()
    else:  # pragma: no cover - a GPU machine
        pytest.skip("CuPy is installed")


# ----------------------------------------------------------------------------- 4. the --json record
def _record(tmp_path, *extra):
    out = tmp_path / "bench.json"
    assert main([*TINY, *extra, "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_json_records_what_was_run(tmp_path, capsys):
    data = _record(tmp_path, "--rule", "adam", "--noise", "0.5")
    assert not {"suite", "out", "quick", "handler", "no_progress"} & set(data["args"])
    assert (data["args"]["runs"], data["args"]["dim"], data["args"]["fused"]) == (2, 4, "auto")
    assert data["problem"] == {"kind": "Quadratic.random", "form": "diagonal", "dim": 4, "n_clients": 3,
                               "noise": 0.5, "L": 1.0, "mu": 0.01, "heterogeneity": 1.0,
                               "client_spectra": "random", "seed": 0}
    assert data["rule"] == {"name": "adam", "beta": 0.99, "e": 0.01}
    assert data["simulate"]["gamma"] == 0.01 and data["simulate"]["sync_every"] == 10
    assert data["path"]["fused"] == "auto" and data["path"]["taken"] in ("numba", "numpy")
    text = capsys.readouterr().out
    assert "γ = 0.01, β = 0.99, e = 0.01" in text and f"path (--fused auto): {data['path']['detail']}" in text


def test_json_records_oasis_probes_and_identity_without_beta(tmp_path, capsys):
    assert _record(tmp_path, "--rule", "oasis")["rule"] == {"name": "oasis", "beta": 0.99, "e": 0.01,
                                                             "probes": "exact"}
    assert _record(tmp_path, "--rule", "identity")["rule"] == {"name": "identity", "e": 1.0}
    capsys.readouterr()


@pytest.fixture
def kernel_calls(monkeypatch):
    """Calls of the compiled CPU kernels, by name (skipped where Numba is not installed)."""
    kernels = pytest.importorskip("savic_theory.simulator._cpu_kernels")
    calls = []
    for name in ("affine_steps", "noisy_step", "sync_step", "client_spread", "compile_generated"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    return calls


@pytest.mark.parametrize("extra,taken", [
    ([], "numba"), (["--noise", "0.3"], "numba"), (["--scaling", "local", "--rule", "identity"], "numba"),
    (["--fused", "numpy"], "numpy"), (["--scaling", "local"], "numpy")])
def test_json_path_is_the_path_that_ran(tmp_path, capsys, kernel_calls, extra, taken):
    data = _record(tmp_path, *extra)
    assert data["path"]["taken"] == taken
    steps = set(kernel_calls) - {"client_spread"}  # records use Numba on every compiled path
    assert bool(steps) == (taken == "numba")
    if "--fused" in extra:
        assert kernel_calls == [] and "--fused numpy" in data["path"]["detail"]
    capsys.readouterr()


def test_json_path_local_generated_kernel(tmp_path, capsys, kernel_calls, monkeypatch):
    """Above ``_LOCAL_KERNEL_MIN_WORK`` local scaling runs the generated kernel, and says so."""
    monkeypatch.setattr(fused, "_LOCAL_KERNEL_MIN_WORK", 0)
    data = _record(tmp_path, "--scaling", "local", "--rule", "rmsprop")
    assert data["path"]["taken"] == "numba" and "generated" in data["path"]["detail"]
    assert "compile_generated" in kernel_calls
    capsys.readouterr()


def test_json_path_without_numba(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(fused, "_compiled_kernels", lambda: None)
    data = _record(tmp_path)
    assert data["path"] == {"fused": "auto", "taken": "numpy",
                            "detail": "fused, NumPy ufuncs (Numba is not installed)"}
    capsys.readouterr()


# ----------------------------------------------------------------------------- 5. checked up front
@pytest.mark.parametrize("extra,message", [
    (["--dim", "1"], "--dim must be >= 2, got 1"), (["--dim", "0"], "--dim must be >= 2, got 0"),
    (["--clients", "0"], "--clients must be >= 1, got 0"),
    (["--noise", "-1"], "--noise must be finite and >= 0, got -1"),
    (["--noise", "nan"], "--noise must be finite and >= 0, got nan")])
def test_bad_sizes_are_errors_in_the_commands_terms(capsys, extra, message):
    assert main([*TINY, *extra]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""  # before anything was timed or printed
    assert captured.err == f"savic bench: error: {message}\n"


def test_smallest_dimension_runs(capsys):
    assert main([*TINY, "--dim", "2"]) == 0
    assert "d = 2" in capsys.readouterr().out
