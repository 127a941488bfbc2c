"""Tokenizer: shapes, exact chunking and batching, resampling, n_q, validation, model files and hashes."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import soxr
import torch
from conftest import make_phase_tokenizer, make_tiny_config, make_tiny_tokenizer, speech_like
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import vqaudio
from vqaudio.codec import tokenizer as tokenizer_module
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.codec.vqvae import build_model
from vqaudio.config import Config, DecoderConfig, EncoderConfig
from vqaudio.errors import AudioError, ModelFileError
from vqaudio.io.model_file import CONFIG_FILE, HEADER_KEY, WEIGHTS_FILE

# Float ties: two codes almost equally near a latent can swap when the same frame is computed in another
# window or batch (different summation order). The contract allows under 0.1% of frames to differ.
TIE_TOLERANCE = 0.001


def frames_that_differ(a: torch.Tensor, b: torch.Tensor) -> int:
    """Frames (last axis) where any codebook differs; shapes must match."""
    assert a.shape == b.shape
    return int((a != b).any(dim=-2).sum())


def whole_file_codes(tok: Tokenizer, wav: np.ndarray, n_q: int | None = None) -> torch.Tensor:
    """The reference: one model.encode call on the whole input."""
    with torch.inference_mode():
        return tok.model.encode(torch.from_numpy(wav)[None], n_q)[0]


# --------------------------------------------------------------------------------------------------
# Facts and shapes
# --------------------------------------------------------------------------------------------------
def test_facts_of_the_tiny_model(tiny_tokenizer: Tokenizer) -> None:
    tok = tiny_tokenizer
    assert (tok.sample_rate, tok.hop_length, tok.frame_rate) == (16000, 320, 50)
    assert (tok.num_codebooks, tok.codebook_size) == (3, 16)
    assert tok.bitrate_at(1) == pytest.approx(50 * 4)
    assert tok.bitrate == pytest.approx(3 * 50 * 4)
    assert tok.name == "tiny"
    assert tok.training["data"] == "synthetic"
    assert len(tok.hash) == 64
    with pytest.raises(ValueError, match="n_q"):
        tok.bitrate_at(4)


def test_encode_decode_shapes_numpy_and_torch(tiny_tokenizer: Tokenizer) -> None:
    wav = speech_like(16000 + 7)
    codes = tiny_tokenizer.encode(wav, 16000)
    assert codes.dtype == torch.long and codes.shape == (3, math.ceil(16007 / 320))
    assert torch.equal(tiny_tokenizer.encode(torch.from_numpy(wav), 16000), codes)
    batch = tiny_tokenizer.encode(np.stack([wav, wav[::-1].copy()]), 16000)
    assert batch.shape == (2, 3, codes.shape[1])
    assert torch.equal(batch[0], codes)
    audio = tiny_tokenizer.decode(codes)
    assert audio.dtype == torch.float32 and audio.shape == (codes.shape[1] * 320,)
    assert tiny_tokenizer.decode(codes, num_samples=16007).shape == (16007,)
    assert tiny_tokenizer.decode(codes.numpy().astype(np.int16)).shape == audio.shape
    assert tiny_tokenizer.decode(batch).shape == (2, codes.shape[1] * 320)


def test_codes_use_the_codebooks(tiny_tokenizer: Tokenizer) -> None:
    """The fixture model is meant for equality tests: its codes must not be all the same."""
    codes = tiny_tokenizer.encode(speech_like(48000, seed=3), 16000)
    for row in codes:
        assert len(set(row.tolist())) >= 8


# --------------------------------------------------------------------------------------------------
# Exactness: chunking and batching never change the tokens
# --------------------------------------------------------------------------------------------------
def test_chunked_encode_equals_whole_file_encode(tiny_tokenizer: Tokenizer) -> None:
    wav = speech_like(20 * 16000 + 123, seed=11)  # 1001 frames, windows of 0.5 s
    whole = whole_file_codes(tiny_tokenizer, wav)
    chunked = tiny_tokenizer.encode(wav, 16000, chunk_seconds=0.5)
    assert chunked.shape == whole.shape == (3, 1001)
    assert frames_that_differ(chunked, whole) <= TIE_TOLERANCE * whole.shape[-1]


def test_chunked_encode_with_the_mel_front_end_equals_whole_file_encode() -> None:
    """The shipped design (log-mel in, iSTFT out): windows of the mel front end see what the whole file sees."""
    base = make_tiny_config()
    model = dataclasses.replace(
        base.model,
        encoder=EncoderConfig(input="mel", n_mels=20, channels=8, max_channels=8, strides=(2,)),
        decoder=DecoderConfig(output="istft", channels=8, max_channels=16, strides=(2,)),
    )
    tok = make_tiny_tokenizer(config=dataclasses.replace(base, model=model))
    wav = speech_like(8 * 16000 + 123, seed=12)
    wav[4 * 16000 :] *= 0.01  # a quiet half
    whole = whole_file_codes(tok, wav)
    chunked = tok.encode(wav, 16000, chunk_seconds=0.5)
    assert chunked.shape == whole.shape
    assert frames_that_differ(chunked, whole) <= TIE_TOLERANCE * whole.shape[-1]


def test_chunked_encode_memory_is_bounded(tiny_tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every forward pass of a long input holds at most one window (chunk + context each side)."""
    seen: list[tuple[int, ...]] = []
    original = tiny_tokenizer.model.encode

    def recording_encode(wav: torch.Tensor, n_q: int | None = None) -> torch.Tensor:
        seen.append(tuple(wav.shape))
        return original(wav, n_q)

    monkeypatch.setattr(tiny_tokenizer.model, "encode", recording_encode)
    tiny_tokenizer.encode(speech_like(20 * 16000, seed=2), 16000, chunk_seconds=1.0)
    context = math.ceil(tiny_tokenizer.model.receptive_field / 320)
    window_samples = (50 + 2 * context) * 320
    assert len(seen) > 1
    assert max(batch * samples for batch, samples in seen) <= window_samples


def test_encode_batch_equals_encoding_each_alone(tiny_tokenizer: Tokenizer) -> None:
    lengths = [1, 160, 321, 999, 5000, 16000, 33333, 47000, 80000, 160000, 64000, 12345]
    wavs = [speech_like(length, seed=index) for index, length in enumerate(lengths)]
    batch = tiny_tokenizer.encode_batch(wavs, 16000, chunk_seconds=1.0)
    assert batch.codes.shape == (len(lengths), 3, math.ceil(max(lengths) / 320))
    assert batch.lengths.tolist() == [max(1, math.ceil(length / 320)) for length in lengths]
    assert batch.num_samples.tolist() == lengths
    differ = total = 0
    for index, wav in enumerate(wavs):
        frames = int(batch.lengths[index])
        differ += frames_that_differ(batch.codes[index, :, :frames], whole_file_codes(tiny_tokenizer, wav))
        total += frames
        assert (batch.codes[index, :, frames:] == tokenizer_module.PAD_CODE).all()  # padding, never a code
    assert batch.padding_mask.tolist() == [
        [1] * int(length) + [0] * (batch.codes.shape[-1] - int(length)) for length in batch.lengths
    ]
    assert total > 1000
    assert differ <= TIE_TOLERANCE * total


def test_chunked_decode_equals_whole_decode(tiny_tokenizer: Tokenizer) -> None:
    codes = tiny_tokenizer.encode(speech_like(5 * 16000 + 5, seed=4), 16000)
    with torch.inference_mode():
        whole = tiny_tokenizer.model.decode(codes[None])[0]
    chunked = tiny_tokenizer.decode(codes, chunk_seconds=0.5)
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("phase", "excitation"), [("integrated", "none"), ("direct", "harmonic")])
def test_windowed_decode_carries_the_integrated_phase(phase: str, excitation: str) -> None:
    """A head that sums phase over frames (integrated phase, or the harmonic excitation's running phase):
    chunked and batched decoding still equal one whole decode."""
    tok = make_phase_tokenizer(phase, excitation)
    assert tok.model.integrates_phase
    head = tok.model.decoder.head
    if head.harmonic:  # an active harmonic branch and an F0 that moves
        with torch.no_grad():
            torch.nn.init.normal_(head.harmonic_filter.conv.weight, std=1.0)
            torch.nn.init.normal_(head.pitch.conv.weight, std=0.5)
    codes = tok.encode(speech_like(5 * 16000 + 5, seed=4), 16000)
    with torch.inference_mode():
        whole = tok.model.decode(codes[None])[0]
    torch.testing.assert_close(tok.decode(codes, chunk_seconds=0.5), whole, rtol=0, atol=1e-4)
    short = codes[:, :37]
    audio = tok.decode_batch([codes, short], chunk_seconds=0.5)
    torch.testing.assert_close(audio[0], whole, rtol=0, atol=1e-4)
    with torch.inference_mode():
        torch.testing.assert_close(audio[1], tok.model.decode(short[None])[0], rtol=0, atol=1e-4)


def test_decode_batch_equals_decoding_each_alone(tiny_tokenizer: Tokenizer) -> None:
    wavs = [speech_like(length, seed=index) for index, length in enumerate([700, 16000, 41000, 3])]
    batch = tiny_tokenizer.encode_batch(wavs, 16000)
    audio = tiny_tokenizer.decode_batch(batch, chunk_seconds=0.5)
    for index, wav in enumerate(wavs):
        alone = tiny_tokenizer.decode(batch.codes[index, :, : batch.lengths[index]], num_samples=len(wav))
        assert audio[index].shape == (len(wav),)
        torch.testing.assert_close(audio[index], alone, rtol=0, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# Sample rates, n_q
# --------------------------------------------------------------------------------------------------
def test_other_sample_rates_are_resampled(tiny_tokenizer: Tokenizer) -> None:
    wav = speech_like(44100, sample_rate=44100, seed=5)
    codes = tiny_tokenizer.encode(wav, 44100)
    resampled = soxr.resample(wav, 44100, 16000, quality="HQ").astype(np.float32)
    assert torch.equal(codes, tiny_tokenizer.encode(resampled, 16000))
    assert codes.shape[1] == math.ceil(len(resampled) / 320)


def test_fewer_codebooks_are_a_prefix_and_decode(tiny_tokenizer: Tokenizer) -> None:
    wav = speech_like(16000, seed=6)
    full = tiny_tokenizer.encode(wav, 16000)
    two = tiny_tokenizer.encode(wav, 16000, n_q=2)
    assert torch.equal(two, full[:2])
    assert torch.equal(tiny_tokenizer.decode(two), tiny_tokenizer.decode(full, n_q=2))
    with pytest.raises(ValueError, match="only 2 codebooks"):
        tiny_tokenizer.decode(two, n_q=3)


def test_group_vq_tokenizer_round_trips() -> None:
    tok = make_tiny_tokenizer(kind="group")
    wav = speech_like(8000, seed=8)
    codes = tok.encode(wav, 16000)
    assert codes.shape == (2, 25)
    assert tok.decode(codes, num_samples=8000).shape == (8000,)
    assert tok.bitrate == pytest.approx(2 * 4 * 50)


# --------------------------------------------------------------------------------------------------
# Input validation
# --------------------------------------------------------------------------------------------------
def test_bad_audio_inputs_are_rejected_with_a_fix(tiny_tokenizer: Tokenizer) -> None:
    tok = tiny_tokenizer
    with pytest.raises(ValueError, match=r"looks like \[T, channels\].*mean\(axis=1\)"):
        tok.encode(np.zeros((16000, 2), np.float32), 16000)
    with pytest.raises(ValueError, match=r"mono audio \[T\], a batch \[B, T\] or \[B, C, T\]"):
        tok.encode(np.zeros((2, 1, 2, 100), np.float32), 16000)
    with pytest.raises(TypeError, match="32768"):
        tok.encode(np.zeros(1600, np.int16), 16000)
    with pytest.raises(AudioError, match="NaN"):
        tok.encode(np.full(1600, np.nan, np.float32), 16000)
    with pytest.raises(AudioError, match="NaN"):
        tok.encode(np.full(1600, np.inf, np.float32), 8000)  # via the resampling path
    with pytest.raises(AudioError, match="empty"):
        tok.encode(np.zeros(0, np.float32), 16000)
    with pytest.raises(ValueError, match="sample rate"):
        tok.encode(np.zeros(1600, np.float32), 0)
    with pytest.raises(TypeError, match="numpy array or torch.Tensor"):
        tok.encode([0.0] * 100, 16000)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n_q"):
        tok.encode(np.zeros(1600, np.float32), 16000, n_q=0)
    with pytest.raises(ValueError, match="chunk_seconds"):
        tok.encode(np.zeros(1600, np.float32), 16000, chunk_seconds=0)


def test_bad_codes_are_rejected(tiny_tokenizer: Tokenizer) -> None:
    tok = tiny_tokenizer
    with pytest.raises(ValueError, match=r"codes in \[0, 16\] but codebook_size is 16"):
        tok.decode(torch.tensor([[0, 16]]))
    with pytest.raises(ValueError, match="-1"):
        tok.decode(torch.tensor([[-1, 3]]))
    with pytest.raises(TypeError, match="integer"):
        tok.decode(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="1..3 codebooks"):
        tok.decode(torch.zeros(4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="num_samples"):
        tok.decode(torch.zeros(3, 2, dtype=torch.long), num_samples=641)


def test_constructor_checks_the_config_matches_the_model(tiny_config: Config) -> None:
    model = build_model(tiny_config.model)
    other = Config()
    with pytest.raises(ValueError, match="config.model differs"):
        Tokenizer(model, other)
    with pytest.raises(TypeError, match="VQVAE"):
        Tokenizer(object(), tiny_config)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------------
# Model files
# --------------------------------------------------------------------------------------------------
def test_save_load_gives_identical_tokens_and_audio(tmp_path: Path) -> None:
    tok = make_tiny_tokenizer(seed=3, name="saved")
    wav = speech_like(24000, seed=9)
    codes, audio = tok.encode(wav, 16000), tok.decode(tok.encode(wav, 16000))
    folder = tok.save(tmp_path / "model")
    assert (folder / WEIGHTS_FILE).is_file() and (folder / CONFIG_FILE).is_file()
    meta = json.loads((folder / CONFIG_FILE).read_text())
    assert meta["format"] == "vqaudio-tokenizer" and meta["name"] == "saved"
    assert meta["training"] == {"steps": 0, "seed": 3, "data": "synthetic"}
    assert meta["weights_sha256"] == tok.hash
    loaded = vqaudio.Tokenizer.load(folder)
    assert loaded.hash == tok.hash and loaded.name == "saved" and loaded.config == tok.config
    assert torch.equal(loaded.encode(wav, 16000), codes)
    assert torch.equal(loaded.decode(codes), audio)


def test_single_safetensors_file_loads(tiny_model_dir: Path, tmp_path: Path) -> None:
    lone = tmp_path / "tiny.safetensors"
    lone.write_bytes((tiny_model_dir / WEIGHTS_FILE).read_bytes())  # no config.json beside it
    loaded = Tokenizer.load(lone)
    reference = Tokenizer.load(tiny_model_dir)
    assert loaded.hash == reference.hash
    wav = speech_like(8000, seed=10)
    assert torch.equal(loaded.encode(wav, 16000), reference.encode(wav, 16000))


def test_modified_weights_are_detected(tiny_model_dir: Path, tmp_path: Path) -> None:
    weights = tiny_model_dir / WEIGHTS_FILE
    with safe_open(str(weights), framework="pt") as handle:
        header = handle.metadata()
    tensors = load_file(str(weights))
    name = next(key for key in tensors if key.endswith("codebook"))
    tensors[name] = tensors[name] + 1e-3
    save_file(tensors, str(tmp_path / "tampered.safetensors"), metadata=header)
    with pytest.raises(ModelFileError, match="does not match the recorded"):
        Tokenizer.load(tmp_path / "tampered.safetensors")


def test_missing_or_mismatched_tensors_fail_strict_load(tiny_model_dir: Path, tmp_path: Path) -> None:
    weights = tiny_model_dir / WEIGHTS_FILE
    with safe_open(str(weights), framework="pt") as handle:
        meta = json.loads(handle.metadata()[HEADER_KEY])
    tensors = load_file(str(weights))
    tensors.pop(next(iter(tensors)))
    from vqaudio.io.model_file import save_model_file

    save_model_file(tmp_path / "broken", tensors, meta)  # a consistent hash, but a tensor is missing
    with pytest.raises(ModelFileError, match="do not match the saved config"):
        Tokenizer.load(tmp_path / "broken")


def test_missing_model_and_missing_default_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ModelFileError, match="no such model"):
        Tokenizer.load(tmp_path / "nowhere")
    monkeypatch.setattr(tokenizer_module, "DEFAULT_MODEL_DIR", tmp_path / "pretrained" / "default")
    with pytest.raises(ModelFileError, match="no embedded default model.*--model"):
        Tokenizer.load(None)
