"""Voice metrics: is the voice still voiced, at the same pitch, clean, and saying the same words?

STOI and PESQ follow band envelopes and loudness; a codec that loses the pitch harmonics (voiced speech comes
out whispered) still scores well on them. These look at the voice itself:

* Voicing, F0 and HNR against Praat (Boersma, 1993, "Accurate short-term analysis of the fundamental
  frequency and the harmonics-to-noise ratio of a sampled sound"), a tracker that is not the model's own
  (``vqaudio.codec.pitch``), through ``praat-parselmouth`` (Jadoul et al., 2018). The autocorrelation pitch
  (10 ms steps, 60-500 Hz) runs on the input and on the aligned output with the same settings, so their
  frames line up: voicing recall (of the frames voiced in the input, the share also voiced in the output),
  voicing precision, the median F0 error in cents over frames voiced in both, the share of those more than
  50 cents off (gross errors), and the drop in harmonics-to-noise ratio (Praat's cross-correlation
  harmonicity, input minus output) averaged over the input's voiced frames.
* DNSMOS P.835 (Reddy et al., 2022, https://arxiv.org/abs/2110.01763): SIG, BAK and OVRL predicted from the
  audio alone by the ONNX models of the ``speechmos`` wheel (run by ``onnxruntime``). No reference is needed,
  so the original is scored too: it is the ceiling a codec can reach.
* Word error rate of pocketsphinx's recognition (its wheel ships a US English acoustic model, language model
  and dictionary): against the corpus transcript, or without one against the recognition of the original.
  English only, and about real time on one core per recognition.

All three come from the optional extra ``vqaudio[voice]``; ``metrics.unavailable_metrics()`` says which
packages are missing. Undefined scores (no voiced frame in the input, no word in the transcript) raise
``MetricError``, which ``metrics.score_clip`` records for that clip.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import soxr

from vqaudio.evaluation.clip_checks import MetricError, MetricUnavailable, check_not_silent

VOICE_INSTALL_HINT = "pip install 'vqaudio[voice]'"

# Praat's autocorrelation pitch, as asked of it: 10 ms frames, 60-500 Hz covers low male to high child voices
PITCH_TIME_STEP = 0.01
PITCH_FLOOR_HZ = 60.0
PITCH_CEILING_HZ = 500.0
GROSS_ERROR_CENTS = 50.0  # a quarter tone: more than this off counts as a gross F0 error
# Praat gives -200 dB where it finds no periodicity at all; a frame with at most as much harmonic as noise
# energy counts as 0 dB, so a whispered frame costs its input's HNR instead of 200 dB.
HNR_FLOOR_DB = 0.0

DNSMOS_SAMPLE_RATE = 16000  # the rate the DNSMOS models were trained at
ASR_SAMPLE_RATE = 16000  # pocketsphinx's en-us acoustic model

PRAAT_METRICS = (
    "voicing_recall",
    "voicing_precision",
    "f0_error_cents",
    "f0_gross_error_rate",
    "hnr_drop_db",
)
DNSMOS_METRICS = ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl")
WER_METRIC = "wer"


class PitchTrack(NamedTuple):
    """Praat's analysis of one clip, one value per 10 ms frame.

    f0: [N] Hz, 0 where Praat finds the frame unvoiced.
    hnr: [N] harmonics-to-noise ratio in dB at the same frames, floored at ``HNR_FLOOR_DB``.
    """

    f0: np.ndarray
    hnr: np.ndarray


class DnsmosScores(NamedTuple):
    """DNSMOS P.835 of one clip, each a MOS from 1 (bad) to 5 (excellent)."""

    sig: float  # speech signal quality
    bak: float  # background noise (5: none)
    ovrl: float  # overall


# --------------------------------------------------------------------------------------------------
# Voicing, F0 and HNR (Praat)
# --------------------------------------------------------------------------------------------------
def pitch_track(audio: np.ndarray, sample_rate: int) -> PitchTrack:
    """Praat's F0 (``to_pitch_ac``) and harmonicity (``to_harmonicity_cc``) of one clip.

    Args:
        audio: [T] float audio.
        sample_rate: of ``audio``.
    Returns:
        PitchTrack; two clips of the same length and rate get the same frames.
    Raises:
        MetricUnavailable: ``praat-parselmouth`` is missing.
        MetricError: Praat cannot analyse the clip (e.g. shorter than its 50 ms window).
    """
    try:
        import parselmouth
    except ImportError as exc:
        raise MetricUnavailable(
            f"Praat needs the 'praat-parselmouth' package ({VOICE_INSTALL_HINT})"
        ) from exc
    sound = parselmouth.Sound(np.asarray(audio, dtype=np.float64), sampling_frequency=sample_rate)
    try:
        pitch = sound.to_pitch_ac(
            time_step=PITCH_TIME_STEP, pitch_floor=PITCH_FLOOR_HZ, pitch_ceiling=PITCH_CEILING_HZ
        )
        harmonicity = sound.to_harmonicity_cc(time_step=PITCH_TIME_STEP, minimum_pitch=PITCH_FLOOR_HZ)
    except parselmouth.PraatError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MetricError(f"Praat cannot analyse the clip ({reason})") from exc
    f0 = np.asarray(pitch.selected_array["frequency"], dtype=np.float64)
    hnr = np.maximum(np.asarray(harmonicity.values[0], dtype=np.float64), HNR_FLOOR_DB)
    # the two analyses use different windows, so their frame centres differ slightly: read HNR at F0's frames
    if hnr.size:
        hnr = np.interp(pitch.xs(), harmonicity.xs(), hnr)
    else:
        hnr = np.full_like(f0, HNR_FLOOR_DB)
    return PitchTrack(f0, hnr)


def voicing_recall(estimate: PitchTrack, reference: PitchTrack) -> float:
    """Of the frames Praat calls voiced in the reference, the share also voiced in the estimate (0 to 1)."""
    est_voiced, ref_voiced = _voiced(estimate, reference)
    return float((est_voiced & ref_voiced).sum() / ref_voiced.sum())


def voicing_precision(estimate: PitchTrack, reference: PitchTrack) -> float:
    """Of the frames voiced in the estimate, the share also voiced in the reference (0 to 1).

    Raises:
        MetricError: no voiced frame in the reference or in the estimate.
    """
    est_voiced, ref_voiced = _voiced(estimate, reference)
    if not est_voiced.any():
        raise MetricError("Praat finds no voiced frame in the output")
    return float((est_voiced & ref_voiced).sum() / est_voiced.sum())


def f0_errors_cents(estimate: PitchTrack, reference: PitchTrack) -> np.ndarray:
    """[M] absolute F0 differences in cents (1200 per octave) over the M frames voiced in both.

    Raises:
        MetricError: no frame is voiced in both.
    """
    est_voiced, ref_voiced = _voiced(estimate, reference)
    both = est_voiced & ref_voiced
    if not both.any():
        raise MetricError("no frame is voiced in both the input and the output")
    return 1200.0 * np.abs(np.log2(estimate.f0[both] / reference.f0[both]))


def f0_error_cents(estimate: PitchTrack, reference: PitchTrack) -> float:
    """Median F0 error in cents over the frames voiced in both (``f0_errors_cents``)."""
    return float(np.median(f0_errors_cents(estimate, reference)))


def f0_gross_error_rate(estimate: PitchTrack, reference: PitchTrack) -> float:
    """Share of the frames voiced in both whose F0 is more than ``GROSS_ERROR_CENTS`` off (0 to 1)."""
    return float(np.mean(f0_errors_cents(estimate, reference) > GROSS_ERROR_CENTS))


def hnr_drop_db(estimate: PitchTrack, reference: PitchTrack) -> float:
    """Mean over the reference's voiced frames of its HNR minus the estimate's (dB; 0 for identical audio)."""
    _, ref_voiced = _voiced(estimate, reference)
    return float(np.mean(reference.hnr[ref_voiced] - estimate.hnr[ref_voiced]))


def _voiced(estimate: PitchTrack, reference: PitchTrack) -> tuple[np.ndarray, np.ndarray]:
    if estimate.f0.shape != reference.f0.shape:
        raise ValueError(
            f"pitch tracks of {estimate.f0.shape[0]} and {reference.f0.shape[0]} frames; analyse clips of the "
            "same length (align the output to the reference first)"
        )
    ref_voiced = reference.f0 > 0
    if not ref_voiced.any():
        raise MetricError("Praat finds no voiced frame in the input")
    return estimate.f0 > 0, ref_voiced


# --------------------------------------------------------------------------------------------------
# DNSMOS P.835
# --------------------------------------------------------------------------------------------------
def dnsmos(audio: np.ndarray, sample_rate: int) -> DnsmosScores:
    """DNSMOS P.835 of one clip (no reference); audio at other rates than 16 kHz is resampled (soxr).

    DNSMOS scores 9 s windows with a 1 s hop and averages them; shorter clips are repeated to 9 s.

    Raises:
        MetricUnavailable: ``speechmos`` or ``onnxruntime`` is missing.
        MetricError: a silent clip.
    """
    try:
        from speechmos import dnsmos as speechmos_dnsmos
    except ImportError as exc:
        raise MetricUnavailable(f"DNSMOS needs the 'speechmos' and 'onnxruntime' packages ({exc})") from exc
    check_not_silent(audio, "DNSMOS", which="clip")
    clip = _at_rate(audio, sample_rate, DNSMOS_SAMPLE_RATE)
    scores = speechmos_dnsmos.run(np.clip(clip, -1.0, 1.0), DNSMOS_SAMPLE_RATE)
    return DnsmosScores(float(scores["sig_mos"]), float(scores["bak_mos"]), float(scores["ovrl_mos"]))


# --------------------------------------------------------------------------------------------------
# Word error rate (pocketsphinx)
# --------------------------------------------------------------------------------------------------
def recognize(audio: np.ndarray, sample_rate: int) -> str:
    """What pocketsphinx (US English) hears in one clip: lower-case words, "" for none.

    Raises:
        MetricUnavailable: ``pocketsphinx`` is missing.
    """
    decoder = _decoder()
    clip = _at_rate(audio, sample_rate, ASR_SAMPLE_RATE)
    pcm = np.round(np.clip(clip, -1.0, 1.0) * 32767).astype("<i2")
    decoder.start_utt()
    decoder.process_raw(pcm.tobytes(), full_utt=True)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return "" if hypothesis is None else str(hypothesis.hypstr)


@functools.lru_cache(maxsize=1)  # loading the language model takes about a second: one decoder per process
def _decoder() -> Any:
    try:
        from pocketsphinx import Decoder
    except ImportError as exc:
        raise MetricUnavailable(
            f"word error rates need the 'pocketsphinx' package ({VOICE_INSTALL_HINT})"
        ) from exc
    # the default model is the en-us one inside the wheel; logfn keeps its log off our stderr
    return Decoder(samprate=ASR_SAMPLE_RATE, logfn=os.devnull)


def words(text: str) -> list[str]:
    """Lower-case words of ``text``, punctuation dropped (apostrophes kept: "don't")."""
    return re.sub(r"[^\w']+", " ", text.lower()).replace("_", " ").split()


def word_error_rate(hypothesis: str, reference: str) -> float:
    """(substitutions + deletions + insertions) / reference words, after ``words()`` on both.

    Raises:
        MetricError: the reference has no words.
    """
    ref, hyp = words(reference), words(hypothesis)
    if not ref:
        raise MetricError("the reference text has no words")
    # Levenshtein distance over words, one row at a time
    row = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, start=1):
        previous, row[0] = row[0], i
        for j, hyp_word in enumerate(hyp, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (ref_word != hyp_word))
    return row[-1] / len(ref)


# --------------------------------------------------------------------------------------------------
# One clip's analyses, computed once
# --------------------------------------------------------------------------------------------------
class VoiceAnalysis:
    """The voice analyses of one clip, each computed on first use and kept (a failure too).

    The reference's analysis is shared by every system scored against it, so Praat, DNSMOS and the
    recogniser run once on the original per utterance.

    Args:
        audio: [T] float audio.
        sample_rate: of ``audio``.
        transcript: what is said, when the corpus knows (the reference of the word error rate).
    """

    def __init__(self, audio: np.ndarray, sample_rate: int, transcript: str | None = None):
        self.audio = audio
        self.sample_rate = sample_rate
        self.transcript = transcript if transcript and words(transcript) else None
        self._done: dict[str, tuple[Any, str | None]] = {}  # name -> (value, MetricError message)

    @property
    def pitch(self) -> PitchTrack:
        return self._once("pitch", lambda: pitch_track(self.audio, self.sample_rate))

    @property
    def dnsmos(self) -> DnsmosScores:
        return self._once("dnsmos", lambda: dnsmos(self.audio, self.sample_rate))

    @property
    def recognized(self) -> str:
        return self._once("recognized", lambda: recognize(self.audio, self.sample_rate))

    @property
    def wer_reference(self) -> str:
        """The transcript, or without one what the recogniser hears in this clip."""
        return self.transcript if self.transcript is not None else self.recognized

    def known(self, name: str) -> Any:
        """The value of an analysis already made (``"pitch"``, ``"dnsmos"``, ``"recognized"``), else None."""
        value, error = self._done.get(name, (None, None))
        return None if error else value

    def _once(self, name: str, compute: Callable[[], Any]) -> Any:
        if name not in self._done:
            try:
                self._done[name] = (compute(), None)
            except MetricError as exc:
                self._done[name] = (None, str(exc))
        value, error = self._done[name]
        if error is not None:
            raise MetricError(error)
        return value


def _at_rate(audio: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    clip = np.asarray(audio, dtype=np.float32)
    if sample_rate != target_rate:
        clip = soxr.resample(clip, sample_rate, target_rate, quality="HQ").astype(np.float32)
    return clip
