"""Multi-process training on torch.distributed (launched by ``torchrun``).

``torchrun --nproc_per_node N -m vqtk run RECIPE`` sets ``RANK``, ``WORLD_SIZE``
and ``LOCAL_RANK``; :func:`current` then joins the process group (NCCL on CUDA,
gloo on CPU). A process group created by the caller (tests, notebooks) is used
as it is. With one process everything here is a no-op.
"""

from __future__ import annotations

import os
from typing import Optional

import attrs
import torch
import torch.distributed as dist


@attrs.frozen
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """One GPU per process: ``cuda:LOCAL_RANK`` when training on CUDA."""
        if self.enabled and requested.type == "cuda":
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return requested

    def mean(self, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Average scalar tensors over all processes (one collective for the whole dict)."""
        if not self.enabled or not values:
            return values
        keys = sorted(values)
        stacked = torch.stack([torch.as_tensor(values[k], dtype=torch.float32).reshape(()) for k in keys])
        if dist.get_backend() == "nccl":
            stacked = stacked.cuda()
        dist.all_reduce(stacked)
        stacked = stacked / self.world_size
        return {k: stacked[i] for i, k in enumerate(keys)}

    def broadcast_parameters(self, module: torch.nn.Module) -> None:
        """Make every process hold rank 0's parameters and buffers of ``module``."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def current(device_type: Optional[str] = None) -> DistInfo:
    """The process group this process belongs to, joining torchrun's if needed."""
    if dist.is_available() and dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
        return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return DistInfo()
    backend = "nccl" if device_type == "cuda" and torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(),
                    local_rank=int(os.environ.get("LOCAL_RANK", "0")))
