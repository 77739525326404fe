"""``python -m benchmarks {cpu,gpu,all}``: run the suites in one process, write JSON and plots."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ._common import machine, table, write_json


def run_cpu(out: Path, quick: bool, torch: bool) -> dict:
    import numpy as np

    from . import cpu, dense

    info = machine()
    print(f"machine: {info['cpu']}, {info['logical_cores']} logical cores, numpy {info['numpy']}, "
          f"torch {info.get('torch')}; load average {info['load_average_1min']:.2f}")
    cfg = dict(cpu.CONFIG, steps=40) if quick else cpu.CONFIG
    result = {"machine": info, "command": " ".join(["python -m benchmarks"] + sys.argv[1:])}
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


def run_gpu(out: Path, quick: bool) -> dict:
    try:
        import cupy as cp

        cp.cuda.runtime.getDeviceCount()
    except Exception as exc:  # no CuPy or no CUDA device: say so, skip the suite
        print(f"gpu suite skipped: {type(exc).__name__}: {exc}")
        return {"skipped": str(exc)}
    from . import cpu, dense, gpu

    info = machine(gpu=True)
    print(f"machine: {info['gpu']} ({info['gpu_memory_GiB']} GiB), CuPy {info['cupy']}, host {info['cpu']}")
    result = {"machine": info, "command": " ".join(["python -m benchmarks"] + sys.argv[1:])}
    print("agreement with the CPU reference:")
    result["agreement"] = gpu.check_agreement()
    print("bandwidth of one fused step (kernel only):")
    result["bandwidth"] = gpu.bandwidth(gpu.COORDINATES[:3] if quick else gpu.COORDINATES)
    print("small problem against the launch floor:")
    result["small"] = gpu.small_problem(repeats=3 if quick else 5)
    print("whole loop through simulate:")
    result["end_to_end"] = gpu.end_to_end((10**6, 10**7) if quick else (10**6, 10**7, 10**8))
    print("GPU scaling (ms per step, set-up excluded):")
    result["scaling"] = gpu.scaling(gpu.QUICK_SWEEPS if quick else gpu.SWEEPS, repeats=2 if quick else 3)
    cpu.plot_scaling(result["scaling"], out / "gpu_scaling.png",
                     f"GPU time per step ({info['gpu']}): adam, global, H = 10")
    print("dense A_m and eigenbasis gradients:")
    result["dense"] = dense.suite(cp, quick)
    print(dense.tables(result["dense"]))
    write_json(out / "gpu.json", result)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("suite", choices=["cpu", "gpu", "all"], help="which suite to run")
    parser.add_argument("--out", default="docs/performance", help="folder for JSON results and plots")
    parser.add_argument("--quick", action="store_true", help="fewer points and repeats (a smoke run)")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if args.suite in ("cpu", "all"):
        run_cpu(out, args.quick, torch=not args.no_torch)
    if args.suite in ("gpu", "all"):
        run_gpu(out, args.quick)
    print(f"done in {time.perf_counter() - t0:.0f} s; results in {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
