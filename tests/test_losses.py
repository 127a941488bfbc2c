"""Reconstruction losses and the mel distance: zero at identity, monotonic in noise, finite gradients."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vqaudio.codec.losses import (
    EnvelopeCorrelationLoss,
    LossTerms,
    MultiResolutionSTFTLoss,
    ReconstructionLoss,
    mel_distance,
    mel_resolutions,
)
from vqaudio.config import LossConfig
from vqaudio.features import log_mel_spectrogram

SAMPLE_RATE = 16000
# Smaller resolutions than the defaults keep the tests fast; the arithmetic is the same.
CONFIG = LossConfig(
    stft_fft_sizes=(128, 256, 512),
    stft_hop_sizes=(32, 64, 128),
    stft_win_sizes=(128, 200, 512),
    mel_n_fft=512,
    envelope_weight=1.0,
)


def speech_like(num_samples: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """[B, T] harmonics of a gliding pitch with a slow amplitude envelope."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(num_samples) / SAMPLE_RATE
    signals = []
    for _ in range(batch):
        f0 = 110 + 60 * torch.rand((), generator=generator)
        pitch = f0 * (1 + 0.2 * torch.sin(2 * math.pi * 3 * t))
        phase = 2 * math.pi * torch.cumsum(pitch, 0) / SAMPLE_RATE
        voiced = sum(torch.sin(k * phase) / k for k in range(1, 12))
        envelope = 0.5 + 0.5 * torch.sin(2 * math.pi * 4 * t)
        signals.append(0.1 * envelope * voiced + 0.01 * torch.randn(num_samples, generator=generator))
    return torch.stack(signals)


def test_identical_signals_cost_nothing() -> None:
    loss = ReconstructionLoss(CONFIG, SAMPLE_RATE)
    target = speech_like(8000)
    terms = loss(target.clone(), target)
    assert isinstance(terms, LossTerms)
    for name, value in terms._asdict().items():
        assert value.shape == ()
        assert abs(float(value)) < 1e-6, name


def test_every_term_grows_with_the_noise_level() -> None:
    loss = ReconstructionLoss(CONFIG, SAMPLE_RATE)
    target = speech_like(8000)
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(1))
    levels = [0.001, 0.01, 0.05, 0.2]
    history = [loss(target + level * noise, target) for level in levels]
    for name in LossTerms._fields:
        values = [float(getattr(terms, name)) for terms in history]
        assert all(a < b for a, b in zip(values, values[1:], strict=False)), (name, values)
    distances = [float(mel_distance(target + level * noise, target, SAMPLE_RATE)) for level in levels]
    assert all(a < b for a, b in zip(distances, distances[1:], strict=False)), distances


def test_total_is_the_sum_of_weighted_terms() -> None:
    target = speech_like(8000)
    pred = target + 0.05 * torch.randn(target.shape, generator=torch.Generator().manual_seed(2))
    unit = ReconstructionLoss(dataclasses.replace(CONFIG, waveform_l1_weight=1.0), SAMPLE_RATE)(pred, target)
    doubled = ReconstructionLoss(
        dataclasses.replace(
            CONFIG,
            waveform_l1_weight=2.0,
            stft_weight=2.0,
            mel_weight=2.0,
            envelope_weight=2.0,
        ),
        SAMPLE_RATE,
    )(pred, target)
    torch.testing.assert_close(
        doubled.total, doubled.waveform_l1 + doubled.stft + doubled.mel + doubled.envelope
    )
    torch.testing.assert_close(doubled.envelope, 2 * unit.envelope)
    torch.testing.assert_close(doubled.waveform_l1, 2 * unit.waveform_l1)
    torch.testing.assert_close(doubled.stft, 2 * unit.stft)
    torch.testing.assert_close(doubled.mel, 2 * unit.mel)
    torch.testing.assert_close(unit.waveform_l1, (pred - target).abs().mean())
    only_mel = ReconstructionLoss(
        dataclasses.replace(CONFIG, waveform_l1_weight=0.0, stft_weight=0.0, envelope_weight=0.0),
        SAMPLE_RATE,
    )(pred, target)
    assert float(only_mel.waveform_l1) == 0.0 and float(only_mel.stft) == 0.0
    assert float(only_mel.envelope) == 0.0
    torch.testing.assert_close(only_mel.total, only_mel.mel)


@pytest.mark.parametrize("case", ["speech", "silent target", "silent prediction", "one sample"])
def test_gradients_are_finite(case: str) -> None:
    loss = ReconstructionLoss(CONFIG, SAMPLE_RATE)
    target = speech_like(1 if case == "one sample" else 8000)
    pred = target + 0.1 * torch.randn(target.shape, generator=torch.Generator().manual_seed(3))
    if case == "silent target":
        target = torch.zeros_like(target)
    if case == "silent prediction":
        pred = torch.zeros_like(pred)
    pred.requires_grad_(True)
    terms = loss(pred, target)
    terms.total.backward()
    assert torch.isfinite(terms.total)
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    assert pred.grad.abs().sum() > 0


def test_stft_loss_defaults_and_resolution_checks() -> None:
    default = LossConfig()
    stft = MultiResolutionSTFTLoss(default.stft_fft_sizes, default.stft_hop_sizes, default.stft_win_sizes)
    target = speech_like(8000)
    assert float(stft(target, target)) == 0.0
    assert float(stft(0.5 * target, target)) > 0.1
    assert stft.state_dict() == {}  # windows are derived, not saved
    with pytest.raises(ValueError, match="one entry per resolution"):
        MultiResolutionSTFTLoss((512, 1024), (128,), (512, 1024))
    with pytest.raises(ValueError, match="win <= n_fft"):
        MultiResolutionSTFTLoss((512,), (128,), (1024,))


def test_spectral_losses_are_the_same_whether_or_not_the_target_is_tracked() -> None:
    # The target's STFT is taken outside autograd when it needs no gradient (the training case); the value
    # and pred's gradient must not depend on that, and a target that does need a gradient still gets one.
    losses = [
        MultiResolutionSTFTLoss(CONFIG.stft_fft_sizes, CONFIG.stft_hop_sizes, CONFIG.stft_win_sizes),
        EnvelopeCorrelationLoss(SAMPLE_RATE),
    ]
    target = speech_like(8000)  # the envelope loss needs a 0.39 s segment
    for loss in losses:
        results = []
        for track_target in (False, True):
            pred = (target + 0.05 * speech_like(8000, seed=3)).requires_grad_(True)
            reference = target.clone().requires_grad_(track_target)
            value = loss(pred, reference)
            value.backward()
            assert pred.grad is not None
            assert (reference.grad is not None) == track_target
            results.append((value.detach(), pred.grad))
        torch.testing.assert_close(results[0][0], results[1][0])
        torch.testing.assert_close(results[0][1], results[1][1])
        assert results[0][1].abs().sum() > 0


def test_multi_scale_mel_loss_is_the_mean_of_its_resolutions() -> None:
    target = speech_like(4000)
    pred = target + 0.05 * torch.randn(target.shape, generator=torch.Generator().manual_seed(4))
    mel_only = dataclasses.replace(CONFIG, waveform_l1_weight=0.0, stft_weight=0.0)
    resolutions = [(128, 32, 10), (512, 128, 40)]
    singles = [
        float(
            ReconstructionLoss(
                dataclasses.replace(mel_only, mel_n_fft=n_fft, mel_hop_length=hop, mel_n_mels=n_mels),
                SAMPLE_RATE,
            )(pred, target).mel
        )
        for n_fft, hop, n_mels in resolutions
    ]
    assert abs(singles[0] - singles[1]) > 0.01  # the resolutions see different things
    multi = dataclasses.replace(mel_only, mel_n_fft=(128, 512), mel_hop_length=(32, 128), mel_n_mels=(10, 40))
    assert mel_resolutions(multi) == resolutions
    assert float(ReconstructionLoss(multi, SAMPLE_RATE)(pred, target).mel) == pytest.approx(sum(singles) / 2)
    # a single number is shared by every resolution
    shared = dataclasses.replace(mel_only, mel_n_fft=(256, 512), mel_hop_length=64, mel_n_mels=40)
    assert mel_resolutions(shared) == [(256, 64, 40), (512, 64, 40)]
    with pytest.raises(ValueError, match="one length"):
        mel_resolutions(dataclasses.replace(mel_only, mel_n_fft=(256, 512), mel_hop_length=(64, 128, 256)))


def test_mismatched_shapes_are_rejected() -> None:
    loss = ReconstructionLoss(CONFIG, SAMPLE_RATE)
    with pytest.raises(ValueError, match="same shape"):
        loss(torch.zeros(2, 1000), torch.zeros(2, 999))
    with pytest.raises(ValueError, match="same shape"):
        mel_distance(torch.zeros(1000), torch.zeros(1001), SAMPLE_RATE)


def test_mel_distance() -> None:
    target = speech_like(8000)
    assert float(mel_distance(target, target, SAMPLE_RATE)) == 0.0
    louder = 2 * target
    # A gain of 2 shifts every (unfloored) log-mel value by log 2.
    assert float(mel_distance(louder, target, SAMPLE_RATE)) == pytest.approx(math.log(2), rel=1e-3)
    torch.testing.assert_close(
        mel_distance(louder, target, SAMPLE_RATE), mel_distance(target, louder, SAMPLE_RATE)
    )
    # [T] input works and equals the mean of the per-example distances.
    per_example = [mel_distance(louder[i], target[i], SAMPLE_RATE) for i in range(2)]
    torch.testing.assert_close(mel_distance(louder, target, SAMPLE_RATE), torch.stack(per_example).mean())


def test_log_mel_spectrogram_helper() -> None:
    wav = speech_like(16000, batch=1)[0]
    spectrogram = log_mel_spectrogram(wav.numpy().astype(np.float64), SAMPLE_RATE)
    assert spectrogram.shape == (80, math.ceil(16000 / 256))
    assert spectrogram.dtype == torch.float32
    torch.testing.assert_close(spectrogram, log_mel_spectrogram(wav, SAMPLE_RATE))
    with pytest.raises(TypeError, match="float audio"):
        log_mel_spectrogram(np.zeros(100, dtype=np.int16), SAMPLE_RATE)


def test_envelope_loss_reads_like_stoi_on_real_speech() -> None:
    """1 - the envelope loss is STOI computed at 16 kHz instead of 10 kHz, on whole segments: on a LibriVox
    clip with white noise at four levels it stays within 0.02 of pystoi's STOI (0.001-0.010 measured)."""
    pytest.importorskip("pystoi")
    from vqaudio.evaluation.metrics import stoi
    from vqaudio.io.audio import load_audio

    clip = sorted((Path(__file__).parents[1] / "vqaudio" / "examples").glob("*.flac"))[0]
    target = load_audio(clip, SAMPLE_RATE).float()
    noise = target.std() * torch.randn(target.shape, generator=torch.Generator().manual_seed(4))
    loss = EnvelopeCorrelationLoss(SAMPLE_RATE)
    ours, reference = [], []
    for level in (0.1, 0.3, 1.0, 3.0):
        pred = target + level * noise
        ours.append(1 - float(loss(pred[None], target[None])))
        reference.append(stoi(pred.numpy(), target.numpy(), SAMPLE_RATE))
    print(f"\n1 - envelope loss {np.round(ours, 3).tolist()}; pystoi {np.round(reference, 3).tolist()}")
    assert all(a > b for a, b in zip(ours, ours[1:], strict=False))
    assert max(abs(a - b) for a, b in zip(ours, reference, strict=True)) < 0.02


def test_envelope_loss_ignores_gain_and_needs_one_segment() -> None:
    loss = EnvelopeCorrelationLoss(SAMPLE_RATE)
    assert loss.min_seconds == pytest.approx((512 + 29 * 200) / SAMPLE_RATE)
    target = speech_like(8000)
    assert float(loss(3 * target, target)) < 1e-4  # STOI scales the output to the reference's energy
    smeared = torch.nn.functional.avg_pool1d(target[:, None], 401, 1, 200)[:, 0]
    assert float(loss(smeared, target)) > 0.05
    short = speech_like(int(loss.min_seconds * SAMPLE_RATE) - 1)
    assert float(loss(short + 0.5, short)) == 0.0  # no whole segment: nothing to score
    with pytest.raises(ValueError, match="at least 10 kHz"):
        EnvelopeCorrelationLoss(8000)
