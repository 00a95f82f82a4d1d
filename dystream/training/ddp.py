"""Distributed data parallel, detected from the environment torchrun sets.

The same training command runs alone (world size 1, no process group) or under
``torchrun --nproc_per_node=N -m dystream train generator ...``. torchrun exports
RANK, WORLD_SIZE and LOCAL_RANK; NCCL is used on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dystream.errors import InputError


@dataclass(frozen=True)
class DistributedContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str | None = None) -> DistributedContext:
    """Join the process group if torchrun started us; pick this rank's device.

    ``device``: "cpu", "cuda", "cuda:K" or None (CUDA when available). Under
    torchrun on CUDA each rank takes GPU LOCAL_RANK.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    requested = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise InputError(f"--device {requested} asked for but no CUDA device is visible; use --device cpu")
    chosen = torch.device(requested)
    if chosen.type == "cuda":
        index = local_rank if world_size > 1 else (chosen.index or 0)
        chosen = torch.device("cuda", index)
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        # device_id binds the NCCL communicator to this rank's GPU (barriers then need no guess).
        dist.init_process_group(backend="nccl" if chosen.type == "cuda" else "gloo",
                                rank=rank, world_size=world_size,
                                device_id=chosen if chosen.type == "cuda" else None)
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def teardown(ctx: DistributedContext) -> None:
    if ctx.is_distributed and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistributedContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def mean_across_ranks(value: torch.Tensor, ctx: DistributedContext) -> torch.Tensor:
    """Average of a tensor over ranks (unchanged when alone)."""
    if not ctx.is_distributed:
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / ctx.world_size


def broadcast_flag(flag: bool, ctx: DistributedContext) -> bool:
    """Rank 0's decision (e.g. stop now), the same on every rank."""
    if not ctx.is_distributed:
        return flag
    tensor = torch.tensor([1 if flag else 0], dtype=torch.int32, device=ctx.device)
    dist.broadcast(tensor, src=0)
    return bool(tensor.item())
