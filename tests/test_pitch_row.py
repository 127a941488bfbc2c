"""The pitch row: F0 and voicing sent in the tokens, and the harmonic excitation that follows it."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_tiny_config, make_tiny_tokenizer, speech_like
from scipy.signal import lfilter

from vqaudio.cli.main import main
from vqaudio.codec.corpus_coding import resynthesize_tokens, tokenize_corpus
from vqaudio.codec.fine_tuning import initialise_from
from vqaudio.codec.pitch import decode_pitch, frames_read_back, pitch_at_frames
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.codec.vqvae import build_model
from vqaudio.config import Config, DecoderConfig, EncoderConfig, PitchConfig
from vqaudio.errors import TokenFileError
from vqaudio.evaluation.evaluate import EvalOptions, evaluate
from vqaudio.io.audio import load_audio, save_audio
from vqaudio.io.token_file import load_tokens
from vqaudio.prior import Prior

RATE = 16000


def pitch_config() -> Config:
    """The tiny test model with the shipped design's front end and head, and a 256-level pitch row."""
    base = make_tiny_config()
    model = dataclasses.replace(
        base.model,
        encoder=EncoderConfig(input="mel", n_mels=20, channels=8, max_channels=8, strides=(2,)),
        decoder=DecoderConfig(
            output="istft", channels=8, max_channels=16, strides=(2,), istft_excitation="harmonic"
        ),
        quantizer=dataclasses.replace(base.model.quantizer, codebook_size=256),  # pitch codes fit below it
        pitch=PitchConfig(levels=256),
    )
    return dataclasses.replace(base, model=model)


@pytest.fixture(scope="module")
def pitch_tokenizer() -> Tokenizer:
    return make_tiny_tokenizer(config=pitch_config())


def voiced(f0: float, seconds: float = 1.0) -> np.ndarray:
    """A glottal-like pulse train at ``f0`` through two formant resonators (500 and 1500 Hz)."""
    n = int(seconds * RATE)
    pulses = np.zeros(n)
    pulses[(np.arange(0, seconds, 1 / f0) * RATE).astype(int)] = 1.0
    signal = pulses
    for centre, bandwidth in ((500.0, 80.0), (1500.0, 120.0)):  # two-pole resonators
        radius = math.exp(-math.pi * bandwidth / RATE)
        a1, a2 = -2 * radius * math.cos(2 * math.pi * centre / RATE), radius**2
        signal = lfilter([1.0], [1.0, a1, a2], signal)
    return (0.3 * signal / np.abs(signal).max()).astype(np.float32)


@pytest.mark.parametrize("f0", [110.0, 220.0])
def test_a_voiced_signal_keeps_its_f0_in_the_pitch_row(pitch_tokenizer: Tokenizer, f0: float) -> None:
    codes = pitch_tokenizer.encode(voiced(f0), RATE)
    assert codes.shape[0] == 1 + pitch_tokenizer.num_codebooks
    log_f0, is_voiced = decode_pitch(codes[None, 0], pitch_tokenizer.config.model.pitch)
    inner = slice(3, -3)  # frames whose window lies inside the signal
    assert bool(is_voiced[0, inner].all())
    cents = 1200 * (log_f0[0, inner] - math.log(f0)) / math.log(2)
    assert float(cents.abs().max()) < 20


def test_noise_and_silence_are_unvoiced(pitch_tokenizer: Tokenizer) -> None:
    noise = np.random.default_rng(0).normal(0, 0.1, RATE).astype(np.float32)
    assert int(pitch_tokenizer.encode(noise, RATE)[0].count_nonzero()) <= 2  # of 50 frames
    assert int(pitch_tokenizer.encode(np.zeros(RATE, np.float32), RATE)[0].count_nonzero()) == 0


def test_pitch_codes_are_identical_chunked_and_whole(pitch_tokenizer: Tokenizer) -> None:
    wav = np.concatenate([voiced(110.0, 2.0), speech_like(3 * RATE, seed=3), voiced(220.0, 2.0)])
    whole = pitch_tokenizer.encode(wav, RATE, chunk_seconds=60.0)
    chunked = pitch_tokenizer.encode(wav, RATE, chunk_seconds=0.5)
    assert torch.equal(chunked[0], whole[0])


def test_the_pitch_row_is_counted_and_kept_at_every_bitrate(pitch_tokenizer: Tokenizer) -> None:
    frame_rate = pitch_tokenizer.frame_rate
    assert pitch_tokenizer.bitrate_at(1) == pytest.approx(
        (8 + 8) * frame_rate
    )  # a codebook and the pitch row
    codes = pitch_tokenizer.encode(voiced(150.0), RATE)
    two = pitch_tokenizer.encode(voiced(150.0), RATE, n_q=2)
    assert torch.equal(two, codes[:3])  # the pitch row, then the first two codebooks
    audio = pitch_tokenizer.decode(codes, n_q=1)
    assert torch.equal(audio, pitch_tokenizer.decode(codes[:2]))


def test_the_harmonic_excitation_puts_its_peaks_at_multiples_of_the_sent_f0(
    pitch_tokenizer: Tokenizer,
) -> None:
    """With the direct branch silenced and unit harmonic gains, the output is the comb of the sent F0."""
    tok = make_tiny_tokenizer(config=pitch_config())
    head = tok.model.decoder.head
    with torch.no_grad():
        head.projection.conv.weight.zero_()
        head.projection.conv.bias.zero_()
        head.projection.conv.bias[: head.num_bins] = -30.0  # log-magnitudes of the direct branch: silence
        head.harmonic_filter.conv.bias[: head.num_bins] = 1.0  # real gain 1 on every bin
    f0 = 200.0
    audio = tok.decode(tok.encode(voiced(f0, 2.0), RATE)).numpy()[RATE // 2 : 3 * RATE // 2]
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    frequencies = np.fft.rfftfreq(len(audio), 1 / RATE)
    for harmonic in range(1, 6):
        near = np.abs(frequencies - harmonic * f0) < f0 / 2
        peak = frequencies[near][np.argmax(spectrum[near])]
        assert abs(peak - harmonic * f0) <= harmonic * f0 * (2 ** (20 / 1200) - 1) + 1.0  # 20 cents (+1 bin)
        between = np.abs(frequencies - (harmonic + 0.5) * f0) < 5
        assert spectrum[near].max() > 30 * spectrum[between].max()  # lines, not a smooth spectrum


def test_pitch_at_frames_interpolates_within_voiced_runs() -> None:
    log_f0 = torch.tensor([[math.log(100.0), math.log(200.0), math.log(400.0)]])
    voiced_frames = torch.tensor([[True, True, False]])
    upsampled, voicing = pitch_at_frames(log_f0, voiced_frames, 2)
    assert voicing.tolist() == [[True, True, True, True, False, False]]
    assert upsampled[0, 1] == pytest.approx(0.75 * math.log(100.0) + 0.25 * math.log(200.0))
    assert upsampled[0, 3] == pytest.approx(math.log(200.0))  # the next frame is unvoiced: held


def test_pitch_at_frames_shifted_reads_earlier_frames() -> None:
    """A to_frame head takes F0 at its windows' centres, 0.75 token frames early: sub-frame 0 gets the previous
    frame's pitch and voicing, sub-frame 1 halfway from the previous frame's F0 to its own (its own voicing)."""
    log_f0 = torch.tensor([[math.log(100.0), math.log(200.0), math.log(400.0), math.log(300.0)]])
    voiced_frames = torch.tensor([[True, True, False, True]])
    upsampled, voicing = pitch_at_frames(log_f0, voiced_frames, 2, shift=-0.75)
    assert voicing.tolist() == [[True, True, True, True, True, False, False, True]]
    assert upsampled[0, 2] == pytest.approx(math.log(100.0))  # frame 1, sub-frame 0: frame 0's
    assert upsampled[0, 3] == pytest.approx(0.5 * math.log(100.0) + 0.5 * math.log(200.0))
    assert upsampled[0, 4] == pytest.approx(math.log(200.0))  # frame 2, sub-frame 0: frame 1's
    assert upsampled[0, 7] == pytest.approx(math.log(300.0))  # frame 2 unvoiced: held
    assert upsampled[0, 0] == pytest.approx(math.log(100.0))  # before the first frame: the first repeated
    assert frames_read_back(2, -0.75) == 1 and frames_read_back(2, -1.0) == 2 and frames_read_back(2) == 1
    unshifted = pitch_at_frames(log_f0, voiced_frames, 2)
    moved = pitch_at_frames(log_f0, voiced_frames, 2, shift=0.0)
    assert torch.equal(unshifted[0], moved[0]) and torch.equal(unshifted[1], moved[1])


def test_a_token_file_without_the_pitch_row_names_the_model_it_belongs_to(
    pitch_tokenizer: Tokenizer, tmp_path: Path
) -> None:
    plain = make_tiny_tokenizer(
        name="plain",
        config=dataclasses.replace(
            pitch_config(), model=dataclasses.replace(pitch_config().model, pitch=PitchConfig())
        ),
    )
    save_audio(tmp_path / "wavs" / "a.wav", voiced(150.0), RATE)
    tokenize_corpus(plain, tmp_path / "wavs", tmp_path / "plain.npy", progress=False)
    with pytest.raises(TokenFileError, match="has no pitch row.*'plain'"):
        resynthesize_tokens(
            pitch_tokenizer, tmp_path / "plain.npy", tmp_path / "out", force=True, progress=False
        )


def test_info_on_a_token_file_counts_the_pitch_row_apart(
    pitch_tokenizer: Tokenizer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`vqaudio info tokens.npy --usage`: the bitrate counts 8 bits for the pitch row, its usage is over its
    levels, and the codebooks are numbered from 1 as everywhere else."""
    save_audio(tmp_path / "wavs" / "a.wav", voiced(150.0), RATE)
    tokenize_corpus(pitch_tokenizer, tmp_path / "wavs", tmp_path / "t.npy", progress=False)
    assert main(["info", str(tmp_path / "t.npy"), "--usage", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    n_q, levels = pitch_tokenizer.num_codebooks, pitch_tokenizer.config.model.pitch.levels
    assert (facts["n_q"], facts["pitch_rows"]) == (n_q, 1)
    assert facts["bitrate"] == pytest.approx(pitch_tokenizer.bitrate_at(n_q))
    assert len(facts["codebook_usage"]) == n_q and len(facts["pitch_usage"]) == 1
    assert facts["pitch_usage"][0]["max_entropy_bits"] == pytest.approx(math.log2(levels))
    assert main(["info", str(tmp_path / "t.npy"), "--usage"]) == 0
    text = capsys.readouterr().out
    assert f"a pitch row of {levels} levels and n_q {n_q}" in text and "   pitch " in text


def test_a_pitch_model_trains(pitch_tokenizer: Tokenizer) -> None:
    model = pitch_tokenizer.model
    model.train()
    try:
        wav = torch.from_numpy(np.stack([voiced(120.0), speech_like(RATE, seed=1)]))
        output = model(wav)
        assert output.codes.shape[1] == 1 + model.num_codebooks and output.audio.shape == wav.shape
        output.audio.abs().mean().backward()
        assert model.pitch_embedding is not None and model.pitch_embedding.weight.grad is not None
        assert model.decoder.head.harmonic_filter.conv.weight.grad is not None
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_the_prior_models_the_pitch_row_like_any_other_row(
    pitch_tokenizer: Tokenizer, tmp_path: Path
) -> None:
    for index, f0 in enumerate((110.0, 150.0, 220.0)):
        save_audio(tmp_path / "wavs" / f"u{index}.wav", voiced(f0), RATE)
    tokens = tmp_path / "tokens.npy"
    tokenize_corpus(pitch_tokenizer, tmp_path / "wavs", tokens, progress=False)
    corpus = load_tokens(tokens)
    assert corpus.meta["pitch_rows"] == 1 and corpus.num_codebooks == 1 + pitch_tokenizer.num_codebooks
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "prior_tiny.yaml"
    out = tmp_path / "prior"
    assert main(["--quiet", "prior", "train", str(tokens), "--config", str(recipe), "--out", str(out),
                 "--set", "train.max_steps=3", "--set", "train.holdout_fraction=0.0"]) == 0  # fmt: skip
    prior = Prior.load(out)
    codes = torch.as_tensor(np.asarray(corpus["u0"], dtype=np.int64))
    assert prior.log_prob(codes).shape == codes.shape  # [1 + K, frames]: the pitch row is row 0
    sampled = prior.generate(10, seed=0)
    assert sampled.shape == (1 + pitch_tokenizer.num_codebooks, 10)
    assert pitch_tokenizer.decode(sampled).shape == (10 * pitch_tokenizer.hop_length,)


def test_a_pitch_model_fine_tuned_from_one_without_starts_where_that_model_was(tmp_path: Path) -> None:
    """--init-from a model without a pitch row: the pitch embedding and the harmonic gains start at zero."""
    plain_config = pitch_config()
    plain_config = dataclasses.replace(
        plain_config,
        model=dataclasses.replace(
            plain_config.model,
            pitch=PitchConfig(),
            decoder=dataclasses.replace(plain_config.model.decoder, istft_excitation="none"),
        ),
    )
    plain = make_tiny_tokenizer(name="plain", config=plain_config)
    plain.save(tmp_path / "plain")
    model = build_model(pitch_config().model).eval()
    initialise_from(model, pitch_config(), tmp_path / "plain")
    wav = speech_like(2 * RATE, seed=5)
    with torch.no_grad():
        codes = model.encode(torch.from_numpy(wav)[None])
        assert torch.equal(codes[:, 1:], plain.model.encode(torch.from_numpy(wav)[None]))
        torch.testing.assert_close(model.decode(codes), plain.model.decode(codes[:, 1:]), rtol=0, atol=1e-5)


def test_hostile_inputs_give_valid_pitch_codes(pitch_tokenizer: Tokenizer) -> None:
    """Very short, clipped, 8 kHz-origin and sung-above-the-range inputs: no crash, codes in range."""
    levels = pitch_tokenizer.config.model.pitch.levels
    t = np.arange(RATE) / RATE
    sung = (0.3 * np.sin(2 * np.pi * 900.0 * t)).astype(np.float32)  # above max_f0 = 550 Hz
    narrowband = voiced(150.0)[::2].copy()  # as if recorded at 8 kHz, resampled by encode()
    clipped = np.clip(voiced(150.0) * 20, -1, 1).astype(np.float32)
    for wav, rate in [(np.zeros(1, np.float32), RATE), (voiced(150.0)[:100], RATE), (sung, RATE),
                      (narrowband, 8000), (clipped, RATE)]:  # fmt: skip
        codes = pitch_tokenizer.encode(wav, rate)
        assert 0 <= int(codes[0].min()) and int(codes[0].max()) < levels
        assert pitch_tokenizer.decode(codes).isfinite().all()
    assert int(pitch_tokenizer.encode(sung, RATE)[0].count_nonzero()) <= 2  # no pitch in range: unvoiced
    assert int((pitch_tokenizer.encode(clipped, RATE)[0] > 0).sum()) > 40  # clipping keeps the voicing


def test_eval_scores_a_pitch_model_at_each_bitrate(pitch_tokenizer: Tokenizer, tmp_path: Path) -> None:
    """The pitch row is kept at every n_q, counted in the bitrate and tokens/s, and left out of codebook usage."""
    for index, f0 in enumerate((110.0, 180.0)):
        save_audio(tmp_path / "wavs" / f"u{index}.wav", voiced(f0), RATE)
    options = EvalOptions(n_q=(1, 3), baselines=False, num_examples=0, progress=False, voice=False)
    result = evaluate(tmp_path / "wavs", pitch_tokenizer, options)
    one = result.system("vqaudio_nq1")
    assert one.spec.kbps == pytest.approx(pitch_tokenizer.bitrate_at(1) / 1000)
    assert one.spec.tokens_per_second == pytest.approx(2 * pitch_tokenizer.frame_rate)
    assert result.code_counts.shape == (pitch_tokenizer.num_codebooks, pitch_tokenizer.codebook_size)
    three = result.system("vqaudio_nq3")
    assert np.isfinite(three.values("mel_distance")).all() and len(three.values("mel_distance")) == 2


def test_the_pitch_row_is_identical_when_a_file_streams_from_disk(
    pitch_tokenizer: Tokenizer, tmp_path: Path
) -> None:
    """``encode_file`` reads the file window by window: the same codes, pitch row included, as in memory."""
    wav = np.concatenate([voiced(110.0, 2.0), speech_like(3 * RATE, seed=3), voiced(220.0, 2.0)])
    path = tmp_path / "x.wav"
    sf.write(str(path), wav, RATE, subtype="PCM_16")
    loaded = load_audio(path, RATE)
    expected = pitch_tokenizer.encode(loaded, RATE, chunk_seconds=0.5)
    coded = pitch_tokenizer.encode_file(path, chunk_seconds=0.5, block_frames=1000)
    np.testing.assert_array_equal(coded.codes, expected.numpy())
    assert bool((expected[0] > 0).any())  # voiced frames: the pitch row is not trivially zero


def test_the_audio_round_trip_of_a_pitch_row_model(pitch_tokenizer: Tokenizer, tmp_path: Path) -> None:
    """``resynth in.wav out.wav``: the bitrate counts the codebooks, not the pitch row as one more codebook."""
    model_dir = pitch_tokenizer.save(tmp_path / "model")
    source = tmp_path / "in.wav"
    sf.write(str(source), voiced(150.0), RATE, subtype="PCM_16")
    assert main(["resynth", str(source), str(tmp_path / "out.wav"), "--model", str(model_dir)]) == 0
    assert sf.info(str(tmp_path / "out.wav")).frames == RATE
