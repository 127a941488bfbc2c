"""Mixed-precision training (``train.precision``): autocast for the forward pass, a gradient scaler for fp16.

Micikevicius et al., 2018 (https://arxiv.org/abs/1710.03740): the weights, the optimizer moments and the
updates stay float32 ("master weights"); only the forward pass runs its matrix products and convolutions in
bfloat16 or float16 under ``torch.autocast``. float16's narrow exponent underflows small gradients, so fp16
multiplies the loss by a dynamic factor before the backward pass (``torch.amp.GradScaler``) and divides the
gradients again before clipping; a step whose gradients overflowed is skipped and the factor halved. bfloat16
has float32's exponent and needs no scaler.

What must stay float32 says so itself: the codec's spectral losses (``vqaudio.codec.losses``), the codebook
distances and EMA statistics (``vqaudio.codec.quantization``) and the prior's cross-entropy disable autocast
and cast their inputs with ``.float()``. Validation and the release model are float32 whatever the setting.
On the CPU bf16 pays only where oneDNN has bfloat16 kernels (x86 with AVX-512); elsewhere torch's convolutions
fall back to slow reference code, and a run says so.
"""

from __future__ import annotations

import logging
from contextlib import AbstractContextManager
from typing import Any, Literal

import torch
from torch import Tensor

from vqaudio.config import ConfigError

log = logging.getLogger(__name__)

Precision = Literal["fp32", "bf16", "fp16"]
DTYPES: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class MixedPrecision:
    """The autocast context and the gradient scaler of one run.

    Args:
        precision: ``fp32`` (autocast off, no scaler), ``bf16`` (autocast to bfloat16) or ``fp16``
            (autocast to float16 with a gradient scaler; CUDA only).
        device: the device the run trains on.
    Raises:
        ConfigError: fp16 on a device other than CUDA.
    """

    def __init__(self, precision: Precision, device: torch.device) -> None:
        if precision not in DTYPES:
            raise ConfigError(f"train.precision must be one of {list(DTYPES)}, got {precision!r}")
        if precision == "fp16" and device.type != "cuda":
            raise ConfigError(
                f"train.precision=fp16 needs CUDA (training on {device.type}); use bf16 on the CPU"
            )
        if precision == "bf16" and device.type == "cpu" and not cpu_has_bf16_convolutions():
            log.warning(
                "train.precision=bf16 on a CPU where oneDNN has no bfloat16 kernels (x86 without AVX-512): "
                "torch's bf16 convolutions fall back to slow reference code (rvq_mel_pitch trained 10x slower "
                "than in fp32 on an AVX2 CPU, benchmarks/bench_training.py); use fp32 on this machine"
            )
        self.precision = precision
        self.device_type = device.type
        self.dtype = DTYPES[precision]
        self.scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")

    @property
    def scaling(self) -> bool:
        """Whether gradients are scaled (fp16): non-finite gradients then skip a step instead of stopping."""
        return self.scaler.is_enabled()

    def autocast(self) -> AbstractContextManager[Any]:
        """The context for the forward pass and the losses (off for fp32)."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def backward(self, loss: Tensor) -> None:
        """``loss.backward()``, scaled under fp16."""
        self.scaler.scale(loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """Divide the gradients of ``optimizer``'s parameters by the scale: before clipping or measuring them."""
        if self.scaling:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``; under fp16 skipped when the gradients overflowed."""
        if self.scaling:
            self.scaler.step(optimizer)
        else:
            optimizer.step()

    def update(self) -> None:
        """Adjust the scale once per training step, after every optimizer of the step has stepped."""
        if self.scaling:
            self.scaler.update()

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state (empty without fp16), for the checkpoint: exact resume keeps the scale."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        """Restore ``state_dict()``; nothing to restore when either side has no scaler."""
        if state and self.scaling:
            self.scaler.load_state_dict(state)


def cpu_has_bf16_convolutions() -> bool:
    """Whether oneDNN runs bfloat16 convolutions on this CPU (x86: AVX-512; True when torch cannot tell)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private check: gone or failing in another torch
        return True
