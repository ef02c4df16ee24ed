"""Process-group set-up for ``torchrun``; a single process needs none of it.

Under ``torchrun`` the environment carries ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``: the group uses
NCCL on GPUs and gloo on CPUs (which is how the distributed path is tested without a GPU).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device
    #: whether :func:`setup` created the process group (and :func:`teardown` may destroy it)
    owns_group: bool = field(default=False, compare=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def sum(self, value: float) -> float:
        """Sum a Python float over ranks (identity in a single process)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item())


def resolve_device(requested: str) -> torch.device:
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        return torch.device("cuda", local)
    return torch.device("cpu")


def setup(requested_device: str = "auto") -> DistContext:
    """Join the ``torchrun`` process group when launched by it; otherwise a world of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = resolve_device(requested_device)
    created = False
    if world > 1 and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        created = True
    if dist.is_initialized():  # ours, or one the caller set up: it knows the real world
        rank, world = dist.get_rank(), dist.get_world_size()
    else:
        rank = 0
    return DistContext(rank=rank, world_size=world, device=device, owns_group=created)


def teardown(ctx: DistContext | None = None) -> None:
    """Leave the process group that ``setup`` created; one the caller created is left alone."""
    if dist.is_initialized() and (ctx is None or ctx.owns_group):
        dist.destroy_process_group()
