"""Log-mel spectrogram: the mel front-end of the encoder, the mel loss and the mel distance metric.

Magnitude (not power) STFT through a Slaney mel filterbank, then ``log(clamp(x, 1e-5))``, as in
HiFi-GAN (Kong et al., 2020, https://arxiv.org/abs/2010.05646) and Vocos (Siuzdak, 2023,
https://arxiv.org/abs/2306.00814).

Framing is chosen so that the mel frames line up with the model's token frames: ``T`` samples give
``ceil(T / hop_length)`` frames, frame ``m`` ending at sample ``(m + 1) * hop_length``::

    causal:      |<--- n_fft - hop zeros --->|x0 x1 x2 ... x(T-1)|0..0|
    non-causal:  |<- (n_fft-hop) - (n_fft-hop)//2 ->|x0 x1 ... x(T-1)|<- (n_fft-hop)//2 ->|0..0|
                                          the last zeros only fill up to a multiple of hop ^^^^

    frame m reads padded samples [m * hop, m * hop + n_fft) with center=False

In causal mode frame ``m`` therefore never reads a sample at or after ``(m + 1) * hop_length``.
Zero padding (not reflection) keeps this true at both ends and lets a 1-sample input work.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vqaudio.errors import InputError

LOG_FLOOR = 1e-5  # log(1e-5) ~ -11.5: the value of digital silence


def frame_signal(wav: Tensor, frame_length: int, hop_length: int, padding_left: int) -> Tensor:
    """[B, T] -> [B, ceil(T / hop_length), frame_length]: frame ``m`` holds samples from
    ``m * hop_length - padding_left`` on, zeros outside the signal (the framing of the STFTs here)."""
    num_frames = -(-wav.shape[-1] // hop_length)
    padding_right = (num_frames - 1) * hop_length + frame_length - padding_left - wav.shape[-1]
    return F.pad(wav, (padding_left, padding_right)).unfold(-1, frame_length, hop_length)


_MEL_HZ_PER_MEL = 200.0 / 3
_MEL_BREAK_HZ = 1000.0
_MEL_BREAK_MEL = _MEL_BREAK_HZ / _MEL_HZ_PER_MEL
_MEL_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney's mel scale (Auditory Toolbox, as librosa's default): linear below 1 kHz, 200/3 Hz a mel;
    logarithmic above, 27 mels per factor of 6.4."""
    hz = np.asarray(hz, dtype=np.float64)
    linear = hz / _MEL_HZ_PER_MEL
    logarithmic = _MEL_BREAK_MEL + np.log(np.maximum(hz, _MEL_BREAK_HZ) / _MEL_BREAK_HZ) / _MEL_LOG_STEP
    return np.where(hz >= _MEL_BREAK_HZ, logarithmic, linear)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    mel = np.asarray(mel, dtype=np.float64)
    linear = mel * _MEL_HZ_PER_MEL
    logarithmic = _MEL_BREAK_HZ * np.exp(_MEL_LOG_STEP * (mel - _MEL_BREAK_MEL))
    return np.where(mel >= _MEL_BREAK_MEL, logarithmic, linear)


@functools.lru_cache(maxsize=16)
def _mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float | None) -> Tensor:
    """[n_mels, n_fft // 2 + 1] Slaney-normalised mel filterbank: triangles between equally spaced mel
    edges, each scaled by 2 / (its width in Hz) so every band has the same area.

    Computed here in numpy (bit-identical to ``librosa.filters.mel`` with its defaults, which the
    embedded model was trained with; the test suite checks that) so that neither the CLI nor the API
    pays librosa's and numba's import time and ~150 MB of memory for one small matrix.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    bin_hz = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges_hz = mel_to_hz(np.linspace(hz_to_mel(f_min), hz_to_mel(f_max), n_mels + 2))
    widths_hz = np.diff(edges_hz)
    distance = edges_hz[:, None] - bin_hz[None, :]  # [n_mels + 2, n_bins]
    rising = -distance[:-2] / widths_hz[:-1, None]
    falling = distance[2:] / widths_hz[1:, None]
    # float32 before the area normalisation, in float32, as librosa does: the same bits, hence the same model.
    bank = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    bank *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return torch.from_numpy(np.ascontiguousarray(bank))


def float64_constant(value: float, like: Tensor) -> Tensor:
    """``value`` as a float64 scalar tensor on ``like``'s device: a bare Python float in a float64 expression
    becomes a float32 constant in an ONNX export, and the excitation's phase would drift from torch's."""
    return torch.tensor(value, dtype=torch.float64, device=like.device)


class Float32Constants(nn.Module):
    """A module whose signal-processing constants (windows, filterbanks: the buffers named in
    ``FLOAT32_BUFFERS``) stay float32, exactly, when the module is cast to another dtype (``.to(torch.bfloat16)``,
    ``.half()``): its FFTs run in float32 (CPU FFTs take no bfloat16 or float16, and half-precision windows
    would shift the features), while its learned weights, if any, take the cast. Device moves apply as usual."""

    FLOAT32_BUFFERS: ClassVar[tuple[str, ...]] = ()

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Float32Constants:
        kept = {name: self._buffers[name] for name in self.FLOAT32_BUFFERS}
        super()._apply(fn, recurse)
        for name, original in kept.items():
            moved = self._buffers[name]
            if original is not None and moved is not None and moved.dtype != original.dtype:
                self._buffers[name] = original.to(moved.device)  # the float32 values, where fn put them
        return self


class LogMel(Float32Constants):
    """Waveform [B, T] -> log-mel spectrogram [B, n_mels, ceil(T / hop_length)].

    Args:
        sample_rate: sampling rate of the input in Hz.
        n_fft: FFT size and Hann window length in samples; at least ``hop_length``.
        hop_length: samples between frames.
        n_mels: number of mel bands.
        f_min, f_max: band edges in Hz (``f_max=None``: Nyquist).
        causal: put all the padding on the left, so frame ``m`` only sees samples before
            ``(m + 1) * hop_length``.
    """

    filterbank: Tensor  # [n_mels, n_fft // 2 + 1]
    window: Tensor  # [n_fft]
    FLOAT32_BUFFERS = ("filterbank", "window")

    def __init__(
        self,
        sample_rate: int,
        n_fft: int,
        hop_length: int,
        n_mels: int,
        f_min: float = 0.0,
        f_max: float | None = None,
        causal: bool = False,
    ) -> None:
        super().__init__()
        if hop_length < 1 or n_fft < hop_length:
            raise InputError(
                f"LogMel needs 1 <= hop_length <= n_fft, got n_fft={n_fft}, hop_length={hop_length}"
            )
        if n_mels < 1:
            raise InputError(f"LogMel needs n_mels >= 1, got {n_mels}")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.causal = causal
        padding = n_fft - hop_length
        self.padding_left = padding if causal else padding - padding // 2
        self.padding_right = padding - self.padding_left
        # Derived from the arguments, so kept out of checkpoints (persistent=False). Made on the CPU like the
        # filterbank, whatever device context is active, and moved with the module: a hann window built on the
        # meta device (Tokenizer.load's shape check) would import torch._dynamo, ~80 MB and 1 s.
        fmax = None if f_max is None else float(f_max)
        bank = _mel_filterbank(sample_rate, n_fft, n_mels, float(f_min), fmax).clone()
        self.register_buffer("filterbank", bank, persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft, device="cpu"), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples: ``ceil(num_samples / hop_length)``."""
        return -(-num_samples // self.hop_length)

    def forward(self, wav: Tensor) -> Tensor:
        """
        Args:
            wav: [B, T] or [T] float waveform (computed in float32 whatever its dtype).
        Returns:
            [B, n_mels, ceil(T / hop_length)] float32 natural-log mel magnitudes ([n_mels, frames] for a [T]
            input).
        """
        if wav.dim() not in (1, 2) or wav.shape[-1] < 1:
            raise ValueError(f"LogMel expects audio [B, T] or [T] with T >= 1, got shape {tuple(wav.shape)}")
        num_samples = wav.shape[-1]
        extra = self.num_frames(num_samples) * self.hop_length - num_samples
        return self.log_mel_of_frames(F.pad(wav.float(), (self.padding_left, self.padding_right + extra)))

    def log_mel_of_frames(self, padded: Tensor) -> Tensor:
        """[B, (M - 1) * hop_length + n_fft] samples, padding included -> [B, n_mels, M]: frame ``m`` reads
        ``padded[m * hop_length : m * hop_length + n_fft]`` (the streaming encoder passes the frames a piece
        completes)."""
        # float32 under autocast too (mixed-precision training): a bfloat16 filterbank product rounds the
        # quiet bands the log magnifies
        with torch.autocast(padded.device.type, enabled=False):
            spec = torch.stft(
                padded.float(),
                n_fft=self.n_fft,
                hop_length=self.hop_length,
                window=self.window,
                center=False,
                return_complex=True,
            )  # [B, n_fft // 2 + 1, frames]
            magnitude = spec.abs()
            mel = torch.matmul(self.filterbank, magnitude)  # [B, n_mels, frames]
            return torch.log(mel.clamp(min=LOG_FLOOR))


def log_mel_spectrogram(
    wav: Tensor | np.ndarray,
    sample_rate: int,
    n_fft: int = 1024,
    hop_length: int = 256,
    n_mels: int = 80,
) -> Tensor:
    """Non-causal log-mel spectrogram for metrics and plots.

    Args:
        wav: [T] or [B, T] waveform (tensor or numpy array).
        sample_rate: its sampling rate in Hz.
        n_fft, hop_length, n_mels: analysis settings (defaults: the ones ``mel_distance`` reports with).
    Returns:
        [n_mels, frames] or [B, n_mels, frames] float32 natural-log mel magnitudes,
        ``frames = ceil(T / hop_length)``.
    """
    tensor = torch.as_tensor(wav)
    if not tensor.is_floating_point():
        raise TypeError(
            f"log_mel_spectrogram expects float audio, got {tensor.dtype}; convert it to float first"
        )
    extractor = LogMel(sample_rate, n_fft, hop_length, n_mels).to(tensor.device)
    return extractor(tensor.float())
