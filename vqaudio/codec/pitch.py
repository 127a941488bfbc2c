"""Fundamental frequency (F0) and voicing of speech frames, each frame on its own, and the pitch row of tokens.

The pitch row (``model.pitch.levels > 0``) sends each token frame's F0 and voicing as one code, as Codec2
sends its pitch (``encode_pitch`` / ``decode_pitch``); the decoder's harmonic excitation follows it
(``pitch_at_frames`` carries it to the iSTFT frames). Without a pitch row, the estimate is the training target
of a decoder that predicts its own F0 (``decoder.istft_excitation: harmonic``). It runs on every training batch, so it is vectorised torch, not an
offline tracker; and it is frame-local (no example-wide level or smoothing), so a file encoded in windows gets
the same values as the whole file.

The period is the first dip of YIN's cumulative-mean-normalised difference (de Cheveigne & Kawahara, 2002)
under an absolute threshold, or nearly as deep as the deepest dip, refined by a parabola. A frame is voiced
when that dip is deep, the normalised cross-correlation at the period (NCCF, as in RAPT, Talkin 1995) is
high, the period is inside the search range, and the frame is above a silence level.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from vqaudio.config import PitchConfig
from vqaudio.features import float64_constant, frame_signal

MIN_F0_HZ = 50.0
MAX_F0_HZ = 550.0
VOICING_THRESHOLD = 0.7  # NCCF at the period; with VOICED_DIP, 86% frame agreement with pYIN on 8 clips
SILENCE_DBFS = -55.0  # quieter frames (mean square, dB re full scale) are unvoiced
DIP_THRESHOLD = 0.15  # YIN's absolute threshold: the first dip under it is the period
DIP_MARGIN = 0.05  # or the first dip this close to the deepest one
VOICED_DIP = 0.35  # a voiced frame's dip is at least this deep


class Pitch(NamedTuple):
    """f0: [B, F] Hz (the estimate also where unvoiced; use ``voiced``); voiced: [B, F] bool."""

    f0: Tensor
    voiced: Tensor


def estimate_pitch(
    frames: Tensor,
    sample_rate: int,
    min_f0: float = MIN_F0_HZ,
    max_f0: float = MAX_F0_HZ,
    voicing_threshold: float | None = None,
    voiced_dip: float | None = None,
    fft_size: int | None = None,
) -> Pitch:
    """F0 and voicing of each frame.

    Args:
        frames: [B, F, L] audio frames (e.g. ``ISTFTHead.frames(wav)``); ``L`` should hold two periods of
            ``min_f0``.
        voicing_threshold, voiced_dip: the voicing decision's NCCF and dip thresholds (None:
            ``VOICING_THRESHOLD`` and ``VOICED_DIP``).
        sample_rate: Hz.
        min_f0, max_f0: the search range, Hz.
        fft_size: length of the FFTs of the autocorrelation (None: ``2 * L``); any size from ``L + max_lag + 2``
            gives the same correlations up to float64 rounding (the ONNX export takes a power of two, which
            onnxruntime's FFT runs fast).
    Returns:
        Pitch with f0 and voiced [B, F].
    """
    if frames.dim() != 3:
        raise ValueError(f"estimate_pitch() expects frames [B, F, L], got shape {tuple(frames.shape)}")
    length = frames.shape[-1]
    min_lag = max(2, int(sample_rate / max_f0))
    max_lag = int(sample_rate / min_f0) + 1
    if length < 2 * int(sample_rate / min_f0) or max_lag <= min_lag + 2:
        raise ValueError(
            f"estimate_pitch(): frames of {length} samples are too short for F0 down to {min_f0} Hz at "
            f"{sample_rate} Hz; use frames of at least {2 * int(sample_rate / min_f0)} samples"
        )
    x = frames.double()
    x = x - x.mean(-1, keepdim=True)
    size = 2 * length if fft_size is None else fft_size
    if size < length + max_lag + 2:
        raise ValueError(
            f"estimate_pitch(): fft_size {size} is below {length + max_lag + 2}, which would wrap"
        )
    spectrum = torch.fft.rfft(x, n=size)
    correlation = torch.fft.irfft(spectrum.abs().square(), n=size)[..., : max_lag + 2]  # sum x[n] x[n+lag]
    energy = torch.cumsum(x.square(), dim=-1)
    total = energy[..., -1:]
    lags = torch.arange(max_lag + 2, device=x.device)
    head_energy = torch.gather(energy, -1, (length - 1 - lags).clamp(min=0).expand(*x.shape[:-1], -1))
    tail_energy = total - torch.cat([torch.zeros_like(total), energy[..., : max_lag + 1]], dim=-1)
    nccf = correlation / torch.sqrt(head_energy * tail_energy).clamp(min=1e-12)

    # YIN's cumulative-mean-normalised difference (de Cheveigne & Kawahara, 2002): d(lag) is small for a
    # period; dividing by its mean over shorter lags keeps short lags (a strong first formant) from winning.
    difference = (head_energy + tail_energy - 2 * correlation).clamp(min=0)
    difference[..., 0] = 0
    running_mean = torch.cumsum(difference, dim=-1) / lags.clamp(min=1)
    normalised = torch.where(
        lags > 0, difference / running_mean.clamp(min=1e-12), torch.ones_like(difference)
    )
    inner = normalised[..., min_lag : max_lag + 1]  # lags min_lag .. max_lag
    left, right = normalised[..., min_lag - 1 : max_lag], normalised[..., min_lag + 1 : max_lag + 2]
    is_dip = (inner <= left) & (inner <= right)
    # the first dip under the threshold, or nearly as deep as the deepest (which is often at a multiple of
    # the period when no dip reaches the threshold)
    deepest = torch.where(is_dip, inner, torch.full_like(inner, math.inf)).min(dim=-1, keepdim=True).values
    below = is_dip & (inner < torch.maximum(deepest + DIP_MARGIN, torch.full_like(deepest, DIP_THRESHOLD)))
    index = below.double().argmax(dim=-1, keepdim=True)  # a frame without dips gets lag min_lag, unvoiced
    value = torch.gather(inner, -1, index)[..., 0]
    before = torch.gather(left, -1, index)[..., 0]
    after = torch.gather(right, -1, index)[..., 0]
    curvature = before - 2 * value + after
    offset = torch.where(curvature > 1e-9, 0.5 * (before - after) / curvature, torch.zeros_like(value))
    period = min_lag + index[..., 0].double() + offset.clamp(-0.5, 0.5)
    f0 = sample_rate / period
    inside = (f0 > min_f0) & (f0 < max_f0)  # a period at the edge of the search is not trusted
    f0 = f0.clamp(min_f0, max_f0)
    periodicity = torch.gather(nccf[..., min_lag : max_lag + 1], -1, index)[..., 0]

    loud = 10 * torch.log10(total[..., 0] / length + 1e-12) >= SILENCE_DBFS  # [B, F]
    voicing_threshold = VOICING_THRESHOLD if voicing_threshold is None else voicing_threshold
    voiced_dip = VOICED_DIP if voiced_dip is None else voiced_dip
    # a tone above max_f0 (singing up to ~1 kHz) is as periodic at twice its period, which lies in range: if
    # half the period (below the search range) correlates as well, the pitch is above the range, not in it
    half = torch.round(period / 2).long().clamp(min=1)
    above_range = (half < min_lag) & (torch.gather(nccf, -1, half[..., None])[..., 0] >= voicing_threshold)
    voiced = (periodicity >= voicing_threshold) & (value < voiced_dip) & inside & loud & ~above_range
    return Pitch(f0.to(frames.dtype), voiced)


# --------------------------------------------------------------------------------------------------
# The pitch row of tokens
# --------------------------------------------------------------------------------------------------
def pitch_window(sample_rate: int, min_f0: float) -> int:
    """Samples the estimator reads per frame: two periods of the lowest F0."""
    return 2 * int(sample_rate / min_f0)


def encode_pitch(wav: Tensor, hop_length: int, sample_rate: int, config: PitchConfig) -> Tensor:
    """Audio -> one pitch code per token frame.

    Args:
        wav: [B, F * hop_length] audio (padded to whole frames).
        hop_length: samples per token frame.
        sample_rate: Hz.
        config: levels, F0 range and voicing thresholds.
    Returns:
        [B, F] int64: 0 where unvoiced, else 1 + the log-F0 step (1..levels-1). Frame ``f`` is estimated on
        ``pitch_window`` samples centred on its span's centre, so it is frame-local (chunked == whole).
    """
    window = pitch_window(sample_rate, config.min_f0)
    frames = frame_signal(wav, window, hop_length, pitch_padding(hop_length, sample_rate, config.min_f0))
    return pitch_codes_of_frames(frames, sample_rate, config)  # frames: [B, F, window]


def pitch_padding(hop_length: int, sample_rate: int, min_f0: float) -> int:
    """Samples before a token frame's first that its pitch window starts: frame ``f`` reads
    ``[f * hop - padding, f * hop - padding + pitch_window)``, centred on ``f * hop + hop / 2``."""
    return pitch_window(sample_rate, min_f0) // 2 - hop_length // 2


def pitch_codes_of_frames(
    frames: Tensor, sample_rate: int, config: PitchConfig, fft_size: int | None = None
) -> Tensor:
    """[B, F, pitch_window] frames (``encode_pitch``'s) -> [B, F] int64 pitch codes; ``fft_size`` as in
    ``estimate_pitch``."""
    estimate = estimate_pitch(
        frames,
        sample_rate,
        config.min_f0,
        config.max_f0,
        config.voicing_threshold,
        config.voiced_dip,
        fft_size,
    )
    low, high = math.log(config.min_f0), math.log(config.max_f0)
    position = (torch.log(estimate.f0.double()) - low) / (high - low) * (config.levels - 2)
    step = torch.round(position).long().clamp(0, config.levels - 2)
    return torch.where(estimate.voiced, step + 1, torch.zeros_like(step))


def decode_pitch(codes: Tensor, config: PitchConfig) -> tuple[Tensor, Tensor]:
    """[B, F] pitch codes -> (log F0 in natural-log Hz [B, F] float32, voiced [B, F] bool).

    Unvoiced frames get the log F0 of the middle of the range (a placeholder the decoder can ignore).
    """
    low, high = math.log(config.min_f0), math.log(config.max_f0)
    voiced = codes > 0
    step = (codes - 1).clamp(min=0).double()
    # float64 tensors, not Python floats, which an ONNX export turns into float32 constants
    log_f0 = float64_constant(low, step) + step / (config.levels - 2) * float64_constant(high - low, step)
    log_f0 = torch.where(voiced, log_f0, torch.full_like(log_f0, 0.5 * (low + high)))
    return log_f0.float(), voiced


def subframe_offsets(factor: int, shift: float = 0.0) -> list[float]:
    """Where the ``factor`` sub-frames of a token frame take their pitch, in token frames from its centre:
    ``(j + 0.5) / factor - 0.5`` (their own centres), plus ``shift``."""
    return [(sub + 0.5) / factor - 0.5 + shift for sub in range(factor)]


def frames_read_back(factor: int, shift: float = 0.0) -> int:
    """How many token frames before its own ``pitch_at_frames`` reads for a frame's sub-frames (at least 1)."""
    return max(1, -math.floor(min(subframe_offsets(factor, shift))))


def pitch_at_frames(log_f0: Tensor, voiced: Tensor, factor: int, shift: float = 0.0) -> tuple[Tensor, Tensor]:
    """Token-frame pitch [B, F] -> pitch at ``factor`` frames per token frame [B, F * factor].

    Sub-frame ``j`` of token frame ``f`` takes the pitch at ``f + offset`` (``subframe_offsets``; ``shift`` moves
    it, in token frames: an iSTFT head whose windows are not centred on their frames wants the pitch at the
    windows' centres). Voicing is the nearest token frame's; log F0 is interpolated linearly from the nearest
    frame towards the other neighbour when both are voiced, and held otherwise. Frames before the first and
    after the last repeat them. Reads frames ``f + floor(offset)`` .. ``f + ceil(offset)`` only.
    """
    if factor == 1 and shift == 0:
        return log_f0, voiced
    # In float64, rounded to float32 once at the end: the F0 is summed into the excitation's phase over every
    # frame, so one ulp of difference (an FMA in another runtime) would grow into an audible phase drift.
    dtype, log_f0 = log_f0.dtype, log_f0.double()
    pitch_pieces, voiced_pieces = [], []
    for offset in subframe_offsets(factor, shift):
        nearest = 0 if abs(offset) <= 0.5 else math.ceil(offset - 0.5)  # the token frame nearest the offset
        remainder = offset - nearest  # in [-0.5, 0.5]
        anchor, anchor_voiced = _frames_moved(log_f0, nearest), _frames_moved(voiced, nearest)
        step = -1 if remainder < 0 else 1
        neighbour, neighbour_voiced = (
            _frames_moved(log_f0, nearest + step),
            _frames_moved(voiced, nearest + step),
        )
        target = torch.where(neighbour_voiced & anchor_voiced, neighbour, anchor)
        pitch_pieces.append(anchor + abs(remainder) * (target - anchor))
        voiced_pieces.append(anchor_voiced)
    upsampled = torch.stack(pitch_pieces, dim=-1).flatten(1).to(dtype)  # [B, F * factor]
    return upsampled, torch.stack(voiced_pieces, dim=-1).flatten(1)


def _frames_moved(values: Tensor, by: int) -> Tensor:
    """[B, F] -> [B, F] whose frame ``f`` is ``values[:, f + by]``, the first or last frame repeated past the
    ends."""
    if by == 0:
        return values
    num_frames = values.shape[-1]
    index = torch.arange(num_frames, device=values.device).add(by).clamp(0, num_frames - 1)
    return values[:, index]
