"""Throughput of the ResNet18 harness: M clients × b images per local step, loop against vmap.

    python -m benchmarks.nn_throughput                      # the GPU measurement (defaults below)
    python -m benchmarks.nn_throughput --quick              # a CPU smoke run at tiny width

Modes (images per second over forward, backward and the parameter update; every mode computes
the gradient of the same objective, cross-entropy plus the weight decay ``(λ/2)‖x‖²`` of
:class:`savic_theory.nn.Objective`, so the work per image is the same):

* ``single``      one ResNet18 (``nn.Module``, autograd) at batch ``M·b``: the reference;
* ``single-flat`` the same through the harness's flat parameter vector (``functional_call``);
* ``loop``        ``M`` client models, a Python loop over clients (``Objective.clients``);
* ``vmap``        ``M`` client models in one ``torch.func.vmap`` call;
* ``round:NAME``  whole local steps of :class:`savic_theory.nn.Trainer` for method ``NAME``
  (minibatch sampling and augmentation on the device, the scaled update, the sync every ``H``
  steps; no evaluation), with the clients computed as ``--together`` says. This work on top of
  the gradient is intended: it is what a training step costs.

Timing: ``--warmup`` untimed iterations, then ``--steps`` iterations between two CUDA events
(``time.perf_counter`` on CPU); the round modes time ``--steps / --local-steps`` whole rounds,
so ``--steps`` must be a multiple of ``--local-steps`` for all modes to time the same number of
steps (each row records the steps it timed; the output says so when they differ). Random data
of the CIFAR-10 shape lives on the device.
The target on an H100: ``vmap`` at 8 × 128 reaches at least half of ``single`` at 1024.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch
from torch.nn import functional as F

from savic_theory.nn import (DeviceData, Objective, ResNet18, Trainer, init_params, make_method,
                             to_channels_last)
from savic_theory.nn.data import synthetic_images

# steps is a multiple of local_steps, so that the round modes time as many steps as the others
GPU_DEFAULTS = dict(width=64, clients=8, batch=128, image=32, steps=20, warmup=5, local_steps=10)
QUICK = dict(width=8, clients=4, batch=8, image=16, steps=10, warmup=1, local_steps=10)


def _timer(device):
    if device.type == "cuda":
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

        def begin():
            start.record()

        def end():
            stop.record()
            torch.cuda.synchronize(device)
            return start.elapsed_time(stop) / 1e3
        return begin, end
    box = {}

    def begin():
        box["t"] = time.perf_counter()

    def end():
        return time.perf_counter() - box["t"]
    return begin, end


def measure(step, images_per_step: int, steps: int, warmup: int, device) -> float:
    """Images per second of ``step()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    begin, end = _timer(device)
    begin()
    for _ in range(steps):
        step()
    return images_per_step * steps / end()


def run(args, on_update=None) -> dict:
    """Every mode of ``args.modes``; ``on_update(result)`` after each row (a mode that fails is
    a row with its ``error``, and the next mode runs)."""
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    precision = args.precision
    M, b, n = args.clients, args.batch, args.clients * args.batch
    cl = device.type == "cuda" if args.channels_last is None else args.channels_last
    info = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "threads": torch.get_num_threads()}
    settings = {k: v for k, v in vars(args).items() if k != "json"}
    settings["channels_last"] = cl
    command = " ".join(["python -m benchmarks.nn_throughput"] + sys.argv[1:])
    rows = []
    result = {"machine": info, "settings": settings, "command": command, "rows": rows}
    net = ResNet18(classes=10, width=args.width, norm=args.norm).to(device)
    obj = Objective(net, weight_decay=5e-4, precision=precision)
    x0 = init_params(net, 0).to(device)
    gen = torch.Generator(device).manual_seed(0)
    images = torch.randn(n, 3, args.image, args.image, device=device, generator=gen)
    labels = torch.randint(10, (n,), device=device, generator=gen)
    if cl:
        images = to_channels_last(images)
    stacked = images.view(M, b, *images.shape[1:])
    if cl:
        stacked = to_channels_last(stacked)
    ys = labels.view(M, b)
    gamma = 1e-3

    def record(mode, ips, steps=args.steps):
        rows.append({"mode": mode, "images_per_second": ips, "steps": steps})
        print(f"{mode:>22s}  {ips:12,.0f} img/s  ({steps} steps)", flush=True)
        if on_update is not None:
            on_update(result)

    def attempt(mode, fn):
        """``fn()`` (which records its row); an exception becomes the mode's row."""
        try:
            fn()
        except Exception as exc:  # e.g. out of memory, an op vmap cannot batch: the others still run
            rows.append({"mode": mode, "error": f"{type(exc).__name__}: {exc}"})
            print(f"{mode:>22s}  failed: {type(exc).__name__}: {exc}", flush=True)
            if device.type == "cuda":
                torch.cuda.empty_cache()
            if on_update is not None:
                on_update(result)

    if on_update is not None:  # the machine and settings, before any mode has run
        on_update(result)
    modes = args.modes.split(",")
    if "single" in modes:
        def single_mode():
            model = ResNet18(classes=10, width=args.width, norm=args.norm).to(device)
            if cl:
                model = model.to(memory_format=torch.channels_last)
            params = list(model.parameters())
            wd = obj.weight_decay

            def single():  # the objective of Objective.__call__: cross-entropy + (λ/2)‖x‖²
                with obj.autocast(device):
                    loss = F.cross_entropy(model(images).float(), labels)
                if wd:
                    loss = loss + 0.5 * wd * sum(torch.sum(p * p) for p in params)
                grads = torch.autograd.grad(loss, params)
                with torch.no_grad():
                    torch._foreach_add_(params, grads, alpha=-gamma)
            record("single", measure(single, n, args.steps, args.warmup, device))
        attempt("single", single_mode)
    if "single-flat" in modes:
        def single_flat_mode():
            x = x0.clone()

            def single_flat():
                g, _ = obj.grad(x, images, labels)
                x.add_(g, alpha=-gamma)
            record("single-flat", measure(single_flat, n, args.steps, args.warmup, device))
        attempt("single-flat", single_flat_mode)
    for together in ("loop", "vmap"):
        if together not in modes:
            continue

        def clients_mode(together=together):
            X = x0.expand(M, -1).clone()

            def clients():
                G, _, _ = obj.clients(X, stacked, ys, None, together)
                X.add_(G, alpha=-gamma)
            record(together, measure(clients, n, args.steps, args.warmup, device))
        attempt(together, clients_mode)
    rounds = [m.split(":", 1)[1] for m in modes if m.startswith("round:")]
    if rounds:
        per_round = max(1, args.steps // args.local_steps)
        warm = max(1, args.warmup // args.local_steps)
        box = {}

        def round_data():
            s = synthetic_images(max(4 * n, 512), 1, classes=10, channels=3, size=args.image, seed=0)
            parts = [list(range(i, s.train_x.shape[0], M)) for i in range(M)]
            box["data"] = DeviceData(s.train_x, s.train_y, parts, device=device, augment=True)
        attempt("round data", round_data)
        for name in rounds if "data" in box else ():
            def round_mode(name=name):
                method = make_method(name, 0.05 if name == "local_sgd" else 1e-3)
                tr = Trainer(obj, box["data"], method, x0, local_steps=args.local_steps, batch_size=b,
                             seed=0, together=args.together, channels_last=cl)
                tr.evaluate = lambda: {}  # throughput of the training steps only
                record(f"round:{name}", measure(tr.run_round, n * args.local_steps, per_round, warm, device),
                       per_round * args.local_steps)
            attempt(f"round:{name}", round_mode)
        timed = per_round * args.local_steps
        if timed != args.steps and len(rows) > len(rounds):
            rounds_text = f"{per_round} round{'s' if per_round != 1 else ''} of H = {args.local_steps}"
            print(f"note: the round modes timed {timed} steps ({rounds_text}), the others {args.steps}; "
                  "make --steps a multiple of --local-steps to compare equal counts")
    single = next((r["images_per_second"] for r in rows if r["mode"] == "single" and "error" not in r), None)
    if single:
        print("relative to single:", ", ".join(f"{r['mode']} {r['images_per_second'] / single:.2f}"
                                               for r in rows if r["mode"] != "single" and "error" not in r))
    return result


def write_result(path, result) -> None:
    """``result`` as JSON at ``path``, written whole (a stop mid-write leaves the previous file)."""
    tmp = f"{path}.part"
    with open(tmp, "w") as fh:
        json.dump(result, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    p.add_argument("--quick", action="store_true", help="tiny CPU smoke settings: " + str(QUICK))
    for key, value in GPU_DEFAULTS.items():
        what = "H for the round modes " if key == "local_steps" else ""
        p.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int, default=None,
                       help=f"{what}(default {value}; --quick: {QUICK[key]})")
    p.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"),
                   help="auto: bf16 autocast on CUDA, fp32 on CPU (default auto)")
    p.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                   help="channels-last batches (default: on for CUDA)")
    p.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    p.add_argument("--norm", default="group", choices=("group", "batch"))
    p.add_argument("--together", default="vmap", choices=("vmap", "loop"), help="clients in the round modes")
    p.add_argument("--modes", default="single,single-flat,loop,vmap,round:local_sgd,round:adam-global,"
                                       "round:adam-local,round:oasis-global",
                   help="comma-separated modes (default: all)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = p.parse_args(argv)
    base = QUICK if args.quick else GPU_DEFAULTS
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.threads:
        torch.set_num_threads(args.threads)
    # with --json the file is rewritten after every mode: a run stopped part-way keeps its rows
    on_update = (lambda result: write_result(args.json, result)) if args.json else None
    result = run(args, on_update)
    if args.json:
        write_result(args.json, result)
    return 0 if all("error" not in r for r in result["rows"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
