"""Time alignment of a decoded signal to its reference, to remove a codec's delay before scoring.

Codecs run through command-line tools add a delay (look-ahead, resampler filters, frame buffering) that
sample-wise metrics (SI-SDR, STFT distance) would count as distortion. The lag is found by cross-correlation
over the whole signal within +-50 ms: first of log-mel band trajectories at 1 ms resolution (robust for
parametric codecs such as Codec2, whose output does not follow the input waveform), then of the waveforms
within 1 ms of that (sample-exact for waveform codecs). The decoded signal is shifted by the lag and cropped
or zero-padded to the reference length::

    reference   |r0 r1 r2 r3 r4 r5 ...           lag = +2: the decoded signal is late by two samples
    decoded     |d0 d1 r0' r1' r2' r3' ...       -> drop d0 d1, pad zeros at the end to the reference length

Only integer lags are searched: a fractional residual delay (< half a sample) costs some SI-SDR at high
frequencies but does not affect the spectral metrics, PESQ or STOI (which align again internally).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from vqaudio.features import LogMel

MAX_LAG_SECONDS = 0.05  # codec delays are a few to a few tens of milliseconds
SPECTRAL_HOP_SECONDS = 0.001  # resolution of the coarse search, and half-width of the fine waveform search
SPECTRAL_WINDOW_SECONDS = 0.032  # analysis window of the coarse search (rounded up to a power of two)
SPECTRAL_N_MELS = 40
LOG_RANGE = 7.0  # natural log: bands are floored ~60 dB below the loudest

METHOD = (
    f"the lag is searched within +-{MAX_LAG_SECONDS * 1000:g} ms over the whole utterance, first by "
    f"cross-correlating log-mel band trajectories ({SPECTRAL_N_MELS} bands, "
    f"{SPECTRAL_WINDOW_SECONDS * 1000:g} ms windows every {SPECTRAL_HOP_SECONDS * 1000:g} ms, summed over "
    "bands; robust for Codec2, which does not keep the waveform), then by cross-correlating the waveforms "
    f"within {SPECTRAL_HOP_SECONDS * 1000:g} ms of that lag (sample-exact for waveform codecs such as Opus); "
    "the decoded signal is shifted by the lag, then cropped or zero-padded to the reference length"
)


class Alignment(NamedTuple):
    """A decoded signal aligned to its reference.

    audio: [T_ref] the decoded signal shifted by ``lag`` and cropped / zero-padded to the reference length.
    lag: samples by which the decoded signal was late (negative: early); ``audio[n] = decoded[n + lag]``.
    correlation: normalised cross-correlation at ``lag``, in [-1, 1] (0 when either signal is silent).
    """

    audio: np.ndarray
    lag: int
    correlation: float


def estimate_lag(
    decoded: np.ndarray, reference: np.ndarray, sample_rate: int, max_lag_seconds: float = MAX_LAG_SECONDS
) -> tuple[int, float]:
    """The delay of ``decoded`` relative to ``reference``, in two stages.

    1. coarse, to SPECTRAL_HOP_SECONDS: the lag that maximises the cross-correlation of the log-mel band
       trajectories, summed over bands (40 bands, 32 ms windows every 1 ms, floored LOG_RANGE below the peak,
       each band's mean removed). Spectral envelopes survive codecs that do not keep the waveform: Codec2 is
       parametric, its output is not phase-aligned with the input, and waveform or amplitude-envelope
       correlation locks onto pitch pulses and loud syllables instead of the codec delay;
    2. fine: the waveform cross-correlation peak within one hop of the coarse lag, which makes waveform codecs
       (Opus, neural codecs) sample-exact.

    Args:
        decoded: [T_dec] float audio.
        reference: [T_ref] float audio at the same rate.
        sample_rate: of both, in Hz.
        max_lag_seconds: largest delay searched either way.
    Returns:
        (lag in samples, normalised waveform correlation at that lag); (0, 0.0) when either signal is silent.
    """
    decoded = _mono(decoded, "decoded").astype(np.float64)
    reference = _mono(reference, "reference").astype(np.float64)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"estimate_lag() sample_rate must be a positive integer, got {sample_rate!r}")
    if not max_lag_seconds >= 0:
        raise ValueError(f"estimate_lag() max_lag_seconds must be >= 0, got {max_lag_seconds!r}")
    norm = float(np.linalg.norm(decoded) * np.linalg.norm(reference))
    if norm == 0.0:
        return 0, 0.0
    max_lag = round(max_lag_seconds * sample_rate)
    hop = max(1, round(SPECTRAL_HOP_SECONDS * sample_rate))
    decoded_bands = _log_mel_bands(decoded, sample_rate, hop)  # [n_mels, frames]
    reference_bands = _log_mel_bands(reference, sample_rate, hop)
    max_frames = max_lag // hop
    correlation = sum(
        _correlations(decoded_band, reference_band, -max_frames, max_frames)
        for decoded_band, reference_band in zip(decoded_bands, reference_bands, strict=True)
    )
    coarse = (int(np.argmax(correlation)) - max_frames) * hop
    lags = np.arange(max(-max_lag, coarse - hop), min(max_lag, coarse + hop) + 1)
    waveform = _correlations(decoded, reference, int(lags[0]), int(lags[-1]))
    best = int(np.argmax(waveform))  # the earliest of equal peaks: the smallest lag
    return int(lags[best]), float(waveform[best] / norm)


def _log_mel_bands(audio: np.ndarray, sample_rate: int, hop: int) -> np.ndarray:
    """[n_mels, frames] log-mel trajectories, floored LOG_RANGE below the peak, each band's mean removed."""
    n_fft = 1 << max(0, round(SPECTRAL_WINDOW_SECONDS * sample_rate) - 1).bit_length()
    with torch.inference_mode():
        bands = LogMel(sample_rate, max(n_fft, hop), hop, SPECTRAL_N_MELS)(torch.from_numpy(audio).float())
    bands = bands.double().numpy()
    # the floor keeps near-silent stretches (log of noise) from dominating the correlation
    bands = np.maximum(bands, bands.max() - LOG_RANGE)
    return bands - bands.mean(axis=1, keepdims=True)


def _correlations(decoded: np.ndarray, reference: np.ndarray, low: int, high: int) -> np.ndarray:
    """``sum_n decoded[n + lag] * reference[n]`` for lag in low..high; 0 where the signals do not overlap."""
    # all lags at once through the FFT; the FFT size covers every overlap, so negative lags sit at the end
    # without wrapping into positive ones
    size = _fast_fft_size(decoded.shape[0] + reference.shape[0] - 1)
    spectrum = np.fft.rfft(decoded, size) * np.conj(np.fft.rfft(reference, size))
    correlation = np.fft.irfft(spectrum, size)
    lags = np.arange(low, high + 1)
    feasible = (lags > -reference.shape[0]) & (lags < decoded.shape[0])
    return np.where(feasible, correlation[lags % size], 0.0)


def shift_to_length(decoded: np.ndarray, lag: int, length: int) -> np.ndarray:
    """``out[n] = decoded[n + lag]`` for ``n < length``, zeros where that index is outside ``decoded``.

    Args:
        decoded: [T_dec] audio.
        lag: samples to advance (positive) or delay (negative) it by.
        length: output length.
    Returns:
        [length] array of ``decoded``'s dtype.
    """
    decoded = _mono(decoded, "decoded")
    out = np.zeros(length, dtype=decoded.dtype)
    start = max(0, -lag)  # first output index that reads a real sample
    stop = min(length, decoded.shape[0] - lag)
    if stop > start:
        out[start:stop] = decoded[start + lag : stop + lag]
    return out


def align_to_reference(
    decoded: np.ndarray, reference: np.ndarray, sample_rate: int, max_lag_seconds: float = MAX_LAG_SECONDS
) -> Alignment:
    """Remove the delay of ``decoded`` relative to ``reference`` and match its length.

    Args:
        decoded: [T_dec] float audio from a codec (any length).
        reference: [T_ref] float audio it should reproduce, same rate.
        sample_rate: of both, in Hz.
        max_lag_seconds: largest delay searched either way.
    Returns:
        Alignment(audio [T_ref], lag, correlation).
    """
    lag, correlation = estimate_lag(decoded, reference, sample_rate, max_lag_seconds)
    return Alignment(shift_to_length(decoded, lag, _mono(reference, "reference").shape[0]), lag, correlation)


def _mono(values: np.ndarray, name: str) -> np.ndarray:
    if not isinstance(values, np.ndarray):
        raise TypeError(f"alignment expects {name} as a numpy array, got {type(values).__name__}")
    if values.ndim != 1:
        raise ValueError(f"alignment expects mono {name} audio [T], got shape {values.shape}")
    return values


def _fast_fft_size(minimum: int) -> int:
    """The smallest 2^a * 3^b * 5^c >= ``minimum``: fast for numpy's FFT, with less padding than 2^a."""
    best = 1 << max(0, (minimum - 1).bit_length())
    power5 = 1
    while power5 < best:
        power35 = power5
        while power35 < best:
            size = power35
            while size < minimum:
                size *= 2
            best = min(best, size)
            power35 *= 3
        power5 *= 5
    return best
