"""Data-parallel training across processes: ``torch.distributed`` as set up by ``torchrun``.

Each process (rank) trains a replica on its own data stream; ``DistributedDataParallel`` averages the
gradients, and the quantizers all-reduce their EMA statistics themselves (vqaudio.codec.quantization.vq), so the
replicas stay identical without DDP's buffer broadcast. Only rank 0 writes logs, checkpoints and the
progress bar. The backend is gloo on the CPU and NCCL on CUDA.

    torchrun --nproc_per_node 2 -m vqaudio.cli.main train recipes/tiny.yaml --data DIR --out exp/run1
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.distributed as dist


class DistributedContext(NamedTuple):
    """Where this process stands: rank ``rank`` of ``world_size`` (0 of 1 without torchrun)."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


SINGLE_PROCESS = DistributedContext(rank=0, world_size=1, local_rank=0)


def init_distributed(device: torch.device) -> DistributedContext:
    """Join the process group that ``torchrun`` describes in the environment; a no-op without it.

    Args:
        device: the training device; CUDA uses the NCCL backend, anything else gloo.
    Returns:
        this process's rank, the number of processes and the local rank (the GPU index on this machine).
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE_PROCESS
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank)


def shutdown_distributed() -> None:
    """Leave the process group (when one was joined)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all processes in place (unchanged in a single process); returns it."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        if dist.get_backend() == "nccl" and not tensor.is_cuda:  # NCCL reduces GPU tensors only
            on_gpu = tensor.cuda()
            dist.all_reduce(on_gpu, op=dist.ReduceOp.SUM)
            tensor.copy_(on_gpu.cpu())
        else:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def barrier() -> None:
    """Wait until every process gets here (no-op in a single process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
