"""``savic bench``: time the simulator on one configuration (fused path, optionally the reference).

Times whole ``simulate`` calls (median of ``--repeats`` after one warm-up) on a random diagonal
quadratic with heterogeneous clients and prints milliseconds per step with the machine they were
measured on, the parameters (γ = 0.01, β = 0.99, e = 0.01: below the gradients' size, so that D̂
adapts, as in the benchmark suite's comparison) and the path that ran (Numba-compiled
or NumPy). ``--suite cpu|rules|gpu|all`` instead runs the benchmark suite of a source checkout
(``python -m benchmarks``: comparisons with per-client NumPy/PyTorch loops, scaling plots, a
sweep over rules in one call against one call per rule) into
``--out`` (default ``results/benchmarks``; ``--out docs/performance`` rewrites the committed
results); with it only ``--out`` and ``--quick`` apply. Every option can also come from the
``[bench]`` table of a TOML file (``--config``).
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

#: the options that time one configuration, with their defaults. The parser's defaults are None
#: (flags: False), so that an option given on the command line or in the config file is known:
#: with ``--suite`` none of them applies, and naming one is an error
_ONE = dict(runs=32, clients=64, dim=256, rule="adam", scaling="global", sync_every=10, steps=200,
            dtype="float64", noise=0.0, backend="numpy", fused="auto", repeats=5, reference=False,
            json=None)
#: the smallest value of each integer option (a diagonal quadratic with μ < L needs d >= 2)
_MINIMUM = dict(runs=1, clients=1, dim=2, sync_every=1, steps=1, repeats=1)
#: what ``--suite`` runs with, where the one-configuration options are not used
_SUITE_OPTIONS = ("--out", "--quick", "--no-progress", "--config")
#: where ``--suite`` writes by default (as ``python -m benchmarks``: never the committed docs/)
SUITE_OUT = "results/benchmarks"

#: the benchmark problem and rule: fixed, recorded in the ``--json`` file
PROBLEM = dict(L=1.0, mu=0.01, heterogeneity=1.0, client_spectra="random", seed=0)
GAMMA, BETA, E, SEED = 0.01, 0.99, 0.01, 0  # benchmarks/cpu.py's CONFIG: D̂ adapts (e·I with e = 0.1)


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="time the simulator (fused path vs reference loop)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = _ONE
    p.add_argument("--runs", type=int, metavar="R", help=f"independent runs (default: {d['runs']})")
    p.add_argument("--clients", type=int, metavar="M", help=f"clients (default: {d['clients']})")
    p.add_argument("--dim", type=int, metavar="D", help=f"dimension d, at least 2 (default: {d['dim']})")
    p.add_argument("--rule", choices=_RULES, help=f"scaling rule (default: {d['rule']})")
    p.add_argument("--scaling", choices=("global", "local"),
                   help=f"global or local scaling (default: {d['scaling']})")
    p.add_argument("--sync-every", type=int, metavar="H", help=f"sync period H (default: {d['sync_every']})")
    p.add_argument("--steps", type=int, metavar="T", help=f"local steps per run (default: {d['steps']})")
    p.add_argument("--dtype", choices=("float64", "float32"), help=f"floating-point type (default: {d['dtype']})")
    p.add_argument("--noise", type=float, metavar="SIGMA2",
                   help=f"gradient noise σ² = E‖ξ‖² (default: {d['noise']:g})")
    p.add_argument("--backend", choices=("numpy", "cupy"), help=f"array backend (default: {d['backend']})")
    p.add_argument("--fused", choices=("auto", "numpy"),
                   help="fused path: 'auto' uses the compiled CPU kernels where Numba is installed, "
                        f"'numpy' NumPy ufuncs only; the path taken is printed (default: {d['fused']})")
    p.add_argument("--repeats", type=int, help=f"timed calls; the median is reported (default: {d['repeats']})")
    p.add_argument("--reference", action="store_true",
                   help="also time the reference loop (fused=False) and check both agree (default: off)")
    p.add_argument("--json", metavar="FILE", help="also write the measurements as JSON (default: none)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (default: shown)")
    p.add_argument("--suite", choices=("cpu", "rules", "gpu", "all"),
                   help="run the benchmark suite of a source checkout instead (python -m benchmarks; "
                        "gpu and all need CuPy and a CUDA device); the options above do not apply, "
                        "only --out, --quick (and --no-progress, --config) do (default: none, time one "
                        "configuration)")
    p.add_argument("--out", metavar="DIR",
                   help=f"with --suite: folder for results and plots; --out docs/performance rewrites "
                        f"the committed results (default: {SUITE_OUT})")
    p.add_argument("--quick", action="store_true", help="with --suite: fewer points and repeats (default: off)")
    add_config_option(p, "bench")
    p.set_defaults(handler=run)


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _given(args: argparse.Namespace, dests) -> list[str]:
    """The options among ``dests`` set on the command line or in the config file."""
    return [_option(k) for k in dests if getattr(args, k) not in (None, False)]


def run(args: argparse.Namespace) -> int:
    if args.suite:
        return _run_suite(args)
    stray = _given(args, ("out", "quick"))
    if stray:
        raise UserError(f"{' and '.join(stray)} {'applies' if len(stray) == 1 else 'apply'} only with "
                        "--suite (savic bench without --suite times one configuration and writes only --json)")
    for name, default in _ONE.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    for name, low in _MINIMUM.items():  # up front, in the command's terms
        if getattr(args, name) < low:
            raise UserError(f"{_option(name)} must be >= {low}, got {getattr(args, name)}")
    if not (np.isfinite(args.noise) and args.noise >= 0):
        raise UserError(f"--noise must be finite and >= 0, got {args.noise:g}")
    if args.json is not None:
        check_output_path(args.json, "--json", kind="file")  # before the timing, not after it
    from .. import Quadratic, rules, simulate

    prob = Quadratic.random(dim=args.dim, n_clients=args.clients, noise=args.noise, **PROBLEM)
    rule = rules.make(args.rule) if args.rule == "identity" else rules.make(args.rule, beta=BETA, e=E)
    path, path_detail = path_taken(prob, rule, args)

    def call(fused):
        return simulate(prob, rule, gamma=GAMMA, steps=args.steps, sync_every=args.sync_every,
                        scaling=args.scaling, runs=args.runs, record_every=args.sync_every,
                        dtype=args.dtype, backend=args.backend, seed=SEED, fused=fused)

    cpu = _cpu_model()
    print(f"machine: {cpu}, {os.cpu_count()} logical cores, numpy {np.__version__}")
    print(f"problem: diagonal quadratic, {args.runs} runs × {args.clients} clients × d = {args.dim}, "
          f"{args.rule} ({args.scaling}), H = {args.sync_every}, {args.steps} steps, σ² = {args.noise:g}, "
          f"{args.dtype} on {args.backend}")
    rule_text = "" if args.rule == "identity" else f", β = {BETA:g}, e = {E:g}"
    print(f"parameters: γ = {GAMMA:g}{rule_text}; L = {PROBLEM['L']:g}, μ = {PROBLEM['mu']:g}, "
          f"heterogeneity {PROBLEM['heterogeneity']:g}, seed {SEED}")
    print(f"path (--fused {args.fused}): {path_detail}")

    bar = progress((1 + args.repeats) * (2 if args.reference else 1), "bench: simulate calls",
                   enabled=not args.no_progress)

    from ..simulator.fused import eager_kernels

    def timed(fused):
        with eager_kernels():  # the warm-up loads every generated kernel the timed calls use
            return _timed(fused)

    def _timed(fused):
        res = call(fused)  # warm-up (kernel compilation on the GPU, loading generated kernels)
        bar.update()
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            res = call(fused)
            times.append(time.perf_counter() - t)
            bar.update()
        return float(np.median(times)), res

    def say(msg):  # printed above the progress bar
        bar.write(msg, file=sys.stdout)

    t_fused, res = timed(True if args.fused == "auto" else "numpy")
    out = {"machine": {"cpu": cpu, "logical_cores": os.cpu_count(), "numpy": np.__version__},
           "args": {k: getattr(args, k) for k in _ONE},
           "problem": {"kind": "Quadratic.random", "form": prob.form, "dim": args.dim,
                       "n_clients": args.clients, "noise": args.noise, **PROBLEM},
           "rule": _rule_params(args.rule, res.params),
           "simulate": {"gamma": GAMMA, "steps": args.steps, "sync_every": args.sync_every,
                        "record_every": args.sync_every, "scaling": args.scaling, "runs": args.runs,
                        "dtype": args.dtype, "backend": args.backend, "seed": SEED},
           "path": {"fused": args.fused, "taken": path, "detail": path_detail},
           "fused_ms_per_step": 1e3 * t_fused / args.steps}
    if args.config is not None:
        out["args"]["config"] = args.config
    say(f"fused path ({args.fused}): {1e3 * t_fused / args.steps:.3f} ms/step "
        f"(whole run {t_fused:.3g} s, median of {args.repeats})")
    if res.diverged:
        say(f"note: {int(np.sum(np.asarray(res.status) == 'diverged'))} runs diverged; the loop stops "
            "when all have, so fewer steps may have been timed")
        out["diverged_runs"] = int(np.sum(np.asarray(res.status) == "diverged"))
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


def _run_suite(args: argparse.Namespace) -> int:
    """``--suite``: ``python -m benchmarks SUITE --out DIR [--quick]`` from the checkout."""
    stray = _given(args, _ONE)
    if stray:
        raise UserError(f"{', '.join(stray)} {'does' if len(stray) == 1 else 'do'} not apply with --suite "
                        f"(the suite runs its own configurations; with --suite: {', '.join(_SUITE_OPTIONS)})")
    if args.out is None:
        args.out = SUITE_OUT
    check_output_path(args.out, "--out")  # a folder the suite adds its files to
    root = os.getcwd()
    if os.path.isfile(os.path.join(root, "benchmarks", "__main__.py")) and root not in sys.path:
        sys.path.insert(0, root)  # the console script does not put the checkout on the path
    try:
        suite = importlib.import_module("benchmarks.__main__")
    except ModuleNotFoundError as exc:
        raise UserError("the benchmark suite lives in the source tree (benchmarks/); run "
                        "'savic bench --suite ...' from a checkout of the repository") from exc
    if args.suite in ("gpu", "all"):
        reason = suite.gpu_unavailable()
        if reason is not None:  # before anything runs or is written
            raise UserError(f"--suite {args.suite} needs CuPy and a CUDA device ({reason})"
                            + ("; --suite cpu runs the CPU suite alone" if args.suite == "all" else ""))
    return suite.main([args.suite, "--out", args.out] + (["--quick"] if args.quick else []))


def path_taken(prob, rule, args: argparse.Namespace) -> tuple[str, str]:
    """``(name, description)`` of the code that runs ``simulate(fused=...)`` for this configuration.

    ``name`` is ``"numba"`` (compiled CPU kernels), ``"numpy"`` (NumPy ufuncs), ``"cupy"`` (CUDA
    kernels) or ``"reference"`` (the reference loop, where the fused path does not apply). It
    follows the dispatch of :mod:`savic_theory.simulator.fused` (``simulate_fused``, ``_CPUOps``);
    ``tests/test_bench_cli.py`` checks it against the kernels actually called.
    """
    from ..simulator import fused

    reason = fused.unsupported_reason(prob, rule, args.scaling, backend=args.backend)
    if reason is not None:  # --fused auto falls back (--fused numpy raises when simulating)
        return "reference", f"reference loop ({reason})"
    if args.backend == "cupy":
        return "cupy", "fused, CUDA kernels (CuPy)"
    if args.fused == "numpy":
        return "numpy", "fused, NumPy ufuncs (--fused numpy)"
    if fused._compiled_kernels() is None:
        return "numpy", "fused, NumPy ufuncs (Numba is not installed)"
    if args.scaling == "local" and not rule.is_static:
        work = args.steps * args.runs * args.clients * args.dim
        if work < fused._LOCAL_KERNEL_MIN_WORK:
            return "numpy", (f"fused, NumPy ufunc replay of the rule: steps × coordinates = {work} is below "
                             f"{fused._LOCAL_KERNEL_MIN_WORK}, where the generated Numba kernel starts "
                             "(records: Numba)")
        return "numba", "fused, generated Numba kernel for the local steps"
    return "numba", "fused, compiled Numba kernels"  # the problem is diagonal: the affine kernels


def _rule_params(name: str, params) -> dict:
    """The rule's parameters as ``simulate`` used them (from the result's ``params``)."""
    out = {"name": name}
    for key in ("beta", "e", "probes"):
        value = params.get(key)
        if value is not None:
            out[key] = np.asarray(value).tolist() if not isinstance(value, str) else value
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
