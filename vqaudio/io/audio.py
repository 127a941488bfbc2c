"""Audio I/O: read any soundfile-supported file as mono float32 at a target rate, write WAVs atomically.

Resampling uses soxr (high quality); multi-channel audio is averaged to mono. Both are reported once
per process through ``logging`` so a corpus run says it without flooding the console.

Every file read passes one gate (``check_audio_header`` on the header, ``check_samples`` on the decoded
audio), whose errors name the file and are skipped by ``--skip-bad`` wherever files are read:

* only regular files are opened (a FIFO is never read: it would block);
* sample rates outside [``MIN_SAMPLE_RATE``, ``MAX_SAMPLE_RATE``] (1 kHz to 384 kHz) are refused: a header
  that says 1 Hz would otherwise be resampled to billions of samples;
* a file longer than ``max_seconds()`` (24 h by default; the environment variable
  ``VQAUDIO_MAX_AUDIO_SECONDS`` raises it) is refused before anything is decoded or resampled;
* empty audio, audio that resamples to 0 samples, and NaN/Inf samples are refused;
* audio peaking beyond ``PEAK_WARNING`` (+6 dBFS, e.g. a float WAV at 300) is used as it is, with one warning
  per file: levels are never changed silently, and the user decides whether to rescale. ``save_audio``
  clips to [-1, 1] (16-bit PCM) and says so when the audio was that far outside.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import soxr
import torch

from vqaudio.errors import AudioError, InputError
from vqaudio.io.atomic import atomic_path
from vqaudio.io.inputs import regular_file_problem

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif", ".au", ".sph")

MIN_SAMPLE_RATE = 1_000  # Hz; below this a header is wrong (telephone speech is 8 kHz)
MAX_SAMPLE_RATE = 384_000  # Hz; the highest rate audio interfaces record
MAX_SECONDS_VARIABLE = "VQAUDIO_MAX_AUDIO_SECONDS"
DEFAULT_MAX_SECONDS = 24 * 3600.0  # one file; 1.4e9 samples at 16 kHz
PEAK_WARNING = 2.0  # |sample| beyond this (+6 dBFS) is "far outside [-1, 1]": one warning per file

_said: set[str] = set()


def _say_once(key: str, message: str, level: int = logging.INFO) -> None:
    if key not in _said:
        _said.add(key)
        log.log(level, message)


def max_seconds() -> float:
    """The longest file accepted, in seconds: ``VQAUDIO_MAX_AUDIO_SECONDS`` or ``DEFAULT_MAX_SECONDS``."""
    text = os.environ.get(MAX_SECONDS_VARIABLE)
    if text is None or not text.strip():
        return DEFAULT_MAX_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise InputError(f"{MAX_SECONDS_VARIABLE} must be a positive number of seconds, got {text!r}")
    return value


def check_audio_header(name: str | Path, sample_rate: int, num_samples: int | None = None) -> None:
    """Refuse an implausible sample rate, or (when ``num_samples`` is given) a file over ``max_seconds()``.

    Raises:
        AudioError: naming ``name``, the value and the limit.
    """
    if not MIN_SAMPLE_RATE <= sample_rate <= MAX_SAMPLE_RATE:
        raise AudioError(
            f"{name}: sample rate {sample_rate} Hz is outside the plausible {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz",
            fix="fix the file's header or remove it",
        )
    if num_samples is not None:
        seconds, limit = num_samples / sample_rate, max_seconds()
        if seconds > limit:
            raise AudioError(
                f"{name}: {seconds:.0f} s of audio ({num_samples} samples at {sample_rate} Hz) is over the "
                f"limit of {limit:.0f} s per file",
                fix=f"split the file or raise the limit with {MAX_SECONDS_VARIABLE}=<seconds>",
            )


def check_samples(audio: np.ndarray, name: str | Path) -> None:
    """Refuse empty or non-finite decoded audio; warn once per file when it peaks far outside [-1, 1].

    Raises:
        AudioError: naming ``name``.
    """
    if audio.size == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)", fix="remove it")
    if not np.isfinite(audio).all():
        raise AudioError(f"{name}: audio holds NaN or Inf samples", fix="fix or remove the file")
    peak = float(np.abs(audio).max())
    if peak > PEAK_WARNING:
        _say_once(
            f"peak:{name}",
            f"{name}: audio peaks at {peak:.4g} ({20 * math.log10(peak):+.1f} dBFS), far outside [-1, 1]; it is "
            "used as it is (the model expects [-1, 1], and written audio is clipped there); scale the file "
            "into [-1, 1] if this is not intended",
            logging.WARNING,
        )


class AudioInfo(NamedTuple):
    """What a file held before conversion."""

    sample_rate: int
    channels: int
    num_samples: int  # at the file's own rate


def audio_info(path: str | Path) -> AudioInfo:
    """Header facts without decoding the samples.

    Raises:
        AudioError: not a regular file, unreadable, or a sample rate outside the plausible range.
    """
    _check_regular(path)
    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types for corrupt files
        raise AudioError(f"{path}: cannot read audio ({_short(exc)})", fix="check the file") from exc
    result = AudioInfo(int(info.samplerate), int(info.channels), int(info.frames))
    check_audio_header(path, result.sample_rate)
    return result


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
        AudioError: not a regular file, unreadable, an implausible rate or length, empty (also after
            resampling) or non-finite audio; the message names the file (see the module docstring).
    """
    path = Path(path)
    _check_regular(path)
    max_seconds()  # a bad VQAUDIO_MAX_AUDIO_SECONDS raises here, not as a fault of the file
    try:
        with sf.SoundFile(str(path)) as file:
            file_rate = int(file.samplerate)
            available = max(0, int(file.frames) - start) if file.seekable() else int(file.frames)
            frames = available if num_samples is None else min(num_samples, available)
            check_audio_header(path, file_rate, frames)  # before anything is decoded or resampled
            if start:
                file.seek(start)
            data = file.read(-1 if num_samples is None else frames, dtype="float32", always_2d=True)
    except AudioError:
        raise
    except Exception as exc:
        raise AudioError(f"{path}: cannot read audio ({_short(exc)})", fix="check the file") from exc
    return _to_mono_at_rate(data, file_rate, sample_rate, str(path))


def load_one_file(path: str | Path, sample_rate: int) -> torch.Tensor:
    """``load_audio`` for a command that reads a single file: its errors do not suggest --skip-bad."""
    try:
        return load_audio(path, sample_rate)
    except AudioError as error:
        raise error.without_skip_hint() from error


def to_model_input(
    audio: np.ndarray | torch.Tensor, source_rate: int, sample_rate: int, name: str
) -> torch.Tensor:
    """Array already in memory ([T] or [T, C]) -> mono float32 [T] at ``sample_rate``."""
    array = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise AudioError(f"{name}: expected audio [T] or [T, channels], got shape {tuple(array.shape)}")
    check_audio_header(name, int(source_rate), array.shape[0])
    return _to_mono_at_rate(array.astype(np.float32, copy=False), source_rate, sample_rate, name)


def _to_mono_at_rate(data: np.ndarray, file_rate: int, sample_rate: int, name: str) -> torch.Tensor:
    check_samples(data, name)
    if data.shape[1] > 1:
        _say_once("downmix", "multi-channel audio is averaged to mono")
        data = data.mean(axis=1, keepdims=True)
    mono = data[:, 0]
    if file_rate != sample_rate:
        _say_once(f"resample-{file_rate}", f"audio at {file_rate} Hz is resampled to {sample_rate} Hz (soxr)")
        mono = soxr.resample(mono, file_rate, sample_rate, quality="HQ").astype(np.float32, copy=False)
        if mono.size == 0:
            raise AudioError(
                f"{name}: {data.shape[0]} sample(s) at {file_rate} Hz resample to 0 samples at {sample_rate} Hz",
                fix="remove the file",
            )
    return torch.from_numpy(np.ascontiguousarray(mono))


def save_audio(
    path: str | Path, wav: torch.Tensor | np.ndarray, sample_rate: int, name: str | Path | None = None
) -> None:
    """Write mono float audio as 16-bit PCM WAV (or FLAC by extension), atomically; clips to [-1, 1] (with a
    warning, naming the file as ``name`` or else ``path``, when the audio peaks beyond ``PEAK_WARNING``)."""
    array = wav.detach().cpu().numpy() if isinstance(wav, torch.Tensor) else np.asarray(wav)
    array = array.astype(np.float32).reshape(-1)
    peak = float(np.abs(array).max()) if array.size else 0.0
    if peak > PEAK_WARNING:  # NaN compares False: nothing to say about a broken array here
        clipped = int((np.abs(array) > 1.0).sum())
        log.warning(
            "%s: audio peaks at %.4g (%+.1f dBFS); %d of %d samples are clipped to [-1, 1]",
            name or path,
            peak,
            20 * math.log10(peak),
            clipped,
            array.size,
        )
    array = np.clip(array, -1.0, 1.0)
    path = Path(path)
    fmt = "FLAC" if path.suffix.lower() == ".flac" else "WAV"
    with atomic_path(path) as tmp:
        sf.write(str(tmp), array, sample_rate, subtype="PCM_16", format=fmt)


def _check_regular(path: str | Path) -> None:
    problem = regular_file_problem(path)
    if problem is not None:
        raise AudioError(f"{path}: {problem}", fix="remove it from the corpus")


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
