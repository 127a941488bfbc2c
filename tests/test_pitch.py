"""The F0 estimator that teaches the harmonic excitation (vqaudio.codec.pitch)."""

from __future__ import annotations

import math

import pytest
import torch

from vqaudio.codec.pitch import estimate_pitch

RATE = 16000


def frames_of(wav: torch.Tensor, length: int = 640, hop: int = 160) -> torch.Tensor:
    return wav.unfold(-1, length, hop)[None]


@pytest.mark.parametrize("f0", [62.0, 98.5, 150.0, 233.3, 420.0])
def test_harmonic_signals_get_their_f0_within_half_a_percent(f0: float) -> None:
    """Decaying harmonics with random phases, so the strongest correlation peak is not at one period only."""
    generator = torch.Generator().manual_seed(int(f0))
    t = torch.arange(RATE, dtype=torch.float64) / RATE
    harmonics = range(1, int(7000 / f0))
    phases = torch.rand(len(harmonics), generator=generator) * 2 * math.pi
    wav = sum(
        0.7**k * torch.sin(2 * math.pi * f0 * k * t + p) for k, p in zip(harmonics, phases, strict=False)
    )
    pitch = estimate_pitch(frames_of(wav.float()), RATE)
    assert bool(pitch.voiced.all())
    assert float((pitch.f0 / f0 - 1).abs().max()) < 0.005


def test_a_missing_fundamental_is_still_found() -> None:
    """Harmonics 2-6 only (as through a telephone band): the period is still the fundamental's."""
    t = torch.arange(RATE) / RATE
    wav = sum(torch.sin(2 * math.pi * 120.0 * k * t + k) for k in range(2, 7))
    pitch = estimate_pitch(frames_of(wav), RATE)
    assert float((pitch.f0 / 120.0 - 1).abs().median()) < 0.005


def test_noise_and_silence_are_unvoiced() -> None:
    generator = torch.Generator().manual_seed(0)
    noise = 0.1 * torch.randn(RATE, generator=generator)
    assert float(estimate_pitch(frames_of(noise), RATE).voiced.float().mean()) < 0.05
    assert not bool(estimate_pitch(frames_of(torch.zeros(RATE)), RATE).voiced.any())


def test_quiet_frames_are_unvoiced_and_every_frame_is_judged_alone() -> None:
    """A faint hum (-63 dBFS) after a loud vowel is not voiced; and a frame's estimate does not depend on the
    other frames of its example (a file encoded in windows gets what the whole file gets)."""
    t = torch.arange(RATE) / RATE
    wav = torch.sin(2 * math.pi * 150.0 * t)
    wav[RATE // 2 :] *= 1e-3  # -60 dB
    frames = frames_of(wav)
    whole = estimate_pitch(frames, RATE)
    assert bool(whole.voiced[0, :40].all()) and not bool(whole.voiced[0, -40:].any())
    alone = estimate_pitch(frames[:, 45:], RATE)
    assert torch.equal(alone.voiced, whole.voiced[:, 45:]) and torch.equal(alone.f0, whole.f0[:, 45:])


def test_bad_input_names_the_fix() -> None:
    with pytest.raises(ValueError, match=r"frames \[B, F, L\]"):
        estimate_pitch(torch.zeros(640), RATE)
    with pytest.raises(ValueError, match="at least 640 samples"):
        estimate_pitch(torch.zeros(1, 4, 200), RATE)
