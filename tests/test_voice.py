"""vqaudio.evaluation.voice: Praat voicing / F0 / HNR on known signals, DNSMOS, word error rates, and the
voice columns of ``vqaudio eval``."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.evaluation import metrics, voice
from vqaudio.evaluation.evaluate import EvalOptions, run_evaluation

SAMPLE_RATE = 16000
EXAMPLES = Path(__file__).resolve().parents[1] / "vqaudio" / "examples"
CLIP = EXAMPLES / "sense_and_sensibility_01_austen_64kb-0880.flac"
CLIP_TEXT = "he was not an ill disposed young man"  # vqaudio/examples/README.md

HAVE_PRAAT = importlib.util.find_spec("parselmouth") is not None
UNAVAILABLE = metrics.unavailable_metrics()
needs_praat = pytest.mark.skipif(not HAVE_PRAAT, reason="praat-parselmouth not installed (vqaudio[voice])")
needs_dnsmos = pytest.mark.skipif("dnsmos_ovrl" in UNAVAILABLE, reason=UNAVAILABLE.get("dnsmos_ovrl", ""))
needs_pocketsphinx = pytest.mark.skipif("wer" in UNAVAILABLE, reason=UNAVAILABLE.get("wer", ""))
ALL_BUT_PRAAT = frozenset(metrics.METRICS) - set(voice.PRAAT_METRICS)


def harmonic_voice(f0: float = 150.0, seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """A sum of 20 harmonics of ``f0`` with a slow vibrato (4 Hz, +-1.5%) and falling amplitudes."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    frequency = f0 * (1 + 0.015 * np.sin(2 * np.pi * 4 * t))
    phase = 2 * np.pi * np.cumsum(frequency) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    audio = sum(np.sin(k * phase + rng.uniform(0, 2 * np.pi)) / k for k in range(1, 21))
    return (0.3 * audio / np.abs(audio).max()).astype(np.float32)


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))


# --------------------------------------------------------------------------------------------------
# Praat
# --------------------------------------------------------------------------------------------------
@needs_praat
def test_a_voice_against_itself_is_fully_voiced_at_the_same_pitch() -> None:
    clip = harmonic_voice()
    scores = metrics.score_clip(clip, clip.copy(), SAMPLE_RATE, skip=ALL_BUT_PRAAT)
    assert scores.voicing_recall > 0.95 and scores.voicing_precision > 0.95
    assert scores.f0_error_cents == pytest.approx(0.0, abs=1e-6)
    assert scores.f0_gross_error_rate == 0.0
    assert scores.hnr_drop_db == pytest.approx(0.0, abs=1e-6)
    assert scores.failures == ()
    track = voice.pitch_track(clip, SAMPLE_RATE)
    voiced = track.f0[track.f0 > 0]
    assert 145 < np.median(voiced) < 155  # Praat finds the 150 Hz we made
    assert np.median(track.hnr[track.f0 > 0]) > 20  # and little noise in it


@needs_praat
def test_white_noise_of_the_same_loudness_loses_the_voicing_and_the_harmonics() -> None:
    clip = harmonic_voice()
    noise = np.random.default_rng(1).standard_normal(clip.shape[0]).astype(np.float32)
    noise *= rms(clip) / rms(noise)
    scores = metrics.score_clip(noise, clip, SAMPLE_RATE, skip=ALL_BUT_PRAAT)
    assert scores.voicing_recall < 0.1
    assert scores.hnr_drop_db > 15


@needs_praat
def test_a_semitone_up_is_a_hundred_cents_off_on_every_frame() -> None:
    clip = harmonic_voice(150.0)
    higher = harmonic_voice(150.0 * 2 ** (1 / 12))
    scores = metrics.score_clip(higher, clip, SAMPLE_RATE, skip=ALL_BUT_PRAAT)
    assert scores.voicing_recall > 0.95
    assert scores.f0_error_cents == pytest.approx(100.0, abs=10.0)
    assert scores.f0_gross_error_rate > 0.95
    assert abs(scores.hnr_drop_db) < 3  # still a clean voice


@needs_praat
def test_undefined_voice_scores_are_failures_with_a_reason() -> None:
    clip = harmonic_voice()
    silence = np.zeros_like(clip)
    unvoiced = metrics.score_clip(clip, silence, SAMPLE_RATE, skip=ALL_BUT_PRAAT)
    failed = dict(failure.split(": ", 1) for failure in unvoiced.failures)
    assert set(failed) == set(voice.PRAAT_METRICS)
    assert failed["voicing_recall"] == "Praat finds no voiced frame in the input"
    assert math.isnan(unvoiced.voicing_recall)
    whisper = metrics.score_clip(silence, clip, SAMPLE_RATE, skip=ALL_BUT_PRAAT)
    assert whisper.voicing_recall == 0.0 and whisper.hnr_drop_db > 15
    assert {f.split(":")[0] for f in whisper.failures} == {
        "voicing_precision",
        "f0_error_cents",
        "f0_gross_error_rate",
    }


# --------------------------------------------------------------------------------------------------
# Word error rate (the arithmetic needs no package)
# --------------------------------------------------------------------------------------------------
def test_word_error_rate_counts_substitutions_insertions_and_deletions() -> None:
    assert voice.word_error_rate("the cat sat", "the cat sat") == 0.0
    assert voice.word_error_rate("The cat, sat!", "the cat sat") == 0.0  # case and punctuation
    assert voice.word_error_rate("the dog sat", "the cat sat") == pytest.approx(1 / 3)
    assert voice.word_error_rate("the cat sat down", "the cat sat") == pytest.approx(1 / 3)
    assert voice.word_error_rate("cat", "the cat sat") == pytest.approx(2 / 3)
    assert voice.word_error_rate("", "the cat sat") == 1.0
    assert voice.word_error_rate("a b c d e f", "x") == 6.0  # insertions can exceed the reference
    assert voice.words("Don't STOP") == ["don't", "stop"]
    with pytest.raises(metrics.MetricError, match="no words"):
        voice.word_error_rate("anything", " ... ")


def test_a_missing_package_is_named_with_its_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "parselmouth", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "pocketsphinx", None)
    missing = metrics.unavailable_metrics()
    assert set(voice.PRAAT_METRICS) | {"wer"} <= set(missing)
    assert (
        "praat-parselmouth" in missing["voicing_recall"] and "pip install 'vqaudio[voice]'" in missing["wer"]
    )
    with pytest.raises(metrics.MetricUnavailable, match="praat-parselmouth"):
        voice.pitch_track(harmonic_voice(), SAMPLE_RATE)


# --------------------------------------------------------------------------------------------------
# DNSMOS and pocketsphinx on real speech (examples/)
# --------------------------------------------------------------------------------------------------
def speech_and_noisy_speech() -> tuple[np.ndarray, np.ndarray]:
    clean, rate = sf.read(str(CLIP), dtype="float32")
    assert rate == SAMPLE_RATE
    noise = np.random.default_rng(0).standard_normal(clean.shape[0]).astype(np.float32)
    noisy = clean + noise * rms(clean) / rms(noise)  # 0 dB SNR
    return clean, (noisy / np.abs(noisy).max() * 0.9).astype(np.float32)


@pytest.mark.slow
@needs_dnsmos
def test_dnsmos_prefers_clean_speech_to_noisy_speech() -> None:
    clean, noisy = speech_and_noisy_speech()
    clean_scores, noisy_scores = voice.dnsmos(clean, SAMPLE_RATE), voice.dnsmos(noisy, SAMPLE_RATE)
    assert clean_scores.ovrl > noisy_scores.ovrl + 0.5
    assert clean_scores.bak > noisy_scores.bak + 1.0
    assert all(1.0 <= value <= 5.0 for value in (*clean_scores, *noisy_scores))
    with pytest.raises(metrics.MetricError, match="silent"):
        voice.dnsmos(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)


@pytest.mark.slow
@needs_pocketsphinx
def test_word_error_rate_of_an_example_and_of_a_corrupted_copy() -> None:
    clean, noisy = speech_and_noisy_speech()
    only_wer = frozenset(metrics.METRICS) - {"wer"}
    # no transcript: the reference is what pocketsphinx hears in the original, so the original scores 0
    original = voice.VoiceAnalysis(clean, SAMPLE_RATE)
    assert metrics.score_clip(clean, clean, SAMPLE_RATE, only_wer, original).wer == 0.0
    corrupted = metrics.score_clip(noisy, clean, SAMPLE_RATE, only_wer, original)
    assert corrupted.wer > 0.3 and corrupted.recognized is not None
    # with the transcript, the original's own recognition is scored too
    transcribed = voice.VoiceAnalysis(clean, SAMPLE_RATE, CLIP_TEXT)
    own = metrics.score_original(transcribed, skip=only_wer)
    assert own.wer < 0.5 and own.recognized == original.recognized
    assert metrics.score_clip(noisy, clean, SAMPLE_RATE, only_wer, transcribed).wer > own.wer


# --------------------------------------------------------------------------------------------------
# vqaudio eval
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
@needs_praat
@needs_dnsmos
@needs_pocketsphinx
def test_eval_report_has_the_voice_columns_and_the_original_row(
    tiny_tokenizer: Tokenizer, tmp_path: Path
) -> None:
    corpus = tmp_path / "clips"
    corpus.mkdir()
    for path in sorted(EXAMPLES.glob("*.flac"))[:2]:
        (corpus / path.name).symlink_to(path)
    out = tmp_path / "report"
    options = EvalOptions(n_q=(3,), baselines=False, num_examples=0, progress=False, wer=True)
    run_evaluation(corpus, tiny_tokenizer, out, options)
    report = json.loads((out / "report.json").read_text())
    nq3 = report["systems"]["vqaudio_nq3"]["metrics"]
    for metric in (*voice.PRAAT_METRICS, *voice.DNSMOS_METRICS, "wer"):
        assert report["metrics"][metric]["available"], metric
    assert nq3["voicing_recall"]["scored"] + nq3["voicing_recall"]["failed"] == 2
    assert 1 <= nq3["dnsmos_ovrl"]["mean"] <= 5 and nq3["wer"]["scored"] == 2
    original = report["original"]["metrics"]
    assert original["dnsmos_ovrl"]["scored"] == 2
    assert original["wer"]["scored"] == 0  # a folder has no transcripts: the original is the reference
    assert report["wer_reference"]["recognition_of_original"] == 2
    utterance = report["utterances"][0]
    assert set(utterance["scores"]) == {"vqaudio_nq3", "original"}
    assert set(utterance["scores"]["original"]) == set(metrics.METRICS)
    assert set(utterance["recognized"]) == {"vqaudio_nq3", "original"}  # the original's: the WER reference
    text = (out / "report.md").read_text()
    assert "## Voice" in text and "| `original` |" in text
    for header in ("voicing recall", "F0 error cents", "HNR drop dB", "DNSMOS OVRL", "WER"):
        assert header in text
    assert "what the recogniser hears in the original (2 utterances" in text
