"""Clients as processes: SAVIC over ``torch.distributed`` (NCCL on GPUs, gloo on CPUs).

Launch with ``torchrun``; the same command serves one machine and several::

    torchrun --nproc-per-node=4 -m savic_theory nn CONFIG.toml --out DIR
    torchrun --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d --rdzv-endpoint=HOST:29500 \\
        -m savic_theory nn CONFIG.toml --out DIR          # run on each of the two machines

``savic nn`` sees ``WORLD_SIZE > 1`` in the environment torchrun sets and joins the process
group. Each of the ``W`` processes holds ``M/W`` clients (``M`` must be a multiple of ``W``) and
computes them with ``vmap`` or a loop; processes talk only at synchronisation, through
:class:`DistComm`: one all-reduce of ``Σ_m x_m`` (with ``Σ_m S_m`` appended for global
scaling) per round, plus a few scalars for the metrics. Every client's random streams are
seeded by ``(seed, client)``, so a distributed run reproduces the single-process run of the
same config up to floating-point reassociation (tested in ``tests/test_nn_distributed.py``)
with GroupNorm; ``norm = "batch"`` computes in float32 whatever the precision, so there the
agreement is to float32 rounding (evaluation batches are the same on any number of processes:
``DeviceData.test_batches``).
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["DistComm", "distributed_env", "init_distributed", "local_rank", "main"]


def distributed_env() -> bool:
    """True when launched by torchrun (or an equivalent) with more than one process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def local_rank() -> int:
    """This process's index on its machine (torchrun's ``LOCAL_RANK``; 0 when not set)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


class DistComm:
    """Reductions over the processes of the default process group.

    ``sum_``/``max_``/``min_`` all-reduce a tensor in place; ``gather_clients`` concatenates
    per-process client rows (dim 0) in rank order; ``gather_objects`` concatenates lists;
    ``broadcast_object`` sends process 0's object to all.
    """

    def __init__(self):
        if not dist.is_initialized():
            raise RuntimeError("DistComm needs an initialised process group (see init_distributed)")
        self.rank = dist.get_rank()
        self.world = dist.get_world_size()

    def sum_(self, t):
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def max_(self, t):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t

    def min_(self, t):
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return t

    def gather_clients(self, t):
        t = t.contiguous()
        parts = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(parts, t)
        return torch.cat(parts)

    def gather_objects(self, objs):
        parts = [None] * self.world
        dist.all_gather_object(parts, list(objs))
        return [o for part in parts for o in part]

    def broadcast_object(self, obj):
        box = [obj if self.rank == 0 else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self):
        dist.barrier()


def init_distributed(device: str = "auto") -> tuple[DistComm, torch.device]:
    """Join the process group described by torchrun's environment variables.

    NCCL with one GPU per process (``LOCAL_RANK``) when CUDA is used, gloo on CPU; a
    ``device`` naming one GPU (``cuda:N``) is an error with more than one process.

    Returns
    -------
    (DistComm, torch.device)
    """
    from .runner import pick_device

    dev = pick_device(device, local_rank(), int(os.environ.get("WORLD_SIZE", "1")))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return DistComm(), dev


def main(argv: list[str] | None = None) -> int:
    """``python -m savic_theory.nn.distributed CONFIG.toml [--out DIR] [--resume]`` (same as ``savic nn``)."""
    from ..cli import main as cli_main

    return cli_main(["nn", *(argv if argv is not None else __import__("sys").argv[1:])])


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
