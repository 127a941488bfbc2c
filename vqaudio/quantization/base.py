"""The interface every quantizer family implements (one file per family beside this one)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class QuantizerOutput(NamedTuple):
    """What ``Quantizer.forward`` returns.

    quantized: [B, D, F] quantized latents; in training the straight-through estimator makes its
        gradient flow to the input ``z`` unchanged.
    codes: [B, K, F] int64 code indices, K = codebooks used by this call.
    loss: scalar, the weighted codebook + commitment losses of every codebook, to add to the training loss.
    commitment_loss: [K] unweighted ||z - sg(q)||^2 per codebook (for logging).
    codebook_loss: [K] unweighted ||sg(z) - q||^2 per codebook (for logging; computed with EMA too).
    """

    quantized: Tensor
    codes: Tensor
    loss: Tensor
    commitment_loss: Tensor
    codebook_loss: Tensor


class Quantizer(nn.Module):
    """Latents [B, D, F] -> K integer codes per frame, and back.

    Subclasses set ``dim``, ``num_codebooks`` and ``codebook_size``.
    """

    dim: int
    num_codebooks: int
    codebook_size: int

    def forward(self, z: Tensor, n_q: int | None = None) -> QuantizerOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, z: Tensor, n_q: int | None = None) -> Tensor:  # pragma: no cover - abstract
        """[B, D, F] -> codes [B, K, F] (K = n_q or num_codebooks)."""
        raise NotImplementedError

    def decode(self, codes: Tensor) -> Tensor:  # pragma: no cover - abstract
        """codes [B, K, F] -> quantized latents [B, D, F]."""
        raise NotImplementedError

    @torch.no_grad()
    def codebooks(self) -> Tensor:  # pragma: no cover - abstract
        """[K, codebook_size, D_code] the code vectors as the decoder sees them (for inspection)."""
        raise NotImplementedError
