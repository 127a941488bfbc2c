"""Compressed speech: audio -> tokens -> bits under the token prior, and back (``.vqa`` files).

    data = vqaudio.compress("speech.wav")                    # bytes: the embedded tokenizer and prior
    audio, sample_rate = vqaudio.decompress(data)             # float32 [T] at the tokenizer's rate
    data = vqaudio.compress(wav, 16000, n_q=5, prior=False)   # the adaptive coder: no prior, fast

    data = encode_codes(codes, tokenizer)                     # codes [1 + n_q, F] -> bytes
    codes = decode_codes(data).codes                          # the same codes, exactly

The container (``vqaudio.io.bitstream``) names the tokenizer and the prior by their weights hashes, and the
decoder refuses other models. The tokens go in blocks of ``block_seconds`` (2 s), each coded without the
others (``vqaudio.prior.entropy_coding``): a damaged block is an error naming it, or with ``conceal=True`` is
filled with the prior's continuation of the frames before it, and every other block decodes exactly. The
prior always runs on the CPU, one thread (the encoder's and decoder's probabilities must agree to the bit);
the tokenizer runs wherever it was loaded. Calls may come from several threads: the coding itself runs one at a
time per process. The embedded tokenizer and prior are loaded once and kept.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.errors import CompressedFileError, InputError
from vqaudio.io.audio import to_model_input
from vqaudio.io.bitstream import (
    BLOCK_FRAMES,
    StreamHeader,
    codes_check,
    pack_block,
    pack_header,
    read_stream,
    short_hash,
)
from vqaudio.prior.entropy_coding import (
    LANES,
    PriorCoder,
    adaptive_increments,
    check_codes,
    continue_frames,
    decode_adaptive,
    encode_adaptive,
)
from vqaudio.prior.prior import Prior

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SECONDS = 2.0  # 1 s blocks cost ~1.5% more bits (block headers) and code short clips faster
# concealment samples the prior's continuation (seeded by the block's index: the same file gives the same audio);
# its mel distance to the lost audio measured half that of the most likely codes (docs/EXPERIMENTS.md, 2026-12-07)
CONCEAL_TEMPERATURE = 1.0

TokenizerLike = Tokenizer | str | Path | None
PriorLike = Prior | str | Path | bool | None
AUTO = (
    "auto"  # compress's default prior: the embedded one where it models the tokens, else the adaptive coder
)


class DecodedCodes(NamedTuple):
    """What ``decode_codes`` gives: the codes, the file's header, and the blocks filled by concealment."""

    codes: np.ndarray  # int64 [pitch_rows + n_q, frames]
    header: StreamHeader
    concealed: list[int]  # indices of blocks filled with the prior's continuation (only with conceal=True)


class Decompressed(NamedTuple):
    audio: np.ndarray  # float32 [num_samples]
    sample_rate: int


# --------------------------------------------------------------------------------------------------
# Codes <-> bytes
# --------------------------------------------------------------------------------------------------
def encode_codes(
    codes: np.ndarray | torch.Tensor,
    tokenizer: TokenizerLike = None,
    *,
    prior: PriorLike = AUTO,
    num_samples: int | None = None,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
) -> bytes:
    """Token codes -> the bytes of a ``.vqa`` file.

    Args:
        codes: [P + n_q, F] integer codes of ``tokenizer`` (P = its ``pitch_rows``; the first n_q codebooks).
        tokenizer: the tokenizer that made them (a Tokenizer, a model path; None: the embedded one); the file
            records its hash and geometry.
        prior: "auto": the embedded prior if it models this tokenizer's codes (the embedded tokenizer's, up to
            its 8 codebooks), else the adaptive coder (logged); True: the embedded prior, an error where it does
            not fit; a Prior or a prior model path; False or None: the adaptive coder (no model, fast, smaller
            savings). The file records which.
        num_samples: the audio's length at the tokenizer's rate (None: F * hop_length).
        block_seconds: the length of a block, the unit a damaged file loses (rounded to frames).
    Returns:
        the file's bytes.
    Raises:
        InputError: codes that do not fit the tokenizer, a prior of another tokenizer or with too few rows.
    """
    tok = _tokenizer(tokenizer)
    array = np.asarray(codes.detach().cpu() if isinstance(codes, torch.Tensor) else codes)
    if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
        raise InputError(
            f"encode_codes() expects integer codes [rows, frames], got {array.dtype} of shape {array.shape}"
        )
    array = array.astype(np.int64)
    n_q = array.shape[0] - tok.pitch_rows
    if not 1 <= n_q <= tok.num_codebooks:
        raise InputError(
            f"encode_codes(): {array.shape[0]} rows, expected {tok.pitch_rows} pitch row(s) and 1 to "
            f"{tok.num_codebooks} codebooks of {tok.name!r}"
        )
    frames = array.shape[1]
    if frames < 1:
        raise InputError("encode_codes(): no frames to compress")
    if num_samples is None:
        num_samples = frames * tok.hop_length
    if tok.model.num_frames(num_samples) != frames:
        raise InputError(
            f"encode_codes(): {frames} frames are not {num_samples} samples of hop {tok.hop_length}; pass the "
            "num_samples the codes were made from"
        )
    block_frames = round(block_seconds * tok.frame_rate)
    problem = BLOCK_FRAMES.problem(block_frames)
    if problem is not None:
        raise InputError(f"block_seconds={block_seconds} gives {block_frames} frames per block: {problem}")
    coding_prior = _prior_for_encoding(prior, tok, array.shape[0])
    num_blocks = -(-frames // block_frames)
    header = StreamHeader(
        coder="prior" if coding_prior else "adaptive",
        # a short file runs a smaller batch; the decoder runs the one the header names
        lanes=min(LANES, num_blocks) if coding_prior else 0,
        pitch_rows=tok.pitch_rows,
        n_q=n_q,
        sample_rate=tok.sample_rate,
        hop_length=tok.hop_length,
        num_samples=int(num_samples),
        codebook_size=tok.codebook_size,
        pitch_levels=tok.config.model.pitch.levels if tok.pitch_rows else 0,
        block_frames=block_frames,
        tokenizer_hash=tok.hash,
        prior_hash=coding_prior.hash if coding_prior else None,
    )
    check_codes(array, header.alphabets)
    blocks = [array[:, header.block_frames_of(index)] for index in range(header.num_blocks)]
    if coding_prior:
        payloads = PriorCoder(coding_prior, header.alphabets, header.lanes).encode(blocks)
    else:
        increments = adaptive_increments(header.pitch_rows, header.rows)
        payloads = [encode_adaptive(block, header.alphabets, increments) for block in blocks]
    parts = [pack_header(header)]
    parts += [
        pack_block(index, payload, codes_check(block))
        for index, (payload, block) in enumerate(zip(payloads, blocks, strict=True))
    ]
    return b"".join(parts)


def decode_codes(
    data: bytes,
    *,
    prior: PriorLike = None,
    conceal: bool = False,
    name: str = "the compressed data",
) -> DecodedCodes:
    """The bytes of a ``.vqa`` file -> its codes, exactly as they were compressed.

    Args:
        data: the file's bytes.
        prior: for a prior-coded file, the prior it names (a Prior or a path; None: the embedded prior). For
            ``conceal`` in an adaptive-coded file, the prior that fills damaged blocks (None: the embedded
            prior, when it models this file's tokenizer).
        conceal: fill damaged or missing blocks with the prior's continuation of the frames before them
            (logged as a warning) instead of raising.
        name: the file, for messages.
    Raises:
        CompressedFileError: not a .vqa file, a damaged header, a damaged block (without ``conceal``; the
            message names the block and its frames), a prior other than the file's.
    """
    stream = read_stream(data, name)
    header = stream.header
    prior_model = _prior_for_decoding(prior, header, name) if header.coder == "prior" else None
    problems = {block.number: block.problem for block in stream.blocks if block.problem}
    frames = [len(header.block_frames_of(index)) for index in range(header.num_blocks)]
    payloads = [block.payload for block in stream.blocks]
    if problems and not conceal:
        _raise_for(problems, header, name)
    if prior_model is not None:
        coder = PriorCoder(prior_model, header.alphabets, header.lanes)
        decoded = coder.decode(payloads, frames)
    else:
        increments = adaptive_increments(header.pitch_rows, header.rows)
        decoded = [
            None if payload is None else decode_adaptive(payload, header.alphabets, increments, n)
            for payload, n in zip(payloads, frames, strict=True)
        ]
    for block, codes in zip(stream.blocks, decoded, strict=True):
        if block.problem is None and (codes is None or codes_check(codes) != block.check):
            problems[block.number] = (
                "decodes to other tokens than were compressed: this vqaudio computes the prior's probabilities "
                "differently from the one that wrote the file (another torch build or CPU?); decode where it "
                "was compressed, or compress with --no-prior for files that travel"
            )
    if problems and not conceal:
        _raise_for(problems, header, name)
    if stream.trailing:
        message = f"{name}: {stream.trailing} bytes after the last block (damaged, or not one .vqa file)"
        if not conceal:
            raise CompressedFileError(f"{message}; pass --conceal to decode it anyway")
        log.warning("%s; ignored", message)
    out = np.zeros((header.rows, header.num_frames), dtype=np.int64)
    for index, codes in enumerate(decoded):
        if index not in problems and codes is not None:
            out[:, header.block_frames_of(index)] = codes
    if problems:
        filler = prior_model or _prior_for_concealing(prior, header, name)
        for index in sorted(problems):
            span = header.block_frames_of(index)
            out[:, span] = continue_frames(
                filler, header.alphabets, out[:, : span.start], len(span), CONCEAL_TEMPERATURE, seed=index
            )
            log.warning(
                "%s: %s %s; filled with the prior's continuation",
                name,
                header.describe_block(index),
                problems[index],
            )
    return DecodedCodes(out, header, sorted(problems))


def _raise_for(problems: dict[int, str], header: StreamHeader, name: str) -> None:
    first = min(problems)
    more = len(problems) - 1
    also = f" (and {more} more block{'s' if more > 1 else ''})" if more else ""
    raise CompressedFileError(
        f"{name}: {header.describe_block(first)} {problems[first]}{also}; pass --conceal to fill "
        f"{'it' if not more else 'them'} from the prior"
    )


# --------------------------------------------------------------------------------------------------
# Audio <-> bytes
# --------------------------------------------------------------------------------------------------
def compress(
    audio: str | Path | np.ndarray | torch.Tensor,
    sample_rate: int | None = None,
    *,
    tokenizer: TokenizerLike = None,
    prior: PriorLike = AUTO,
    n_q: int | None = None,
    block_seconds: float = DEFAULT_BLOCK_SECONDS,
) -> bytes:
    """Speech -> the bytes of a ``.vqa`` file.

    Args:
        audio: an audio file path (read window by window), or mono audio [T] (numpy or torch).
        sample_rate: the rate of an array (other rates are resampled); not used with a path.
        tokenizer: a Tokenizer or model path (None: the embedded one).
        prior: "auto" (the embedded prior where it fits, else the adaptive coder), True, a Prior or path, or
            False (see ``encode_codes``).
        n_q: codebooks to keep (None: all); the pitch row is always kept.
        block_seconds: see ``encode_codes``.
    """
    tok = _tokenizer(tokenizer)
    if isinstance(audio, (str, Path)):
        coded = tok.encode_file(audio, n_q=n_q)
        codes, num_samples = np.asarray(coded.codes), coded.num_samples
    else:
        if sample_rate is None:
            raise InputError("compress() of an array needs its sample_rate")
        wav = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        if wav.ndim != 1:
            raise InputError(
                f"compress() takes one mono clip [T], got shape {tuple(wav.shape)}; average the channels "
                "first, or pass the file's path"
            )
        mono = to_model_input(wav, sample_rate, tok.sample_rate, "compress() audio")
        codes = tok.encode(mono, tok.sample_rate, n_q=n_q).cpu().numpy()
        num_samples = int(mono.shape[0])
    return encode_codes(codes, tok, prior=prior, num_samples=num_samples, block_seconds=block_seconds)


def decompress(
    data: bytes,
    *,
    tokenizer: TokenizerLike = None,
    prior: PriorLike = None,
    conceal: bool = False,
    name: str = "the compressed data",
) -> Decompressed:
    """The bytes of a ``.vqa`` file -> (audio float32 [num_samples], sample_rate).

    Args:
        data: the file's bytes.
        tokenizer: the tokenizer the file names (a Tokenizer or path; None: the embedded one).
        prior, conceal, name: see ``decode_codes``.
    Raises:
        CompressedFileError: see ``decode_codes``; a tokenizer other than the file's (both hashes named).
    """
    tok = _tokenizer(tokenizer)
    stream_header = read_stream(data, name).header  # check the tokenizer before any decoding
    check_tokenizer(stream_header, tok, name)
    decoded = decode_codes(data, prior=prior, conceal=conceal, name=name)
    audio = tok.decode(decoded.codes, num_samples=decoded.header.num_samples)
    return Decompressed(audio.float().cpu().numpy(), tok.sample_rate)


def check_tokenizer(header: StreamHeader, tokenizer: Tokenizer, name: str) -> None:
    """Raise CompressedFileError unless ``tokenizer`` is the one the file names (hash and geometry)."""
    if short_hash(tokenizer.hash) != header.tokenizer_hash:
        raise CompressedFileError(
            f"{name} was compressed with tokenizer {header.tokenizer_hash}, but the tokenizer given is "
            f"{short_hash(tokenizer.hash)} ({tokenizer.name}); their codes mean different things: pass the "
            "tokenizer the file was made with (--model)"
        )
    if (tokenizer.sample_rate, tokenizer.hop_length, tokenizer.codebook_size) != (
        header.sample_rate,
        header.hop_length,
        header.codebook_size,
    ) or header.n_q > tokenizer.num_codebooks:
        raise CompressedFileError(
            f"{name}: the header's geometry ({header.sample_rate} Hz, hop {header.hop_length}, {header.n_q} x "
            f"{header.codebook_size} codes) does not fit tokenizer {tokenizer.name!r}; the file is damaged"
        )


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------
def _tokenizer(tokenizer: TokenizerLike) -> Tokenizer:
    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    return _embedded_tokenizer() if tokenizer is None else Tokenizer.load(tokenizer)


@functools.lru_cache(maxsize=1)
def _embedded_tokenizer() -> Tokenizer:
    return Tokenizer.load()


@functools.lru_cache(maxsize=1)
def _embedded_prior() -> Prior:
    return Prior.load()


def _load_prior(prior: PriorLike) -> Prior | None:
    if prior is False or prior is None:
        return None
    if prior is True:
        return _embedded_prior()
    if isinstance(prior, Prior):
        return prior
    if isinstance(prior, (str, Path)) and prior != AUTO:
        return Prior.load(prior)
    raise TypeError(f"prior must be a Prior, a path, 'auto', True or False, got {prior!r}")


def _prior_for_encoding(prior: PriorLike, tokenizer: Tokenizer, rows: int) -> Prior | None:
    if prior == AUTO:
        embedded = _embedded_prior()
        if (embedded.tokenizer_hash, embedded.codebook_size) != (tokenizer.hash, tokenizer.codebook_size) or (
            rows > embedded.num_codebooks
        ):
            log.info(
                "the embedded prior does not model the codes of tokenizer %s (%d rows); coding them with "
                "adaptive counts",
                tokenizer.hash[:12],
                rows,
            )
            return None
        prior = embedded
    loaded = _load_prior(prior)
    if loaded is None:
        return None
    if loaded.tokenizer_hash != tokenizer.hash:
        raise InputError(
            f"the prior models the tokens of tokenizer {loaded.tokenizer_hash[:12]} "
            f"({loaded.tokens.get('tokenizer_name')}), not {tokenizer.hash[:12]} ({tokenizer.name}); pass the "
            "prior trained on this tokenizer, or prior=False (--no-prior) for the adaptive coder"
        )
    if loaded.codebook_size != tokenizer.codebook_size or rows > loaded.num_codebooks:
        raise InputError(
            f"the prior models {loaded.num_codebooks} rows of {loaded.codebook_size} codes, the codes have "
            f"{rows} rows of {tokenizer.codebook_size}; lower n_q, or pass prior=False (--no-prior)"
        )
    return loaded.to("cpu")  # the probabilities are computed on the CPU, whatever the tokenizer's device


def _prior_for_decoding(prior: PriorLike, header: StreamHeader, name: str) -> Prior:
    loaded = _load_prior(True if prior is None else prior)
    if loaded is None:
        raise InputError(
            f"{name} was compressed under a prior; pass the prior it names ({header.prior_hash})"
        )
    if short_hash(loaded.hash) != header.prior_hash:
        raise CompressedFileError(
            f"{name} was compressed under prior {header.prior_hash}, but the prior given is "
            f"{short_hash(loaded.hash)}; pass the prior the file was made with (--prior PATH)"
        )
    _check_prior_fits(loaded, header, name)
    return loaded.to("cpu")


def _prior_for_concealing(prior: PriorLike, header: StreamHeader, name: str) -> Prior:
    """A prior of the file's tokenizer, to fill the damaged blocks of an adaptive-coded file."""
    if prior is False:
        raise CompressedFileError(f"{name}: concealing damaged blocks needs a prior; pass one, or prior=None")
    loaded = _load_prior(True if prior is None else prior)
    assert loaded is not None
    if short_hash(loaded.tokenizer_hash) != header.tokenizer_hash:
        raise CompressedFileError(
            f"{name}: concealing damaged blocks needs a prior of tokenizer {header.tokenizer_hash}; the prior "
            f"given models {short_hash(loaded.tokenizer_hash)}: pass one with --prior PATH"
        )
    _check_prior_fits(loaded, header, name)
    return loaded.to("cpu")


def _check_prior_fits(prior: Prior, header: StreamHeader, name: str) -> None:
    if prior.codebook_size != header.codebook_size or header.rows > prior.num_codebooks:
        raise CompressedFileError(
            f"{name}: {header.rows} rows of {header.codebook_size} codes, but the prior models "
            f"{prior.num_codebooks} rows of {prior.codebook_size}; the header is damaged or the prior is not "
            "the file's"
        )
