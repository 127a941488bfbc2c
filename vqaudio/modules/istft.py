"""iSTFT head: frame features -> log-magnitude and phase -> waveform by inverse FFT and overlap-add.

Vocos (Siuzdak, 2023, https://arxiv.org/abs/2306.00814): predicting a spectrum per frame and letting the
inverse STFT make the samples replaces every waveform-rate upsampling layer, which is where SEANet decoders
spend their time.

Framing ("same", so ``F`` frames give exactly ``F * hop`` samples). Frame ``j`` is windowed and added at raw
positions ``[j * hop, j * hop + n_fft)``; the raw signal has ``(F - 1) * hop + n_fft`` samples and we crop
``n_fft - hop`` of them::

    raw          |<------ frame 0 ------>|
                       |<------ frame 1 ------>|   ...
    non-causal   crop (n_fft-hop) - (n_fft-hop)//2 on the left and (n_fft-hop)//2 on the right
    causal       crop all n_fft - hop on the right: sample n only hears frames j <= n // hop

Phase. ``phase="direct"`` predicts each frame's phase outright, as Vocos does. A steady harmonic then needs the
network to advance the phase by ``2 pi f hop / sr`` from each frame to the next, which a convolutional decoder
reading log-mel features (no phase, no clock) does not learn: its output has no harmonic lines and sounds
breathy. ``phase="integrated"`` predicts a deviation in ``(-pi, pi)`` per bin and frame instead, and the phase
of bin ``k`` at frame ``t`` is the bin's own advance ``2 pi k hop t / n_fft`` plus the running sum of the
deviations, so a zero prediction already is a phase-continuous sinusoid at each bin's centre. The running sum
makes every frame depend on all earlier ones: decoding in windows must integrate over the whole input first
(``predict`` -> ``resolve_phase`` -> ``overlap_add``; the first and last are frame-local).

The overlap-add is done by hand with ``F.fold`` (``torch.istft`` insists on a nonzero window envelope
everywhere, which the cropped edges do not have), and divided by the summed squared window. In causal mode
the first samples are covered by a single rising window edge; the envelope is floored there so the division
stays bounded (the output fades in instead of blowing up).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from vqaudio.modules.conv import Conv1d, ConvGeometry

ENVELOPE_FLOOR = 0.01  # relative to the steady-state envelope; only the causal fade-in reaches it
PHASE_MODES = ("direct", "integrated")


class ISTFTHead(nn.Module):
    """[B, channels, F] features -> [B, F * hop_length] waveform.

    Args:
        channels: input feature channels.
        n_fft: FFT size and Hann window length; ``n_fft >= 2 * hop_length`` so windows overlap.
        hop_length: samples per frame.
        causal: crop on the right only, so sample ``n`` depends on frames ``<= n // hop_length``.
        phase: ``"direct"`` (each frame's phase) or ``"integrated"`` (a deviation from each bin's own advance,
            summed over frames; see the module docstring).
    """

    window: Tensor  # [n_fft] Hann

    def __init__(
        self, channels: int, n_fft: int, hop_length: int, causal: bool = False, phase: str = "direct"
    ) -> None:
        super().__init__()
        if phase not in PHASE_MODES:
            raise ValueError(f"ISTFTHead phase must be one of {PHASE_MODES}, got {phase!r}")
        if hop_length < 1 or n_fft < 2 * hop_length:
            raise ValueError(
                f"ISTFTHead needs n_fft >= 2 * hop_length so frames overlap, got n_fft={n_fft}, "
                f"hop_length={hop_length}; raise decoder.istft_n_fft"
            )
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.integrates_phase = phase == "integrated"
        self.num_bins = n_fft // 2 + 1
        self.projection = Conv1d(channels, 2 * self.num_bins, kernel_size=1)
        total = n_fft - hop_length
        self.crop_left = 0 if causal else total - total // 2
        # A full-scale sinusoid peaks at |X| ~ n_fft / 4 under a Hann window: capping |X| at n_fft leaves
        # headroom for any real signal and stops an early-training spike from overflowing exp().
        self.max_log_magnitude = math.log(n_fft)
        window = torch.hann_window(n_fft)
        self.register_buffer("window", window, persistent=False)
        # Steady-state envelope: at phase p the overlapping frames add w^2[p] + w^2[p + hop] + ...
        padded = F.pad(window.square(), (0, -n_fft % hop_length))
        self.envelope_floor = ENVELOPE_FLOOR * float(padded.reshape(-1, hop_length).sum(0).max())

    @property
    def geometry(self) -> ConvGeometry:
        """Overlap-add behaves like a transposed conv with kernel n_fft and stride hop_length."""
        return ConvGeometry(self.n_fft, self.hop_length, self.crop_left, transposed=True)

    @property
    def context_frames(self) -> int:
        """Frames either side of a frame whose spectra reach its samples in ``overlap_add``."""
        return -(-self.n_fft // self.hop_length)

    def forward(self, x: Tensor) -> Tensor:
        """[B, channels, F] -> [B, F * hop_length]."""
        return self.overlap_add(self.resolve_phase(self.predict(x)))

    def predict(self, x: Tensor) -> Tensor:
        """[B, channels, F] -> [B, 2 * bins, F] float32: log-magnitudes, then phases or phase deviations.

        Frame-local (a 1x1 conv).
        """
        return self.projection(x).float()

    def resolve_phase(self, prediction: Tensor) -> Tensor:
        """``predict``'s output -> [B, 2 * bins, F] log-magnitudes and absolute phases.

        The identity for direct phase. For integrated phase, frame 0 of ``prediction`` is frame 0 of the
        signal, so pass a whole input (the sum runs over every earlier frame), not a window of one.
        """
        if not self.integrates_phase:
            return prediction
        log_magnitude, raw = prediction.chunk(2, dim=1)
        deviation = math.pi * torch.tanh(raw.double())
        bins = torch.arange(self.num_bins, device=raw.device)[:, None]
        frames = torch.arange(raw.shape[-1], device=raw.device)[None, :]
        # the bin's own advance, reduced modulo n_fft in integers so long inputs lose no precision
        own_advance = ((bins * self.hop_length * frames) % self.n_fft).double() * (2 * math.pi / self.n_fft)
        phase = torch.remainder(own_advance + torch.cumsum(deviation, dim=-1), 2 * math.pi)
        return torch.cat([log_magnitude, phase.float()], dim=1)

    def overlap_add(self, spectrum: Tensor) -> Tensor:
        """[B, 2 * bins, F] log-magnitudes and absolute phases -> [B, F * hop_length]; frame-local."""
        num_frames = spectrum.shape[-1]
        log_magnitude, phase = spectrum.chunk(2, dim=1)  # [B, bins, F] each
        magnitude = torch.exp(log_magnitude.clamp(max=self.max_log_magnitude))
        complex_spectrum = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
        frames = (
            torch.fft.irfft(complex_spectrum, n=self.n_fft, dim=1) * self.window[:, None]
        )  # [B, n_fft, F]
        raw_length = (num_frames - 1) * self.hop_length + self.n_fft
        fold = dict(output_size=(1, raw_length), kernel_size=(1, self.n_fft), stride=(1, self.hop_length))
        signal = F.fold(frames, **fold)[:, 0, 0]  # [B, raw_length]
        squared_window = self.window.square()[None, :, None].expand(1, self.n_fft, num_frames)
        envelope = F.fold(squared_window, **fold)[0, 0, 0]  # [raw_length]
        start, stop = self.crop_left, self.crop_left + num_frames * self.hop_length
        return signal[:, start:stop] / envelope[start:stop].clamp(min=self.envelope_floor)
