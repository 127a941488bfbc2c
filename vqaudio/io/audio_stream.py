"""Long audio files in bounded memory: read forward in blocks (resampled as a stream), write WAVs block by block.

``AudioReader`` gives the same samples as ``load_audio`` (the same float32 conversion, per-sample downmix, and
soxr's streaming resampler, whose output equals its one-shot ``soxr.resample`` sample for sample), but holds
only the samples between the oldest position still wanted and the newest one read::

    file  ──► SoundFile.read(block) ──► checks, downmix ──► soxr.ResampleStream ──► buffer [offset, offset + len)
                                                                                      read(start, stop) / discard(before)

``save_audio_blocks`` writes blocks of float audio as one 16-bit WAV/FLAC, atomically (``atomic_path``), with
the same clipping and encoding as ``save_audio``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import numpy as np
import soundfile as sf
import soxr
import torch

from vqaudio.errors import AudioError
from vqaudio.io.atomic import atomic_path
from vqaudio.io.audio import _say_once, _short, audio_info, check_samples

BLOCK_FRAMES = 1 << 16  # frames at the file's rate per read: 4 s at 16 kHz, 1.4 s at 48 kHz


class AudioReader:
    """A file's audio as mono float32 at ``sample_rate``, read forward through a bounded buffer.

    Args:
        path: any format libsndfile reads.
        sample_rate: the rate wanted; other rates are resampled with soxr's streaming resampler (HQ).
        block_frames: frames read from the file at a time.

    ``read(start, stop)`` reads the file as far as ``stop`` (or its end); ``discard(before)`` frees the samples
    before ``before``, which cannot be read again. ``num_samples`` is None until the end of the file has
    been read. ``max_buffered`` is the most samples held at once (the reader's memory, for tests). Use as a
    context manager, or call ``close``.

    Raises:
        AudioError: unreadable, empty or non-finite audio, naming the file (as ``load_audio`` does).
    """

    def __init__(self, path: str | Path, sample_rate: int, block_frames: int = BLOCK_FRAMES) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise AudioError(f"{self.path}: no such file")
        info = audio_info(self.path)  # header checks, the same as the in-memory path's
        self.file_rate, self.channels = info.sample_rate, info.channels
        # the length at sample_rate the header announces (soxr's length: round(n * sample_rate / file_rate));
        # num_samples, once known, is what the file held
        self.header_samples = (2 * info.num_samples * sample_rate + info.sample_rate) // (
            2 * info.sample_rate
        )
        self.sample_rate = sample_rate
        self.block_frames = block_frames
        try:
            self._file = sf.SoundFile(str(self.path))
        except Exception as exc:  # soundfile raises several types for corrupt files
            raise AudioError(f"{self.path}: cannot read audio ({_short(exc)})", fix="check the file") from exc
        self._resampler = None
        if self.file_rate != sample_rate:
            _say_once(
                f"resample-{self.file_rate}",
                f"audio at {self.file_rate} Hz is resampled to {sample_rate} Hz (soxr)",
            )
            self._resampler = soxr.ResampleStream(
                self.file_rate, sample_rate, 1, dtype="float32", quality="HQ"
            )
        self._buffer = np.zeros(0, dtype=np.float32)
        self._offset = 0  # the position (at sample_rate) of _buffer[0]
        self.num_samples: int | None = None
        self.max_buffered = 0

    def read(self, start: int, stop: int) -> np.ndarray:
        """Samples ``[start, stop)`` at ``sample_rate``; fewer (maybe none) past the end of the file."""
        if start < self._offset:
            raise ValueError(
                f"AudioReader reads forward only: sample {start} was discarded (kept from {self._offset})"
            )
        while self.num_samples is None and self._offset + len(self._buffer) < stop:
            self._read_block()
        return self._buffer[start - self._offset : max(start, stop) - self._offset].copy()

    def discard(self, before: int) -> None:
        """Free the samples before position ``before``."""
        drop = min(max(0, before - self._offset), len(self._buffer))
        if drop:
            self._buffer = self._buffer[drop:].copy()
            self._offset += drop

    def _read_block(self) -> None:
        try:
            data = self._file.read(self.block_frames, dtype="float32", always_2d=True)  # [frames, channels]
        except Exception as exc:
            raise AudioError(f"{self.path}: cannot read audio ({_short(exc)})", fix="check the file") from exc
        last = len(data) == 0
        if not last:
            check_samples(
                data, self.path
            )  # the in-memory path's gate, block by block (NaN/Inf, peak warning)
        if data.shape[1] > 1:
            _say_once("downmix", "multi-channel audio is averaged to mono")
            data = data.mean(axis=1, keepdims=True)
        mono = np.ascontiguousarray(data[:, 0], dtype=np.float32)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=last).astype(np.float32, copy=False)
        if len(mono):
            self._buffer = np.concatenate([self._buffer, mono])
            self.max_buffered = max(self.max_buffered, len(self._buffer))
        if last:
            self.num_samples = self._offset + len(self._buffer)
            if self.num_samples == 0:
                check_samples(self._buffer, self.path)  # empty: the gate's own error

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def save_audio_blocks(path: str | Path, blocks: Iterable[torch.Tensor | np.ndarray], sample_rate: int) -> int:
    """Write consecutive blocks of mono float audio as one 16-bit PCM WAV (or FLAC by extension), atomically.

    The file equals ``save_audio`` of the blocks concatenated (clipped to [-1, 1]), but only one block is in
    memory at a time; an error or Ctrl-C while the blocks are made leaves no file. Returns the samples
    written.
    """
    path = Path(path)
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    written = 0
    with atomic_path(path) as tmp:
        with sf.SoundFile(str(tmp), "w", sample_rate, 1, subtype="PCM_16", format=fmt) as out:
            for block in blocks:
                array = block.detach().cpu().numpy() if isinstance(block, torch.Tensor) else np.asarray(block)
                out.write(np.clip(array.astype(np.float32).reshape(-1), -1.0, 1.0))
                written += array.size
    return written
