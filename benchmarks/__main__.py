"""``python -m benchmarks {cpu,gpu,all}``: run the suites in one process, write JSON and plots.

Results go to ``--out`` (default ``results/benchmarks``, relative to the current folder); the
committed numbers of ``docs/performance.md`` are rewritten only when ``--out docs/performance``
is given. The GPU suite (``gpu``, ``all``) needs CuPy and a CUDA device: without them the command
stops before running or writing anything (exit status 2).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from savic_theory.simulator.fused import eager_kernels

from ._common import machine, table, write_json

#: where the suites write unless ``--out`` says otherwise (never the committed docs/performance)
DEFAULT_OUT = "results/benchmarks"


def gpu_unavailable() -> str | None:
    """Why the GPU suite cannot run here (no CuPy, no CUDA device), or ``None`` when it can."""
    try:
        import importlib

        import cupy as cp

        importlib.import_module("array_api_compat.cupy")  # the simulator's CuPy namespace

        count = cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # ImportError, CUDARuntimeError, a broken CUDA installation
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return None if count > 0 else "no CUDA device found"


def _command(args) -> str:
    """The command that reproduces this run, with the folder it wrote to."""
    flags = [args.suite, "--out", str(args.out)] + (["--quick"] if args.quick else [])
    return " ".join(["python -m benchmarks"] + flags + (["--no-torch"] if args.no_torch else []))


def run_cpu(out: Path, quick: bool, torch: bool, command: str = "python -m benchmarks cpu") -> dict:
    import numpy as np

    from . import cpu, dense

    info = machine()
    print(f"machine: {info['cpu']}, {info['logical_cores']} logical cores, numpy {info['numpy']}, "
          f"torch {info.get('torch')}; load average {info['load_average_1min']:.2f}")
    cfg = dict(cpu.CONFIG, steps=40) if quick else cpu.CONFIG
    result = {"machine": info, "command": command}
    result["compare"] = cpu.compare(cfg, repeats=3 if quick else 7, slow_repeats=1 if quick else 3,
                                    torch=torch)
    print(table(result["compare"]["rows"], [("method", "method"), ("ms_per_step", "ms / step"),
                                            ("total_s", "whole run (s)")]))
    print("CPU scaling (ms per step, set-up excluded):")
    result["scaling"] = cpu.scaling(cpu.QUICK_SWEEPS if quick else cpu.SWEEPS, repeats=1 if quick else 3)
    cpu.plot_scaling(result["scaling"], out / "cpu_scaling.png",
                     f"CPU time per step ({info['cpu']}, {info['logical_cores']} cores): adam, global, H = 10")
    print("dense A_m and eigenbasis gradients:")
    result["dense"] = dense.suite(np, quick)
    print(dense.tables(result["dense"]))
    result["load_average_1min_at_end"] = __import__("os").getloadavg()[0]
    write_json(out / "cpu.json", result)
    return result


def run_rules(out: Path, quick: bool, command: str = "python -m benchmarks rules") -> dict:
    """One call for a sweep over rules against one call per rule (CPU)."""
    from . import rules_axis

    info = machine()
    print(f"machine: {info['cpu']}, {info['logical_cores']} logical cores, numpy {info['numpy']}; "
          f"load average {info['load_average_1min']:.2f}")
    cfg = dict(rules_axis.CONFIG, steps=30) if quick else rules_axis.CONFIG
    result = {"machine": info, "command": command}
    result["rules_axis"] = rules_axis.compare(cfg, repeats=1 if quick else 5)
    result["load_average_1min_at_end"] = __import__("os").getloadavg()[0]
    write_json(out / "rules.json", result)
    return result


def run_gpu(out: Path, quick: bool, command: str = "python -m benchmarks gpu") -> dict:
    """The GPU suite; the caller has checked :func:`gpu_unavailable` (``main`` does).

    ``gpu.json`` is rewritten after every row of a section (the section marked
    ``<section>_incomplete`` until it ends), so that a run stopped part-way (a time limit, a
    device error) keeps what it measured; a row that fails records why in its ``note``, and a
    section that fails as a whole is recorded as ``{"error": ..., "partial": rows so far}``
    and the next one runs.
    """
    import cupy as cp

    from . import cpu, dense, gpu, rules_axis

    info = machine(gpu=True)
    print(f"machine: {info['gpu']} ({info['gpu_memory_GiB']} GiB), CuPy {info['cupy']}, host {info['cpu']}")
    result = {"machine": info, "command": command}

    def section(key, title, fn):
        """``result[key] = fn(keep)``; ``keep(rows so far)`` saves them as they come (every section
        but the two-run agreement check saves row by row)."""
        print(title)
        partial = []

        def keep(value):
            partial[:] = [value]
            write_json(out / "gpu.json", dict(result, **{key: value, f"{key}_incomplete": True}))
        try:
            result[key] = fn(keep)
        except Exception as exc:  # recorded, not fatal: the other sections still run
            print(f"{key} failed: {type(exc).__name__}: {exc}")
            result[key] = {"error": f"{type(exc).__name__}: {exc}", **({"partial": partial[0]} if partial else {})}
        write_json(out / "gpu.json", result)  # the measurements so far are kept whatever follows

    section("agreement", "agreement with the CPU reference:", lambda keep: gpu.check_agreement())
    section("bandwidth", "bandwidth of one fused step (kernel only):",
            lambda keep: gpu.bandwidth(gpu.QUICK_COORDINATES if quick else gpu.COORDINATES, keep=keep))
    section("small", "small problem against the launch floor:",
            lambda keep: gpu.small_problem(repeats=3 if quick else 5, keep=keep))
    section("end_to_end", "whole loop through simulate:",
            lambda keep: gpu.end_to_end(gpu.QUICK_END_TO_END if quick else gpu.END_TO_END, keep=keep))

    def dense_suite(keep):
        res = dense.suite(cp, quick, keep=keep)
        try:
            print(dense.tables(res))
        except Exception as exc:  # the numbers are kept; only their table is missing
            print(f"dense tables not printed: {type(exc).__name__}: {exc}")
        return res

    section("dense", "dense A_m and eigenbasis gradients:", dense_suite)
    section("rules_axis", "rules on the run axis, 16 clients × d = 100 (one call against one call per rule):",
            lambda keep: rules_axis.compare(rules_axis.GPU_CONFIG, repeats=1 if quick else 3, backend="cupy",
                                            keep=keep))
    plot_title = f"GPU time per step ({info['gpu']}): adam, global, H = 10"

    def scaling_point(keep):
        def on_point(curves):  # saved, and the plot redrawn, after every point (a run may be cut off)
            keep(curves)
            _plot(cpu, curves, out / "gpu_scaling.png", plot_title)
        return on_point

    # the longest section last, its points saved as they come
    section("scaling", "GPU scaling (ms per step, set-up excluded):",
            lambda keep: gpu.scaling(gpu.QUICK_SWEEPS if quick else gpu.SWEEPS, repeats=2 if quick else 3,
                                     on_point=scaling_point(keep)))
    failed = failures(result)
    for key, (bad, total) in failed.items():
        print(f"{key}: {bad} of {total} rows failed (their note in gpu.json says why)")
    result["failed_rows"] = {k: list(v) for k, v in failed.items()}
    write_json(out / "gpu.json", result)
    scaling = result["scaling"]
    _plot(cpu, scaling.get("partial", {}) if "error" in scaling else scaling, out / "gpu_scaling.png", plot_title,
          say=True)
    return result


def _plot(cpu, curves, path: Path, title: str, say: bool = False) -> None:
    """The scaling plot of the points measured so far, written whole (never half a file)."""
    tmp = path.with_name(f".{path.stem}.part{path.suffix}")
    try:
        cpu.plot_scaling(curves, tmp, title)
        tmp.replace(path)
    except Exception as exc:  # the numbers are in gpu.json; a plot is not worth losing them
        tmp.unlink(missing_ok=True)
        if say:
            print(f"{path.name} not written: {type(exc).__name__}: {exc}")


def failures(result: dict) -> dict[str, tuple[int, int]]:
    """Per section with rows that failed: ``(failed, total)`` rows, a row being a dict with
    numbers or a ``note`` at any depth and a failed one a row with a ``note``; a section that
    failed as a whole counts as one row, failed."""
    out = {}
    for key, value in result.items():
        if isinstance(value, dict) and "error" in value:
            out[key] = (1, 1)
            continue
        rows = _rows(value)
        bad = sum("note" in r for r in rows)
        if bad:
            out[key] = (bad, len(rows))
    return out


def _rows(v) -> list[dict]:
    if isinstance(v, dict):
        own = [v] if "note" in v or any(isinstance(x, (int, float)) and not isinstance(x, bool)
                                        for x in v.values()) else []
        return own + [r for x in v.values() for r in _rows(x)]
    if isinstance(v, list):
        return [r for x in v for r in _rows(x)]
    return []


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("suite", choices=["cpu", "rules", "gpu", "all"],
                        help="which suite to run: cpu, rules (a sweep over rules in one call, CPU), "
                             "gpu; all runs the three (gpu and all need CuPy and a CUDA device)")
    parser.add_argument("--out", metavar="DIR", default=DEFAULT_OUT,
                        help="folder for JSON results and plots (default: %(default)s; "
                             "the committed results: --out docs/performance)")
    parser.add_argument("--quick", action="store_true", help="fewer points and repeats (a smoke run)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"--out {args.out} is a file; name a folder")
    if args.suite in ("gpu", "all"):
        reason = gpu_unavailable()
        if reason is not None:  # before anything runs or is written
            hint = "; run 'cpu' for the CPU suite alone" if args.suite == "all" else ""
            print(f"{parser.prog}: error: the GPU suite needs CuPy and a CUDA device ({reason}){hint}",
                  file=sys.stderr)
            return 2
    out.mkdir(parents=True, exist_ok=True)
    # time a process's steady state: every generated kernel a timed call can use is loaded at
    # its first (untimed) call, not part-way through the timed rounds (docs/performance.md)
    with eager_kernels():
        return _run_suites(args, out)


def _run_suites(args, out: Path) -> int:
    command = _command(args)
    t0 = time.perf_counter()
    written = []
    if args.suite in ("cpu", "all"):
        run_cpu(out, args.quick, torch=not args.no_torch, command=command)
        written += ["cpu.json", "cpu_scaling.png"]
    if args.suite in ("rules", "all"):
        run_rules(out, args.quick, command=command)
        written += ["rules.json"]
    status = 0
    if args.suite in ("gpu", "all"):
        failed = run_gpu(out, args.quick, command=command).get("failed_rows", {})
        written += ["gpu.json", "gpu_scaling.png"]
        if any(bad == total for bad, total in failed.values()):  # a whole section lost: say so by the status
            status = 1
    written = [name for name in written if (out / name).exists()]  # a failed plot is not claimed
    print(f"done in {time.perf_counter() - t0:.0f} s; results in {out}/: {', '.join(written)}")
    return status


if __name__ == "__main__":
    sys.exit(main())
