"""Compressed files (.vqa): exact round trips under the prior and the adaptive coder, bytes that do not depend on
threads or on how many files go together, the header, damaged and truncated files named by block, concealment,
model checks, and the commands."""

from __future__ import annotations

import dataclasses
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import RunResult, make_tiny_config, make_tiny_tokenizer, one_line_error, speech_like

from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.config import DecoderConfig, EncoderConfig, PitchConfig, PriorConfig, PriorRunConfig
from vqaudio.errors import CompressedFileError, InputError
from vqaudio.io.bitstream import BLOCK_HEADER_SIZE, pack_block, read_stream, short_hash
from vqaudio.prior import Prior
from vqaudio.prior.compression import compress, decode_codes, decompress, encode_codes
from vqaudio.prior.entropy_coding import LANES
from vqaudio.prior.prior import token_stream
from vqaudio.prior.wavenet import WaveNetPrior

RATE = 16000
BLOCK = 0.2  # seconds: 10 frames, so a few seconds of audio make more blocks than the prior coder's lanes


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny models: one thread is fastest and steady


def pitch_tokenizer() -> Tokenizer:
    """The tiny test tokenizer with a 32-level pitch row before its 3 codebooks of 64 codes."""
    base = make_tiny_config()
    model = dataclasses.replace(
        base.model,
        encoder=EncoderConfig(input="mel", n_mels=20, channels=8, max_channels=8, strides=(2,)),
        decoder=DecoderConfig(
            output="istft", channels=8, max_channels=16, strides=(2,), istft_excitation="harmonic"
        ),
        quantizer=dataclasses.replace(base.model.quantizer, codebook_size=64),
        pitch=PitchConfig(levels=32),
    )
    return make_tiny_tokenizer(config=dataclasses.replace(base, model=model), name="tiny-pitch")


def tiny_prior(tokenizer: Tokenizer, seed: int = 0) -> Prior:
    """A random prior far from uniform over the tokenizer's 4 rows (so the coding sees real dependencies)."""
    config = PriorConfig(
        num_codebooks=1 + tokenizer.num_codebooks,
        codebook_size=tokenizer.codebook_size,
        residual_channels=16,
        skip_channels=16,
        head_channels=16,
        kernel_size=2,
        layers_per_cycle=3,
        num_cycles=2,
        previous_code_in_head=True,
    )
    torch.manual_seed(seed)
    model = WaveNetPrior(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.3 * torch.randn_like(parameter))
    meta = {
        "model_hash": tokenizer.hash,
        "model_name": tokenizer.name,
        "sample_rate": tokenizer.sample_rate,
        "hop_length": tokenizer.hop_length,
        "num_codebooks": 1 + tokenizer.num_codebooks,
        "codebook_size": tokenizer.codebook_size,
    }
    return Prior(model, PriorRunConfig(prior=config), token_stream(meta))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Saved tiny models: the pitch-row tokenizer, its prior, another tokenizer and another prior."""
    folder = tmp_path_factory.mktemp("compress_models")
    tokenizer = pitch_tokenizer()
    tokenizer.save(folder / "tokenizer")
    other = make_tiny_tokenizer(seed=3, config=Tokenizer.load(folder / "tokenizer").config, name="other")
    other.save(folder / "other_tokenizer")
    tiny_prior(tokenizer).save(folder / "prior")
    tiny_prior(tokenizer, seed=1).save(folder / "other_prior")
    return {name: folder / name for name in ("tokenizer", "other_tokenizer", "prior", "other_prior")}


@pytest.fixture(scope="module")
def tokenizer(models: dict[str, Path]) -> Tokenizer:
    return Tokenizer.load(models["tokenizer"])


@pytest.fixture(scope="module")
def prior(models: dict[str, Path]) -> Prior:
    return Prior.load(models["prior"])


@pytest.fixture(scope="module")
def codes(tokenizer: Tokenizer) -> np.ndarray:
    """2.9 s of speech-like audio as codes [4, 145]: 15 blocks of 10 frames, the last of 5."""
    result = tokenizer.encode(speech_like(46_200, seed=5), RATE).numpy()
    assert result.shape == (4, 145)
    return result


NUM_SAMPLES = 46_200


def encode(codes: np.ndarray, tokenizer: Tokenizer, prior: Prior | bool, **options: object) -> bytes:
    return encode_codes(
        codes, tokenizer, prior=prior, num_samples=NUM_SAMPLES, block_seconds=BLOCK, **options
    )


def flip(data: bytes, offset: int) -> bytes:
    damaged = bytearray(data)
    damaged[offset] ^= 0x40
    return bytes(damaged)


def block_offsets(data: bytes) -> list[int]:
    """Where each block starts, from the block headers' length fields."""
    offsets, position = [], read_stream(data).header_size
    while position < len(data):
        offsets.append(position)
        (words,) = struct.unpack_from("<H", data, position + 2)
        position += BLOCK_HEADER_SIZE + 4 * words
    return offsets


# --------------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("coder", ["prior", "adaptive"])
def test_codes_round_trip_exactly(codes: np.ndarray, tokenizer: Tokenizer, prior: Prior, coder: str) -> None:
    data = encode(codes, tokenizer, prior if coder == "prior" else False)
    decoded = decode_codes(data, prior=prior)
    assert decoded.header.num_blocks == 15 > LANES  # two groups of lanes, the second partly idle
    np.testing.assert_array_equal(decoded.codes, codes)
    assert decoded.concealed == []


def test_fewer_codebooks_than_the_prior_models_round_trip(
    codes: np.ndarray, tokenizer: Tokenizer, prior: Prior
) -> None:
    for rows in (2, 3):  # the pitch row and one or two codebooks, of the prior's four rows
        data = encode(codes[:rows], tokenizer, prior)
        assert read_stream(data).header.n_q == rows - 1
        np.testing.assert_array_equal(decode_codes(data, prior=prior).codes, codes[:rows])


def test_the_payload_is_the_priors_information_content(
    codes: np.ndarray, tokenizer: Tokenizer, prior: Prior
) -> None:
    """Each block costs -log2 p(its tokens) under the prior, as a teacher-forced pass computes it (the pitch
    row renormalised over its 32 levels), plus at most a range coder's final word: the coder uses the prior's
    probabilities, and uses them right."""
    data = encode(codes, tokenizer, prior)
    stream = read_stream(data)
    num_blocks = stream.header.num_blocks
    payload_bits = 8 * (len(data) - stream.header_size - num_blocks * BLOCK_HEADER_SIZE)
    ideal = 0.0
    with torch.no_grad():
        for first in range(0, codes.shape[1], 10):
            block = torch.from_numpy(codes[None, :, first : first + 10]).long()
            logits = prior.model(block)  # [1, 4, F, 64]
            log_p = [logits[:, 0, :, :32].log_softmax(-1), logits[:, 1:].log_softmax(-1)]
            ideal -= float(log_p[0].gather(-1, block[:, 0, :, None]).sum())
            ideal -= float(log_p[1].gather(-1, block[:, 1:, :, None]).sum())
    ideal /= np.log(2)
    assert ideal - 1 < payload_bits < 1.01 * ideal + 32 * num_blocks


def test_audio_round_trip_equals_the_tokenizers(tokenizer: Tokenizer, prior: Prior, tmp_path: Path) -> None:
    wav = speech_like(20_000, seed=2)
    data = compress(wav, RATE, tokenizer=tokenizer, prior=prior, block_seconds=BLOCK)
    audio, sample_rate = decompress(data, tokenizer=tokenizer, prior=prior)
    expected = tokenizer.decode(tokenizer.encode(wav, RATE), num_samples=20_000).numpy()
    assert sample_rate == RATE and audio.shape == (20_000,)
    np.testing.assert_array_equal(audio, expected)
    path = tmp_path / "speech.wav"
    import soundfile as sf

    sf.write(path, wav, RATE, subtype="FLOAT")
    from_file = compress(path, tokenizer=tokenizer, prior=prior, block_seconds=BLOCK)
    assert from_file == data  # a path is read window by window: the same codes, the same bytes


def test_by_default_the_embedded_prior_codes_what_it_models_and_adaptive_counts_the_rest(
    codes: np.ndarray, tokenizer: Tokenizer
) -> None:
    assert read_stream(encode_codes(codes, tokenizer)).header.coder == "adaptive"  # not its tokenizer
    with pytest.raises(InputError, match="the prior models the tokens of tokenizer"):
        encode_codes(codes, tokenizer, prior=True)  # asked for explicitly: an error
    wav = speech_like(16_000, seed=3)  # 1 s through the embedded tokenizer and prior
    data = compress(wav, RATE)
    header = read_stream(data).header
    assert (header.coder, header.lanes, header.n_q, header.num_samples) == ("prior", 1, 8, 16_000)
    embedded = Tokenizer.load()
    np.testing.assert_array_equal(decode_codes(data).codes, embedded.encode(wav, RATE).numpy())
    audio, sample_rate = decompress(data)
    assert sample_rate == RATE and audio.shape == (16_000,)


# --------------------------------------------------------------------------------------------------
# Determinism
# --------------------------------------------------------------------------------------------------
def test_bytes_do_not_depend_on_threads_and_decode_identically(
    codes: np.ndarray, tokenizer: Tokenizer, prior: Prior
) -> None:
    torch.set_num_threads(1)
    one = encode(codes, tokenizer, prior)
    torch.set_num_threads(2)
    two = encode(codes, tokenizer, prior)
    decoded = decode_codes(one, prior=prior).codes
    assert torch.get_num_threads() == 2  # the coder restores the caller's setting
    torch.set_num_threads(1)
    assert one == two
    np.testing.assert_array_equal(decoded, codes)


def test_a_blocks_bytes_do_not_depend_on_the_blocks_beside_it(
    codes: np.ndarray, tokenizer: Tokenizer, prior: Prior
) -> None:
    """Lanes do not mix: the first block codes to the same bytes whatever the other lanes hold, so a damaged
    neighbour (decoded as code 0) leaves it intact. The batch's size is another matter (float products of
    another shape round differently), which is why the header records it."""
    together = encode(codes, tokenizer, prior)
    shuffled = codes.copy()
    shuffled[:, 10:] = codes[:, 10:][:, ::-1]
    other = encode(shuffled, tokenizer, prior)
    first = [data[block_offsets(data)[0] : block_offsets(data)[1]] for data in (together, other)]
    assert first[0] == first[1]
    alone = encode_codes(codes[:, :10], tokenizer, prior=prior, block_seconds=BLOCK)
    assert read_stream(alone).header.lanes == 1 and read_stream(together).header.lanes == LANES
    np.testing.assert_array_equal(decode_codes(alone, prior=prior).codes, codes[:, :10])


def test_several_files_at_once_equal_one_at_a_time(
    run: Callable[..., RunResult], models: dict[str, Path], tmp_path: Path, write_audio: Callable[..., Path]
) -> None:
    paths = [
        write_audio(tmp_path / "in" / f"u{i}.wav", speech_like(8000 + 3000 * i, seed=i)) for i in range(3)
    ]
    options = ["--model", models["tokenizer"], "--prior", models["prior"], "--block-seconds", BLOCK]
    code, out, err = run("compress", *paths, tmp_path / "all", *options)
    assert code == 0, err
    assert "3 files" in out and "kbps" in out
    for path in paths:
        code, _, err = run("compress", path, tmp_path / f"{path.stem}.vqa", *options)
        assert code == 0, err
        assert (tmp_path / f"{path.stem}.vqa").read_bytes() == (
            tmp_path / "all" / f"{path.stem}.vqa"
        ).read_bytes()


# --------------------------------------------------------------------------------------------------
# The container
# --------------------------------------------------------------------------------------------------
def test_header_fields(codes: np.ndarray, tokenizer: Tokenizer, prior: Prior) -> None:
    data = encode(codes[:3], tokenizer, prior)
    assert data[:4] == b"VQA\x01"
    header = read_stream(data).header
    assert (header.coder, header.lanes, header.pitch_rows, header.n_q) == ("prior", LANES, 1, 2)
    assert (header.sample_rate, header.hop_length, header.num_samples) == (RATE, 320, NUM_SAMPLES)
    assert (header.codebook_size, header.pitch_levels, header.block_frames) == (64, 32, 10)
    assert header.tokenizer_hash == tokenizer.hash[:12] and header.prior_hash == prior.hash[:12]
    # the documented layout (docs/FORMATS.md): flags, n_q, lanes, two 6-byte hashes, LEB128 numbers, CRC32
    assert data[4:7] == bytes([0x03, 2, LANES])
    assert data[7:13] == bytes.fromhex(tokenizer.hash[:12]) and data[13:19] == bytes.fromhex(prior.hash[:12])
    numbers = bytes([0x80, 0x7D, 0xC0, 0x02, 0xF8, 0xE8, 0x02, 0x40, 0x20, 10])  # 16000 320 46200 64 32 10
    assert data[19:29] == numbers and read_stream(data).header_size == 33
    assert struct.unpack_from("<I", data, 29)[0] == zlib.crc32(data[:29])
    offsets = block_offsets(data)
    assert len(offsets) == 15
    assert [struct.unpack_from("<H", data, offset)[0] for offset in offsets] == list(range(15))
    adaptive = read_stream(encode(codes, tokenizer, False)).header
    assert (adaptive.coder, adaptive.lanes, adaptive.prior_hash) == ("adaptive", 0, None)


def test_not_a_compressed_file_and_a_damaged_header(codes: np.ndarray, tokenizer: Tokenizer) -> None:
    data = encode(codes, tokenizer, False)
    with pytest.raises(CompressedFileError, match="not a vqaudio compressed file"):
        decode_codes(b"RIFF" + data[4:], name="x.vqa")
    with pytest.raises(CompressedFileError, match="x.vqa: the header fails its CRC check"):
        decode_codes(flip(data, 20), name="x.vqa")
    with pytest.raises(CompressedFileError, match="truncated: the file ends inside its header"):
        decode_codes(data[:20], name="x.vqa")
    with pytest.raises(CompressedFileError, match="version 9 is newer"):
        decode_codes(data[:3] + b"\x09" + data[4:], name="x.vqa")


def test_a_header_claiming_more_audio_than_allowed_is_refused(
    codes: np.ndarray, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crafted header (with a valid CRC) must not make the reader allocate 10^15 frames."""
    import vqaudio.io.bitstream as bitstream

    header = dataclasses.replace(read_stream(encode(codes, tokenizer, False)).header, num_samples=10**15)
    monkeypatch.setattr(bitstream, "_check_header", lambda header, name: None)
    crafted = bitstream.pack_header(header)
    monkeypatch.undo()
    with pytest.raises(CompressedFileError, match="more than the 86400 s any audio may last"):
        decode_codes(crafted, name="x.vqa")


@pytest.mark.parametrize("coder", ["prior", "adaptive"])
@pytest.mark.parametrize("where", ["payload", "length"])
def test_a_damaged_block_is_named_and_conceal_fills_it_alone(
    codes: np.ndarray, tokenizer: Tokenizer, prior: Prior, coder: str, where: str
) -> None:
    data = encode(codes, tokenizer, prior if coder == "prior" else False)
    offset = block_offsets(data)[3]
    damaged = flip(data, offset + (BLOCK_HEADER_SIZE + 5 if where == "payload" else 3))
    with pytest.raises(CompressedFileError) as error:
        decode_codes(damaged, prior=prior, name="x.vqa")
    message = str(error.value)
    assert (
        message
        == "x.vqa: block 3 (frames 30-39) fails its CRC check; pass --conceal to fill it from the prior"
    )
    decoded = decode_codes(damaged, prior=prior, conceal=True, name="x.vqa")
    assert decoded.concealed == [3] and decoded.codes.shape == codes.shape
    keep = np.ones(codes.shape[1], dtype=bool)
    keep[30:40] = False
    np.testing.assert_array_equal(decoded.codes[:, keep], codes[:, keep])  # every other block exactly
    assert decoded.codes[0, 30:40].max() < 32 and decoded.codes.max() < 64  # within each row's codes


def test_a_truncated_file_names_the_block_where_it_ends(
    codes: np.ndarray, tokenizer: Tokenizer, prior: Prior
) -> None:
    data = encode(codes, tokenizer, prior)
    cut = block_offsets(data)[12] + 7
    with pytest.raises(CompressedFileError) as error:
        decode_codes(data[:cut], prior=prior, name="x.vqa")
    assert str(error.value) == (
        "x.vqa: block 12 (frames 120-129) is cut off: the file ends inside it (and 2 more blocks); pass "
        "--conceal to fill them from the prior"
    )
    with pytest.raises(CompressedFileError, match="block 12 .* is missing: the file ends before it"):
        decode_codes(data[: block_offsets(data)[12]], prior=prior, name="x.vqa")
    decoded = decode_codes(data[:cut], prior=prior, conceal=True)
    assert decoded.concealed == [12, 13, 14] and decoded.codes.shape == codes.shape
    np.testing.assert_array_equal(decoded.codes[:, :120], codes[:, :120])
    with pytest.raises(CompressedFileError, match="7 bytes after the last block"):
        decode_codes(data + bytes(7), prior=prior)


def test_tokens_that_decode_differently_are_an_error_not_garbage(
    codes: np.ndarray, tokenizer: Tokenizer, prior: Prior
) -> None:
    """A block whose bytes are intact but decode to other tokens than were coded (what another torch build's
    probabilities would do) fails its codes check."""
    data = encode(codes, tokenizer, prior)
    offsets = block_offsets(data)
    start, end = offsets[5], offsets[6]
    payload = data[start + BLOCK_HEADER_SIZE : end]
    (check,) = struct.unpack_from("<H", data, start + 4)
    forged = data[:start] + pack_block(5, payload, check ^ 1) + data[end:]
    with pytest.raises(CompressedFileError, match=r"block 5 \(frames 50-59\) decodes to other tokens"):
        decode_codes(forged, prior=prior, name="x.vqa")


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------
def test_another_tokenizer_or_prior_is_refused_naming_both_hashes(
    codes: np.ndarray, tokenizer: Tokenizer, prior: Prior, models: dict[str, Path]
) -> None:
    data = encode(codes, tokenizer, prior)
    other = Tokenizer.load(models["other_tokenizer"])
    with pytest.raises(CompressedFileError) as error:
        decompress(data, tokenizer=other, prior=prior, name="x.vqa")
    assert short_hash(tokenizer.hash) in str(error.value) and short_hash(other.hash) in str(error.value)
    other_prior = Prior.load(models["other_prior"])
    with pytest.raises(CompressedFileError) as error:
        decode_codes(data, prior=other_prior, name="x.vqa")
    assert short_hash(prior.hash) in str(error.value) and short_hash(other_prior.hash) in str(error.value)
    with pytest.raises(InputError, match="the prior models the tokens of tokenizer"):
        encode_codes(codes, other, prior=prior)  # a prior of another tokenizer cannot code its tokens


def test_codes_that_do_not_fit_are_input_errors(
    codes: np.ndarray, tokenizer: Tokenizer, prior: Prior
) -> None:
    bad = codes.copy()
    bad[0, 3] = 40  # beyond the 32 pitch levels
    with pytest.raises(InputError, match=r"row 0 holds codes .* outside \[0, 32\)"):
        encode(bad, tokenizer, prior)
    with pytest.raises(InputError, match="rows"):
        encode(np.zeros((6, 10), dtype=np.int64), tokenizer, prior)
    with pytest.raises(InputError, match="not 46200 samples"):
        encode(codes[:, :20], tokenizer, prior)


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------
def test_cli_end_to_end_with_damage_and_conceal(
    run: Callable[..., RunResult],
    models: dict[str, Path],
    tmp_path: Path,
    write_audio: Callable[..., Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    import soundfile as sf

    wav = write_audio(tmp_path / "speech.wav", speech_like(30_000, seed=4))
    options = ["--model", models["tokenizer"], "--prior", models["prior"]]
    code, out, err = run("compress", wav, tmp_path / "s.vqa", *options, "--block-seconds", BLOCK, "--n-q", 2)
    assert code == 0, err
    assert "prior coder" in out
    code, out, err = run("decompress", tmp_path / "s.vqa", tmp_path / "s.wav", *options)
    assert code == 0, err
    tokenizer = Tokenizer.load(models["tokenizer"])
    expected = tokenizer.decode(tokenizer.encode_file(wav, n_q=2).codes, num_samples=30_000).numpy()
    written, rate = sf.read(tmp_path / "s.wav", dtype="float32")
    assert rate == RATE and written.shape == expected.shape
    np.testing.assert_allclose(written, np.clip(expected, -1, 1), atol=1 / 32768 + 1e-6)  # 16-bit PCM

    data = (tmp_path / "s.vqa").read_bytes()
    (tmp_path / "d.vqa").write_bytes(flip(data, block_offsets(data)[2] + BLOCK_HEADER_SIZE + 1))
    result = run("decompress", tmp_path / "d.vqa", tmp_path / "d.wav", *options)
    one_line_error(result, f"{tmp_path / 'd.vqa'}: block 2 (frames 20-29) fails its CRC check", "--conceal")
    assert not (tmp_path / "d.wav").exists()
    code, _, err = run("decompress", tmp_path / "d.vqa", tmp_path / "d.wav", *options, "--conceal")
    assert code == 0, err
    assert "block 2 (frames 20-29) fails its CRC check; filled with the prior's continuation" in caplog.text
    assert sf.info(tmp_path / "d.wav").frames == 30_000
    (tmp_path / "t.vqa").write_bytes(data[: len(data) // 2])
    one_line_error(run("decompress", tmp_path / "t.vqa", tmp_path / "t.wav", *options), "is cut off")

    other = ["--model", models["other_tokenizer"], "--prior", models["prior"]]
    line = one_line_error(run("decompress", tmp_path / "s.vqa", tmp_path / "o.wav", *other))
    assert short_hash(tokenizer.hash) in line
    code, _, err = run("compress", wav, tmp_path / "x.vqa", *options, "--no-prior")
    assert code == 2 and "--prior and --no-prior exclude each other" in err
    code, out, err = run("compress", wav, tmp_path / "a.vqa", "--model", models["tokenizer"])
    assert code == 0 and "adaptive coder" in out, err  # the embedded prior models another tokenizer
    one_line_error(run("compress", wav, tmp_path / "s.vqa", *options), "already exists", "--overwrite")
    one_line_error(run("decompress", wav, tmp_path / "w.wav", *options), "not a .vqa file")


def test_cli_folders_in_and_out(
    run: Callable[..., RunResult], models: dict[str, Path], tmp_path: Path, write_audio: Callable[..., Path]
) -> None:
    write_audio(tmp_path / "corpus" / "a.wav", speech_like(9000, seed=1))
    write_audio(tmp_path / "corpus" / "sub" / "b.flac", speech_like(5000, seed=2))
    model = ["--model", models["tokenizer"]]
    code, out, err = run("compress", tmp_path / "corpus", tmp_path / "vqa", *model, "--no-prior")
    assert code == 0, err
    assert sorted(p.relative_to(tmp_path / "vqa").as_posix() for p in (tmp_path / "vqa").rglob("*.vqa")) == [
        "a.vqa",
        "sub/b.vqa",
    ]
    code, out, err = run("decompress", tmp_path / "vqa", tmp_path / "wavs", *model)
    assert code == 0, err
    assert (tmp_path / "wavs" / "sub" / "b.wav").is_file() and (tmp_path / "wavs" / "a.wav").is_file()
    code, _, err = run("compress", tmp_path / "corpus", tmp_path / "one.vqa", *model, "--no-prior")
    assert code == 2 and "go to an output folder" in err
