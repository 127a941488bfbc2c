"""Token corpora for the prior: validated codes, held-out utterances, speaker ids, random training windows.

A corpus is any mapping ``utt_id -> [n_q, frames]`` integer array (``vqaudio.io.token_file.TokenCorpus`` or a
plain dict). Training windows are fixed-length runs of frames inside one utterance (never across two
utterances, whose boundary is not a real transition); an utterance shorter than the window gives one padded
window whose padding is masked out of the loss. Utterances are drawn in proportion to their length, so every
frame of the corpus is equally likely to be trained on.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from vqaudio.data.manifest import read_manifest
from vqaudio.errors import DataError, InputError, TokenFileError


class Utterances(NamedTuple):
    """Validated token sequences in a fixed (sorted id) order."""

    ids: list[str]
    codes: list[np.ndarray]  # each [n_q, frames], integer, possibly memory-mapped
    conditions: list[int] | None  # condition (speaker) id per utterance, or None

    @property
    def num_frames(self) -> int:
        return sum(codes.shape[1] for codes in self.codes)


def validated_utterances(
    corpus: Mapping[str, np.ndarray], num_codebooks: int, codebook_size: int, where: str
) -> Utterances:
    """Check every utterance's shape and code range; empty utterances are dropped.

    Raises:
        TokenFileError: another number of codebooks, non-integer codes, codes outside [0, codebook_size),
            or no frames at all.
    """
    ids, codes = [], []
    for utt_id in sorted(corpus):
        array = np.asarray(corpus[utt_id])
        if array.ndim != 2 or array.shape[0] != num_codebooks:
            raise TokenFileError(
                f"{where}: utterance {utt_id!r} has shape {array.shape}, expected [{num_codebooks}, frames]"
            )
        if not np.issubdtype(array.dtype, np.integer):
            raise TokenFileError(
                f"{where}: utterance {utt_id!r} holds {array.dtype} values, expected integer codes"
            )
        if array.shape[1] == 0:
            continue
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= codebook_size:
            raise TokenFileError(
                f"{where}: utterance {utt_id!r} holds codes {low}..{high}, outside [0, {codebook_size}); "
                "the token file is corrupt or was made with another codebook size"
            )
        ids.append(utt_id)
        codes.append(array)
    if not ids:
        raise TokenFileError(f"{where}: no utterance has any frames; tokenize some audio first")
    return Utterances(ids, codes, None)


def with_conditions(utterances: Utterances, condition_of: Mapping[str, int] | None) -> Utterances:
    """Attach a condition id to every utterance (None: unconditioned)."""
    if condition_of is None:
        return utterances._replace(conditions=None)
    missing = [utt_id for utt_id in utterances.ids if utt_id not in condition_of]
    if missing:
        raise DataError(
            f"{len(missing)} utterance(s) have no speaker, e.g. {missing[0]!r}; give the manifest the token "
            "file was made from, with a speaker column filled for every utterance"
        )
    return utterances._replace(conditions=[condition_of[utt_id] for utt_id in utterances.ids])


def read_speakers(manifest: str | Path) -> dict[str, str]:
    """Manifest TSV (``vqaudio.data.manifest``) -> utterance id -> speaker, for utterances that name one."""
    return {utt.id: utt.speaker for utt in read_manifest(manifest, check_paths=False) if utt.speaker}


def split_holdout(utterances: Utterances, fraction: float) -> tuple[Utterances, Utterances | None]:
    """Hold out about ``fraction`` of the utterances for validation, chosen by a hash of their id.

    The choice depends only on the ids, so it is the same on every run and on resume. At least one utterance
    is held out and at least one kept; a corpus of one utterance, or ``fraction == 0``, holds out none.
    """
    if fraction <= 0 or len(utterances.ids) < 2:
        return utterances, None
    count = min(len(utterances.ids) - 1, max(1, round(fraction * len(utterances.ids))))
    ranked = sorted(
        range(len(utterances.ids)), key=lambda i: hashlib.sha1(utterances.ids[i].encode()).hexdigest()
    )
    held = set(ranked[:count])

    def pick(keep: bool) -> Utterances:
        index = [i for i in range(len(utterances.ids)) if (i in held) != keep]
        conditions = None if utterances.conditions is None else [utterances.conditions[i] for i in index]
        return Utterances(
            [utterances.ids[i] for i in index], [utterances.codes[i] for i in index], conditions
        )

    return pick(True), pick(False)


def cap_frames(utterances: Utterances, max_frames: int) -> Utterances:
    """The first utterances (in id order) holding at most ``max_frames`` frames (always at least one)."""
    total, count = 0, 0
    for codes in utterances.codes:
        if count and total + codes.shape[1] > max_frames:
            break
        total += codes.shape[1]
        count += 1
    conditions = None if utterances.conditions is None else utterances.conditions[:count]
    return Utterances(utterances.ids[:count], utterances.codes[:count], conditions)


class Batch(NamedTuple):
    codes: Tensor  # [B, K, W] int64 (padding holds code 0)
    mask: Tensor  # [B, W] bool, False on padding
    conditions: Tensor | None  # [B] int64


class WindowSampler:
    """Random fixed-length windows of frames from a corpus.

    ``sample(step)`` draws the batch of optimizer step ``step`` from a generator seeded by (seed, rank, step),
    so a batch depends on nothing but those three: resuming at a step is exact, and under DDP every process
    (rank) draws its own windows. ``sample()`` draws the next batch of the running generator instead.

    Args:
        utterances: the training corpus.
        window_frames: frames per window.
        batch_size: windows per batch.
        seed: seeds the private generator.
        rank: this process's rank under DDP (0 alone).
    """

    def __init__(
        self, utterances: Utterances, window_frames: int, batch_size: int, seed: int, rank: int = 0
    ) -> None:
        if window_frames < 1 or batch_size < 1:
            raise InputError(
                f"window_frames and batch_size must be positive, got {window_frames}, {batch_size}"
            )
        self.utterances = utterances
        self.window_frames = window_frames
        self.batch_size = batch_size
        self.seed, self.rank = seed, rank
        lengths = np.array([codes.shape[1] for codes in utterances.codes], dtype=np.int64)
        self.cumulative = torch.from_numpy(np.cumsum(lengths))  # frame index -> utterance by searchsorted
        self.generator = torch.Generator().manual_seed(seed)

    def sample(self, step: int | None = None) -> Batch:
        """One batch of windows; utterance chosen in proportion to length, start uniform inside it.

        Args:
            step: the optimizer step the batch is for (seeds the generator); None continues its stream.
        """
        if step is not None:
            words = np.random.SeedSequence([self.seed, self.rank, step]).generate_state(2)  # 2 x uint32
            self.generator.manual_seed((int(words[0]) << 32) | int(words[1]))
        total = int(self.cumulative[-1])
        frames = torch.randint(0, total, (self.batch_size,), generator=self.generator)
        chosen = torch.searchsorted(self.cumulative, frames, right=True).tolist()
        uniforms = torch.rand(self.batch_size, generator=self.generator, dtype=torch.float64).tolist()
        num_codebooks = self.utterances.codes[0].shape[0]
        codes = torch.zeros(self.batch_size, num_codebooks, self.window_frames, dtype=torch.long)
        mask = torch.zeros(self.batch_size, self.window_frames, dtype=torch.bool)
        for row, (index, uniform) in enumerate(zip(chosen, uniforms, strict=True)):
            utterance = self.utterances.codes[index]
            start = math.floor(uniform * (max(0, utterance.shape[1] - self.window_frames) + 1))
            window = np.asarray(utterance[:, start : start + self.window_frames], dtype=np.int64)
            codes[row, :, : window.shape[1]] = torch.from_numpy(window)
            mask[row, : window.shape[1]] = True
        conditions = None
        if self.utterances.conditions is not None:
            conditions = torch.tensor([self.utterances.conditions[i] for i in chosen], dtype=torch.long)
        return Batch(codes, mask, conditions)


def length_batches(lengths: Sequence[int], max_batch_frames: int) -> list[list[int]]:
    """Indices grouped into batches of similar length, each at most ``max_batch_frames`` padded frames."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for index in order:
        # sorted ascending, so the newest item is the longest: padded size = count * its length
        if current and (len(current) + 1) * lengths[index] > max_batch_frames:
            batches.append(current)
            current = []
        current.append(index)
    if current:
        batches.append(current)
    return batches
