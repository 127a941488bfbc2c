"""Data-parallel training across processes: ``torch.distributed`` as set up by ``torchrun``.

Each process (rank) trains a replica on its own data stream; ``DistributedDataParallel`` averages the
gradients, and the quantizers all-reduce their EMA statistics themselves (vqaudio.codec.quantization.vq), so the
replicas stay identical without DDP's buffer broadcast. Only rank 0 writes logs, checkpoints and the
progress bar. The backend is gloo on the CPU and NCCL on CUDA. Both trainers (the codec's and the prior's) run
this way.

    torchrun --nproc_per_node 2 -m vqaudio.cli.main train recipes/tiny.yaml --data DIR --out exp/run1
    torchrun --nproc_per_node 2 -m vqaudio.cli.main prior train tokens.npy --out exp/prior1
"""

from __future__ import annotations

import inspect
import os
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vqaudio.errors import InputError


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


def process_device(device: torch.device, context: DistributedContext) -> torch.device:
    """The device this process trains on: under ``torchrun`` with CUDA, the GPU of its local rank.

    Args:
        device: the device asked for (``vqaudio.devices.resolve_device``).
        context: this process's place (``init_distributed``).
    Raises:
        InputError: a GPU index (``cuda:1``) under several processes, where each process takes its own GPU.
    """
    if device.type != "cuda" or not context.is_distributed:
        return device
    if device.index is not None:
        raise InputError(
            f"device {device} names one GPU, but under torchrun each process takes the GPU of its local rank; "
            "pass cuda (or auto), and choose the GPUs with CUDA_VISIBLE_DEVICES"
        )
    return torch.device("cuda", context.local_rank)


def wrap_for_ddp(
    model: nn.Module, device: torch.device, static_graph: bool = False
) -> DistributedDataParallel:
    """DDP without the per-step buffer broadcast: the codec's quantizers all-reduce their own statistics, and
    the prior's buffers are constants.

    Args:
        model: the replica of this process, on ``device``.
        device: this process's device.
        static_graph: every step uses the same parameters (some possibly never, which DDP then accepts).
    """
    options: dict[str, Any] = {
        "device_ids": [device.index] if device.type == "cuda" else None,
        "static_graph": static_graph,
    }
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        options["forward_sync_buffers"] = False  # torch >= 2.13 (buffers are still synced once, at init)
    else:
        options["broadcast_buffers"] = False
    return DistributedDataParallel(model, **options)


def standardise_parameter_strides(model: nn.Module) -> None:
    """Give every parameter row-major strides.

    Some ops leave odd strides on size-1 dimensions (e.g. [1, 32, 1] with strides (1, 1, 1)); autograd then
    produces gradients with the standard strides and DDP warns that they do not match its buckets.
    """
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.stride() != torch.empty(parameter.shape).stride():
                parameter.data = parameter.data.clone(memory_format=torch.contiguous_format)


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
