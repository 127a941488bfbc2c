"""Options shared by the commands: ``--device``, and torchrun's processes for the training commands.

A misspelt ``--device``, or one this machine does not have, is a usage error (exit code 2) reported before any
work; see ``vqaudio.cli.main`` for the exit-code rule.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import typer

from vqaudio.errors import InputError

if TYPE_CHECKING:
    import torch

    from vqaudio.training.distributed import DistributedContext

DEVICE_HELP = "Where the model runs: auto (CUDA when available, else the CPU), cpu, cuda or cuda:N."
TRAIN_DEVICE_HELP = (
    "Where to train: auto (CUDA when available, else the CPU), cpu, cuda or cuda:N; under torchrun each "
    "process takes the GPU of its local rank."
)


def device_option(help: str = DEVICE_HELP) -> Any:
    """``--device auto|cpu|cuda[:N]`` (default auto), checked when parsed (``parse_device``)."""
    return typer.Option("auto", "--device", help=help, metavar="auto|cpu|cuda[:N]", callback=_check_device)


HOLD_HELP = (
    "First-codebook hold margin: a frame keeps the previous frame's first code while the error of all codebooks "
    "with it is within (1 + HOLD) x the error with its own first code; the later codebooks absorb the difference "
    "(longer runs of the first code; residual VQ). 0: every frame its own codes. Default: the model's "
    "model.quantizer.first_codebook_hold."
)


def hold_option() -> Any:
    """``--hold MARGIN``: the first codebook's hold margin (None: the model's own)."""
    return typer.Option(None, "--hold", min=0.0, max=100.0, help=HOLD_HELP)


def parse_device(spec: str) -> torch.device:
    """``--device`` -> ``torch.device`` (``vqaudio.devices.resolve_device``); a usage error (exit 2) for a
    misspelt device or a GPU this machine does not have."""
    from vqaudio.devices import resolve_device

    try:
        return resolve_device(spec)
    except InputError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--device'") from exc


def _check_device(spec: str) -> str:
    parse_device(spec)
    return spec


@contextmanager
def training_processes(device: torch.device) -> Iterator[tuple[DistributedContext, torch.device]]:
    """Join the process group ``torchrun`` describes (a no-op alone) for a training command; yields this
    process's place and device (under torchrun with CUDA: the GPU of its local rank). Only rank 0 logs
    below warnings. The group is left on exit."""
    from vqaudio.training.distributed import init_distributed, process_device, shutdown_distributed

    context = init_distributed(device)
    try:
        if not context.is_main:  # one voice on the console: rank 0's
            logging.getLogger().setLevel(logging.WARNING)
        try:
            device = process_device(device, context)
        except InputError as exc:
            raise typer.BadParameter(str(exc), param_hint="'--device'") from exc
        yield context, device
    finally:
        shutdown_distributed()
