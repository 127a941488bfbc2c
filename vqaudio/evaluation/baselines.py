"""Classical speech codecs run through their command-line tools, as baselines on the same clips.

* Codec2 (Rowe, http://www.rowetel.com/codec2.html), Debian package ``codec2``: ``c2enc``/``c2dec`` at 3200,
  2400, 1600 and 700C bit/s. Codec2 works on 8 kHz raw 16-bit audio: the clip is resampled to 8 kHz (soxr)
  before ``c2enc`` and back to the evaluation rate after ``c2dec``; its output is narrow-band (< 4 kHz).
* Opus (RFC 6716), Debian package ``opus-tools``: ``opusenc --bitrate 6/8/12`` (kbit/s, VBR target) and
  ``opusdec --rate <evaluation rate>``.

Each call works in its own temporary folder. The decoded audio is returned as is: aligning it to the reference
(the codecs' delays) is the caller's job (``vqaudio.evaluation.alignment``). The bitrate is measured from the
encoded stream: Codec2's headerless bit file, and for Opus the audio packets only (the Ogg container and the
OpusHead/OpusTags headers are not counted, as a streaming application would not send them).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import soundfile as sf
import soxr

from vqaudio.errors import VQAudioError

CODEC2_SAMPLE_RATE = 8000
OPUS_DECODE_RATES = (8000, 12000, 16000, 24000, 48000)  # opusdec resamples other rates itself, less well
TOOL_TIMEOUT_SECONDS = 600


class BaselineError(VQAudioError):
    """A codec tool that failed on a clip (the message holds the command and the end of its stderr)."""


@dataclass(frozen=True)
class Baseline:
    """One classical codec setting.

    name: report name, e.g. ``codec2_3200`` or ``opus_6k``.
    codec: ``codec2`` or ``opus``.
    mode: Codec2 mode (``3200``, ``700C``) or the Opus target bitrate in kbit/s (``6``).
    nominal_kbps: the codec's stated bitrate.
    tools: the executables it needs.
    package: the Debian package that holds them.
    """

    name: str
    codec: str
    mode: str
    nominal_kbps: float
    tools: tuple[str, ...]
    package: str

    def missing_tools(self) -> list[str]:
        """Its executables that are not on PATH."""
        return [tool for tool in self.tools if shutil.which(tool) is None]


class BaselineOutput(NamedTuple):
    """One clip through one codec.

    audio: [T'] float32 decoded audio at the requested rate, not aligned (T' may differ from the input).
    encoded_bits: size of the encoded stream (see the module docstring for what is counted).
    encode_seconds, decode_seconds: wall time of the encoder and decoder processes (process start included).
    """

    audio: np.ndarray
    encoded_bits: int
    encode_seconds: float
    decode_seconds: float


CODEC2_MODES: dict[str, float] = {"3200": 3.2, "2400": 2.4, "1600": 1.6, "700C": 0.7}
OPUS_KBPS = (6, 8, 12)


def default_baselines() -> list[Baseline]:
    """Codec2 3200/2400/1600/700C and Opus 6/8/12 kbit/s, highest bitrate first within each codec."""
    baselines = [
        Baseline(f"codec2_{mode}", "codec2", mode, kbps, ("c2enc", "c2dec"), "codec2")
        for mode, kbps in CODEC2_MODES.items()
    ]
    baselines += [
        Baseline(f"opus_{kbps}k", "opus", str(kbps), float(kbps), ("opusenc", "opusdec"), "opus-tools")
        for kbps in sorted(OPUS_KBPS, reverse=True)
    ]
    return baselines


def run_baseline(baseline: Baseline, wav: np.ndarray, sample_rate: int) -> BaselineOutput:
    """Encode and decode one clip with a classical codec.

    Args:
        baseline: which codec and setting.
        wav: [T] float audio in [-1, 1] (clipped to it for the 16-bit files the tools read).
        sample_rate: its rate; the decoded audio comes back at the same rate.
    Returns:
        BaselineOutput (decoded audio not aligned).
    Raises:
        BaselineError: a tool is missing or failed; the message names the command.
    """
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"run_baseline() expects mono audio [T], got shape {wav.shape}")
    missing = baseline.missing_tools()
    if missing:
        raise BaselineError(
            f"{baseline.name}: {', '.join(missing)} not found on PATH; install the Debian package "
            f"'{baseline.package}'"
        )
    with tempfile.TemporaryDirectory(prefix=f"vqaudio-{baseline.name}-") as folder:
        if baseline.codec == "codec2":
            return _run_codec2(baseline, wav, sample_rate, Path(folder))
        if baseline.codec == "opus":
            return _run_opus(baseline, wav, sample_rate, Path(folder))
    raise ValueError(f"unknown baseline codec {baseline.codec!r}; expected 'codec2' or 'opus'")


def _run_codec2(baseline: Baseline, wav: np.ndarray, sample_rate: int, folder: Path) -> BaselineOutput:
    narrow = _resample(wav, sample_rate, CODEC2_SAMPLE_RATE)
    source, bits, decoded = folder / "input.raw", folder / "encoded.bit", folder / "decoded.raw"
    _to_int16(narrow).tofile(source)
    encode_seconds = _call(["c2enc", baseline.mode, str(source), str(bits)], baseline.name)
    decode_seconds = _call(["c2dec", baseline.mode, str(bits), str(decoded)], baseline.name)
    # c2enc writes nothing for a clip shorter than one frame; c2dec then writes an empty file
    pcm = np.fromfile(decoded, dtype="<i2") if decoded.exists() else np.zeros(0, dtype="<i2")
    audio = _resample(pcm.astype(np.float32) / 32768.0, CODEC2_SAMPLE_RATE, sample_rate)
    return BaselineOutput(audio, 8 * bits.stat().st_size, encode_seconds, decode_seconds)


def _run_opus(baseline: Baseline, wav: np.ndarray, sample_rate: int, folder: Path) -> BaselineOutput:
    source, stream, decoded = folder / "input.wav", folder / "encoded.opus", folder / "decoded.wav"
    sf.write(str(source), np.clip(wav, -1.0, 1.0), sample_rate, subtype="PCM_16")
    encode_seconds = _call(
        ["opusenc", "--quiet", "--bitrate", baseline.mode, str(source), str(stream)], baseline.name
    )
    rate = sample_rate if sample_rate in OPUS_DECODE_RATES else 48000
    decode_seconds = _call(
        ["opusdec", "--quiet", "--rate", str(rate), str(stream), str(decoded)], baseline.name
    )
    audio, decoded_rate = sf.read(str(decoded), dtype="float32", always_2d=True)
    audio = _resample(audio.mean(axis=1), int(decoded_rate), sample_rate)
    return BaselineOutput(audio, 8 * opus_audio_bytes(stream.read_bytes()), encode_seconds, decode_seconds)


def opus_audio_bytes(ogg: bytes) -> int:
    """Bytes of the Opus audio packets in an Ogg Opus stream (all packets after OpusHead and OpusTags).

    Args:
        ogg: the whole ``.opus`` file.
    Returns:
        summed packet sizes, without Ogg page headers and the two header packets.
    Raises:
        BaselineError: the bytes are not an Ogg stream.
    """
    packets: list[int] = []
    current = 0  # a packet can continue across pages: lacing values of 255 mean "more follows"
    position = 0
    while position < len(ogg):
        # page header: "OggS", version, type, granule(8), serial(4), sequence(4), crc(4), segment count(1)
        if ogg[position : position + 4] != b"OggS" or position + 27 > len(ogg):
            raise BaselineError(f"not an Ogg stream (bad page at byte {position})")
        segments = ogg[position + 26]
        table = ogg[position + 27 : position + 27 + segments]
        for lacing in table:
            current += lacing
            if lacing < 255:
                packets.append(current)
                current = 0
        position += 27 + segments + sum(table)
    return sum(packets[2:])


def _call(command: list[str], name: str) -> float:
    """Run a tool; returns its wall time in seconds."""
    start = time.perf_counter()
    try:
        result = subprocess.run(command, capture_output=True, timeout=TOOL_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BaselineError(f"{name}: {' '.join(command[:2])} could not run ({exc})") from exc
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise BaselineError(f"{name}: {command[0]} exited with {result.returncode} ({tail[0]})")
    return seconds


def _resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    if source_rate == target_rate or audio.shape[0] == 0:
        return np.ascontiguousarray(audio, dtype=np.float32)
    return soxr.resample(audio, source_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def _to_int16(audio: np.ndarray) -> np.ndarray:
    return np.round(np.clip(audio, -1.0, 32767 / 32768) * 32768.0).astype("<i2")
