"""``savic nn CONFIG.toml``: train ResNet18 over clients with Local SGD and SAVIC (needs PyTorch).

Runs every (split, method, seed) of the config's [data], [model], [train] and [method.NAME]
tables (keys and defaults: docs/nn-results.md) and writes into --out: config.toml,
runs/<split>/<method>/seed<k>/history.json (per-round train loss, test accuracy, α̂, Γ̂,
drift, ...), results.csv, summary.json and figures/rounds.png, figures/scaling.png. A
checkpoint is written every train.checkpoint_every rounds (default 1); after an interruption,
--resume continues with the same numbers. Under torchrun with several processes, the
clients are spread over the processes:
    torchrun --nproc-per-node=N -m savic_theory nn CONFIG.toml --out DIR
"""
from __future__ import annotations

import argparse
import dataclasses
import re
from pathlib import Path

from ._common import UserError, check_output_path, first_line


def add_parser(sub) -> None:
    p = sub.add_parser("nn", help="train ResNet18 over clients with Local SGD and SAVIC (needs torch)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", metavar="CONFIG.toml", help="TOML config file")
    p.add_argument("--out", metavar="DIR", default="results/nn/<config name>",
                   help="result folder (default: results/nn/<config name>)")
    p.add_argument("--resume", action="store_true",
                   help="skip finished runs and continue unfinished ones from their checkpoints; the config may "
                        "add seeds, methods and splits (default: off)")
    p.add_argument("--report", action="store_true",
                   help="train nothing: write results.csv, summary.json and the figures from the run histories "
                        "already in --out, whose config.toml must match CONFIG.toml (default: off)")
    p.add_argument("--data-root", metavar="DIR", default=None,
                   help="folder of the data files, overriding data.root (default: from the config)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (default: shown)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401
    except ImportError:
        raise UserError("savic nn needs PyTorch: pip install 'savic-theory[nn]'") from None
    from ..nn.config import load_nn_config
    from ..nn.distributed import distributed_env, init_distributed
    from ..nn.runner import run_experiment

    if args.out == "results/nn/<config name>":
        args.out = str(Path("results") / "nn" / Path(args.config).stem)
    out = check_output_path(args.out, "--out")
    if Path(args.config).is_dir():
        raise UserError(f"{args.config} is a folder, not a config file")
    cfg = load_nn_config(args.config)
    if args.data_root is not None:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, root=args.data_root))
    comm = device = None
    if distributed_env():
        comm, device = init_distributed(cfg.train.device)
    lead = comm is None or comm.rank == 0
    try:
        run_experiment(cfg, out, resume=args.resume, progress=not args.no_progress, comm=comm, device=device,
                       log=print if lead else None, report=args.report)
    except Exception as exc:
        # No barrier on the way out: the others may be inside a collective that this process
        # will never join. Its exit breaks their connections, and torchrun ends the job.
        if comm is not None and _peer_stopped(exc):
            first = first_line(exc, type(exc).__name__)
            first = re.sub(r"^\[[^\]]*\]\s*", "", first).split(". ")[0]  # gloo's source location, its advice
            raise UserError(f"another process of this job stopped (its own message says why; here: {first}); "
                            "--resume continues from the last checkpoints") from None
        if comm is not None and not getattr(exc, "savic_alike", False):
            exc.savic_alike = False  # maybe this process's alone: it prints it (savic_theory.cli)
        raise
    if comm is not None:
        import torch.distributed as dist

        dist.barrier()  # leave together: no process tears down while another still talks
        dist.destroy_process_group()
    if lead:
        print(f"wrote {out}: results.csv, summary.json, figures/rounds.png, figures/scaling.png")
    return 0


#: what a collective says when a process of the job has gone (gloo's words, and NCCL's for a
#: peer whose connection closed); any other collective error is reported as it is
_GONE = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Socket closed",
         "remote process exited")


def _peer_stopped(exc: BaseException) -> bool:
    """Whether ``exc`` is a collective failing because another process ended."""
    return isinstance(exc, RuntimeError) and any(w in str(exc) for w in _GONE)
