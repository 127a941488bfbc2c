"""Reconstruction losses: waveform L1, multi-resolution STFT loss, log-mel L1 (at one resolution or several)
and band-envelope correlation; and the mel distance metric.

Multi-resolution STFT loss (spectral convergence + log-magnitude L1) from Parallel WaveGAN (Yamamoto et al.,
2020, https://arxiv.org/abs/1910.11480); log-mel L1 as in HiFi-GAN (Kong et al., 2020) and DAC (Kumar et al.,
2023). The quantizer's own loss is added by the training loop (``LossConfig.quantizer_weight``).

The envelope-correlation loss is STOI's intermediate measure made differentiable (Taal et al., 2011; trained
on as in Kolbaek et al., 2018, https://arxiv.org/abs/1805.00226): the correlation, over 384 ms segments, of
one-third-octave band envelopes between reference and output, after STOI's normalisation and clipping. The
multi-resolution losses score each frame's spectrum; this scores how each band's loudness rises and falls,
which is what intelligibility follows (``torch_stoi`` implements the same but imports torchaudio).

Adversarial terms (with ``vqaudio.codec.discriminators``): least-squares GAN losses (Mao et al., 2017, as
in HiFi-GAN) and feature matching (Larsen et al., 2016), each feature map's L1 divided by the mean magnitude
of the real activations as in EnCodec, so the term keeps its scale while the discriminators' activations grow.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from vqaudio.codec.discriminators import Judgement
from vqaudio.config import LossConfig
from vqaudio.errors import InputError
from vqaudio.features import LogMel

MAGNITUDE_FLOOR = 1e-7  # on |X|^2: keeps sqrt and log differentiable in digital silence

# mel_distance settings: the numbers eval reports and tests compare; fixed so results stay comparable.
MEL_DISTANCE_N_FFT = 1024
MEL_DISTANCE_HOP_LENGTH = 256
MEL_DISTANCE_N_MELS = 80


class LossTerms(NamedTuple):
    """Weighted loss terms (each already multiplied by its ``LossConfig`` weight); ``total`` is their sum."""

    total: Tensor
    waveform_l1: Tensor
    stft: Tensor
    mel: Tensor
    envelope: Tensor


def _check_pair(pred: Tensor, target: Tensor, caller: str) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"{caller}: pred and target must have the same shape, got {tuple(pred.shape)} and "
            f"{tuple(target.shape)}; crop both to the shorter length"
        )
    if pred.dim() not in (1, 2) or pred.shape[-1] < 1:
        raise ValueError(f"{caller}: expects audio [B, T] or [T], got shape {tuple(pred.shape)}")


class MultiResolutionSTFTLoss(nn.Module):
    """Mean over resolutions of spectral convergence + log-magnitude L1.

    Args:
        fft_sizes, hop_sizes, win_sizes: one entry per resolution (``win <= n_fft``).
    """

    def __init__(
        self, fft_sizes: tuple[int, ...], hop_sizes: tuple[int, ...], win_sizes: tuple[int, ...]
    ) -> None:
        super().__init__()
        if not len(fft_sizes) == len(hop_sizes) == len(win_sizes) or not fft_sizes:
            raise InputError(
                f"stft_fft_sizes, stft_hop_sizes and stft_win_sizes need one entry per resolution, got "
                f"{list(fft_sizes)}, {list(hop_sizes)}, {list(win_sizes)}"
            )
        self.resolutions = list(zip(fft_sizes, hop_sizes, win_sizes, strict=True))
        for n_fft, hop, win in self.resolutions:
            if hop < 1 or not 1 <= win <= n_fft:
                raise InputError(
                    f"STFT resolution needs hop >= 1 and 1 <= win <= n_fft, got {n_fft}/{hop}/{win}"
                )
        for index, win in enumerate(win_sizes):
            self.register_buffer(f"window_{index}", torch.hann_window(win), persistent=False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """pred, target [B, T] -> scalar."""
        total = pred.new_zeros((), dtype=torch.float32)
        for index, (n_fft, hop, _) in enumerate(self.resolutions):
            pred_spec, target_spec = _paired_stft(pred, target, n_fft, hop, getattr(self, f"window_{index}"))
            pred_mag, target_mag = (
                _power(spec).clamp(min=MAGNITUDE_FLOOR).sqrt() for spec in (pred_spec, target_spec)
            )
            spectral_convergence = torch.linalg.vector_norm(target_mag - pred_mag) / torch.linalg.vector_norm(
                target_mag
            )
            log_magnitude = (target_mag.log() - pred_mag.log()).abs().mean()
            total = total + spectral_convergence + log_magnitude
        return total / len(self.resolutions)


def _power(spectrum: Tensor) -> Tensor:
    """|X|^2 without |X| (whose gradient is undefined at 0)."""
    return spectrum.real.square() + spectrum.imag.square()


def _paired_stft(
    pred: Tensor, target: Tensor, n_fft: int, hop: int, window: Tensor, center: bool = True
) -> tuple[Tensor, Tensor]:
    """Complex spectra [B, bins, frames] of pred and target (``center=False``: frames start at sample 0).

    A reference that needs no gradient (the training target) is transformed outside autograd: stacking it
    with ``pred`` into one STFT made the backward pass transform it too, which doubled the loss's backward
    FFT work (``benchmarks/bench_losses.py``); the values and gradients are the same.
    """

    def stft(audio: Tensor) -> Tensor:
        return torch.stft(
            audio.reshape(-1, audio.shape[-1]).float(),
            n_fft=n_fft,
            hop_length=hop,
            win_length=window.shape[0],
            window=window,
            center=center,
            pad_mode="constant",  # reflection needs T > n_fft / 2; zeros work for any length
            return_complex=True,
        )

    with torch.set_grad_enabled(torch.is_grad_enabled() and target.requires_grad):
        target_spec = stft(target)
    return stft(pred), target_spec


class EnvelopeCorrelationLoss(nn.Module):
    """1 - mean correlation of one-third-octave band envelopes over 384 ms segments (STOI's, differentiable).

    STOI's analysis at the audio's own rate: 25 ms Hann frames every 12.5 ms, 15 bands centred 150 Hz to
    3.8 kHz, segments of 30 frames, the output's envelope scaled to the reference's energy and clipped at
    -15 dB signal-to-distortion. Frames more than 40 dB below the loudest frame of their clip are silence
    (STOI drops them); a segment counts by its share of non-silent frames. In [0, 2]; 0 when every band
    envelope follows the reference's.

    Args:
        sample_rate: of the audio compared.
    """

    NUM_BANDS = 15
    LOWEST_CENTRE_HZ = 150.0
    SEGMENT_FRAMES = 30
    CLIP_DB = 15.0
    DYNAMIC_RANGE_DB = 40.0
    bands: Tensor  # [J, F] one-third-octave band of each STFT bin
    window: Tensor

    def __init__(self, sample_rate: int) -> None:
        super().__init__()
        self.sample_rate = sample_rate
        self.win_length = round(0.025 * sample_rate)
        self.hop_length = self.win_length // 2
        self.n_fft = 1 << (self.win_length - 1).bit_length()
        frequencies = torch.arange(self.n_fft // 2 + 1) * sample_rate / self.n_fft
        centres = self.LOWEST_CENTRE_HZ * 2 ** (torch.arange(self.NUM_BANDS) / 3)
        low, high = centres * 2 ** (-1 / 6), centres * 2 ** (1 / 6)
        if high[-1] > sample_rate / 2:
            raise InputError(
                f"EnvelopeCorrelationLoss needs a sample rate of at least 10 kHz, got {sample_rate}"
            )
        bands = ((frequencies >= low[:, None]) & (frequencies < high[:, None])).float()  # [J, F]
        self.register_buffer("bands", bands, persistent=False)
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)

    @property
    def min_seconds(self) -> float:
        """The shortest clip with one whole segment."""
        return (self.n_fft + (self.SEGMENT_FRAMES - 1) * self.hop_length) / self.sample_rate

    def _segments(self, power: Tensor) -> Tensor:
        """Band envelopes [B, J, M] cut into overlapping segments [B, J, S, N]."""
        return (self.bands @ power + MAGNITUDE_FLOOR).sqrt().unfold(-1, self.SEGMENT_FRAMES, 1)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """
        Args:
            pred: [B, T] output; target: [B, T] reference.
        Returns:
            scalar tensor; 0 for clips shorter than one segment (``min_seconds``).
        """
        _check_pair(pred, target, "EnvelopeCorrelationLoss")
        pred, target = pred.reshape(-1, pred.shape[-1]), target.reshape(-1, target.shape[-1])
        num_frames = (target.shape[-1] - self.n_fft) // self.hop_length + 1
        if num_frames < self.SEGMENT_FRAMES:  # nothing to correlate (a short validation utterance)
            return pred.new_zeros(())
        pred_spectrum, target_spectrum = _paired_stft(
            pred, target, self.n_fft, self.hop_length, self.window, center=False
        )
        target_power = _power(target_spectrum)
        with torch.no_grad():
            level = 10 * target_power.sum(1).clamp(min=1e-20).log10()  # [B, M] frame energy in dB
            speech = (level > level.amax(-1, keepdim=True) - self.DYNAMIC_RANGE_DB).to(target.dtype)
            weight = speech.unfold(-1, self.SEGMENT_FRAMES, 1).mean(-1)  # [B, S]
        reference = self._segments(target_power)
        output = self._segments(_power(pred_spectrum))
        scale = reference.norm(dim=-1, keepdim=True) / output.norm(dim=-1, keepdim=True)
        output = torch.minimum(output * scale, reference * (1 + 10 ** (self.CLIP_DB / 20)))
        reference = reference - reference.mean(-1, keepdim=True)
        output = output - output.mean(-1, keepdim=True)
        correlation = (reference * output).sum(-1) / (
            reference.norm(dim=-1) * output.norm(dim=-1) + MAGNITUDE_FLOOR
        )  # [B, J, S]
        weight = weight[:, None, :].expand_as(correlation)
        return 1 - (correlation * weight).sum() / weight.sum().clamp(min=MAGNITUDE_FLOOR)


def mel_resolutions(config: LossConfig) -> list[tuple[int, int, int]]:
    """The mel loss's ``(n_fft, hop_length, n_mels)`` per resolution; a single number is shared by all."""
    settings = {
        "mel_n_fft": config.mel_n_fft,
        "mel_hop_length": config.mel_hop_length,
        "mel_n_mels": config.mel_n_mels,
    }
    lengths = {len(v) for v in settings.values() if isinstance(v, tuple)}
    if len(lengths) > 1 or 0 in lengths:
        raise InputError(
            "loss.mel_n_fft, mel_hop_length and mel_n_mels: lists must be non-empty and of one length, got "
            + ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in settings.items())
        )
    count = lengths.pop() if lengths else 1
    columns = [v if isinstance(v, tuple) else (v,) * count for v in settings.values()]
    return list(zip(*columns, strict=True))


class ReconstructionLoss(nn.Module):
    """Weighted waveform L1, multi-resolution STFT, log-mel L1 and band-envelope correlation.

    Args:
        config: weights and analysis settings.
        sample_rate: of the audio compared (for the mel filterbank).
    """

    def __init__(self, config: LossConfig, sample_rate: int) -> None:
        super().__init__()
        self.config = config
        self.stft_loss = MultiResolutionSTFTLoss(
            config.stft_fft_sizes, config.stft_hop_sizes, config.stft_win_sizes
        )
        self.log_mels = nn.ModuleList(
            LogMel(sample_rate, n_fft, hop_length, n_mels)
            for n_fft, hop_length, n_mels in mel_resolutions(config)
        )
        self.envelope_loss = EnvelopeCorrelationLoss(sample_rate) if config.envelope_weight else None

    def forward(self, pred: Tensor, target: Tensor) -> LossTerms:
        """
        Args:
            pred: [B, T] reconstruction.
            target: [B, T] reference.
        Returns:
            LossTerms of scalars; terms with weight 0 are not computed (they are 0).
        """
        _check_pair(pred, target, "ReconstructionLoss")
        # float32 under mixed precision: bfloat16 spectra and mel products lose the quiet bins the log
        # terms weigh, and CPU FFTs take no half types (vqaudio.training.precision)
        with torch.autocast(pred.device.type, enabled=False):
            return self._terms(pred.float(), target.float())

    def _terms(self, pred: Tensor, target: Tensor) -> LossTerms:
        config = self.config
        zero = pred.new_zeros(())
        waveform_l1 = (
            config.waveform_l1_weight * (pred - target).abs().mean() if config.waveform_l1_weight else zero
        )
        stft = config.stft_weight * self.stft_loss(pred, target) if config.stft_weight else zero
        mel = zero
        if config.mel_weight:
            per_resolution = [(log_mel(pred) - log_mel(target)).abs().mean() for log_mel in self.log_mels]
            mel = config.mel_weight * torch.stack(per_resolution).mean()
        envelope = zero
        if self.envelope_loss is not None:
            envelope = config.envelope_weight * self.envelope_loss(pred, target)
        return LossTerms(waveform_l1 + stft + mel + envelope, waveform_l1, stft, mel, envelope)


def discriminator_loss(real: list[Judgement], fake: list[Judgement]) -> Tensor:
    """Least squares: real logits towards 1, fake towards 0; mean over discriminators."""
    terms = [
        (1 - r.logits).square().mean() + f.logits.square().mean() for r, f in zip(real, fake, strict=True)
    ]
    return torch.stack(terms).mean()


def generator_adversarial_loss(fake: list[Judgement]) -> Tensor:
    """Least squares: the decoder pushes the discriminators' logits on its output towards 1."""
    return torch.stack([(1 - f.logits).square().mean() for f in fake]).mean()


def feature_matching_loss(real: list[Judgement], fake: list[Judgement]) -> Tensor:
    """Mean over all layers of all discriminators of ``|real - fake|_1 / mean|real|`` (real detached)."""
    terms = []
    for r, f in zip(real, fake, strict=True):
        for real_map, fake_map in zip(r.features, f.features, strict=True):
            real_map = real_map.detach()
            terms.append((real_map - fake_map).abs().mean() / real_map.abs().mean().clamp(min=1e-5))
    return torch.stack(terms).mean()


def mel_distance(pred: Tensor, target: Tensor, sample_rate: int) -> Tensor:
    """Mean absolute difference of log-mel spectrograms: the reconstruction number eval and the tests report.

    Settings are fixed so numbers stay comparable across models and runs: n_fft 1024, hop 256, 80 Slaney
    mel bands from 0 Hz to Nyquist, magnitude (not power) spectra, natural log floored at 1e-5, non-causal
    framing (``vqaudio.features.LogMel``); the mean is over bands, frames and batch. Lower is better; 0 for
    identical audio.

    Args:
        pred, target: [B, T] or [T] float audio, same shape, at ``sample_rate``.
    Returns:
        scalar tensor.
    """
    _check_pair(pred, target, "mel_distance")
    log_mel = LogMel(sample_rate, MEL_DISTANCE_N_FFT, MEL_DISTANCE_HOP_LENGTH, MEL_DISTANCE_N_MELS).to(
        pred.device
    )
    return (log_mel(pred.float()) - log_mel(target.float())).abs().mean()
