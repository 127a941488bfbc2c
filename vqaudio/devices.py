"""Where a model runs: one spelling of a device for every command and API call.

``auto`` picks CUDA when a GPU is visible and the CPU otherwise; ``cpu``; ``cuda`` (the current GPU); ``cuda:N``
(GPU N). Every ``--device`` option of the command line goes through ``resolve_device``, so a misspelt device
or a GPU this machine does not have is one clear error before any work, not a torch traceback later.
"""

from __future__ import annotations

import re

import torch

from vqaudio.errors import InputError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """A device spelling -> the ``torch.device`` to use, checked against this machine.

    Args:
        spec: ``"auto"`` (or None): CUDA when ``torch.cuda.is_available()``, else the CPU; ``"cpu"``;
            ``"cuda"``: the current GPU; ``"cuda:N"``: GPU N. A ``torch.device`` is checked the same way.
    Returns:
        ``torch.device("cpu")``, ``torch.device("cuda")`` or ``torch.device("cuda", N)``.
    Raises:
        InputError (a ValueError): another spelling, CUDA where none is available, or N beyond the GPUs here.
    """
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    match = re.fullmatch(r"cpu|cuda(?::(\d+))?", text)
    if match is None:
        raise InputError(f"device must be {DEVICE_CHOICES}, got {str(spec)!r}")
    if text == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        why = "this PyTorch is built without CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise InputError(f"device {text!r}: CUDA is not available ({why}); use cpu or auto")
    if match.group(1) is None:
        return torch.device("cuda")
    index, count = int(match.group(1)), torch.cuda.device_count()
    if index >= count:
        raise InputError(
            f"device {text!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}; "
            "pick one of them (CUDA_VISIBLE_DEVICES renumbers them from 0)"
        )
    return torch.device("cuda", index)
