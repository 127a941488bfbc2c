"""Metrics of one decoded clip against its reference.

* SI-SDR, scale-invariant signal-to-distortion ratio in dB (Le Roux et al., 2019, "SDR - half-baked or well
  done?", https://arxiv.org/abs/1811.02508), on zero-mean signals; higher is better.
* log-mel L1 distance (``vqaudio.codec.losses.mel_distance``: n_fft 1024, hop 256, 80 mels); lower is better.
* multi-resolution STFT distance: spectral convergence + log-magnitude L1 averaged over three resolutions
  (Yamamoto et al., 2020, https://arxiv.org/abs/1910.11480), fixed here so numbers stay comparable whatever a
  model was trained with; lower is better.
* PESQ wide-band (ITU-T P.862.2) through the ``pesq`` package, at 16 kHz; 1.0 (bad) to 4.64 (transparent).
* STOI (Taal et al., 2011) through the ``pystoi`` package; 0 to 1.

and the voice metrics of ``voice`` (Praat voicing, F0 error and HNR drop; DNSMOS P.835; word error rate).

PESQ and STOI come from the optional extra ``vqaudio[metrics]``, the voice metrics from ``vqaudio[voice]``;
``unavailable_metrics()`` says which are missing. Metrics that cannot be computed on a clip (PESQ finds no speech in a silent clip, STOI needs about
a second of non-silent audio) raise ``MetricError``; ``score_clip`` records those failures instead of raising
so that one bad clip never stops an evaluation.
"""

from __future__ import annotations

import functools
import importlib
import math
import warnings
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import soxr
import torch

from vqaudio.codec.losses import MultiResolutionSTFTLoss
from vqaudio.codec.losses import mel_distance as _mel_distance
from vqaudio.evaluation import voice
from vqaudio.evaluation.clip_checks import (
    MetricError,
    MetricUnavailable,
    check_not_silent,
    clip_pair,
)
from vqaudio.evaluation.voice import VoiceAnalysis

# Beyond about 100 dB the distortion is float rounding; capping keeps one perfect clip from making a corpus
# mean infinite (and keeps report.json valid JSON). An all-zero estimate gets -100.
SI_SDR_LIMIT_DB = 100.0

STFT_DISTANCE_FFT_SIZES = (512, 1024, 2048)
STFT_DISTANCE_HOP_SIZES = (128, 256, 512)
STFT_DISTANCE_WIN_SIZES = (512, 1024, 2048)

PESQ_SAMPLE_RATE = 16000  # wide-band PESQ is defined at 16 kHz; other rates are resampled to it

# name -> (what it is, unit, higher is better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "pesq_wb": ("PESQ wide-band (P.862.2)", "MOS-LQO", True),
    "stoi": ("STOI", "", True),
    "mel_distance": ("log-mel L1 distance", "", False),
    "stft_distance": ("multi-resolution STFT distance", "", False),
    "si_sdr": ("SI-SDR", "dB", True),
    "voicing_recall": (
        "voicing recall: of the frames Praat calls voiced in the input, the share voiced in the output",
        "",
        True,
    ),
    "voicing_precision": (
        "voicing precision: of the output's voiced frames, the share voiced in the input",
        "",
        True,
    ),
    "f0_error_cents": ("median F0 error over the frames voiced in both (Praat)", "cents", False),
    "f0_gross_error_rate": (
        f"gross F0 errors: share of those frames more than {voice.GROSS_ERROR_CENTS:g} cents off",
        "",
        False,
    ),
    "hnr_drop_db": (
        "HNR drop: Praat harmonicity of the input minus the output's, over the input's voiced frames",
        "dB",
        False,
    ),
    "dnsmos_sig": ("DNSMOS P.835 speech quality (no reference)", "MOS", True),
    "dnsmos_bak": ("DNSMOS P.835 background noise (no reference)", "MOS", True),
    "dnsmos_ovrl": ("DNSMOS P.835 overall quality (no reference)", "MOS", True),
    "wer": ("word error rate of pocketsphinx (US English)", "", False),
}
# scored on the original audio too: they need no reference (the WER's reference is the transcript)
NO_REFERENCE_METRICS = (*voice.DNSMOS_METRICS, voice.WER_METRIC)
# computed only when asked for (slow, English only)
OPT_IN_METRICS = frozenset({voice.WER_METRIC})

INSTALL_HINT = "pip install 'vqaudio[metrics]'"


class ClipScores(NamedTuple):
    """All metrics of one clip (``METRICS``); NaN where a metric is unavailable, skipped or failed on it.

    failures: ``"metric: reason"`` for every metric that failed on this clip (not for unavailable ones).
    """

    pesq_wb: float
    stoi: float
    mel_distance: float
    stft_distance: float
    si_sdr: float
    voicing_recall: float
    voicing_precision: float
    f0_error_cents: float
    f0_gross_error_rate: float
    hnr_drop_db: float
    dnsmos_sig: float
    dnsmos_bak: float
    dnsmos_ovrl: float
    wer: float
    failures: tuple[str, ...]
    recognized: str | None = None  # the words pocketsphinx heard (when the WER was measured)


def unavailable_metrics() -> dict[str, str]:
    """Metrics whose optional package is missing: ``{name: note saying what to install}``."""
    missing = {}
    for names, module, package, hint in _PACKAGES:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            note = f"the '{package}' package is not installed ({hint})"
            if (
                exc.name and exc.name.split(".")[0] != module.split(".")[0]
            ):  # present, but its dependency is not
                note = f"'{package}' cannot be imported: {exc} ({hint})"
            missing.update(dict.fromkeys(names, note))
    return missing


# (metrics, module imported to check, package to install, how)
_PACKAGES = (
    (("pesq_wb",), "pesq", "pesq", INSTALL_HINT),
    (("stoi",), "pystoi", "pystoi", INSTALL_HINT),
    (voice.PRAAT_METRICS, "parselmouth", "praat-parselmouth", voice.VOICE_INSTALL_HINT),
    (voice.DNSMOS_METRICS, "speechmos.dnsmos", "speechmos", voice.VOICE_INSTALL_HINT),
    ((voice.WER_METRIC,), "pocketsphinx", "pocketsphinx", voice.VOICE_INSTALL_HINT),
)


def si_sdr(estimate: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> float:
    """Scale-invariant SDR in dB of ``estimate`` against ``reference``.

    Both are made zero-mean; the reference is scaled by the least-squares gain onto the estimate, and the rest
    of the estimate counts as distortion. Invariant to the scale of the estimate.

    Args:
        estimate, reference: [T] float audio of the same length.
    Returns:
        dB, clipped to +-SI_SDR_LIMIT_DB (identical signals give the upper limit).
    Raises:
        MetricError: the reference is silent or constant, so SI-SDR is undefined.
    """
    est, ref = clip_pair(estimate, reference, "si_sdr")
    check_not_silent(ref, "SI-SDR")
    est = est.astype(np.float64) - est.mean()
    ref = ref.astype(np.float64) - ref.mean()
    ref_energy = float(np.dot(ref, ref))
    if ref_energy <= 0.0:
        raise MetricError("the reference is constant, SI-SDR is undefined")
    target = (float(np.dot(est, ref)) / ref_energy) * ref
    noise = est - target
    target_energy, noise_energy = float(np.dot(target, target)), float(np.dot(noise, noise))
    if noise_energy == 0.0:
        return SI_SDR_LIMIT_DB
    if target_energy == 0.0:
        return -SI_SDR_LIMIT_DB
    value = 10.0 * math.log10(target_energy / noise_energy)
    return float(min(max(value, -SI_SDR_LIMIT_DB), SI_SDR_LIMIT_DB))


def mel_distance(
    estimate: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor, sample_rate: int
) -> float:
    """Mean L1 between log-mel spectrograms (``vqaudio.codec.losses.mel_distance``); 0 for identical audio.

    Args:
        estimate, reference: [T] float audio of the same length at ``sample_rate``.
    """
    est, ref = clip_pair(estimate, reference, "mel_distance")
    return float(_mel_distance(torch.from_numpy(est), torch.from_numpy(ref), sample_rate))


def stft_distance(estimate: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor) -> float:
    """Multi-resolution STFT distance (spectral convergence + log-magnitude L1, FFT sizes 512/1024/2048).

    Args:
        estimate, reference: [T] float audio of the same length.
    Returns:
        the distance; 0 for identical audio.
    Raises:
        MetricError: the reference is silent (spectral convergence is relative to its magnitude).
    """
    est, ref = clip_pair(estimate, reference, "stft_distance")
    check_not_silent(ref, "the STFT distance")
    with torch.inference_mode():
        return float(_stft_distance_module()(torch.from_numpy(est)[None], torch.from_numpy(ref)[None]))


@functools.lru_cache(maxsize=1)
def _stft_distance_module() -> MultiResolutionSTFTLoss:
    return MultiResolutionSTFTLoss(STFT_DISTANCE_FFT_SIZES, STFT_DISTANCE_HOP_SIZES, STFT_DISTANCE_WIN_SIZES)


def pesq_wideband(
    estimate: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor, sample_rate: int
) -> float:
    """Wide-band PESQ (P.862.2) of ``estimate``; audio at other rates than 16 kHz is resampled (soxr).

    Args:
        estimate, reference: [T] float audio of the same length at ``sample_rate``.
    Returns:
        MOS-LQO, about 1.0 to 4.64.
    Raises:
        MetricUnavailable: the ``pesq`` package is missing.
        MetricError: PESQ cannot score this clip (no speech detected, too short).
    """
    try:
        import pesq
    except ImportError as exc:
        raise MetricUnavailable(f"PESQ needs the 'pesq' package ({INSTALL_HINT})") from exc
    est, ref = clip_pair(estimate, reference, "pesq_wideband")
    if sample_rate != PESQ_SAMPLE_RATE:
        est = soxr.resample(est, sample_rate, PESQ_SAMPLE_RATE, quality="HQ").astype(np.float32)
        ref = soxr.resample(ref, sample_rate, PESQ_SAMPLE_RATE, quality="HQ").astype(np.float32)
    try:
        return float(pesq.pesq(PESQ_SAMPLE_RATE, ref, est, "wb"))
    except pesq.NoUtterancesError as exc:
        raise MetricError("PESQ found no speech (silent or very quiet clip)") from exc
    except pesq.BufferTooShortError as exc:
        raise MetricError("the clip is too short for PESQ") from exc
    except pesq.PesqError as exc:
        raise MetricError(f"PESQ failed ({type(exc).__name__}: {exc})") from exc


def stoi(
    estimate: np.ndarray | torch.Tensor,
    reference: np.ndarray | torch.Tensor,
    sample_rate: int,
    extended: bool = False,
) -> float:
    """Short-time objective intelligibility: classic STOI, or with ``extended`` ESTOI (Jensen & Taal, 2016),
    which also compares the spectral shape within each frame; a check on models trained with
    ``vqaudio.codec.losses.EnvelopeCorrelationLoss``, which follows classic STOI.

    Args:
        estimate, reference: [T] float audio of the same length at ``sample_rate``.
        extended: ESTOI instead of STOI.
    Returns:
        0 to 1 (1 for identical audio).
    Raises:
        MetricUnavailable: the ``pystoi`` package is missing.
        MetricError: a silent reference, or too little non-silent audio (pystoi would warn and return 1e-5).
    """
    try:
        import pystoi
    except ImportError as exc:
        raise MetricUnavailable(f"STOI needs the 'pystoi' package ({INSTALL_HINT})") from exc
    est, ref = clip_pair(estimate, reference, "stoi")
    check_not_silent(ref, "STOI")
    _check_stoi_length(ref, sample_rate)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(
            pystoi.stoi(ref.astype(np.float64), est.astype(np.float64), sample_rate, extended=extended)
        )
    too_short = False
    for warning in caught:
        if "Not enough STFT frames" in str(warning.message):
            too_short = True
        else:  # not ours to hide: pass it on
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    if too_short:
        raise MetricError("too little non-silent audio for STOI (needs about 0.4 s of speech)")
    return value


def stoi_bands(
    estimate: np.ndarray | torch.Tensor, reference: np.ndarray | torch.Tensor, sample_rate: int
) -> tuple[np.ndarray, np.ndarray]:
    """STOI per one-third-octave band: where a codec loses intelligibility (a diagnostic, not a metric).

    Classic STOI is the mean, over 15 bands (150 Hz to 4.3 kHz) and 384 ms segments, of the correlation
    between the clean and the processed band envelopes; this returns the mean over segments per band, so the
    mean of the returned scores is ``stoi()``.

    Args:
        estimate, reference: [T] float audio of the same length at ``sample_rate``.
    Returns:
        (centre frequencies in Hz [15], scores [15]).
    Raises:
        MetricUnavailable, MetricError: as ``stoi()``.
    """
    try:
        # the module, not the function pystoi's package exports under the same name
        pystoi_stoi = importlib.import_module("pystoi.stoi")
        from pystoi import utils
    except ImportError as exc:
        raise MetricUnavailable(f"STOI needs the 'pystoi' package ({INSTALL_HINT})") from exc
    est, ref = clip_pair(estimate, reference, "stoi_bands")
    _check_stoi_length(ref, sample_rate)
    check_not_silent(ref, "STOI")
    frame, segment = pystoi_stoi.N_FRAME, pystoi_stoi.N
    x = utils.resample_oct(ref.astype(np.float64), pystoi_stoi.FS, sample_rate)
    y = utils.resample_oct(est.astype(np.float64), pystoi_stoi.FS, sample_rate)
    x, y = utils.remove_silent_frames(x, y, pystoi_stoi.DYN_RANGE, frame, frame // 2)

    def envelopes(signal: np.ndarray) -> np.ndarray:  # [segments, bands, frames]
        spectrum = utils.stft(signal, frame, pystoi_stoi.NFFT, overlap=2).T
        bands = np.sqrt(pystoi_stoi.OBM @ np.abs(spectrum) ** 2)
        if bands.shape[1] < segment:
            raise MetricError("too little non-silent audio for STOI (needs about 0.4 s of speech)")
        return np.stack([bands[:, m - segment : m] for m in range(segment, bands.shape[1] + 1)])

    clean, processed = envelopes(x), envelopes(y)
    gain = np.linalg.norm(clean, axis=2, keepdims=True) / (
        np.linalg.norm(processed, axis=2, keepdims=True) + utils.EPS
    )
    clipped = np.minimum(processed * gain, clean * (1 + 10 ** (-pystoi_stoi.BETA / 20)))
    clipped = clipped - clipped.mean(axis=2, keepdims=True)
    clean = clean - clean.mean(axis=2, keepdims=True)
    clipped /= np.linalg.norm(clipped, axis=2, keepdims=True) + utils.EPS
    clean /= np.linalg.norm(clean, axis=2, keepdims=True) + utils.EPS
    _, centres, *_ = utils.thirdoct(
        pystoi_stoi.FS, pystoi_stoi.NFFT, pystoi_stoi.NUMBAND, pystoi_stoi.MINFREQ
    )
    return np.asarray(centres, dtype=np.float64), (clipped * clean).sum(axis=2).mean(axis=0)


def _check_stoi_length(reference: np.ndarray, sample_rate: int) -> None:
    """pystoi fails inside (an IndexError, not a warning) on a clip shorter than one of its frames."""
    pystoi_stoi = importlib.import_module("pystoi.stoi")  # the module, for its constants
    frame_samples = math.ceil(pystoi_stoi.N_FRAME * sample_rate / pystoi_stoi.FS)
    if reference.shape[0] < 2 * frame_samples:
        raise MetricError(
            f"the clip is too short for STOI ({reference.shape[0]} samples, needs about 0.4 s of speech)"
        )


def score_clip(
    estimate: np.ndarray | torch.Tensor,
    reference: np.ndarray | torch.Tensor,
    sample_rate: int,
    skip: frozenset[str] = OPT_IN_METRICS,
    reference_voice: VoiceAnalysis | None = None,
) -> ClipScores:
    """Every metric of one clip; failures are recorded, not raised.

    Args:
        estimate, reference: [T] float audio of the same length at ``sample_rate`` (align first).
        sample_rate: of both signals.
        skip: metric names not to compute (e.g. those in ``unavailable_metrics()``); they are NaN. By default
            the word error rate, which is slow and English only.
        reference_voice: the reference's voice analyses (and transcript), when several estimates are scored
            against one reference; made from ``reference`` when None.
    Returns:
        ClipScores (NaN for skipped, unavailable or failed metrics; failures name the metric and reason).
    """
    est, ref = clip_pair(estimate, reference, "score_clip")
    _check_skip(skip, "score_clip")
    original = reference_voice if reference_voice is not None else VoiceAnalysis(ref, sample_rate)
    decoded = VoiceAnalysis(est, sample_rate)
    functions = {
        "pesq_wb": lambda: pesq_wideband(est, ref, sample_rate),
        "stoi": lambda: stoi(est, ref, sample_rate),
        "mel_distance": lambda: mel_distance(est, ref, sample_rate),
        "stft_distance": lambda: stft_distance(est, ref),
        "si_sdr": lambda: si_sdr(est, ref),
        "voicing_recall": lambda: voice.voicing_recall(decoded.pitch, original.pitch),
        "voicing_precision": lambda: voice.voicing_precision(decoded.pitch, original.pitch),
        "f0_error_cents": lambda: voice.f0_error_cents(decoded.pitch, original.pitch),
        "f0_gross_error_rate": lambda: voice.f0_gross_error_rate(decoded.pitch, original.pitch),
        "hnr_drop_db": lambda: voice.hnr_drop_db(decoded.pitch, original.pitch),
        "dnsmos_sig": lambda: decoded.dnsmos.sig,
        "dnsmos_bak": lambda: decoded.dnsmos.bak,
        "dnsmos_ovrl": lambda: decoded.dnsmos.ovrl,
        "wer": lambda: voice.word_error_rate(decoded.recognized, original.wer_reference),
    }
    # a diverged model can emit NaN: every metric fails on that clip instead of one of them crashing
    broken = None if np.isfinite(est).all() else "the estimate holds NaN or Inf samples"
    return _scores(functions, skip, broken, decoded)


def score_original(original: VoiceAnalysis, skip: frozenset[str] = OPT_IN_METRICS) -> ClipScores:
    """The metrics that need no reference (``NO_REFERENCE_METRICS``) of the original audio itself.

    DNSMOS, and the word error rate of its recognition when ``original`` has a transcript: the ceiling the
    decoded outputs are measured against. Every other metric is NaN (it would compare the clip with itself).

    Args:
        original: the reference's voice analyses, as passed to ``score_clip``.
        skip: as in ``score_clip``.
    """
    _check_skip(skip, "score_original")
    functions = {
        "dnsmos_sig": lambda: original.dnsmos.sig,
        "dnsmos_bak": lambda: original.dnsmos.bak,
        "dnsmos_ovrl": lambda: original.dnsmos.ovrl,
    }
    if original.transcript is not None:
        functions["wer"] = lambda: voice.word_error_rate(original.recognized, original.wer_reference)
    return _scores(functions, skip, None, original)


def _scores(
    functions: dict[str, Callable[[], float]],
    skip: frozenset[str],
    broken: str | None,
    decoded: VoiceAnalysis,
) -> ClipScores:
    """Run each metric not skipped; NaN for the rest and for failures, which are listed."""
    values = dict.fromkeys(METRICS, math.nan)
    failures = []
    for name, function in functions.items():
        if name in skip:
            continue
        if broken:
            failures.append(f"{name}: {broken}")
            continue
        try:
            values[name] = function()
        except MetricUnavailable:
            continue
        except MetricError as exc:
            failures.append(f"{name}: {exc}")
    # the original's recognition is kept too when it served as the reference of the systems' WER
    return ClipScores(**values, failures=tuple(failures), recognized=decoded.known("recognized"))


def _check_skip(skip: frozenset[str], caller: str) -> None:
    unknown = set(skip) - set(METRICS)
    if unknown:
        raise ValueError(f"{caller}() skip names unknown metrics {sorted(unknown)}; known: {list(METRICS)}")
