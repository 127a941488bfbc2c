"""Long files stream from and to disk: the same codes and audio as the in-memory path, bounded buffers.

Identity: ``Tokenizer.encode_file(path)`` equals ``encode(load_audio(path))`` bit for bit, also for a file at
another rate (soxr's streaming resampler equals its one-shot ``soxr.resample`` sample for sample, checked
here), and ``decode_stream`` equals ``decode`` with the same ``chunk_seconds`` bit for bit (the same windows);
``decode`` itself equals one whole ``model.decode`` within float rounding (test_tokenizer.py).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from conftest import make_phase_tokenizer, speech_like

from vqaudio.codec.corpus_coding import resynthesize_tokens, tokenize_corpus
from vqaudio.codec.istft import ISTFTHead
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.errors import AudioError
from vqaudio.io.audio import load_audio, save_audio
from vqaudio.io.audio_stream import BLOCK_FRAMES, AudioReader, save_audio_blocks
from vqaudio.io.token_file import load_tokens

CHUNK = 0.2  # seconds: 10 frames of the tiny model per window core, so a few seconds make many windows
BLOCK = 1000  # frames read from a file at a time


def window_samples(tok: Tokenizer, chunk_seconds: float = CHUNK) -> int:
    context = math.ceil(tok.model.receptive_field / tok.hop_length)
    return (round(chunk_seconds * tok.frame_rate) + 2 * context) * tok.hop_length


def write(path: Path, audio: np.ndarray, rate: int = 16000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), audio, rate, subtype="PCM_16")
    return path


@pytest.fixture
def record_io(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    """The frames of every ``SoundFile.read`` and ``SoundFile.write`` call (``sf.read``/``sf.write`` use them)."""
    seen: dict[str, list[int]] = {"read": [], "write": []}
    read, write_ = sf.SoundFile.read, sf.SoundFile.write

    def recording_read(self: sf.SoundFile, *args: object, **kwargs: object) -> np.ndarray:
        data = read(self, *args, **kwargs)
        seen["read"].append(len(data))
        return data

    def recording_write(self: sf.SoundFile, data: np.ndarray) -> None:
        seen["write"].append(len(data))
        write_(self, data)

    monkeypatch.setattr(sf.SoundFile, "read", recording_read)
    monkeypatch.setattr(sf.SoundFile, "write", recording_write)
    return seen


# --------------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("rate", "channels", "suffix"),
    [(16000, 1, ".wav"), (22050, 1, ".flac"), (44100, 2, ".wav"), (8000, 1, ".wav")],
)
def test_the_reader_gives_the_samples_load_audio_gives(
    tmp_path: Path, rate: int, channels: int, suffix: str
) -> None:
    audio = speech_like(3 * rate + 77, sample_rate=rate, seed=1)
    if channels == 2:
        audio = np.stack([audio, speech_like(len(audio), sample_rate=rate, seed=2)], axis=1)
    path = write(tmp_path / f"x{suffix}", audio, rate)
    whole = load_audio(path, 16000).numpy()
    pieces = []
    with AudioReader(path, 16000, block_frames=BLOCK) as reader:
        position = 0
        while reader.num_samples is None or position < reader.num_samples:
            pieces.append(reader.read(position, position + 777))
            reader.discard(position + 777)
            position += 777
    streamed = np.concatenate(pieces)
    assert reader.num_samples == len(whole) == len(streamed)
    np.testing.assert_array_equal(streamed, whole)  # bit-identical, resampled ones included


def test_the_reader_holds_a_bounded_number_of_samples(tmp_path: Path) -> None:
    rate = 48000  # resampled: the stream's output arrives in irregular pieces
    path = write(tmp_path / "long.wav", speech_like(8 * rate, sample_rate=rate, seed=3), rate)
    with AudioReader(path, 16000, block_frames=BLOCK) as reader:
        for start in range(0, 8 * 16000 - 4000 + 1, 2000):
            assert len(reader.read(start, start + 4000)) == 4000
            reader.discard(start + 2000)
        with pytest.raises(ValueError, match="forward only"):
            reader.read(0, 10)
    # the widest read (4000) plus one block's output (1000 frames at 48 kHz -> 334) and soxr's pending samples
    assert reader.max_buffered <= 4000 + 2000 + 1000


def test_the_reader_names_the_file_of_bad_audio(tmp_path: Path) -> None:
    bad = tmp_path / "nan.wav"
    audio = speech_like(5000)
    audio[4000] = np.nan
    sf.write(str(bad), audio, 16000, subtype="FLOAT")
    with (
        pytest.raises(AudioError, match="nan.wav: audio holds NaN"),
        AudioReader(bad, 16000, BLOCK) as reader,
    ):
        reader.read(0, 10_000)
    empty = tmp_path / "empty.wav"
    sf.write(str(empty), np.zeros(0, np.float32), 16000)
    with pytest.raises(AudioError, match="empty.wav: audio is empty"), AudioReader(empty, 16000) as reader:
        reader.read(0, 10)


# --------------------------------------------------------------------------------------------------
# Encoding a file from disk
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("seconds", "rate", "channels"),
    [(6.0, 16000, 1), (6.0, 22050, 1), (4.0, 16000, 2), (0.3, 16000, 1), (0.02, 44100, 1)],
)
def test_encode_file_equals_encoding_the_loaded_file(
    tiny_tokenizer: Tokenizer, tmp_path: Path, seconds: float, rate: int, channels: int
) -> None:
    """Long (many windows) and short (one pass) files, at the model's rate and resampled, mono and stereo."""
    num = int(seconds * rate) + 13
    audio = speech_like(num, sample_rate=rate, seed=4)
    if channels == 2:
        audio = np.stack([audio, speech_like(num, sample_rate=rate, seed=5)], axis=1)
    path = write(tmp_path / "x.wav", audio, rate)
    wav = load_audio(path, 16000)
    expected = tiny_tokenizer.encode(wav, 16000, chunk_seconds=CHUNK)
    coded = tiny_tokenizer.encode_file(path, chunk_seconds=CHUNK, block_frames=BLOCK)
    assert coded.num_samples == len(wav)
    assert coded.codes.dtype == np.int16
    np.testing.assert_array_equal(coded.codes, expected.numpy())
    if seconds > 1:
        assert len(wav) > 4 * window_samples(tiny_tokenizer)  # many windows
    two = tiny_tokenizer.encode_file(path, n_q=2, chunk_seconds=CHUNK, block_frames=BLOCK)
    np.testing.assert_array_equal(two.codes, expected[:2].numpy())


def test_encode_file_reads_the_file_in_blocks(
    tiny_tokenizer: Tokenizer, tmp_path: Path, record_io: dict[str, list[int]]
) -> None:
    path = write(tmp_path / "long.wav", speech_like(10 * 16000, seed=6))
    tiny_tokenizer.encode_file(path, chunk_seconds=CHUNK, block_frames=BLOCK)
    assert max(record_io["read"]) == BLOCK  # never the whole file (160000 frames)


# --------------------------------------------------------------------------------------------------
# Decoding to a file
# --------------------------------------------------------------------------------------------------
def test_decode_stream_equals_decode(tiny_tokenizer: Tokenizer, tmp_path: Path) -> None:
    num_samples = 3 * 16000 + 5
    codes = tiny_tokenizer.encode(speech_like(num_samples, seed=7), 16000)
    pieces = list(
        tiny_tokenizer.decode_stream(
            codes.numpy().astype(np.int16), num_samples=num_samples, chunk_seconds=CHUNK
        )
    )
    assert len(pieces) > 4 and max(len(piece) for piece in pieces) <= window_samples(tiny_tokenizer)
    streamed = torch.cat(pieces)
    torch.testing.assert_close(
        streamed, tiny_tokenizer.decode(codes, num_samples=num_samples, chunk_seconds=CHUNK), rtol=0, atol=0
    )
    with torch.inference_mode():
        whole = tiny_tokenizer.model.decode(codes[None])[0, :num_samples]
    torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-5)
    # n_q, and a short input in one piece
    fewer = torch.cat(list(tiny_tokenizer.decode_stream(codes, n_q=1, chunk_seconds=CHUNK)))
    torch.testing.assert_close(
        fewer, tiny_tokenizer.decode(codes, n_q=1, chunk_seconds=CHUNK), rtol=0, atol=0
    )
    short = list(tiny_tokenizer.decode_stream(codes[:, :7]))
    assert len(short) == 1 and torch.equal(short[0], tiny_tokenizer.decode(codes[:, :7]))
    # written block by block: the same file as save_audio of the whole
    save_audio_blocks(tmp_path / "blocks.wav", pieces, 16000)
    save_audio(tmp_path / "whole.wav", torch.cat(pieces), 16000)
    assert (tmp_path / "blocks.wav").read_bytes() == (tmp_path / "whole.wav").read_bytes()


def test_decode_stream_checks_its_arguments_before_the_first_piece(tiny_tokenizer: Tokenizer) -> None:
    codes = np.zeros((3, 40), np.int16)
    with pytest.raises(ValueError, match="n_q"):
        tiny_tokenizer.decode_stream(codes, n_q=4)
    with pytest.raises(ValueError, match="num_samples"):
        tiny_tokenizer.decode_stream(codes, num_samples=40 * 320 + 1)
    with pytest.raises(ValueError, match="chunk_seconds"):
        tiny_tokenizer.decode_stream(codes, chunk_seconds=0)
    with pytest.raises(ValueError, match="codes"):
        tiny_tokenizer.decode_stream(codes[None])


def test_a_failed_block_write_leaves_no_file(tmp_path: Path) -> None:
    def pieces():  # type: ignore[no-untyped-def]
        yield np.zeros(100, np.float32)
        raise RuntimeError("decoding failed")

    with pytest.raises(RuntimeError, match="decoding failed"):
        save_audio_blocks(tmp_path / "out.wav", pieces(), 16000)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------------------
# Corpus commands: long files go through the streaming path, with the same results
# --------------------------------------------------------------------------------------------------
def test_tokenize_and_resynth_stream_long_files(
    tiny_tokenizer: Tokenizer, tmp_path: Path, record_io: dict[str, list[int]]
) -> None:
    folder = tmp_path / "corpus"
    long_wav = write(folder / "long.wav", speech_like(8 * 16000 + 3, seed=8))
    resampled = write(folder / "resampled.wav", speech_like(6 * 22050, sample_rate=22050, seed=9), 22050)
    write(folder / "short.wav", speech_like(1000, seed=10))
    tokenize_corpus(tiny_tokenizer, folder, tmp_path / "t.npy", chunk_seconds=CHUNK, progress=False)
    assert max(record_io["read"]) <= BLOCK_FRAMES  # no file read whole (128003 and 132300 frames)
    corpus = load_tokens(tmp_path / "t.npy")
    for utt_id, path in ("long", long_wav), ("resampled", resampled):
        wav = load_audio(path, 16000)
        expected = tiny_tokenizer.encode(wav, 16000, chunk_seconds=CHUNK)
        np.testing.assert_array_equal(corpus[utt_id], expected.numpy())
        assert corpus.entry(utt_id).num_samples == len(wav)

    record_io["write"].clear()
    written = resynthesize_tokens(
        tiny_tokenizer, tmp_path / "t.npy", tmp_path / "wavs", chunk_seconds=CHUNK, progress=False
    )
    assert len(written) == 3
    assert max(record_io["write"]) <= window_samples(tiny_tokenizer)  # no long file written whole
    for utt_id in ("long", "resampled", "short"):
        entry = corpus.entry(utt_id)
        expected = tiny_tokenizer.decode(corpus[utt_id], num_samples=entry.num_samples, chunk_seconds=CHUNK)
        save_audio(tmp_path / "expected.wav", expected, 16000)
        assert (tmp_path / "wavs" / f"{utt_id}.wav").read_bytes() == (tmp_path / "expected.wav").read_bytes()
    resynthesize_tokens(
        tiny_tokenizer, tmp_path / "t.npy", tmp_path / "n_q1", n_q=1, chunk_seconds=CHUNK, progress=False
    )
    entry = corpus.entry("long")
    expected = tiny_tokenizer.decode(corpus["long"][:1], num_samples=entry.num_samples, chunk_seconds=CHUNK)
    save_audio(tmp_path / "expected.wav", expected, 16000)
    assert (tmp_path / "n_q1" / "long.wav").read_bytes() == (tmp_path / "expected.wav").read_bytes()


def test_the_audio_round_trip_streams_and_equals_the_in_memory_one(
    tiny_model_dir: Path, tmp_path: Path, record_io: dict[str, list[int]]
) -> None:
    from vqaudio.cli.main import main

    source = write(tmp_path / "in.wav", speech_like(6 * 22050 + 1, sample_rate=22050, seed=11), 22050)
    out = tmp_path / "out.wav"
    record_io["write"].clear()
    assert (
        main(
            ["resynth", str(source), str(out), "--model", str(tiny_model_dir), "--chunk-seconds", str(CHUNK)]
        )
        == 0
    )
    tok = Tokenizer.load(tiny_model_dir)
    assert max(record_io["read"]) <= BLOCK_FRAMES and max(record_io["write"]) <= window_samples(tok)
    wav = load_audio(source, 16000)
    codes = tok.encode(wav, 16000, chunk_seconds=CHUNK)
    save_audio(tmp_path / "expected.wav", tok.decode(codes, num_samples=len(wav), chunk_seconds=CHUNK), 16000)
    assert out.read_bytes() == (tmp_path / "expected.wav").read_bytes()


@pytest.mark.parametrize(("phase", "excitation"), [("integrated", "none"), ("direct", "harmonic")])
def test_decode_stream_carries_the_integrated_phase(phase: str, excitation: str) -> None:
    """A head that sums phase over frames: the running sums continue from window to window, so the streamed
    audio equals ``decode`` (which sums over the whole input) and holds no more than a window."""
    torch.manual_seed(0)
    tok = make_phase_tokenizer(phase, excitation)
    assert tok.model.integrates_phase
    head = tok.model.decoder.head
    # With the harmonic branch the F0 comes from the network here: an ulp of it in one window (its sums taken in
    # another order near the window's edge) is summed into the phase over the rest of the input. Measured with
    # these random weights: up to 2e-4 over 3 s, depending on the draw (a trained model's F0 comes from its codes).
    tolerance = 5e-4 if head.harmonic else 1e-4
    if head.harmonic:  # an active harmonic branch and an F0 that moves
        with torch.no_grad():
            torch.nn.init.normal_(head.harmonic_filter.conv.weight, std=1.0)
            torch.nn.init.normal_(head.pitch.conv.weight, std=0.5)
    codes = tok.encode(speech_like(3 * 16000 + 5, seed=4), 16000)
    pieces = list(
        tok.decode_stream(codes.numpy().astype(np.int16), num_samples=3 * 16000 + 5, chunk_seconds=CHUNK)
    )
    assert len(pieces) > 4 and max(len(piece) for piece in pieces) <= window_samples(tok)
    expected = tok.decode(codes, num_samples=3 * 16000 + 5, chunk_seconds=CHUNK)
    torch.testing.assert_close(torch.cat(pieces), expected, rtol=0, atol=tolerance)


@pytest.mark.parametrize(
    ("phase", "excitation", "f0_input"), [("integrated", "none", False), ("direct", "harmonic", True)]
)
def test_resolving_the_phase_in_pieces_equals_resolving_it_whole(
    phase: str, excitation: str, f0_input: bool
) -> None:
    """The running sums continue from the state: the same additions in the same order, bit for bit on the CPU."""
    torch.manual_seed(0)
    head = ISTFTHead(8, 320, 160, phase=phase, excitation=excitation, f0_input=f0_input)
    with torch.no_grad():
        for parameter in head.parameters():
            torch.nn.init.normal_(parameter, std=0.5)
        pitch = (torch.log(100 + 50 * torch.rand(2, 1001)), torch.rand(2, 1001) > 0.3) if f0_input else None
        prediction = head.predict(torch.randn(2, 8, 1001), pitch)
        whole = head.resolve_phase(prediction)
        state, pieces = None, []
        for start in range(0, 1001, 77):
            piece, state = head.resolve_phase_from(prediction[..., start : start + 77], state)
            pieces.append(piece)
    assert torch.equal(torch.cat(pieces, dim=-1), whole)


def test_encode_file_does_not_trust_the_header_length(
    tiny_tokenizer: Tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The codes are sized from the header and grown when the file holds more (an MP3's estimate, say)."""
    from vqaudio.io import audio_stream

    path = write(tmp_path / "x.wav", speech_like(4 * 16000 + 7, seed=12))
    expected = tiny_tokenizer.encode(load_audio(path, 16000), 16000, chunk_seconds=CHUNK)
    real_info = audio_stream.audio_info
    monkeypatch.setattr(audio_stream, "audio_info", lambda p: real_info(p)._replace(num_samples=400))
    coded = tiny_tokenizer.encode_file(path, chunk_seconds=CHUNK, block_frames=BLOCK)
    np.testing.assert_array_equal(coded.codes, expected.numpy())
    assert coded.num_samples == 4 * 16000 + 7
