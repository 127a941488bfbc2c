"""Codebook usage and perplexity over training steps: is every code earning its bits?

An accumulator on top of ``vqaudio.evaluation.codebook_stats``, which computes the numbers. Usage is the
fraction of a codebook's codes that occur at least once; perplexity is 2 ** (entropy in bits) of the code
histogram, the "effective number of codes" (van den Oord et al., 2017, https://arxiv.org/abs/1711.00937).
A collapsed codebook shows low usage and a perplexity far below ``codebook_size``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from vqaudio.evaluation.codebook_stats import code_histograms, usage_from_histograms


class CodebookSummary(NamedTuple):
    """Per-codebook statistics of the codes counted so far.

    usage: [K] fraction of each codebook's codes seen at least once, in [0, 1].
    perplexity: [K] 2 ** entropy (bits) of each histogram, in [1, codebook_size] (0 before any code).
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
        histogram = code_histograms(codes, self.codebook_size)  # [K', C]
        self.counts[: codes.shape[1]] += torch.from_numpy(histogram).double()

    def summary(self) -> CodebookSummary:
        stats = usage_from_histograms(self.counts)
        return CodebookSummary(
            usage=torch.tensor([s.used_fraction for s in stats]),
            perplexity=torch.tensor([s.perplexity for s in stats]),
            frames=max(s.num_codes for s in stats),
        )
