"""Random fixed-length crops of a corpus: the training batches of the tokenizer.

SoundStream / EnCodec-style training (Zeghidour et al., 2021, https://arxiv.org/abs/2107.03312) on short
random segments: item ``step`` of ``RandomCrops`` is the whole batch of that training step,
``[batch_size, segment_samples]``. Its randomness comes from a generator seeded by ``(seed, rank, step)``
only, so the sampler has no hidden position: a resumed run draws exactly the crops an uninterrupted run
would, whatever the number of DataLoader workers, and each DDP rank draws its own.

Utterances are drawn with probability proportional to their duration (every second of the corpus is
equally likely to be trained on, however it is split into files); the crop start is uniform within the
utterance. An utterance shorter than a crop is used whole and zero-padded at the end. With an
``Augmentation``, each crop is also sped up or slowed down and scaled (``vqaudio.data.augment``), its draws
coming from a stream of the same seed, so that turning augmentation on leaves the choice of utterances as it was.

Decoding: with a cache, the corpus is decoded once into memory as int16 at the model rate (ogg/flac
decoding on every step can cost more than the model on a small CPU); otherwise each crop decodes only its
window of the file (``vqaudio.io.audio.load_audio`` with ``start``/``num_samples``), resampled when the file
rate differs from the model rate.

Files that cannot be used (``AudioError``: unreadable, NaN/Inf samples, 0 samples after resampling) stop
training, or with ``skip_bad`` are skipped with one warning per file: dropped from the cache when it is filled,
and otherwise each crop that fails to decode is taken from the next utterance that decodes, at the same start
(clipped to its length), so the crops still depend on the step alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import overload

import numpy as np
import torch
from torch.utils.data import Dataset

from vqaudio.data.augment import Augmentation, perturb, source_samples
from vqaudio.data.utterance import Utterance
from vqaudio.errors import AudioError, DataError, InputError
from vqaudio.io.audio import load_audio
from vqaudio.progress import progress_bar

log = logging.getLogger(__name__)

CACHE_BYTES_PER_SAMPLE = 2  # int16
RESAMPLING_MARGIN_SECONDS = 0.01  # extra audio decoded around a crop that needs resampling
_DATA_STREAM = 0x6372_6F70  # "crop": keeps this generator apart from others seeded with (seed, rank, step)
_AUGMENT_STREAM = 0x6175_676D  # "augm"


def model_rate_length(utterance: Utterance, sample_rate: int) -> int:
    """Samples of ``utterance`` at ``sample_rate`` (its header length converted from the file's rate)."""
    if utterance.num_samples is None or not utterance.sample_rate:
        raise DataError(
            f"{utterance.path}: length unknown; load the corpus with read_headers=True (or fill_headers)"
        )
    return max(1, int(utterance.num_samples * sample_rate // utterance.sample_rate))


def cache_size_bytes(utterances: Sequence[Utterance], sample_rate: int) -> int:
    """Memory an in-memory cache of ``utterances`` at ``sample_rate`` takes."""
    return sum(model_rate_length(utt, sample_rate) for utt in utterances) * CACHE_BYTES_PER_SAMPLE


class RandomCrops(Dataset[torch.Tensor]):
    """Step -> a batch of random crops ``[batch_size, segment_samples]`` (float32, at ``sample_rate``).

    Args:
        utterances: the training corpus, with lengths (``load_corpus(..., read_headers=True)``).
        sample_rate: the model's rate; files at other rates are resampled.
        segment_samples: crop length in samples at ``sample_rate``.
        batch_size: crops per item.
        seed: the run's seed.
        rank: the DDP rank (each rank draws different crops).
        cache: decode the whole corpus into memory now (int16) instead of decoding a window per crop.
        progress: show a progress bar while filling the cache.
        augmentation: random speed and gain per crop; None: none.
        skip_bad: skip files that fail to decode (see the module docstring) instead of raising AudioError.
    """

    def __init__(
        self,
        utterances: Sequence[Utterance],
        sample_rate: int,
        segment_samples: int,
        batch_size: int,
        seed: int,
        rank: int = 0,
        cache: bool = False,
        progress: bool = False,
        augmentation: Augmentation | None = None,
        skip_bad: bool = False,
    ) -> None:
        if not utterances:
            raise DataError("no training utterances; pass a --data corpus with at least one audio file")
        if segment_samples < 1 or batch_size < 1:
            raise InputError(
                f"segment_samples and batch_size must be at least 1, got {segment_samples} and {batch_size}"
            )
        self.skip_bad = skip_bad
        self._warned: set[str] = set()
        self.sample_rate = sample_rate
        self.segment_samples = segment_samples
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.augmentation = augmentation if augmentation is not None and augmentation.enabled else None
        utterances = list(utterances)
        self.cache: PackedAudio | None = None
        if cache:
            kept, decoded = [], []
            for utt in progress_bar(
                utterances, desc="decoding into memory", unit="file", disable=not progress
            ):
                try:
                    decoded.append(_to_int16(load_audio(utt.path, sample_rate).numpy()))
                    kept.append(utt)
                except AudioError as error:
                    self._reject(str(utt.path), error)
            if not kept:
                raise DataError(f"none of the {len(utterances)} training files could be decoded (--skip-bad)")
            utterances = kept
            self.cache = PackedAudio(decoded)
            # The header length can differ from the decoded one by a sample or two after resampling.
            self.lengths = self.cache.lengths
        else:
            self.lengths = np.array(
                [model_rate_length(utt, sample_rate) for utt in utterances], dtype=np.int64
            )
        # Flat arrays rather than a list of Utterance objects: DataLoader workers forked from this process
        # read them without touching reference counts, so the pages stay shared however large the corpus.
        self.paths = PackedStrings([str(utt.path) for utt in utterances])
        self.ids = PackedStrings([utt.id for utt in utterances])
        self.file_rates = np.array(
            [int(utt.sample_rate or sample_rate) for utt in utterances], dtype=np.int64
        )
        # Probability proportional to the samples a crop can come from (short files count as one crop).
        weights = np.maximum(self.lengths, segment_samples).astype(np.float64)
        self.probabilities = weights / weights.sum()
        # rng.choice(n, p=probabilities) without its O(n) cumulative sum per call: the same draws.
        self._cumulative = np.cumsum(self.probabilities)
        self._cumulative /= self._cumulative[-1]

    @property
    def num_utterances(self) -> int:
        """Utterances the crops are drawn from (after ``skip_bad`` dropped undecodable ones from a cache)."""
        return len(self.lengths)

    @property
    def num_short(self) -> int:
        """Utterances shorter than one crop (used whole, zero-padded)."""
        return int((self.lengths < self.segment_samples).sum())

    @property
    def seconds(self) -> float:
        """Duration of the corpus at the model rate."""
        return float(self.lengths.sum()) / self.sample_rate

    def state(self) -> dict[str, int | list[float]]:
        """What determines the crops of a step (stored in checkpoints; the step is the position)."""
        state: dict[str, int | list[float]] = {
            "seed": self.seed,
            "rank": self.rank,
            "batch_size": self.batch_size,
            "segment_samples": self.segment_samples,
            "num_utterances": self.num_utterances,
        }
        if self.augmentation is not None:
            state["speed"] = list(self.augmentation.speed)
            state["gain_db"] = list(self.augmentation.gain_db)
        return state

    def choose(self, step: int) -> list[tuple[int, int]]:
        """The (utterance index, start sample at the model rate) of each crop of ``step``."""
        return [(index, start) for index, start, _, _ in self.plan(step)]

    def plan(self, step: int) -> list[tuple[int, int, float, float]]:
        """(utterance index, start, speed, gain in dB) of each crop of ``step``; the crop reads
        ``source_samples(segment_samples, speed)`` samples from ``start`` when augmented."""
        rng = np.random.default_rng([self.seed, self.rank, step, _DATA_STREAM])
        indices = self._cumulative.searchsorted(rng.random(self.batch_size), side="right")
        speeds, gains = np.ones(self.batch_size), np.zeros(self.batch_size)
        needed = np.full(self.batch_size, self.segment_samples)
        if self.augmentation is not None:
            augment_rng = np.random.default_rng([self.seed, self.rank, step, _AUGMENT_STREAM])
            speeds, gains = self.augmentation.draw(augment_rng, self.batch_size)
            needed = np.array([source_samples(self.segment_samples, speed) for speed in speeds])
        room = np.maximum(self.lengths[indices] - needed, 0)  # [batch]
        starts = np.floor(rng.random(self.batch_size) * (room + 1)).astype(np.int64)
        return [
            (int(index), int(start), float(speed), float(gain))
            for index, start, speed, gain in zip(indices, starts, speeds, gains, strict=True)
        ]

    def __getitem__(self, step: int) -> torch.Tensor:
        """The batch of training step ``step``: [batch_size, segment_samples] float32."""
        return self.read(step)[0]

    def read(self, step: int) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """The batch of ``step`` and the (utterance index, start) each row was read from: the plan's, but for
        crops that ``skip_bad`` took from another utterance."""
        batch = torch.zeros(self.batch_size, self.segment_samples)
        sources = []
        for row, (index, start, speed, gain_db) in enumerate(self.plan(step)):
            if self.augmentation is None:
                crop, source = self._read(index, start, self.segment_samples)
            else:
                audio, source = self._read(index, start, source_samples(self.segment_samples, speed))
                crop = torch.from_numpy(perturb(audio.numpy(), self.segment_samples, speed, gain_db))
            batch[row, : crop.shape[0]] = crop
            sources.append(source)
        return batch, sources

    def _read(self, index: int, start: int, count: int) -> tuple[torch.Tensor, tuple[int, int]]:
        """[<= count] samples of utterance ``index`` from ``start`` (model rate), and where they came from:
        with ``skip_bad``, the next utterance that decodes when this one fails."""
        if self.cache is not None:
            window = self.cache.window(index, start, count)
            return torch.from_numpy(window.astype(np.float32) / 32768.0), (index, start)
        for offset in range(self.num_utterances):
            other = (index + offset) % self.num_utterances
            other_start = start if offset == 0 else min(start, max(0, int(self.lengths[other]) - count))
            try:
                return self._decode(other, other_start, count), (other, other_start)
            except AudioError as error:
                self._reject(self.paths[other], error)
        raise DataError(f"none of the {self.num_utterances} training files could be decoded (--skip-bad)")

    def _reject(self, path: str, error: AudioError) -> None:
        """Raise ``error``, or with ``skip_bad`` warn (once per file) that the file ``path`` is skipped."""
        if not self.skip_bad:
            raise error
        if path not in self._warned:
            self._warned.add(path)
            log.warning("skipping %s (--skip-bad)", error.reason)

    def _decode(self, index: int, start: int, count: int) -> torch.Tensor:
        """[<= count] samples of utterance ``index`` from ``start`` (model rate), decoded from the file."""
        path, file_rate = self.paths[index], int(self.file_rates[index])
        if file_rate == self.sample_rate:
            return load_audio(path, self.sample_rate, start=start, num_samples=count)
        # The same window at the file's rate, widened on both sides so that the resampler's edge transients
        # fall outside the crop.
        margin = math.ceil(RESAMPLING_MARGIN_SECONDS * file_rate)
        file_start = max(0, math.floor(start * file_rate / self.sample_rate) - margin)
        file_count = math.ceil(count * file_rate / self.sample_rate) + 2 * margin
        audio = load_audio(path, self.sample_rate, start=file_start, num_samples=file_count)
        offset = max(0, start - round(file_start * self.sample_rate / file_rate))
        return audio[offset : offset + count]


def _to_int16(audio: np.ndarray) -> np.ndarray:
    return (np.clip(audio, -1.0, 32767 / 32768) * 32768.0).round().astype(np.int16)


class PackedStrings(Sequence[str]):
    """Strings in one UTF-8 buffer with offsets: a list of a million paths as two numpy arrays."""

    def __init__(self, strings: Sequence[str]) -> None:
        encoded = [text.encode("utf-8", "surrogateescape") for text in strings]
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(item) for item in encoded], out=self._offsets[1:])
        self._buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)

    def __len__(self) -> int:
        return len(self._offsets) - 1

    @overload
    def __getitem__(self, index: int) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} strings")
        index %= len(self)
        start, end = self._offsets[index], self._offsets[index + 1]
        return self._buffer[start:end].tobytes().decode("utf-8", "surrogateescape")


class PackedAudio:
    """Decoded utterances (int16) back to back in one array, with offsets: shared by forked DataLoader
    workers without copying (a list of arrays would not be: each worker touches every array object)."""

    def __init__(self, clips: Sequence[np.ndarray]) -> None:
        self.lengths = np.array([len(clip) for clip in clips], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self._audio = np.concatenate(clips) if clips else np.zeros(0, dtype=np.int16)

    def window(self, index: int, start: int, count: int) -> np.ndarray:
        """[<= count] samples of clip ``index`` from ``start``."""
        begin = self._offsets[index] + start
        return self._audio[begin : min(begin + count, self._offsets[index + 1])]
