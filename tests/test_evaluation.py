"""vqaudio.evaluation: metrics on known signals, codebook statistics, alignment, baselines, reports."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_tiny_config, speech_like

from vqaudio.cli.main import main
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.codec.vqvae import build_model
from vqaudio.errors import AudioError, DataError
from vqaudio.evaluation import metrics, voice
from vqaudio.evaluation.alignment import align_to_reference, estimate_lag, shift_to_length
from vqaudio.evaluation.baselines import default_baselines, opus_audio_bytes, run_baseline
from vqaudio.evaluation.codebook_stats import code_histograms, codebook_usage, usage_from_histograms
from vqaudio.evaluation.evaluate import EvalOptions, check_n_q, evaluate, run_evaluation, served_n_q

SAMPLE_RATE = 16000
HAVE_PESQ = "pesq_wb" not in metrics.unavailable_metrics()
HAVE_STOI = "stoi" not in metrics.unavailable_metrics()
# the voice metrics have tests of their own (tests/test_voice.py); DNSMOS costs seconds per clip
VOICE = frozenset(voice.PRAAT_METRICS + voice.DNSMOS_METRICS + (voice.WER_METRIC,))
INSTALLED_BASELINES = [b for b in default_baselines() if not b.missing_tools()]


def strict_json(path: Path) -> dict:
    """Parse JSON, refusing NaN/Infinity (not JSON, though Python writes them by default)."""

    def reject(constant: str) -> None:
        raise ValueError(f"{path} holds {constant}")

    return json.loads(path.read_text(), parse_constant=reject)


# --------------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------------
def test_identical_signals_score_perfectly() -> None:
    clip = speech_like(2 * SAMPLE_RATE, seed=1)
    scores = metrics.score_clip(clip, clip.copy(), SAMPLE_RATE, skip=VOICE)
    assert scores.si_sdr == metrics.SI_SDR_LIMIT_DB  # infinite SNR, capped so means stay finite
    assert scores.mel_distance == pytest.approx(0.0, abs=1e-6)
    assert scores.stft_distance == pytest.approx(0.0, abs=1e-6)
    if HAVE_STOI:
        assert scores.stoi == pytest.approx(1.0, abs=1e-3)
    if HAVE_PESQ:
        assert scores.pesq_wb > 4.4
    assert scores.failures == ()


@pytest.mark.skipif(not HAVE_STOI, reason="pystoi not installed")
def test_stoi_bands_average_to_stoi_and_find_the_damaged_band() -> None:
    clip = speech_like(3 * SAMPLE_RATE, seed=3).astype(np.float64)
    # damage one region only: white noise band-passed to 1.5-2.5 kHz, as loud as the speech there
    noise = np.random.default_rng(0).standard_normal(clip.size)
    spectrum = np.fft.rfft(noise)
    frequencies = np.fft.rfftfreq(clip.size, 1 / SAMPLE_RATE)
    spectrum[(frequencies < 1500) | (frequencies > 2500)] = 0
    band_noise = np.fft.irfft(spectrum, clip.size)
    damaged = clip + band_noise / np.std(band_noise) * np.std(clip)
    centres, scores = metrics.stoi_bands(damaged, clip, SAMPLE_RATE)
    assert centres.shape == scores.shape == (15,) and 140 < centres[0] < 160 and 3700 < centres[-1] < 3900
    assert scores.mean() == pytest.approx(metrics.stoi(damaged, clip, SAMPLE_RATE), abs=1e-6)
    inside = (centres > 1400) & (centres < 2600)
    assert scores[inside].max() < scores[~inside].min()  # the noisy bands score lowest
    _, perfect = metrics.stoi_bands(clip, clip, SAMPLE_RATE)
    assert perfect.min() > 0.999
    extended = metrics.stoi(damaged, clip, SAMPLE_RATE, extended=True)  # ESTOI: another measure
    assert 0 < extended < 0.95 and abs(extended - scores.mean()) > 0.01
    assert metrics.stoi(clip, clip, SAMPLE_RATE, extended=True) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(metrics.MetricError, match="too little"):
        metrics.stoi_bands(clip[:3000], clip[:3000], SAMPLE_RATE)


@pytest.mark.parametrize("snr_db", [0.0, 10.0, 25.0])
def test_si_sdr_of_signal_plus_white_noise_matches_the_snr(snr_db: float) -> None:
    clip = speech_like(3 * SAMPLE_RATE, seed=2).astype(np.float64)
    clip -= clip.mean()
    noise = np.random.default_rng(0).standard_normal(clip.shape[0])
    noise -= noise.mean()
    noise *= np.linalg.norm(clip) / np.linalg.norm(noise) / 10 ** (snr_db / 20)
    assert metrics.si_sdr((clip + noise).astype(np.float32), clip.astype(np.float32)) == pytest.approx(
        snr_db, abs=0.5
    )


def test_si_sdr_is_invariant_to_scaling_and_rewards_better_estimates() -> None:
    reference = speech_like(SAMPLE_RATE, seed=3)
    estimate = reference + 0.02 * np.random.default_rng(1).standard_normal(reference.shape[0]).astype(
        np.float32
    )
    value = metrics.si_sdr(estimate, reference)
    assert metrics.si_sdr(0.1 * estimate, reference) == pytest.approx(value, abs=1e-3)
    assert metrics.si_sdr(7.0 * estimate, reference) == pytest.approx(value, abs=1e-3)
    assert metrics.si_sdr(torch.from_numpy(estimate), torch.from_numpy(reference)) == pytest.approx(value)
    worse = reference + 0.2 * np.random.default_rng(1).standard_normal(reference.shape[0]).astype(np.float32)
    assert metrics.si_sdr(worse, reference) < value - 10


def test_distances_grow_with_distortion() -> None:
    reference = speech_like(SAMPLE_RATE, seed=4)
    rng = np.random.default_rng(2)
    small = reference + 0.005 * rng.standard_normal(reference.shape[0]).astype(np.float32)
    large = reference + 0.05 * rng.standard_normal(reference.shape[0]).astype(np.float32)
    assert (
        0
        < metrics.mel_distance(small, reference, SAMPLE_RATE)
        < metrics.mel_distance(large, reference, SAMPLE_RATE)
    )
    assert 0 < metrics.stft_distance(small, reference) < metrics.stft_distance(large, reference)


def test_silent_and_short_clips_are_recorded_as_failures_not_raised() -> None:
    silence = np.zeros(SAMPLE_RATE, dtype=np.float32)
    scores = metrics.score_clip(speech_like(SAMPLE_RATE), silence, SAMPLE_RATE, skip=VOICE)
    failed = {failure.split(":")[0] for failure in scores.failures}
    assert {"si_sdr", "stft_distance"} <= failed
    assert math.isnan(scores.si_sdr) and math.isnan(scores.stft_distance)
    assert math.isfinite(scores.mel_distance)  # log-mel of silence is the floor: defined
    if HAVE_PESQ:
        assert "pesq_wb" in failed
        short = speech_like(800, seed=5)  # 50 ms
        assert "pesq_wb" in {
            f.split(":")[0] for f in metrics.score_clip(short, short, SAMPLE_RATE, skip=VOICE).failures
        }
    if HAVE_STOI:
        assert "stoi" in failed
    with pytest.raises(metrics.MetricError, match="silent"):
        metrics.si_sdr(speech_like(SAMPLE_RATE), silence)


def test_metrics_reject_unaligned_or_malformed_input() -> None:
    clip = speech_like(SAMPLE_RATE)
    with pytest.raises(ValueError, match="same length.*align"):
        metrics.score_clip(clip[:-10], clip, SAMPLE_RATE, skip=VOICE)
    with pytest.raises(ValueError, match=r"mono audio \[T\]"):
        metrics.si_sdr(np.stack([clip, clip]), np.stack([clip, clip]))
    with pytest.raises(TypeError, match="float audio"):
        metrics.si_sdr((clip * 32767).astype(np.int16), clip)
    with pytest.raises(ValueError, match="unknown metrics"):
        metrics.score_clip(clip, clip, SAMPLE_RATE, skip=frozenset({"pesq"}))


def test_score_clip_skips_named_metrics() -> None:
    clip = speech_like(SAMPLE_RATE)
    scores = metrics.score_clip(clip, clip, SAMPLE_RATE, skip=VOICE | {"pesq_wb", "stoi"})
    assert math.isnan(scores.pesq_wb) and math.isnan(scores.stoi) and scores.failures == ()


# --------------------------------------------------------------------------------------------------
# Codebook statistics
# --------------------------------------------------------------------------------------------------
def test_uniform_codes_have_perplexity_equal_to_codebook_size() -> None:
    codebook_size = 64
    codes = np.tile(np.arange(codebook_size), 5)[None].repeat(3, axis=0)  # [3, 320], every code 5 times
    for stats in codebook_usage(codes, codebook_size):
        assert stats.used_fraction == 1.0
        assert stats.perplexity == pytest.approx(codebook_size)
        assert stats.entropy_bits == pytest.approx(math.log2(codebook_size))
        assert stats.max_entropy_bits == pytest.approx(6.0)
        assert stats.num_codes == 320


def test_a_single_code_has_perplexity_one() -> None:
    stats = codebook_usage(np.full((2, 100), 7), 32)
    assert [s.perplexity for s in stats] == [1.0, 1.0]
    assert [s.entropy_bits for s in stats] == [0.0, 0.0]
    assert stats[0].used_fraction == pytest.approx(1 / 32)


def test_codebook_usage_matches_brute_force_for_torch_and_numpy_batches() -> None:
    rng = np.random.default_rng(0)
    codes = (rng.zipf(1.5, size=(4, 3, 50)) - 1) % 16  # [B, K, F], skewed
    from_numpy = codebook_usage(codes, 16)
    from_torch = codebook_usage(torch.from_numpy(codes), 16)
    assert from_numpy == from_torch
    for index, stats in enumerate(from_numpy):
        values = codes[:, index].reshape(-1)
        probabilities = np.bincount(values, minlength=16) / values.size
        entropy = -sum(p * math.log2(p) for p in probabilities if p > 0)
        assert stats.entropy_bits == pytest.approx(entropy)
        assert stats.perplexity == pytest.approx(2**entropy)
        assert stats.used_fraction == pytest.approx(np.count_nonzero(probabilities) / 16)
    # histograms add up across batches: the trainer's accumulation
    total = code_histograms(codes[:2], 16) + code_histograms(codes[2:], 16)
    assert usage_from_histograms(total) == from_numpy


def test_codebook_usage_rejects_bad_codes() -> None:
    with pytest.raises(ValueError, match="codebook_size is 8"):
        codebook_usage(np.array([[0, 8]]), 8)
    with pytest.raises(TypeError, match="integer codes"):
        codebook_usage(np.zeros((2, 3)), 8)
    with pytest.raises(ValueError, match=r"\[K, F\] or \[B, K, F\]"):
        codebook_usage(np.zeros(5, dtype=np.int64), 8)
    assert usage_from_histograms(np.zeros((1, 4)))[0].perplexity == 0.0  # nothing counted yet


# --------------------------------------------------------------------------------------------------
# Alignment
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("delay", [0, 123, -77, 799])
def test_alignment_recovers_a_known_delay(delay: int) -> None:
    reference = speech_like(SAMPLE_RATE, seed=6)
    # a "codec" output: delayed, quieter, with some noise, and a different length
    rng = np.random.default_rng(3)
    decoded = 0.8 * shift_to_length(reference, -delay, reference.shape[0] + 200)
    decoded += 0.005 * rng.standard_normal(decoded.shape[0]).astype(np.float32)
    assert estimate_lag(decoded, reference, SAMPLE_RATE)[0] == delay
    aligned = align_to_reference(decoded, reference, SAMPLE_RATE)
    assert aligned.lag == delay and aligned.correlation > 0.95
    assert aligned.audio.shape == reference.shape
    inside = slice(max(0, -delay), reference.shape[0] - max(0, delay))
    np.testing.assert_allclose(aligned.audio[inside], 0.8 * reference[inside], atol=0.03)


def test_alignment_handles_silence_and_empty_output() -> None:
    reference = speech_like(4000, seed=7)
    empty = align_to_reference(np.zeros(0, dtype=np.float32), reference, SAMPLE_RATE)
    assert empty.lag == 0 and empty.correlation == 0.0 and not empty.audio.any()
    assert empty.audio.shape == reference.shape
    np.testing.assert_array_equal(shift_to_length(np.arange(5.0), 2, 5), [2, 3, 4, 0, 0])
    np.testing.assert_array_equal(shift_to_length(np.arange(5.0), -2, 4), [0, 0, 0, 1])


# --------------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------------
def test_opus_audio_bytes_skips_headers_and_page_overhead() -> None:
    def page(packets: list[bytes]) -> bytes:
        table = b"".join(bytes([255] * (len(p) // 255) + [len(p) % 255]) for p in packets)
        return b"OggS" + bytes(22) + bytes([len(table)]) + table + b"".join(packets)

    stream = (
        page([b"OpusHead" + bytes(11)]) + page([b"OpusTags" + bytes(300)]) + page([bytes(40), bytes(600)])
    )
    assert opus_audio_bytes(stream) == 640
    with pytest.raises(Exception, match="not an Ogg stream"):
        opus_audio_bytes(b"RIFF0000")


@pytest.mark.skipif(not INSTALLED_BASELINES, reason="neither codec2 nor opus-tools is installed")
def test_installed_baselines_give_plausible_scores_on_a_short_clip() -> None:
    reference = speech_like(int(1.5 * SAMPLE_RATE), seed=8)
    for baseline in INSTALLED_BASELINES:
        output = run_baseline(baseline, reference, SAMPLE_RATE)
        assert abs(output.audio.shape[0] - reference.shape[0]) < 0.1 * SAMPLE_RATE, baseline.name
        measured_kbps = output.encoded_bits / 1.5 / 1000
        assert 0.5 * baseline.nominal_kbps < measured_kbps < 1.3 * baseline.nominal_kbps, baseline.name
        aligned = align_to_reference(output.audio, reference, SAMPLE_RATE)
        assert -0.002 * SAMPLE_RATE <= aligned.lag < 0.05 * SAMPLE_RATE, baseline.name  # codecs are late
        scores = metrics.score_clip(aligned.audio, reference, SAMPLE_RATE, skip=VOICE)
        assert scores.mel_distance < 2.5, baseline.name
        if baseline.codec == "opus":  # a waveform codec: once aligned, it follows the waveform
            assert scores.si_sdr > 0 and aligned.correlation > 0.7, baseline.name
            if HAVE_PESQ:
                assert scores.pesq_wb > 2.0, baseline.name
        if HAVE_STOI:
            assert scores.stoi > 0.7, baseline.name


# --------------------------------------------------------------------------------------------------
# Bitrates served, options
# --------------------------------------------------------------------------------------------------
def test_served_bitrates_follow_the_quantizer(tiny_tokenizer: Tokenizer) -> None:
    assert served_n_q(tiny_tokenizer) == (1, 2, 3)  # residual VQ trained with quantizer dropout
    assert check_n_q(tiny_tokenizer, (3, 1, 1)) == ((1, 3), [])
    with pytest.raises(ValueError, match=r"outside 1..3"):
        check_n_q(tiny_tokenizer, (4,))
    group = make_tiny_config("group")
    group_tokenizer = Tokenizer(build_model(group.model), group)
    assert served_n_q(group_tokenizer) == (2,)
    with pytest.raises(ValueError, match="group VQ"):
        check_n_q(group_tokenizer, (1,))


# --------------------------------------------------------------------------------------------------
# The report folder
# --------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_report_folder_on_a_tiny_model(tiny_tokenizer: Tokenizer, audio_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = run_evaluation(
        audio_folder,
        tiny_tokenizer,
        out,
        EvalOptions(num_examples=2, progress=False, voice=False),
        model_path="tiny",
    )
    report = strict_json(out / "report.json")
    assert report["format"] == "vqaudio-eval-report"
    assert {
        "data",
        "model",
        "environment",
        "metrics",
        "alignment",
        "systems",
        "codebooks",
        "utterances",
    } <= set(report)
    assert report["data"]["utterances"] == 6
    systems = report["systems"]
    names = ["vqaudio_nq1", "vqaudio_nq2", "vqaudio_nq3"] + [b.name for b in INSTALLED_BASELINES]
    assert list(systems) == names
    nq2 = systems["vqaudio_nq2"]
    assert nq2["kbps"] == pytest.approx(2 * 4 * 50 / 1000)  # 2 codebooks x log2(16) bits x 50 frames/s
    assert nq2["tokens_per_second"] == 100
    assert nq2["encode_rtf"] > 0 and nq2["decode_rtf"] > 0
    assert set(nq2["metrics"]) == set(metrics.METRICS)
    assert nq2["metrics"]["mel_distance"]["scored"] == 6
    if HAVE_PESQ:  # f.wav is 77 ms: too short for PESQ, counted and named instead of crashing
        assert nq2["metrics"]["pesq_wb"]["failed"] >= 1
        assert any(f.startswith("sub/deeper/f:") for f in nq2["metric_failures"]["pesq_wb"])
    for name in names[3:]:
        assert "lag_ms" in systems[name] and systems[name]["utterances"] == 6
    codebooks = report["codebooks"]
    assert len(codebooks) == 3 and all(len(c["counts"]) == 16 for c in codebooks)
    assert sum(codebooks[0]["counts"]) == codebooks[0]["num_codes"] > 0
    assert all(0 < c["used_fraction"] <= 1 and 1 <= c["perplexity"] <= 16 for c in codebooks)

    text = (out / "report.md").read_text()
    assert "| system | kbps |" in text and "`vqaudio_nq3`" in text and "## Codebook usage" in text
    assert "## Alignment" in text and "cross-correlat" in text
    for png in ["quality_vs_bitrate.png", "codebook_usage.png"]:
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "report.html").stat().st_size > 0  # its content: tests/test_html_report.py
    assert len(report["examples"]) == 2
    assert [example["role"] for example in report["examples"]] == ["worst", "median"]
    for example in report["examples"]:
        assert (out / example["spectrogram"]).read_bytes()[:4] == b"\x89PNG"
        original, rate = sf.read(str(out / example["wavs"]["original"]))
        decoded, _ = sf.read(str(out / example["wavs"]["vqaudio_nq3"]))
        assert rate == SAMPLE_RATE and original.shape == decoded.shape
        assert example["spectrogram_rows"][:3] == ["original", "vqaudio_nq3", "vqaudio_nq1"]
    assert result.system("vqaudio_nq3").scores.keys() == {u.id for u in result.utterances}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o777 & ~umask  # not the private mode of a temporary folder
    assert (out / "report.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_out_folder_is_refused_without_overwrite_and_replaced_with_it(
    tiny_tokenizer: Tokenizer, audio_folder: Path, tmp_path: Path
) -> None:
    out = tmp_path / "reports" / "report"
    out.mkdir(parents=True)
    (out / "old.txt").write_text("old")
    options = EvalOptions(
        n_q=(3,), baselines=False, max_utterances=2, num_examples=0, progress=False, voice=False
    )
    with pytest.raises(FileExistsError, match="--overwrite"):
        run_evaluation(audio_folder, tiny_tokenizer, out, options)
    run_evaluation(audio_folder, tiny_tokenizer, out, options, overwrite=True)
    assert not (out / "old.txt").exists() and (out / "report.json").exists()
    report = strict_json(out / "report.json")
    assert list(report["systems"]) == ["vqaudio_nq3"] and report["data"]["utterances"] == 2
    assert "Baselines were not run" in (out / "report.md").read_text()
    assert [p.name for p in out.parent.iterdir()] == ["report"]  # no staging or old folder left behind


def test_missing_metric_packages_and_codec_tools_are_noted_not_fatal(
    tiny_tokenizer: Tokenizer, audio_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import vqaudio.evaluation.baselines as baselines_module
    import vqaudio.evaluation.evaluate as evaluate_module

    note = "the 'pesq' package is not installed (pip install 'vqaudio[metrics]')"
    voice_note = "the 'speechmos' package is not installed (pip install 'vqaudio[voice]')"
    missing = {"pesq_wb": note, **dict.fromkeys(voice.DNSMOS_METRICS, voice_note)}
    monkeypatch.setattr(evaluate_module, "unavailable_metrics", lambda: missing)
    real_which = shutil.which
    monkeypatch.setattr(
        baselines_module.shutil,
        "which",
        lambda tool: None if tool.startswith(("c2", "opus")) else real_which(tool),
    )
    out = tmp_path / "report"
    options = EvalOptions(n_q=(3,), max_utterances=1, num_examples=0, progress=False)
    run_evaluation(audio_folder, tiny_tokenizer, out, options)
    report = strict_json(out / "report.json")
    assert report["metrics"]["pesq_wb"] == {**report["metrics"]["pesq_wb"], "available": False, "note": note}
    assert report["systems"]["vqaudio_nq3"]["metrics"]["pesq_wb"]["scored"] == 0
    assert report["metrics"]["dnsmos_ovrl"]["note"] == voice_note
    assert report["metrics"]["wer"]["available"] is False and "--wer" in report["metrics"]["wer"]["note"]
    assert report["original"] is None  # nothing without a reference was measured
    assert set(report["baselines_unavailable"]) == {b.name for b in default_baselines()}
    assert "install the Debian package 'codec2'" in report["baselines_unavailable"]["codec2_3200"]
    text = (out / "report.md").read_text()
    assert "**Unavailable: the 'pesq' package is not installed" in text
    assert "## Baselines not run" in text and "opus-tools" in text
    assert "| n/a |" in text
    assert "**Unavailable: the 'speechmos' package is not installed (pip install 'vqaudio[voice]')" in text


def test_max_seconds_stops_after_whole_utterances(tiny_tokenizer: Tokenizer, audio_folder: Path) -> None:
    options = EvalOptions(
        n_q=(1,), baselines=False, max_seconds=1.0, num_examples=0, progress=False, voice=False
    )
    result = evaluate(audio_folder, tiny_tokenizer, options)
    seconds = [utt.seconds for utt in result.utterances]
    assert sum(seconds) >= 1.0 and sum(seconds) - min(seconds) < 1.0 + max(seconds)
    assert len(result.utterances) < 6


def test_unreadable_files_fail_clearly_or_are_skipped_and_listed(
    tiny_tokenizer: Tokenizer, audio_folder: Path, tmp_path: Path
) -> None:
    (audio_folder / "broken.wav").write_bytes(b"RIFF not really a wav file")
    options = EvalOptions(n_q=(3,), baselines=False, num_examples=0, progress=False, voice=False)
    with pytest.raises(AudioError, match=r"broken\.wav.*--skip-bad"):
        evaluate(audio_folder, tiny_tokenizer, options)
    out = tmp_path / "report"
    skip = EvalOptions(n_q=(3,), baselines=False, num_examples=0, progress=False, skip_bad=True, voice=False)
    run_evaluation(audio_folder, tiny_tokenizer, out, skip)
    report = strict_json(out / "report.json")
    assert report["data"]["utterances"] == 6
    assert [Path(item["path"]).name for item in report["data"]["skipped"]] == ["broken.wav"]
    assert "broken.wav" in (out / "report.md").read_text()
    with pytest.raises(DataError, match="no such file or folder"):
        evaluate(tmp_path / "missing", tiny_tokenizer, options)
    only_broken = tmp_path / "only_broken"
    only_broken.mkdir()
    shutil.copy(audio_folder / "broken.wav", only_broken / "x.wav")
    with pytest.raises(DataError, match="no readable utterance"):
        evaluate(only_broken, tiny_tokenizer, skip)


def test_cli_eval_writes_a_report_and_maps_errors_to_exit_codes(
    tiny_model_dir: Path, audio_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report"
    args = ["eval", str(audio_folder), "--model", str(tiny_model_dir), "--out", str(out)]
    fast = ["--no-baselines", "--n-q", "1,3", "--max-utterances", "2", "--examples", "1", "--no-progress"]
    fast += ["--no-voice"]
    assert main([*args, *fast, "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    assert "`vqaudio_nq1`" in printed and f"html: {out / 'report.html'}" in printed
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert list(strict_json(out / "report.json")["systems"]) == ["vqaudio_nq1", "vqaudio_nq3"]
    assert strict_json(out / "report.json")["model"]["first_codebook_hold"] == 0.0
    held = tmp_path / "held"
    assert (
        main(
            [
                "eval",
                str(audio_folder),
                "--model",
                str(tiny_model_dir),
                "--out",
                str(held),
                *fast,
                "--hold",
                "2",
            ]
        )
        == 0
    )
    assert strict_json(held / "report.json")["model"]["first_codebook_hold"] == 2.0
    assert "first-codebook hold 2" in (held / "report.md").read_text()
    assert main([*args, *fast]) == 1  # exists, no --overwrite: a data error, as for every command
    assert "--overwrite" in capsys.readouterr().err
    other = ["eval", str(audio_folder), "--model", str(tiny_model_dir), "--out", str(tmp_path / "new")]
    assert main([*other, "--n-q", "9"]) == 1  # parses, but the model has 3 codebooks
    assert "outside 1..3" in capsys.readouterr().err
    assert main([*other, "--n-q", "one"]) == 2
    assert main([*other, "--wer", "--language", "de"]) == 2  # pocketsphinx knows English only
    assert "English" in capsys.readouterr().err
    missing = [
        "eval",
        str(tmp_path / "nowhere"),
        "--model",
        str(tiny_model_dir),
        "--out",
        str(tmp_path / "x"),
    ]
    assert main(missing) == 1
    assert "nowhere: no such file or folder" in capsys.readouterr().err
    assert not (tmp_path / "new").exists() and not (tmp_path / "x").exists()
