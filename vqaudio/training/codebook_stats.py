"""Codebook usage and perplexity: is every code earning its bits?

Usage is the fraction of a codebook's codes that occur at least once; perplexity is ``exp`` of the entropy
of the code histogram (the "effective number of codes", as reported for VQ-VAE codebooks since van den Oord
et al., 2017, https://arxiv.org/abs/1711.00937). A collapsed codebook shows low usage and a perplexity far
below ``codebook_size``; ``log2(perplexity)`` is the bits a code actually carries.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class CodebookSummary(NamedTuple):
    """Per-codebook statistics of the codes counted so far.

    usage: [K] fraction of each codebook's codes seen at least once, in [0, 1].
    perplexity: [K] exp(entropy) of each codebook's histogram, in [1, codebook_size] (0 before any code).
    frames: code frames counted (in the codebook that saw the most).
    """

    usage: Tensor
    perplexity: Tensor
    frames: int


class CodebookUsage:
    """Histogram of codes per codebook, accumulated over calls until ``reset``.

    Args:
        num_codebooks: K.
        codebook_size: codes per codebook.
    """

    def __init__(self, num_codebooks: int, codebook_size: int) -> None:
        self.num_codebooks = num_codebooks
        self.codebook_size = codebook_size
        # [K, C]; float64 so that it can be all-reduced across processes as is
        self.counts = torch.zeros(num_codebooks, codebook_size, dtype=torch.float64)

    def reset(self) -> None:
        self.counts.zero_()

    @torch.no_grad()
    def update(self, codes: Tensor) -> None:
        """Count ``codes`` [B, K', F] (K' <= K: the first K' codebooks) or [K', F]."""
        if codes.dim() == 2:
            codes = codes[None]
        if codes.dim() != 3 or codes.shape[1] > self.num_codebooks:
            raise ValueError(
                f"CodebookUsage.update expects codes [B, K <= {self.num_codebooks}, F], "
                f"got {tuple(codes.shape)}"
            )
        used = codes.shape[1]
        flat = codes.detach().transpose(0, 1).reshape(used, -1).cpu().long()  # [K', B * F]
        offsets = torch.arange(used)[:, None] * self.codebook_size
        histogram = torch.bincount((flat + offsets).reshape(-1), minlength=used * self.codebook_size)
        self.counts[:used] += histogram.reshape(used, self.codebook_size).double()

    def summary(self) -> CodebookSummary:
        totals = self.counts.sum(dim=1, keepdim=True)  # [K, 1]
        usage = (self.counts > 0).double().mean(dim=1)
        probabilities = self.counts / totals.clamp_min(1.0)
        entropy = -(probabilities * probabilities.clamp_min(1e-30).log()).sum(dim=1)
        perplexity = torch.where(totals[:, 0] > 0, entropy.exp(), torch.zeros_like(entropy))
        return CodebookSummary(usage.float(), perplexity.float(), int(totals.max()))
