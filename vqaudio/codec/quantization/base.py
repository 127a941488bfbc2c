"""The interface every quantizer family implements (one file per family beside this one)."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


class QuantizerOutput(NamedTuple):
    """What ``Quantizer.forward`` returns.

    quantized: [B, D, F] quantized latents. Its value is exactly the sum of the code vectors (so in eval
        mode it equals ``decode(codes)``); the straight-through estimator gives it a gradient w.r.t. the
        input ``z`` (the identity for unfactorised codes).
    codes: [B, K, F] int64 code indices, K = codebooks used by this call (n_q).
    loss: scalar, the weighted codebook + commitment losses summed over codebooks (add to the training loss).
    commitment_loss: [K] unweighted ||z - sg(q)||^2 per codebook, in code space, averaged over the examples
        that use the codebook. It keeps its graph (so each term can be differentiated); detach to log it.
    codebook_loss: [K] unweighted ||sg(z) - q||^2 per codebook; computed with EMA too (then detached and
        not part of ``loss``, since the EMA moves the codes).
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

    @torch.no_grad()
    def latent_codebooks(self) -> Tensor:  # pragma: no cover - abstract
        """[K, codebook_size, D] every code's contribution to the quantized latent: ``decode(codes)[b, :, f]`` is
        the sum over k of ``latent_codebooks()[k, codes[b, k, f]]`` (a copy, in the codebooks' dtype)."""
        raise NotImplementedError
