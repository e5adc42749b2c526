"""Keeping vector-quantize-pytorch away from torch.distributed unless it is really in use."""

from __future__ import annotations

import logging

import torch.distributed as dist

logger = logging.getLogger("vqtk")


def distributed_world() -> bool:
    """True when torch.distributed is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def resolve_sync_codebook(requested: bool, where: str, learnable_with_data_init: bool = False) -> bool:
    """Whether to all-reduce codebook statistics (k-means init, EMA, dead codes) across processes.

    The library all-reduces when asked even if no process group exists, which
    fails; so a request is honoured only when torch.distributed is initialised
    with more than one process at build time, and dropped with a warning otherwise.

    ``learnable_with_data_init``: the codebook is a parameter that k-means or
    dead-code replacement rewrites from each process's own batch; DDP never
    re-broadcasts parameters, so without syncing the processes' codebooks
    drift apart for good (EMA codebooks are buffers, which DDP broadcasts
    from rank 0 every step). That case gets a warning.
    """
    if not requested:
        if learnable_with_data_init and distributed_world():
            logger.warning(
                "%s: with k-means init or dead-code replacement and sync_codebook = false, "
                "each process rewrites its own codebook and they drift apart; set sync_codebook = true",
                where,
            )
        return False
    if distributed_world():
        return True
    logger.warning(
        "%s: sync_codebook = true ignored: torch.distributed is not initialised "
        "with more than one process when the quantizer is built",
        where,
    )
    return False
