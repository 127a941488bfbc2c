"""Unigram and bigram baselines for the prior, per codebook.

The bigram of codebook k predicts ``c[k, t]`` from ``c[k, t-1]`` (the same codebook one frame earlier; the
first frame of an utterance falls back to the unigram). Two ways to score tokens:

* cross-entropy of models estimated on training tokens: unigram with add-1/2 smoothing (Krichevsky-Trofimov),
  bigram with Witten-Bell smoothing towards that unigram (Witten & Bell, 1991), so unseen codes and pairs
  keep a non-zero probability. This is the fair comparison for a prior trained on the same tokens.
* empirical (plug-in) entropies of the scored tokens themselves: maximum-likelihood models fitted to the
  very tokens they score. Optimistic, badly so for bigrams over large codebooks and little data; for
  analysis only (``vqaudio prior eval`` reports the cross-entropies, or no baselines without training counts).

Counts are kept sparse (a sorted array of pair keys) and saved beside a trained prior as ``ngram_counts.npz``
(plain arrays, no pickles).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np

from vqaudio.errors import ModelFileError
from vqaudio.io.atomic import atomic_path

COUNTS_FILE = "ngram_counts.npz"


class NgramCounts(NamedTuple):
    """Unigram and bigram counts of K codebooks of V codes."""

    unigram: np.ndarray  # [K, V] int64
    bigram_keys: np.ndarray  # [P] int64, sorted: (k * V + previous) * V + next
    bigram_counts: np.ndarray  # [P] int64

    @property
    def num_codebooks(self) -> int:
        return self.unigram.shape[0]

    @property
    def codebook_size(self) -> int:
        return self.unigram.shape[1]


class NgramBits(NamedTuple):
    """Bits per token of the unigram and bigram models, per codebook."""

    unigram: np.ndarray  # [K] float64
    bigram: np.ndarray  # [K] float64


def _pairs(sequences: Sequence[np.ndarray], codebook_size: int) -> np.ndarray:
    """All (k, previous, next) pairs within utterances as keys (k * V + previous) * V + next."""
    keys = []
    for codes in sequences:
        if codes.shape[1] < 2:
            continue
        codes = np.asarray(codes, dtype=np.int64)
        rows = np.arange(codes.shape[0], dtype=np.int64)[:, None]
        keys.append(((rows * codebook_size + codes[:, :-1]) * codebook_size + codes[:, 1:]).reshape(-1))
    return np.concatenate(keys) if keys else np.zeros(0, dtype=np.int64)


def _firsts_and_all(sequences: Sequence[np.ndarray], num_codebooks: int) -> tuple[np.ndarray, np.ndarray]:
    """[K, U] first frames of every utterance and [K, N] every frame, as int64."""
    firsts = np.stack([np.asarray(codes[:, 0], dtype=np.int64) for codes in sequences], axis=1)
    everything = np.concatenate([np.asarray(codes, dtype=np.int64) for codes in sequences], axis=1)
    return firsts.reshape(num_codebooks, -1), everything


def count_ngrams(sequences: Sequence[np.ndarray], codebook_size: int) -> NgramCounts:
    """Count unigrams and within-utterance bigrams.

    Args:
        sequences: utterances, each [K, frames] (at least one frame).
        codebook_size: V.
    """
    num_codebooks = sequences[0].shape[0]
    _, everything = _firsts_and_all(sequences, num_codebooks)
    unigram = np.stack([np.bincount(row, minlength=codebook_size) for row in everything]).astype(np.int64)
    keys, counts = np.unique(_pairs(sequences, codebook_size), return_counts=True)
    return NgramCounts(unigram, keys.astype(np.int64), counts.astype(np.int64))


def _context_tables(counts: NgramCounts) -> tuple[np.ndarray, np.ndarray]:
    """[K * V] how often each (k, previous) starts a pair, and how many distinct codes follow it."""
    V = counts.codebook_size
    contexts = counts.bigram_keys // V
    size = counts.num_codebooks * V
    total = np.bincount(contexts, weights=counts.bigram_counts, minlength=size)
    distinct = np.bincount(contexts, minlength=size).astype(np.float64)
    return total, distinct


def cross_entropy_bits(counts: NgramCounts, sequences: Sequence[np.ndarray]) -> NgramBits:
    """Bits per token of smoothed models estimated from ``counts``, scored on ``sequences``, per codebook."""
    K, V = counts.num_codebooks, counts.codebook_size
    # add-1/2 unigram: every code keeps probability > 0
    unigram_prob = (counts.unigram + 0.5) / (counts.unigram.sum(axis=1, keepdims=True) + 0.5 * V)  # [K, V]
    firsts, everything = _firsts_and_all(sequences, K)
    rows = np.arange(K)[:, None]
    unigram_bits = -np.log2(unigram_prob[rows, everything]).mean(axis=1)

    context_total, context_distinct = _context_tables(counts)
    keys = _pairs(sequences, V)
    position = np.searchsorted(counts.bigram_keys, keys).clip(max=max(len(counts.bigram_keys) - 1, 0))
    found = counts.bigram_keys[position] == keys if len(counts.bigram_keys) else np.zeros(len(keys), bool)
    pair_count = np.where(found, counts.bigram_counts[position] if len(counts.bigram_keys) else 0, 0)
    context = keys // V
    codebook, following = context // V, keys % V
    base = unigram_prob[codebook, following]
    total, distinct = context_total[context], context_distinct[context]
    # Witten-Bell: a context followed by many distinct codes leaves more mass to the unigram
    with np.errstate(invalid="ignore", divide="ignore"):
        bigram_prob = np.where(total > 0, (pair_count + distinct * base) / (total + distinct), base)
    pair_bits = np.bincount(codebook, weights=-np.log2(bigram_prob), minlength=K)
    first_bits = -np.log2(unigram_prob[rows, firsts]).sum(axis=1)
    bigram_bits = (pair_bits + first_bits) / everything.shape[1]
    return NgramBits(unigram_bits, bigram_bits)


def empirical_entropy_bits(sequences: Sequence[np.ndarray], codebook_size: int) -> NgramBits:
    """Plug-in unigram and bigram entropies of ``sequences`` themselves, bits per token, per codebook."""
    counts = count_ngrams(sequences, codebook_size)
    K, V = counts.num_codebooks, counts.codebook_size
    frequency = counts.unigram / counts.unigram.sum(axis=1, keepdims=True)  # [K, V]
    firsts, everything = _firsts_and_all(sequences, K)
    rows = np.arange(K)[:, None]
    unigram_bits = -np.log2(frequency[rows, everything]).mean(axis=1)
    context_total, _ = _context_tables(counts)
    context = counts.bigram_keys // V
    # sum over pairs of count * -log2(count / context count), per codebook
    pair_bits = counts.bigram_counts * -np.log2(counts.bigram_counts / context_total[context])
    total_pair_bits = np.bincount(context // V, weights=pair_bits, minlength=K)
    first_bits = -np.log2(frequency[rows, firsts]).sum(axis=1)
    return NgramBits(unigram_bits, (total_pair_bits + first_bits) / everything.shape[1])


def save_counts(path: str | Path, counts: NgramCounts) -> None:
    """Write counts as a pickle-free ``.npz``, atomically."""
    with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **counts._asdict())


def load_counts(path: str | Path) -> NgramCounts:
    """Read ``save_counts`` output; ModelFileError when damaged."""
    try:
        with np.load(path, allow_pickle=False) as data:
            counts = NgramCounts(*(np.asarray(data[name], dtype=np.int64) for name in NgramCounts._fields))
    except (OSError, KeyError, ValueError) as exc:
        raise ModelFileError(
            f"{path}: unreadable n-gram counts ({exc}); retrain the prior or pass --train"
        ) from exc
    if counts.unigram.ndim != 2 or not math.isfinite(float(counts.unigram.sum())):
        raise ModelFileError(f"{path}: malformed n-gram counts; retrain the prior or pass --train")
    return counts
