"""Streaming (``Tokenizer.stream``, ``vqaudio.codec.streaming``): chunked == offline, latency, state, refusals.

Exactness, as ``vqaudio.codec.streaming`` states it: the streamed codes equal ``encode`` of the whole input, and the
streamed audio equals ``decode`` of all the codes within float rounding (torch's CPU convolutions round differently
on inputs of a few samples, by ~1e-7; asserted within 1e-5), for every chunking.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from conftest import make_tiny_tokenizer, speech_like
from torch import Tensor

from vqaudio.codec.conv import LayerState
from vqaudio.codec.streaming import (
    DecoderState,
    EncoderState,
    StreamingDecoder,
    StreamingEncoder,
    stream_latency,
)
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.config import (
    Config,
    DecoderConfig,
    EncoderConfig,
    ModelConfig,
    PitchConfig,
    QuantizerConfig,
    load_yaml,
)
from vqaudio.errors import AudioError, InputError

HOP = 320
AUDIO_TOLERANCE = 1e-5


# The mel-in / iSTFT-out designs: what each changes in the decoder (those named "pitch" also send a pitch row)
MEL_DESIGNS: dict[str, dict[str, Any]] = {
    "mel": {},
    "mel_integrated": {"istft_phase": "integrated"},
    "mel_pitch": {"istft_excitation": "harmonic"},
    "mel_to_frame": {"istft_window": "to_frame"},
    "mel_pitch_to_frame": {"istft_excitation": "harmonic", "istft_window": "to_frame"},
    # windows of 5 hops: the F0 reads two token frames back
    "mel_pitch_to_frame_wide": {
        "istft_excitation": "harmonic",
        "istft_window": "to_frame",
        "istft_n_fft": 800,
    },
}


def causal_config(design: str) -> Config:
    """A tiny causal model of each design: mel in / iSTFT out (also with a pitch row, or integrated phase), or
    waveform in and out."""
    quantizer = QuantizerConfig(num_codebooks=3, codebook_size=16)
    mel_encoder = EncoderConfig(
        input="mel", channels=8, max_channels=16, strides=(2,), n_mels=16, mel_n_fft=640, mel_hop_length=160,
        num_residual_layers=2,
    )  # fmt: skip
    istft = DecoderConfig(
        output="istft", channels=8, max_channels=16, strides=(2,), istft_n_fft=640, istft_hop_length=160,
        num_residual_layers=2,
    )  # fmt: skip
    if design == "waveform":
        model = ModelConfig(
            latent_dim=8,
            causal=True,
            encoder=EncoderConfig(channels=2, max_channels=8, strides=(2, 4, 5, 8)),
            decoder=DecoderConfig(channels=2, max_channels=8, strides=(8, 5, 4, 2)),
            quantizer=quantizer,
        )
    elif design in MEL_DESIGNS:
        pitch = PitchConfig(levels=16) if "pitch" in design else PitchConfig()
        model = ModelConfig(
            latent_dim=8,
            causal=True,
            encoder=mel_encoder,
            decoder=dataclasses.replace(istft, **MEL_DESIGNS[design]),
            quantizer=quantizer,
            pitch=pitch,
        )
    else:
        raise ValueError(design)
    return Config(model=model)


DESIGNS = [
    "mel",
    "waveform",
    "mel_pitch",
    "mel_integrated",
    "mel_to_frame",
    "mel_pitch_to_frame",
    "mel_pitch_to_frame_wide",
]


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, Tokenizer]:
    """Calibrated tiny causal tokenizers (well-spread codes); the harmonic branch of the pitch model gets random
    weights, so its running phase matters."""
    result = {}
    for design in DESIGNS:
        tok = make_tiny_tokenizer(seed=3, name=design, config=causal_config(design))
        if design.startswith("mel_pitch"):
            generator = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for name, parameter in tok.model.named_parameters():
                    if "harmonic_filter" in name or "pitch_embedding" in name:
                        parameter.copy_(0.1 * torch.randn(parameter.shape, generator=generator))
        result[design] = tok
    return result


def chunk_sizes(rng: np.random.Generator, total: int, low: int, high: int) -> list[int]:
    """Random sizes summing to ``total``: mostly in [low, high], with empty and one-unit chunks among them."""
    sizes, done = [], 0
    while done < total:
        size = int(rng.choice([0, 1, int(rng.integers(low, high + 1))], p=[0.1, 0.1, 0.8]))
        sizes.append(min(size, total - done))
        done += sizes[-1]
    return sizes


def stream_encode(encoder: StreamingEncoder, wav: np.ndarray, sizes: list[int]) -> tuple[Tensor, list[int]]:
    """The codes of ``wav`` pushed in chunks of ``sizes``, and the frames each push returned."""
    pieces, start = [], 0
    for size in sizes:
        pieces.append(encoder.push(wav[start : start + size]))
        start += size
    pieces.append(encoder.flush())
    return torch.cat(pieces, dim=-1), [piece.shape[-1] for piece in pieces]


@pytest.mark.parametrize("design", DESIGNS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_streaming_equals_offline_for_random_chunks(
    tokenizers: dict[str, Tokenizer], design: str, seed: int
) -> None:
    tok = tokenizers[design]
    rng = np.random.default_rng(seed)
    length = int(rng.integers(4000, 24000))
    wav = speech_like(length, seed=seed)
    expected = tok.encode(wav, tok.sample_rate)
    # audio chunks of 20-80 ms (320-1280 samples), and empty and one-sample ones
    codes, _ = stream_encode(tok.stream("encode"), wav, chunk_sizes(rng, length, 320, 1280))
    assert codes.shape == expected.shape and torch.equal(codes, expected)

    decoder = tok.stream("decode")
    pieces, start = [], 0
    for size in chunk_sizes(rng, codes.shape[-1], 1, 4):  # 1-4 frames: 20-80 ms
        pieces.append(decoder.push(codes[:, start : start + size]))
        start += size
    pieces.append(decoder.flush())
    audio = torch.cat(pieces)
    offline = tok.model.decode(codes[None])[0]
    assert audio.shape == offline.shape == (codes.shape[-1] * HOP,)
    torch.testing.assert_close(audio, offline, rtol=0, atol=AUDIO_TOLERANCE)


@pytest.mark.parametrize("design", ["mel", "mel_pitch", "mel_to_frame", "mel_pitch_to_frame"])
def test_outputs_arrive_as_the_latency_says(tokenizers: dict[str, Tokenizer], design: str) -> None:
    """Frame f's codes come with sample (f + 1) * hop + encoder_lookahead, its audio with its codes, but for the
    last decoder_lookahead samples of a frame, which wait for later frames: a pitch model's F0 interpolation
    (half a frame) and the iSTFT windows of a to_frame head (n_fft - hop = 480 samples; its F0 is taken at its
    windows' centres, which the frame's own and earlier codes give)."""
    tok = tokenizers[design]
    latency = tok.stream("encode").latency
    assert latency == stream_latency(tok.model)
    # the pitch window (2 periods of 50 Hz) is centred: 160 samples past the frame
    expected = {
        "mel": (0, 0),
        "mel_pitch": (160, 160),
        "mel_to_frame": (0, 480),
        "mel_pitch_to_frame": (160, 480),
    }
    assert (latency.encoder_lookahead, latency.decoder_lookahead) == expected[design]
    assert latency.seconds == pytest.approx((HOP + sum(expected[design])) / 16000)
    wav = speech_like(12 * HOP, seed=4)
    encoder, emitted = tok.stream("encode"), 0
    for start in range(0, len(wav), 80):
        emitted += encoder.push(wav[start : start + 80]).shape[-1]
        received = start + 80
        assert emitted == max(0, (received - latency.encoder_lookahead) // HOP), received
    codes = tok.encode(wav, tok.sample_rate)
    decoder, samples = tok.stream("decode"), 0
    for frame in range(codes.shape[-1]):
        samples += decoder.push(codes[:, frame : frame + 1]).shape[-1]
        assert samples == max(0, (frame + 1) * HOP - latency.decoder_lookahead)
    assert decoder.flush().shape[-1] == latency.decoder_lookahead


@pytest.mark.parametrize("length", [1, 319, 320, 321])
def test_short_inputs(tokenizers: dict[str, Tokenizer], length: int) -> None:
    for design in ("mel_pitch", "waveform"):
        tok = tokenizers[design]
        wav = speech_like(length, seed=length)
        codes, _ = stream_encode(tok.stream("encode"), wav, [length // 2, length - length // 2])
        assert torch.equal(codes, tok.encode(wav, tok.sample_rate))


def test_flush_emits_the_tail(tokenizers: dict[str, Tokenizer]) -> None:
    tok = tokenizers["mel_pitch"]
    encoder = tok.stream("encode")
    assert encoder.push(speech_like(HOP - 1)).shape == (4, 0)  # not a whole frame yet
    tail = encoder.flush()  # zero-padded to one frame, as encode pads
    assert torch.equal(tail, tok.encode(speech_like(HOP - 1), tok.sample_rate))
    with pytest.raises(InputError, match="reset"):
        encoder.push(speech_like(10))
    with pytest.raises(InputError, match="already"):
        encoder.flush()
    encoder.reset()
    assert encoder.flush().shape == (4, 0)  # nothing pushed: no frame

    decoder = tok.stream("decode")
    first = decoder.push(tail)
    rest = decoder.flush()
    assert first.shape[-1] + rest.shape[-1] == HOP and rest.shape[-1] == 160
    torch.testing.assert_close(torch.cat([first, rest]), tok.decode(tail), rtol=0, atol=AUDIO_TOLERANCE)


@pytest.mark.parametrize("design", ["mel_pitch", "waveform"])
def test_state_is_typed_and_reset_starts_over(tokenizers: dict[str, Tokenizer], design: str) -> None:
    tok = tokenizers[design]
    wav = speech_like(5000, seed=5)
    encoder = tok.stream("encode")
    first = encoder.push(wav[:2500])
    state = encoder.state
    assert isinstance(state, EncoderState) and state.samples == 2500 and state.frames == first.shape[-1]
    assert state.layers and all(isinstance(layer, LayerState) for layer in state.layers.values())
    assert set(state.layers) <= {name for name, _ in tok.model.named_modules()}
    buffered = [layer.buffer for layer in state.layers.values() if layer.buffer is not None]
    assert buffered and all(
        buffer.shape[-1] < 2 * HOP for buffer in buffered
    )  # what later outputs read, no more
    assert (state.pitch is not None) == (design == "mel_pitch")
    rest = torch.cat([encoder.push(wav[2500:]), encoder.flush()], dim=-1)
    whole = torch.cat([first, rest], dim=-1)
    encoder.reset()
    assert encoder.state is not state and encoder.state.samples == 0 and encoder.state.frames == 0
    again, _ = stream_encode(encoder, wav, [1000] * 5)
    assert torch.equal(again, whole)

    decoder = tok.stream("decode")
    audio = torch.cat([decoder.push(whole[:, :7]), decoder.push(whole[:, 7:]), decoder.flush()])
    assert isinstance(decoder.state, DecoderState) and decoder.state.frames == whole.shape[-1]
    decoder.reset()
    assert isinstance(decoder.state, DecoderState) and decoder.state.frames == 0
    again_audio = torch.cat([decoder.push(whole), decoder.flush()])
    torch.testing.assert_close(again_audio, audio, rtol=0, atol=AUDIO_TOLERANCE)


def test_batched_streams_equal_each_stream(tokenizers: dict[str, Tokenizer]) -> None:
    tok = tokenizers["mel"]
    batch = torch.from_numpy(np.stack([speech_like(3000, seed=6), speech_like(3000, seed=7)]))
    encoder = tok.stream("encode", n_q=2)
    codes = torch.cat([encoder.push(batch[:, :1234]), encoder.push(batch[:, 1234:]), encoder.flush()], dim=-1)
    assert codes.shape == (2, 2, 10)
    assert torch.equal(codes, tok.encode(batch, tok.sample_rate, n_q=2))
    encoder.reset()
    encoder.push(batch[:, :10])
    with pytest.raises(ValueError, match=r"takes \[2, T\] chunks"):
        encoder.push(batch[0, :10])
    decoder = tok.stream("decode", n_q=1)
    audio = torch.cat([decoder.push(codes), decoder.flush()], dim=-1)
    torch.testing.assert_close(audio, tok.decode(codes[:, :1]), rtol=0, atol=AUDIO_TOLERANCE)


@pytest.mark.parametrize("design", ["mel", "mel_pitch", "waveform"])
def test_held_codes_stream_as_they_encode(tokenizers: dict[str, Tokenizer], design: str) -> None:
    """The state carries the first codebook's last code, so held codes (``hold``) stream exactly too."""
    tok = tokenizers[design]
    rng = np.random.default_rng(8)
    wav = speech_like(16000, seed=8)
    expected = tok.encode(wav, tok.sample_rate, hold=2.0)
    assert not torch.equal(expected, tok.encode(wav, tok.sample_rate))  # the margin changed some codes
    encoder = tok.stream("encode", hold=2.0)
    codes, _ = stream_encode(encoder, wav, chunk_sizes(rng, len(wav), 320, 1280))
    assert torch.equal(codes, expected)
    assert encoder.state.previous_code is not None
    encoder.reset()
    assert encoder.state.previous_code is None
    batch = torch.from_numpy(np.stack([wav[:8000], speech_like(8000, seed=9)]))
    batched = tok.stream("encode", n_q=2, hold=2.0)
    codes = torch.cat([batched.push(batch[:, :3000]), batched.push(batch[:, 3000:]), batched.flush()], dim=-1)
    assert torch.equal(codes, tok.encode(batch, tok.sample_rate, n_q=2, hold=2.0))
    with pytest.raises(InputError, match="takes no hold"):
        tok.stream("decode", hold=2.0)
    with pytest.raises(ValueError, match="hold"):
        tok.stream("encode", hold=-1.0)


def test_non_causal_models_refuse_to_stream(tiny_tokenizer: Tokenizer) -> None:
    assert not tiny_tokenizer.config.model.causal
    for kind in ("encode", "decode"):
        with pytest.raises(InputError, match=r"not causal .* ms of later audio.*rvq_mel_causal"):
            tiny_tokenizer.stream(kind)  # type: ignore[call-overload]
    with pytest.raises(InputError, match="not causal"):
        StreamingEncoder(tiny_tokenizer.model)
    with pytest.raises(InputError, match="not causal"):
        StreamingDecoder(tiny_tokenizer.model)


def test_stream_checks_its_arguments(tokenizers: dict[str, Tokenizer]) -> None:
    tok = tokenizers["mel"]
    with pytest.raises(InputError, match="kind"):
        tok.stream("both")  # type: ignore[call-overload]
    with pytest.raises(InputError, match="n_q"):
        tok.stream("encode", n_q=9)
    with pytest.raises(InputError, match="resample first"):
        tok.stream("encode", sample_rate=8000)
    encoder = tok.stream("encode", sample_rate=16000)
    with pytest.raises(TypeError, match="float audio"):
        encoder.push(np.zeros(10, dtype=np.int16))
    with pytest.raises(ValueError, match=r"mono audio \[T\]"):
        encoder.push(np.zeros((1, 2, 10), dtype=np.float32))
    with pytest.raises(AudioError, match="NaN"):
        encoder.push(np.full(10, np.nan, dtype=np.float32))
    decoder = tok.stream("decode")
    decoder.push(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="first chunk had 3"):
        decoder.push(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="codes up to|codebook"):
        tok.stream("decode").push(torch.full((3, 2), 99, dtype=torch.long))


def test_causal_recipe_builds_a_streamable_model() -> None:
    from pathlib import Path

    config = load_yaml(Path(__file__).resolve().parents[1] / "recipes" / "rvq_mel_causal.yaml")
    assert config.model.causal and config.model.pitch_rows == 1
    with torch.device("meta"):
        from vqaudio.codec.vqvae import build_model

        model = build_model(config.model)
    # 20 ms frame, 10 ms of pitch window past it, 30 ms for the to_frame iSTFT windows
    assert model.decoder.head.window_placement == "to_frame"
    latency = stream_latency(model)
    assert (latency.samples, latency.seconds) == (960, 0.060)
