"""Audio I/O: read any soundfile-supported file as mono float32 at a target rate, write WAVs atomically.

Resampling uses soxr (high quality); multi-channel audio is averaged to mono. Both are reported once
per process through ``logging`` so a corpus run says it without flooding the console.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import soxr
import torch

from vqaudio.errors import AudioError
from vqaudio.io.atomic import atomic_path

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au", ".sph")

_said: set[str] = set()


def _say_once(key: str, message: str) -> None:
    if key not in _said:
        _said.add(key)
        log.info(message)


class AudioInfo(NamedTuple):
    """What a file held before conversion."""

    sample_rate: int
    channels: int
    num_samples: int  # at the file's own rate


def audio_info(path: str | Path) -> AudioInfo:
    """Header facts without decoding the samples."""
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types for corrupt files
        raise AudioError(
            f"{path}: cannot read audio ({_short(exc)}); check the file or pass --skip-bad"
        ) from exc
    return AudioInfo(int(info.samplerate), int(info.channels), int(info.frames))


def load_audio(
    path: str | Path,
    sample_rate: int,
    start: int = 0,
    num_samples: int | None = None,
) -> torch.Tensor:
    """Read ``path`` as mono float32 at ``sample_rate``.

    Args:
        path: any format libsndfile reads (WAV, FLAC, Ogg Vorbis/Opus, MP3, ...).
        sample_rate: target rate; other rates are resampled with soxr.
        start, num_samples: optional window, in samples at the *file's* rate (cheap random crops).
    Returns:
        [T] float32 tensor.
    Raises:
        AudioError: unreadable, empty, or non-finite audio; the message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    try:
        frames = -1 if num_samples is None else num_samples
        data, file_rate = sf.read(str(path), start=start, frames=frames, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(
            f"{path}: cannot read audio ({_short(exc)}); check the file or pass --skip-bad"
        ) from exc
    return _to_mono_at_rate(data, int(file_rate), sample_rate, str(path))


def to_model_input(
    audio: np.ndarray | torch.Tensor, source_rate: int, sample_rate: int, name: str
) -> torch.Tensor:
    """Array already in memory ([T] or [T, C]) -> mono float32 [T] at ``sample_rate``."""
    array = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise AudioError(f"{name}: expected audio [T] or [T, channels], got shape {tuple(array.shape)}")
    return _to_mono_at_rate(array.astype(np.float32, copy=False), source_rate, sample_rate, name)


def _to_mono_at_rate(data: np.ndarray, file_rate: int, sample_rate: int, name: str) -> torch.Tensor:
    if data.shape[0] == 0:
        raise AudioError(f"{name}: audio is empty (0 samples); remove it or pass --skip-bad")
    if not np.isfinite(data).all():
        raise AudioError(
            f"{name}: audio holds NaN or Inf samples; fix or remove the file, or pass --skip-bad"
        )
    if data.shape[1] > 1:
        _say_once("downmix", "multi-channel audio is averaged to mono")
        data = data.mean(axis=1, keepdims=True)
    mono = data[:, 0]
    if file_rate != sample_rate:
        _say_once(f"resample-{file_rate}", f"audio at {file_rate} Hz is resampled to {sample_rate} Hz (soxr)")
        mono = soxr.resample(mono, file_rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
    return torch.from_numpy(np.ascontiguousarray(mono))


def save_audio(path: str | Path, wav: torch.Tensor | np.ndarray, sample_rate: int) -> None:
    """Write mono float audio as 16-bit PCM WAV (or FLAC by extension), atomically; clips to [-1, 1]."""
    array = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    array = np.clip(array.astype(np.float32).reshape(-1), -1.0, 1.0)
    path = Path(path)
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    with atomic_path(path) as tmp:
        sf.write(str(tmp), array, sample_rate, subtype="PCM_16", format=fmt)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
