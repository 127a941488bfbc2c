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

import librosa
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

LOG_FLOOR = 1e-5  # log(1e-5) ~ -11.5: the value of digital silence


def frame_signal(wav: Tensor, frame_length: int, hop_length: int, padding_left: int) -> Tensor:
    """[B, T] -> [B, ceil(T / hop_length), frame_length]: frame ``m`` holds samples from
    ``m * hop_length - padding_left`` on, zeros outside the signal (the framing of the STFTs here)."""
    num_frames = -(-wav.shape[-1] // hop_length)
    padding_right = (num_frames - 1) * hop_length + frame_length - padding_left - wav.shape[-1]
    return F.pad(wav, (padding_left, padding_right)).unfold(-1, frame_length, hop_length)


@functools.lru_cache(maxsize=16)
def _mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float | None) -> Tensor:
    """[n_mels, n_fft // 2 + 1] Slaney-normalised mel filterbank (cached: librosa takes milliseconds)."""
    bank = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max)
    return torch.from_numpy(np.ascontiguousarray(bank, dtype=np.float32))


class LogMel(nn.Module):
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
            raise ValueError(
                f"LogMel needs 1 <= hop_length <= n_fft, got n_fft={n_fft}, hop_length={hop_length}"
            )
        if n_mels < 1:
            raise ValueError(f"LogMel needs n_mels >= 1, got {n_mels}")
        self.sample_rate = sample_rate
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.n_mels = n_mels
        self.causal = causal
        padding = n_fft - hop_length
        self.padding_left = padding if causal else padding - padding // 2
        self.padding_right = padding - self.padding_left
        # Derived from the arguments, so kept out of checkpoints (persistent=False).
        fmax = None if f_max is None else float(f_max)
        bank = _mel_filterbank(sample_rate, n_fft, n_mels, float(f_min), fmax).clone()
        self.register_buffer("filterbank", bank, persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def num_frames(self, num_samples: int) -> int:
        """Frames produced for ``num_samples`` samples: ``ceil(num_samples / hop_length)``."""
        return -(-num_samples // self.hop_length)

    def forward(self, wav: Tensor) -> Tensor:
        """
        Args:
            wav: [B, T] or [T] float waveform.
        Returns:
            [B, n_mels, ceil(T / hop_length)] natural-log mel magnitudes ([n_mels, frames] for a [T] input).
        """
        if wav.dim() not in (1, 2) or wav.shape[-1] < 1:
            raise ValueError(f"LogMel expects audio [B, T] or [T] with T >= 1, got shape {tuple(wav.shape)}")
        num_samples = wav.shape[-1]
        extra = self.num_frames(num_samples) * self.hop_length - num_samples
        padded = F.pad(wav, (self.padding_left, self.padding_right + extra))
        spec = torch.stft(
            padded,
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
