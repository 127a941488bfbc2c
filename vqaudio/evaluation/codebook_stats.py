"""Codebook usage: how many codes a codebook uses, and how many bits a code really carries.

For each codebook, from the histogram of its codes over a corpus:

* used fraction: the share of the ``codebook_size`` codes that occur at least once;
* entropy (bits): ``H = -sum p log2 p`` of the code distribution, at most ``log2(codebook_size)``;
  ``H * frame_rate`` is what a unigram entropy coder would need per second, against the nominal
  ``log2(codebook_size) * frame_rate``;
* perplexity: ``2 ** H``, the "effective number of codes", the VQ-VAE codebook diagnostic
  (van den Oord et al., 2017, https://arxiv.org/abs/1711.00937): ``codebook_size`` for a uniform
  distribution, 1 for a collapsed codebook that always emits the same code.

The functions take numpy arrays or torch tensors (moved to the CPU) and never import torch, so the trainer
can call them on every logging step: one ``np.bincount`` per call. ``CodebookUsage`` accumulates them over
training or validation steps (its counts are all-reduced across DDP processes).

    counts = code_histograms(codes, codebook_size)        # [K, codebook_size], add these up over batches
    stats = usage_from_histograms(counts)                  # one CodebookStats per codebook
    stats = codebook_usage(codes, codebook_size)           # the two in one
    usage = CodebookUsage(K, codebook_size); usage.update(codes); usage.summary()   # over steps
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np


class CodebookStats(NamedTuple):
    """Usage of one codebook.

    used_fraction: codes seen at least once / codebook_size, in [0, 1].
    entropy_bits: entropy of the code distribution in bits, in [0, max_entropy_bits] (0 before any code).
    perplexity: 2 ** entropy_bits, in [1, codebook_size] (0 before any code).
    max_entropy_bits: log2(codebook_size), the bits each code costs in the token stream.
    num_codes: codes counted.
    """

    used_fraction: float
    entropy_bits: float
    perplexity: float
    max_entropy_bits: float
    num_codes: int


def code_histograms(codes: Any, codebook_size: int) -> np.ndarray:
    """Count how often each code occurs, per codebook.

    Args:
        codes: integer codes [K, F] or [B, K, F] (numpy array or torch tensor, any device); the first axis
            after the batch is the codebook.
        codebook_size: codes per codebook; every code must lie in [0, codebook_size).
    Returns:
        [K, codebook_size] int64 counts.
    Raises:
        TypeError: non-integer codes.
        ValueError: wrong number of dimensions, a code outside [0, codebook_size), codebook_size < 1.
    """
    array = _as_numpy(codes)
    if (
        isinstance(codebook_size, bool)
        or not isinstance(codebook_size, (int, np.integer))
        or codebook_size < 1
    ):
        raise ValueError(f"codebook_size must be a positive integer, got {codebook_size!r}")
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"code_histograms() expects integer codes, got dtype {array.dtype}")
    if array.ndim == 3:
        array = np.moveaxis(array, 1, 0).reshape(array.shape[1], -1)  # [B, K, F] -> [K, B * F]
    elif array.ndim != 2:
        raise ValueError(f"code_histograms() expects codes [K, F] or [B, K, F], got shape {array.shape}")
    num_codebooks = array.shape[0]
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= codebook_size:
            raise ValueError(
                f"code_histograms() got codes in [{low}, {high}] but codebook_size is {codebook_size}; "
                "pass the codebook_size of the model that made the codes"
            )
    # one bincount for all codebooks: codebook k's codes are shifted into [k * C, (k + 1) * C)
    offsets = np.arange(num_codebooks, dtype=np.int64)[:, None] * codebook_size
    flat = (array.astype(np.int64, copy=False) + offsets).reshape(-1)
    counts = np.bincount(flat, minlength=num_codebooks * codebook_size)
    return counts.reshape(num_codebooks, codebook_size).astype(np.int64, copy=False)


def usage_from_histograms(counts: Any) -> list[CodebookStats]:
    """Per-codebook statistics of accumulated histograms.

    Args:
        counts: [K, codebook_size] non-negative counts (e.g. a sum of ``code_histograms`` results).
    Returns:
        K CodebookStats, in codebook order.
    """
    array = _as_numpy(counts).astype(np.float64, copy=False)
    if array.ndim != 2 or array.shape[1] < 1:
        raise ValueError(
            f"usage_from_histograms() expects counts [K, codebook_size], got shape {array.shape}"
        )
    if (array < 0).any():
        raise ValueError("usage_from_histograms() got negative counts; pass histograms of codes")
    codebook_size = array.shape[1]
    totals = array.sum(axis=1)  # [K]
    probabilities = array / np.maximum(totals, 1.0)[:, None]
    # 0 * log 0 = 0: take the log of the non-zero entries only
    logs = np.log2(np.where(probabilities > 0, probabilities, 1.0))
    entropy = -(probabilities * logs).sum(axis=1)  # [K]
    used = (array > 0).mean(axis=1)
    stats = []
    for index in range(array.shape[0]):
        seen = totals[index] > 0
        stats.append(
            CodebookStats(
                used_fraction=float(used[index]),
                entropy_bits=float(max(entropy[index], 0.0)),  # -0.0 from a single code
                perplexity=float(2.0 ** entropy[index]) if seen else 0.0,
                max_entropy_bits=math.log2(codebook_size),
                num_codes=int(totals[index]),
            )
        )
    return stats


def codebook_usage(codes: Any, codebook_size: int) -> list[CodebookStats]:
    """Per-codebook used fraction, entropy and perplexity of ``codes``.

    Args:
        codes: integer codes [K, F] or [B, K, F] (numpy or torch).
        codebook_size: codes per codebook.
    Returns:
        K CodebookStats, in codebook order.
    """
    return usage_from_histograms(code_histograms(codes, codebook_size))


def _as_numpy(values: Any) -> np.ndarray:
    """numpy arrays pass through; torch tensors (any device) are detached and copied to the CPU."""
    if hasattr(values, "detach") and hasattr(values, "cpu"):
        return values.detach().cpu().numpy()
    if isinstance(values, np.ndarray):
        return values
    raise TypeError(f"expected a numpy array or torch tensor, got {type(values).__name__}")


class CodebookSummary(NamedTuple):
    """Per-codebook statistics of the codes counted so far.

    usage: [K] fraction of each codebook's codes seen at least once, in [0, 1].
    perplexity: [K] 2 ** entropy (bits) of each histogram, in [1, codebook_size] (0 before any code).
    frames: code frames counted (in the codebook that saw the most).
    """

    usage: np.ndarray
    perplexity: np.ndarray
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
        # [K, C]; float64 so that ``torch.from_numpy(counts)`` can be all-reduced across processes in place
        self.counts = np.zeros((num_codebooks, codebook_size), dtype=np.float64)

    def reset(self) -> None:
        self.counts[:] = 0

    def update(self, codes: Any) -> None:
        """Count ``codes`` [B, K', F] (K' <= K: the first K' codebooks) or [K', F] (numpy or torch)."""
        shape = tuple(codes.shape)
        if len(shape) == 2:
            shape = (1, *shape)
        if len(shape) != 3 or shape[1] > self.num_codebooks:
            raise ValueError(
                f"CodebookUsage.update expects codes [B, K <= {self.num_codebooks}, F], got {tuple(codes.shape)}"
            )
        self.counts[: shape[1]] += code_histograms(codes, self.codebook_size)

    def summary(self) -> CodebookSummary:
        stats = usage_from_histograms(self.counts)
        return CodebookSummary(
            usage=np.array([s.used_fraction for s in stats]),
            perplexity=np.array([s.perplexity for s in stats]),
            frames=max(s.num_codes for s in stats),
        )
