"""The compressed-file container (``.vqa``): a fixed header, then blocks of token frames, each checked alone.

    header (35 bytes)  magic "VQA", version, coder, model hashes, geometry, length in samples, CRC32
    block 0            index, payload length, codes check, CRC32, payload (range-coder words)
    block 1            ...
    ...                ceil(frames / block_frames) blocks, in order, nothing after the last

Every block carries its own CRC32 (over its 10-byte block header and payload) and its own length, so a
damaged byte is pinned to one block; the reader then looks for the next block whose index and CRC check out
(a damaged length field costs one block, not the rest of the file). Each block also carries 16 bits of the
CRC32 of the tokens it holds (``codes_check``): the decoder checks what it decoded against them, so
probabilities that differ between the writer and the reader (another torch build) are an error naming the
block, never silent garbage. The byte layout is in docs/FORMATS.md; the coding of the payload in
``vqaudio.prior.entropy_coding``.

This module only packs and parses bytes (no torch, no model): ``pack_header``, ``pack_block``,
``read_stream``.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from vqaudio.config import CODEBOOK_SIZE, HOP, NUM_CODEBOOKS, SAMPLE_RATE, Range
from vqaudio.errors import CompressedFileError
from vqaudio.io.audio import MAX_SECONDS_VARIABLE, max_seconds

MAGIC = b"VQA"
FORMAT_VERSION = 1
CODERS = ("adaptive", "prior")  # flag bit 0: the tokens are coded under adaptive counts (0) or a prior (1)
FLAG_PRIOR, FLAG_PITCH = 0x01, 0x02  # the flags byte: the coder, and a pitch row before the codebooks
HASH_BYTES = (
    6  # models are named by the first 6 bytes (the 12 hex digits vqaudio prints) of their weights hash
)
BLOCK_FRAMES = Range(1, 1000)  # frames per block (20 s at 50 Hz): a payload then always fits its length field
MAX_LANES = 64
MAX_VARINT_BYTES = 10  # an unsigned LEB128 number of at most 64 bits

# magic, version, flags, n_q, lanes; then the tokenizer's hash (and the prior's, with the prior coder), the
# geometry and length as LEB128 numbers (``_VARINT_FIELDS``), and the CRC32 of all of it
_FIXED = struct.Struct("<3sBBBB")
_VARINT_FIELDS = ("sample_rate", "hop_length", "num_samples", "codebook_size", "pitch_levels", "block_frames")
_CRC = struct.Struct("<I")
# block index (mod 2**16), payload length in 32-bit words, codes check; then the CRC32 of those 6 bytes and
# the payload
_BLOCK = struct.Struct("<HHH")
BLOCK_HEADER_SIZE = _BLOCK.size + _CRC.size  # 10
MAX_PAYLOAD_WORDS = 0xFFFF


@dataclass(frozen=True)
class StreamHeader:
    """What the header of a ``.vqa`` file says.

    Attributes:
        coder: "prior" (the tokens are coded under a token prior) or "adaptive" (per-codebook adaptive
            frequencies, no model).
        lanes: blocks the prior coder runs side by side (a batch of this size, always; 0 for "adaptive").
        pitch_rows: 1 when row 0 of the codes is the pitch row.
        n_q: codebooks after the pitch row.
        sample_rate, hop_length: the tokenizer's; ``num_samples`` the audio's length at that rate.
        codebook_size: codes per codebook; ``pitch_levels`` codes of the pitch row (0 without one).
        block_frames: frames per block (the last block may be shorter).
        tokenizer_hash: the first 16 hex digits of the tokenizer's weights hash.
        prior_hash: the same for the prior, or None for the adaptive coder.
    """

    coder: str
    lanes: int
    pitch_rows: int
    n_q: int
    sample_rate: int
    hop_length: int
    num_samples: int
    codebook_size: int
    pitch_levels: int
    block_frames: int
    tokenizer_hash: str
    prior_hash: str | None

    @property
    def rows(self) -> int:
        """Rows of the codes: the pitch row (if any) and the codebooks."""
        return self.pitch_rows + self.n_q

    @property
    def num_frames(self) -> int:
        """ceil(num_samples / hop_length): the tokenizer's frame count."""
        return max(1, -(-self.num_samples // self.hop_length))

    @property
    def num_blocks(self) -> int:
        return -(-self.num_frames // self.block_frames)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def alphabets(self) -> list[int]:
        """Codes each row can hold: the pitch levels for the pitch row, the codebook size for the others."""
        return [self.pitch_levels] * self.pitch_rows + [self.codebook_size] * self.n_q

    def block_frames_of(self, index: int) -> range:
        """The frames block ``index`` holds."""
        first = index * self.block_frames
        return range(first, min(first + self.block_frames, self.num_frames))

    def describe_block(self, index: int) -> str:
        """``block 3 (frames 300-399)``, as error messages name a block."""
        frames = self.block_frames_of(index)
        return f"block {index} (frames {frames.start}-{frames.stop - 1})"


def short_hash(full: str) -> str:
    """A weights hash as the header stores it: its first 12 hex digits."""
    return full[: 2 * HASH_BYTES].lower()


def pack_header(header: StreamHeader) -> bytes:
    """The header bytes of ``header`` (35 for the embedded models; its fields checked as ``read_stream`` checks
    them)."""
    _check_header(header, "the header to write")
    if (header.coder == "prior") != bool(header.prior_hash):
        raise ValueError("a prior-coded stream names its prior's hash, an adaptive-coded one none")
    flags = (FLAG_PRIOR if header.coder == "prior" else 0) | (FLAG_PITCH if header.pitch_rows else 0)
    parts = [_FIXED.pack(MAGIC, FORMAT_VERSION, flags, header.n_q, header.lanes)]
    parts += [
        bytes.fromhex(short_hash(model)) for model in (header.tokenizer_hash, header.prior_hash) if model
    ]
    parts += [_varint(getattr(header, field)) for field in _VARINT_FIELDS]
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def _varint(value: int) -> bytes:
    """Unsigned LEB128: 7 bits per byte, least significant first, the high bit set on all bytes but the last."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


class _Truncated(Exception):
    """The data ends inside the header."""


def _read_varint(data: bytes, position: int) -> tuple[int, int]:
    value = 0
    for count in range(MAX_VARINT_BYTES):
        if position + count >= len(data):
            raise _Truncated
        byte = data[position + count]
        value |= (byte & 0x7F) << (7 * count)
        if not byte & 0x80:
            return value, position + count + 1
    raise ValueError("a header number runs past 10 bytes")


def codes_check(codes: np.ndarray) -> int:
    """16 bits that the decoder compares with the tokens it decoded: the low half of the CRC32 of the codes
    [rows, frames] as little-endian uint16, frame by frame (row 0 first within a frame)."""
    array = np.ascontiguousarray(np.asarray(codes).T, dtype="<u2")  # [frames, rows]
    return zlib.crc32(array.tobytes()) & 0xFFFF


def pack_block(index: int, payload: bytes, check: int) -> bytes:
    """One block: its 10-byte header, then ``payload`` (a whole number of 32-bit words)."""
    if len(payload) % 4:
        raise ValueError(f"a block payload is whole 32-bit words, got {len(payload)} bytes")
    words = len(payload) // 4
    if words > MAX_PAYLOAD_WORDS:
        raise ValueError(
            f"block {index} codes to {len(payload)} bytes, more than a block holds ({4 * MAX_PAYLOAD_WORDS}); "
            "use shorter blocks"
        )
    head = _BLOCK.pack(index & 0xFFFF, words, check)
    return head + _CRC.pack(zlib.crc32(payload, zlib.crc32(head))) + payload


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
class Block(NamedTuple):
    """One block as read: its payload and codes check, or what is wrong with it."""

    number: int  # its place in the file, 0 first
    payload: bytes | None  # None: damaged or missing
    check: int  # the codes check it carries (0 when damaged)
    problem: str | None  # e.g. "fails its CRC check"; None when intact


class Stream(NamedTuple):
    header: StreamHeader
    header_size: int  # bytes: block 0 starts here
    blocks: list[Block]  # one per block of the header, in order
    trailing: int  # bytes after the last block (0 in a sound file)


def read_stream(data: bytes, name: str = "the compressed data") -> Stream:
    """Parse a ``.vqa`` byte string: the header (which must be intact) and every block.

    A block that fails its CRC check, or is cut off, is returned with its ``problem``; the reader resumes at
    the next block whose index and CRC check out, so one damaged block (its length field included) leaves
    the others readable.

    Args:
        data: the whole file.
        name: the file, for messages.
    Raises:
        CompressedFileError: not a .vqa file, a newer format version, or a damaged header.
    """
    data = bytes(data)
    if data[: len(MAGIC)] != MAGIC:
        raise CompressedFileError(f"{name}: not a vqaudio compressed file (no 'VQA' magic at the start)")
    try:
        header, header_size = _parse_header(data, name)
    except _Truncated:
        raise CompressedFileError(
            f"{name}: truncated: the file ends inside its header ({len(data)} bytes)"
        ) from None
    blocks: list[Block] = []
    position = header_size
    index = 0
    while index < header.num_blocks:
        size = _intact_block_size(data, position, index)
        if size is not None:
            head = _BLOCK.unpack_from(data, position)
            start = position + BLOCK_HEADER_SIZE
            blocks.append(Block(index, data[start : position + size], head[2], None))
            position += size
            index += 1
            continue
        found = _next_intact_block(data, position + 1, index, header.num_blocks)
        if found is None:  # nothing intact after it: this block and the rest are lost
            if position >= len(data):
                reason = "is missing: the file ends before it"
            elif _runs_past_end(data, position):
                reason = "is cut off: the file ends inside it"
            else:
                reason = "fails its CRC check"
            blocks.append(Block(index, None, 0, reason))
            blocks += [Block(lost, None, 0, "is missing") for lost in range(index + 1, header.num_blocks)]
            position = len(data)
            break
        next_position, next_index = found
        blocks.append(Block(index, None, 0, "fails its CRC check"))
        blocks += [Block(lost, None, 0, "is missing") for lost in range(index + 1, next_index)]
        position, index = next_position, next_index
    return Stream(header, header_size, blocks, max(0, len(data) - position))


def _parse_header(data: bytes, name: str) -> tuple[StreamHeader, int]:
    """The header at the start of ``data`` and its size; raises _Truncated where the data ends inside it."""
    if len(data) < _FIXED.size:
        raise _Truncated
    _, version, flags, n_q, lanes = _FIXED.unpack_from(data)
    if version > FORMAT_VERSION:
        raise CompressedFileError(
            f"{name}: compressed-file format version {version} is newer than this vqaudio reads "
            f"({FORMAT_VERSION}); upgrade vqaudio"
        )
    damaged = f"{name}: the header fails its CRC check (damaged); the file cannot be decoded, not even with --conceal"
    position = _FIXED.size
    hashes = []
    for _ in range(2 if flags & FLAG_PRIOR else 1):
        if position + HASH_BYTES > len(data):
            raise _Truncated
        hashes.append(data[position : position + HASH_BYTES].hex())
        position += HASH_BYTES
    numbers = {}
    try:
        for field in _VARINT_FIELDS:
            numbers[field], position = _read_varint(data, position)
    except ValueError:
        raise CompressedFileError(damaged) from None
    if position + _CRC.size > len(data):
        raise _Truncated
    (stored_crc,) = _CRC.unpack_from(data, position)
    if zlib.crc32(data[:position]) != stored_crc:
        raise CompressedFileError(damaged)
    if flags & ~(FLAG_PRIOR | FLAG_PITCH):
        raise CompressedFileError(f"{name}: unknown header flags {flags:#04x}; upgrade vqaudio")
    header = StreamHeader(
        coder=CODERS[flags & FLAG_PRIOR],
        lanes=lanes,
        pitch_rows=1 if flags & FLAG_PITCH else 0,
        n_q=n_q,
        tokenizer_hash=hashes[0],
        prior_hash=hashes[1] if len(hashes) > 1 else None,
        **numbers,
    )
    _check_header(header, name)
    return header, position + _CRC.size


def _intact_block_size(data: bytes, position: int, index: int) -> int | None:
    """The size of the block at ``position`` if it is block ``index`` and passes its CRC check, else None."""
    if position + BLOCK_HEADER_SIZE > len(data):
        return None
    stored_index, words, _ = _BLOCK.unpack_from(data, position)
    if stored_index != index & 0xFFFF:
        return None
    end = position + BLOCK_HEADER_SIZE + 4 * words
    if end > len(data):
        return None
    (stored_crc,) = _CRC.unpack_from(data, position + _BLOCK.size)
    crc = zlib.crc32(
        data[position + BLOCK_HEADER_SIZE : end], zlib.crc32(data[position : position + _BLOCK.size])
    )
    return end - position if crc == stored_crc else None


def _runs_past_end(data: bytes, position: int) -> bool:
    """Whether the block at ``position`` claims more bytes than the file has (a cut-off file)."""
    if position + BLOCK_HEADER_SIZE > len(data):
        return position < len(data)
    _, words, _ = _BLOCK.unpack_from(data, position)
    return position + BLOCK_HEADER_SIZE + 4 * words > len(data)


def _next_intact_block(data: bytes, start: int, damaged: int, num_blocks: int) -> tuple[int, int] | None:
    """(position, index) of the first intact block after the damaged block ``damaged``, searching forward from
    byte ``start``; its index (stored mod 2**16) is the first one after ``damaged`` that matches."""
    for position in range(start, len(data) - BLOCK_HEADER_SIZE + 1):
        (stored_index,) = struct.unpack_from("<H", data, position)
        index = damaged + 1 + ((stored_index - damaged - 1) & 0xFFFF)
        if index < num_blocks and _intact_block_size(data, position, index) is not None:
            return position, index
    return None


def _check_header(header: StreamHeader, name: str) -> None:
    """Every header field within what vqaudio can make; a damaged header that passed its CRC by chance, or
    a file written by something else, stops here."""
    problems = []
    for field, value, allowed in (
        ("sample_rate", header.sample_rate, SAMPLE_RATE),
        ("hop_length", header.hop_length, HOP),
        ("n_q", header.n_q, NUM_CODEBOOKS),
        ("codebook_size", header.codebook_size, CODEBOOK_SIZE),
        ("block_frames", header.block_frames, BLOCK_FRAMES),
        ("pitch_rows", header.pitch_rows, Range(0, 1)),
        ("lanes", header.lanes, Range(0 if header.coder == "adaptive" else 1, MAX_LANES)),
    ):
        problem = allowed.problem(value)
        if problem is not None:
            problems.append(f"{field} {problem}")
    if header.num_samples < 1:
        problems.append(f"num_samples is {header.num_samples}, expected at least 1")
    elif header.num_samples > max_seconds() * header.sample_rate:
        problems.append(
            f"{header.num_samples} samples at {header.sample_rate} Hz are more than the {max_seconds():g} s any "
            f"audio may last (raise {MAX_SECONDS_VARIABLE} if it is right)"
        )
    if header.pitch_rows and not 1 <= header.pitch_levels <= header.codebook_size:
        problems.append(f"pitch_levels {header.pitch_levels} outside [1, codebook_size]")
    if not header.pitch_rows and header.pitch_levels:
        problems.append(f"pitch_levels {header.pitch_levels} without a pitch row")
    if header.coder == "adaptive" and header.lanes:
        problems.append("the adaptive coder runs no lanes")
    if problems:
        raise CompressedFileError(f"{name}: the header is not one vqaudio writes ({'; '.join(problems)})")


def bits_per_second(size: int, header: StreamHeader) -> float:
    """The bit rate of a file of ``size`` bytes: every byte counted, header included."""
    return 8 * size / (header.num_samples / header.sample_rate) if header.num_samples else math.inf
