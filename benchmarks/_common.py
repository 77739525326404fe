"""Timing, machine description, result files and plots shared by the benchmark suites."""
from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Callable

import numpy as np

from savic_theory.cli.bench import _cpu_model  # the model name that `savic bench` prints

__all__ = ["machine", "median_time", "steady_step_time", "write_json", "table"]


def machine(gpu: bool = False) -> dict:
    """What the numbers were measured on: CPU, cores, library versions (and the GPU)."""
    info = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],  # > 0.5 on 2 cores: other work was running
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [f"{p.get('internal_api')} {p.get('version')} ({p.get('num_threads')} threads)"
                        for p in threadpool_info() if p.get("user_api") == "blas"]
    except ImportError:
        pass
    try:
        import numba

        from savic_theory.simulator import fused

        info["numba"] = numba.__version__
        info["compiled_cpu_kernels"] = fused._compiled_kernels() is not None  # else the NumPy path ran
    except ImportError:
        info["numba"], info["compiled_cpu_kernels"] = None, False
    try:
        import torch

        info["torch"] = f"{torch.__version__} ({torch.get_num_threads()} threads)"
    except ImportError:
        info["torch"] = None
    if gpu:
        import cupy as cp

        props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
        info["gpu"] = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        info["gpu_memory_GiB"] = round(props["totalGlobalMem"] / 2**30, 1)
        info["cupy"] = cp.__version__
        info["cuda_runtime"] = cp.cuda.runtime.runtimeGetVersion()
    return info


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> tuple[float, list[float]]:
    """Median wall time of ``fn()`` over ``repeats`` calls after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), times


def steady_step_time(run: Callable[[int], object], repeats: int, target_s: float = 0.4,
                     min_steps: int = 20, max_steps: int = 20_000) -> float:
    """Seconds per step without set-up costs: ``(t(long) − t(short)) / (long − short)``.

    ``run(n)`` performs a whole run of ``n`` steps. ``long`` is chosen so that a run takes about
    ``target_s`` seconds and ``short = long / 4``, so that the variance of the set-up (fresh
    memory, compilation caches) is small next to the difference; medians of ``repeats`` calls.
    NaN when three tries give no positive difference (other work on the machine).
    """
    probe, _ = median_time(lambda: run(min_steps), 1)
    long = int(np.clip(4 * min_steps * target_s / max(probe, 1e-9), 4 * min_steps, max_steps))
    short = long // 4
    for _ in range(3):  # on a busy machine the difference can come out ≤ 0: measure again
        t_short, _ = median_time(lambda: run(short), repeats, warmup=0)
        t_long, _ = median_time(lambda: run(long), repeats, warmup=0)
        if t_long > t_short:
            return (t_long - t_short) / (long - short)
    return float("nan")  # no meaningful difference: reported as missing, not as a time


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_text(json.dumps(obj, indent=2, default=_plain) + "\n")
    os.replace(tmp, path)


def _plain(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """A Markdown table of ``rows`` with ``columns`` as ``(key, header)``."""
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    body = ["| " + " | ".join(_fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join([head, sep] + body)


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)

