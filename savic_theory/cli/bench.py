"""``savic bench``: time the simulator on one configuration (fused path, optionally the reference).

Times whole ``simulate`` calls (median of ``--repeats`` after one warm-up) on a random diagonal
quadratic with heterogeneous clients and prints milliseconds per step with the machine they were
measured on. ``--suite cpu|gpu|all`` instead runs the benchmark suite of a source checkout
(``python -m benchmarks``: comparisons with per-client NumPy/PyTorch loops, scaling plots).
Every option can also come from the ``[bench]`` table of a TOML file (``--config``).
"""
from __future__ import annotations

import argparse
import importlib
import os
import platform
import sys
import time

import numpy as np

from ._common import UserError, add_config_option, check_output_path, progress, write_json

_RULES = ("identity", "rmsprop", "adam", "oasis")


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="time the simulator (fused path vs reference loop)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=32, metavar="R", help="independent runs (default: 32)")
    p.add_argument("--clients", type=int, default=64, metavar="M", help="clients (default: 64)")
    p.add_argument("--dim", type=int, default=256, metavar="D", help="dimension d (default: 256)")
    p.add_argument("--rule", choices=_RULES, default="adam", help="scaling rule (default: adam)")
    p.add_argument("--scaling", choices=("global", "local"), default="global",
                   help="global or local scaling (default: global)")
    p.add_argument("--sync-every", type=int, default=10, metavar="H", help="sync period H (default: 10)")
    p.add_argument("--steps", type=int, default=200, metavar="T", help="local steps per run (default: 200)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="floating-point type (default: float64)")
    p.add_argument("--noise", type=float, default=0.0, metavar="SIGMA2",
                   help="gradient noise σ² = E‖ξ‖² (default: 0)")
    p.add_argument("--backend", choices=("numpy", "cupy"), default="numpy", help="array backend (default: numpy)")
    p.add_argument("--fused", choices=("auto", "numpy"), default="auto",
                   help="fused path: 'auto' uses the compiled CPU kernels where Numba is installed, "
                        "'numpy' NumPy ufuncs only (default: auto)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls; the median is reported (default: 5)")
    p.add_argument("--reference", action="store_true",
                   help="also time the reference loop (fused=False) and check both agree (default: off)")
    p.add_argument("--json", metavar="FILE", help="also write the measurements as JSON (default: none)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (default: shown)")
    p.add_argument("--suite", choices=("cpu", "gpu", "all"),
                   help="run the benchmark suite of a source checkout instead (python -m benchmarks; "
                        "default: none, time one configuration)")
    p.add_argument("--out", metavar="DIR", default="docs/performance",
                   help="with --suite: folder for results and plots (default: docs/performance)")
    p.add_argument("--quick", action="store_true", help="with --suite: fewer points and repeats (default: off)")
    add_config_option(p, "bench")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.suite:
        check_output_path(args.out, "--out")  # a folder the suite adds its files to
        root = os.getcwd()
        if os.path.isfile(os.path.join(root, "benchmarks", "__main__.py")) and root not in sys.path:
            sys.path.insert(0, root)  # the console script does not put the checkout on the path
        try:
            suite = importlib.import_module("benchmarks.__main__")
        except ModuleNotFoundError as exc:
            raise UserError("the benchmark suite lives in the source tree (benchmarks/); run "
                            "'savic bench --suite ...' from a checkout of the repository") from exc
        return suite.main([args.suite, "--out", args.out] + (["--quick"] if args.quick else []))
    for name in ("runs", "clients", "dim", "sync_every", "steps", "repeats"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.json is not None:
        check_output_path(args.json, "--json", kind="file")  # before the timing, not after it
    from .. import Quadratic, rules, simulate

    prob = Quadratic.random(dim=args.dim, n_clients=args.clients, L=1.0, mu=0.01, heterogeneity=1.0,
                            client_spectra="random", noise=args.noise, seed=0)
    rule = rules.make(args.rule) if args.rule == "identity" else rules.make(args.rule, beta=0.99, e=0.1)

    def call(fused):
        return simulate(prob, rule, gamma=0.1, steps=args.steps, sync_every=args.sync_every,
                        scaling=args.scaling, runs=args.runs, record_every=args.sync_every,
                        dtype=args.dtype, backend=args.backend, seed=0, fused=fused)

    bar = progress((1 + args.repeats) * (2 if args.reference else 1), "bench: simulate calls",
                   enabled=not args.no_progress)

    def timed(fused):
        res = call(fused)  # warm-up (kernel compilation on the GPU)
        bar.update()
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            res = call(fused)
            times.append(time.perf_counter() - t)
            bar.update()
        return float(np.median(times)), res

    cpu = _cpu_model()
    print(f"machine: {cpu}, {os.cpu_count()} logical cores, numpy {np.__version__}")
    print(f"problem: diagonal quadratic, {args.runs} runs × {args.clients} clients × d = {args.dim}, "
          f"{args.rule} ({args.scaling}), H = {args.sync_every}, {args.steps} steps, σ² = {args.noise:g}, "
          f"{args.dtype} on {args.backend}")

    def say(msg):  # printed above the progress bar
        bar.write(msg, file=sys.stdout)

    t_fused, res = timed(True if args.fused == "auto" else "numpy")
    out = {"machine": {"cpu": cpu, "logical_cores": os.cpu_count(), "numpy": np.__version__},
           "args": {k: v for k, v in vars(args).items() if k != "handler" and not k.startswith("config_")},
           "fused_ms_per_step": 1e3 * t_fused / args.steps}
    say(f"fused path ({args.fused}): {1e3 * t_fused / args.steps:.3f} ms/step "
        f"(whole run {t_fused:.3g} s, median of {args.repeats})")
    if res.diverged:
        say(f"note: {int(np.sum(np.asarray(res.status) == 'diverged'))} runs diverged; the loop stops "
            "when all have, so fewer steps may have been timed")
    if args.reference:
        t_ref, ref = timed(False)
        gap = float(np.max(np.abs(res.x - ref.x)) / max(np.max(np.abs(ref.x)), 1e-300))
        out.update(reference_ms_per_step=1e3 * t_ref / args.steps, relative_gap=gap)
        say(f"reference loop: {1e3 * t_ref / args.steps:.3f} ms/step "
            f"({t_ref / t_fused:.1f}× the fused time); max relative gap of x: {gap:.1e}")
    bar.close()
    if args.json is not None:
        write_json(args.json, out)  # missing parent folders are made, as for --out
        print(f"measurements written to {args.json}", file=sys.stderr)
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
