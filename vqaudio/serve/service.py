"""What ``vqaudio serve`` does with a request, without HTTP: bytes or parsed JSON in, a ``Reply`` out, every
refusal a ``ServiceError`` carrying its HTTP status. ``vqaudio.serve.app`` puts this behind FastAPI; the
functions here are synchronous and run in the app's worker threads.

Uploaded audio passes the same gate as files read from disk (``vqaudio.io.audio``: rates of 1-384 kHz, no empty
or NaN/Inf audio), and a duration limit checked from the header before anything is decoded. Status codes:

    400  a body sent as application/json that is not JSON
    413  too large: a body over the byte limit (``app``), or audio, uploaded or decoded from codes, over the
         duration limit (the sum over instances)
    415  bytes soundfile cannot read as audio
    422  values that cannot be used: codes out of range or of the wrong shape, ``n_q`` beyond the model's
         codebooks, a sample rate outside 1-384 kHz, empty or NaN audio, unknown or missing JSON fields
    501  ``/v1/compress`` and ``.vqa`` input while this installation has no ``vqaudio.compress``
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import soundfile as sf
import torch

from vqaudio._version import __version__
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.config import (
    SERVE_BODY_TIMEOUT,
    SERVE_BYTES,
    SERVE_CONCURRENCY,
    SERVE_SECONDS,
    SERVE_WORKERS,
    check_value,
)
from vqaudio.errors import AudioError, VQAudioError
from vqaudio.io.audio import _short, check_audio_header, to_model_input
from vqaudio.serve import container
from vqaudio.serve.errors import ServiceError

Body = bytes | bytearray
READ_BLOCK = 1 << 16  # frames decoded at a time from an upload, each block averaged to mono at once
BYTES_PER_CODE = 16  # JSON codes bodies: room for "65535, " with generous whitespace
BODY_SLACK = 64 * 1024  # bytes beyond the codes in a body (JSON keys, a container's header)
SAMPLE_FORMATS = {"pcm16": "PCM_16", "float32": "FLOAT"}  # WAV subtypes of resynth's output


class Reply(NamedTuple):
    """A response: a JSON object, or bytes of ``media_type`` (a WAV, a .vqa container)."""

    body: dict[str, Any] | bytes
    media_type: str = "application/json"
    headers: dict[str, str] | None = None


@dataclass(frozen=True)
class ServeLimits:
    """What one request may hold and how many are served at once; the ranges are in ``vqaudio.config``.

    Peak memory is about the model's, plus per admitted request its body (``max_bytes``, up to three times that
    while a JSON body is parsed and its base64 decoded) and its audio as mono float32 at the upload's rate
    (``max_seconds`` of it), plus one model call's activations per worker (docs/GUARANTEES.md has measurements).
    """

    max_bytes: int = 16 * 1024 * 1024  # a request body; JSON codes bodies are capped lower (codes_json_bytes)
    max_seconds: float = 60.0  # audio per request, uploaded or decoded from codes, summed over instances
    max_concurrency: int = 8  # requests admitted at once (receiving, queued or running); beyond: 429
    workers: int = 1  # model calls at once, each in its own thread; admitted requests beyond wait their turn
    body_timeout: float = 30.0  # seconds a client has to send its whole body (408 after), so a slow
    # client cannot hold an admission slot for ever

    def __post_init__(self) -> None:
        check_value("--max-bytes", self.max_bytes, SERVE_BYTES)
        check_value("--max-seconds", self.max_seconds, SERVE_SECONDS)
        check_value("--max-concurrency", self.max_concurrency, SERVE_CONCURRENCY)
        check_value("--workers", self.workers, SERVE_WORKERS)
        check_value("--body-timeout", self.body_timeout, SERVE_BODY_TIMEOUT)


class Service:
    """The endpoints' work on one loaded tokenizer.

    Args:
        tokenizer: the model served (in eval mode; its weights are not changed).
        limits: the request limits.
    """

    def __init__(self, tokenizer: Tokenizer, limits: ServeLimits | None = None) -> None:
        self.tokenizer = tokenizer
        self.limits = limits or ServeLimits()
        self.model_hash = tokenizer.hash  # computed once: a model loaded from a file has it recorded
        # the longest codes accepted: max_seconds of audio, in frames
        self.max_frames = max(1, math.floor(self.limits.max_seconds * tokenizer.frame_rate))

    # ----------------------------------------------------------------------------------------------
    # Facts
    # ----------------------------------------------------------------------------------------------
    @property
    def max_rows(self) -> int:
        return self.tokenizer.pitch_rows + self.tokenizer.num_codebooks

    @property
    def codes_json_bytes(self) -> int:
        """The largest JSON body of codes /v1/resynth reads: ``BYTES_PER_CODE`` per code of ``max_seconds`` of
        frames at full bitrate, and some slack, never above ``max_bytes``. Parsed JSON numbers take far more
        memory than their text, so this keeps a body of codes small."""
        return min(self.limits.max_bytes, BYTES_PER_CODE * self.max_rows * self.max_frames + BODY_SLACK)

    @property
    def container_bytes(self) -> int:
        """The largest ``.vqa`` body /v1/resynth reads: ``max_seconds`` at the full bitrate, and some slack,
        never above ``max_bytes``. The duration is known only once a container is decoded, so this bounds what
        decoding one can cost (a container at the lowest bitrate may hold a few times ``max_seconds``; the
        decoded audio is then refused with 413)."""
        payload = math.ceil(self.limits.max_seconds * self.tokenizer.bitrate / 8)
        return min(self.limits.max_bytes, payload + BODY_SLACK)

    def body_limit(self, endpoint: str, is_json: bool) -> int:
        """The byte limit of a request body to ``endpoint`` ("tokenize", "resynth", "compress")."""
        if endpoint == "resynth":
            return self.codes_json_bytes if is_json else self.container_bytes
        return self.limits.max_bytes

    def info(self) -> dict[str, Any]:
        """The model and the limits (GET /v1/info)."""
        tok = self.tokenizer
        return {
            "version": __version__,
            "model": {
                "name": tok.name,
                "hash": self.model_hash,
                "sample_rate": tok.sample_rate,
                "frame_rate": tok.frame_rate,
                "hop_length": tok.hop_length,
                "num_codebooks": tok.num_codebooks,
                "codebook_size": tok.codebook_size,
                "pitch_rows": tok.pitch_rows,
                "bitrates": [
                    {"n_q": n_q, "kbps": tok.bitrate_at(n_q) / 1000}
                    for n_q in range(1, tok.num_codebooks + 1)
                ],
                "license": tok.license,
            },
            "limits": {
                "max_bytes": self.limits.max_bytes,
                "max_codes_json_bytes": self.codes_json_bytes,
                "max_container_bytes": self.container_bytes,
                "max_seconds": self.limits.max_seconds,
                "max_concurrency": self.limits.max_concurrency,
                "workers": self.limits.workers,
                "body_timeout": self.limits.body_timeout,
            },
            "compress": container.available(),
        }

    # ----------------------------------------------------------------------------------------------
    # POST /v1/tokenize
    # ----------------------------------------------------------------------------------------------
    def tokenize(self, body: Body, is_json: bool, n_q: int | None) -> Reply:
        """Audio bytes -> ``{"codes", ...}``; JSON ``{"instances": [{"b64": audio}], "n_q"?}`` ->
        ``{"predictions": [{"codes", ...}]}``."""
        if not is_json:
            n_q = self._check_n_q(n_q)
            wav = self.read_audio(body, "the request body", self.limits.max_seconds)
            return Reply(self._tokens(wav, n_q))
        request = _parse_json(body)
        n_q = self._check_n_q(_merge_n_q(n_q, request))
        instances = _instances(request, allowed={"instances", "n_q"})
        budget = self.limits.max_seconds
        wavs = []
        for index, instance in enumerate(instances):
            name = f"instances[{index}]"
            _check_keys(instance, name, required={"b64"}, optional=set())
            wav = self.read_audio(_b64(instance["b64"], f"{name}.b64"), name, budget)
            budget -= wav.shape[-1] / self.tokenizer.sample_rate
            wavs.append(wav)
        return Reply({"predictions": [self._tokens(wav, n_q) for wav in wavs]})

    def read_audio(self, data: Body, name: str, max_seconds: float) -> torch.Tensor:
        """Bytes of an audio file -> mono float32 [T] at the model's rate, through the input gate.

        The duration is checked from the header before decoding, and again while decoding (a header may lie);
        each block is averaged to mono as it is decoded, so at most ``max_seconds`` of mono audio at the
        upload's rate is held.

        Raises:
            ServiceError: 415 unreadable, 413 longer than ``max_seconds``, 422 an implausible rate, empty or
                non-finite audio.
        """
        if not len(data):
            raise ServiceError(422, f"{name} is empty; send the bytes of an audio file (WAV, FLAC, Ogg, MP3)")
        try:
            file = sf.SoundFile(io.BytesIO(data))
        except Exception as exc:  # soundfile raises several types for bytes it cannot read
            why = re.sub(r"^Error opening .*?: ", "", _short(exc))  # soundfile names the BytesIO object
            raise ServiceError(
                415,
                f"{name}: not audio that soundfile can read ({why}); send WAV, FLAC, Ogg/Opus or MP3 bytes",
            ) from exc
        with file:
            rate = int(file.samplerate)
            try:
                check_audio_header(name, rate)
            except AudioError as exc:
                raise ServiceError(422, str(exc.without_skip_hint())) from exc
            limit = math.floor(max_seconds * rate)
            if file.frames > limit:
                raise ServiceError(413, self._too_long(name, file.frames / rate, max_seconds))
            blocks, total = [], 0
            try:
                while True:
                    block = file.read(READ_BLOCK, dtype="float32", always_2d=True)  # [n, channels]
                    if not len(block):
                        break
                    total += len(block)
                    if total > limit:
                        raise ServiceError(413, self._too_long(name, total / rate, max_seconds))
                    blocks.append(block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0])
            except ServiceError:
                raise
            except Exception as exc:
                raise ServiceError(415, f"{name}: the audio cannot be decoded ({_short(exc)})") from exc
        mono = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
        try:
            return to_model_input(mono, rate, self.tokenizer.sample_rate, name)
        except AudioError as exc:
            raise ServiceError(422, str(exc.without_skip_hint())) from exc

    def _too_long(self, name: str, seconds: float, allowed: float) -> str:
        whole = self.limits.max_seconds
        left = "" if allowed == whole else f" ({allowed:.2f} s left of this request's {whole:g} s)"
        return (
            f"{name} holds {seconds:.2f} s of audio, over the limit of {allowed:.2f} s{left}; send shorter "
            "clips (the server's --max-seconds)"
        )

    def _tokens(self, wav: torch.Tensor, n_q: int | None) -> dict[str, Any]:
        tok = self.tokenizer
        codes = tok.encode(wav, tok.sample_rate, n_q=n_q).cpu()  # [P + n_q, F]
        used = codes.shape[0] - tok.pitch_rows
        return {
            "codes": codes.tolist(),
            "n_q": used,
            "pitch_rows": tok.pitch_rows,
            "frames": codes.shape[1],
            "frame_rate": tok.frame_rate,
            "sample_rate": tok.sample_rate,
            "num_samples": wav.shape[-1],
            "seconds": wav.shape[-1] / tok.sample_rate,
            "kbps": tok.bitrate_at(used) / 1000,
            "model_hash": self.model_hash,
        }

    # ----------------------------------------------------------------------------------------------
    # POST /v1/resynth
    # ----------------------------------------------------------------------------------------------
    def resynth(self, body: Body, is_json: bool, n_q: int | None, sample_format: str) -> Reply:
        """Codes -> a WAV.

        JSON ``{"codes": [[...]], "num_samples"?, "n_q"?}`` -> ``audio/wav``; JSON ``{"instances": [{"codes",
        "num_samples"?}], "n_q"?}`` -> ``{"predictions": [{"b64": WAV, ...}]}``; any other body is a ``.vqa``
        container -> ``audio/wav``.
        """
        subtype = _subtype(sample_format)
        if not is_json:
            if n_q is not None:
                raise ServiceError(422, "n_q is set by the .vqa container; leave the n_q parameter out")
            return self._wav_reply(self._decompress(bytes(body)), None, subtype)
        request = _parse_json(body)
        n_q = self._check_n_q(_merge_n_q(n_q, request))
        if "instances" not in request:
            _check_keys(request, "the request", required={"codes"}, optional={"num_samples", "n_q"})
            audio, used, _ = self._decode(request, "the request", n_q, self.max_frames)
            return self._wav_reply(audio, used, subtype)
        instances = _instances(request, allowed={"instances", "n_q"})
        budget, decoded = self.max_frames, []
        for index, instance in enumerate(instances):
            name = f"instances[{index}]"
            _check_keys(instance, name, required={"codes"}, optional={"num_samples"})
            audio, used, frames = self._decode(instance, name, n_q, budget)
            budget -= frames
            decoded.append((audio, used))
        predictions = []
        for audio, used in decoded:
            wav = _wav_bytes(audio, self.tokenizer.sample_rate, subtype)
            predictions.append(
                {
                    "b64": base64.b64encode(wav).decode("ascii"),
                    "content_type": "audio/wav",
                    "sample_rate": self.tokenizer.sample_rate,
                    "num_samples": audio.shape[-1],
                    "n_q": used,
                    "kbps": self.tokenizer.bitrate_at(used) / 1000,
                }
            )
        return Reply({"predictions": predictions, "model_hash": self.model_hash})

    def _decode(
        self, fields: dict[str, Any], name: str, n_q: int | None, max_frames: int
    ) -> tuple[np.ndarray, int, int]:
        """``{"codes", "num_samples"?}`` -> (float32 audio [T], codebooks used, frames)."""
        tok = self.tokenizer
        codes = _codes_array(fields["codes"], f"{name}.codes")
        rows, frames = codes.shape
        low, high = tok.pitch_rows + 1, self.max_rows
        if not low <= rows <= high:
            what = (
                "a pitch row, then 1.." + str(tok.num_codebooks) + " codebooks"
                if tok.pitch_rows
                else "codebooks"
            )
            raise ServiceError(
                422,
                f"{name}.codes has {rows} rows, the model takes {low}..{high} ({what}); were they made by another "
                "model? (GET /v1/info describes this one)",
            )
        if frames > max_frames:
            raise ServiceError(
                413, self._too_long(name, frames / tok.frame_rate, max_frames / tok.frame_rate)
            )
        held = rows - tok.pitch_rows
        if n_q is not None and n_q > held:
            raise ServiceError(422, f"n_q={n_q} but {name}.codes hold only {held} codebooks")
        num_samples = fields.get("num_samples")
        if num_samples is not None and (isinstance(num_samples, bool) or not isinstance(num_samples, int)):
            raise ServiceError(422, f"{name}.num_samples must be an integer, got {num_samples!r}")
        try:
            audio = tok.decode(codes, n_q=n_q, num_samples=num_samples)
        except (VQAudioError, ValueError) as exc:  # codes out of range, a num_samples beyond the frames
            raise ServiceError(422, f"{name}: {exc}") from exc
        return audio.float().cpu().numpy(), held if n_q is None else n_q, frames

    def _decompress(self, data: bytes) -> np.ndarray:
        """A ``.vqa`` container -> float32 audio [T] (501 without the container, 422 for a bad one)."""
        try:
            container.require()
        except container.ContainerUnavailable as exc:
            raise ServiceError(501, str(exc)) from exc
        try:
            audio = container.decompress(self.tokenizer, data)
        except (VQAudioError, ValueError) as exc:
            raise ServiceError(422, f"the .vqa container cannot be decoded: {exc}") from exc
        # checked after decoding: how long the audio is is the container's business
        seconds = audio.shape[-1] / self.tokenizer.sample_rate
        if seconds > self.limits.max_seconds:
            raise ServiceError(413, self._too_long("the .vqa container", seconds, self.limits.max_seconds))
        return audio

    def _wav_reply(self, audio: np.ndarray, n_q: int | None, subtype: str) -> Reply:
        headers = {"X-VQAudio-Model-Hash": self.model_hash}
        if n_q is not None:
            headers["X-VQAudio-N-Q"] = str(n_q)
            headers["X-VQAudio-Kbps"] = f"{self.tokenizer.bitrate_at(n_q) / 1000:g}"
        return Reply(_wav_bytes(audio, self.tokenizer.sample_rate, subtype), "audio/wav", headers)

    # ----------------------------------------------------------------------------------------------
    # POST /v1/compress
    # ----------------------------------------------------------------------------------------------
    def compress(self, body: Body, is_json: bool, n_q: int | None) -> Reply:
        """Audio bytes -> a ``.vqa`` container (``application/octet-stream``)."""
        if is_json:
            raise ServiceError(415, "/v1/compress takes the bytes of an audio file, not JSON")
        try:
            container.require()  # 501 before the audio is decoded
        except container.ContainerUnavailable as exc:
            raise ServiceError(501, str(exc)) from exc
        n_q = self._check_n_q(n_q)
        wav = self.read_audio(body, "the request body", self.limits.max_seconds)
        try:
            data = container.compress(self.tokenizer, wav, n_q)
        except (VQAudioError, ValueError) as exc:
            raise ServiceError(422, f"the audio cannot be compressed: {exc}") from exc
        return Reply(data, "application/octet-stream", {"X-VQAudio-Model-Hash": self.model_hash})

    # ----------------------------------------------------------------------------------------------
    def _check_n_q(self, n_q: Any) -> int | None:
        if n_q is None:
            return None
        limit = self.tokenizer.num_codebooks
        if isinstance(n_q, bool) or not isinstance(n_q, int) or not 1 <= n_q <= limit:
            raise ServiceError(
                422, f"n_q must be an integer between 1 and {limit} (the model's codebooks), got {n_q!r}"
            )
        return n_q


# --------------------------------------------------------------------------------------------------
# Request parsing
# --------------------------------------------------------------------------------------------------
def _parse_json(body: Body) -> dict[str, Any]:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ServiceError(400, f"the body is sent as application/json but is not JSON ({exc})") from exc
    if not isinstance(value, dict):
        raise ServiceError(422, f"the JSON body must be an object, got {type(value).__name__}")
    return value


def _merge_n_q(query: int | None, request: dict[str, Any]) -> Any:
    """n_q from the query string or the JSON body (both: they must agree)."""
    field = request.get("n_q")
    if query is not None and field is not None and query != field:
        raise ServiceError(422, f"n_q is {query} in the query but {field!r} in the body; give it once")
    return query if query is not None else field


def _instances(request: dict[str, Any], allowed: set[str]) -> list[dict[str, Any]]:
    _check_keys(request, "the request", required={"instances"}, optional=allowed - {"instances"})
    instances = request["instances"]
    if not isinstance(instances, list) or not instances:
        raise ServiceError(422, "instances must be a non-empty list of objects")
    for index, instance in enumerate(instances):
        if not isinstance(instance, dict):
            raise ServiceError(422, f"instances[{index}] must be an object, got {type(instance).__name__}")
    return instances


def _check_keys(value: dict[str, Any], name: str, required: set[str], optional: set[str]) -> None:
    missing = sorted(required - set(value))
    if missing:
        raise ServiceError(422, f"{name} has no {', '.join(missing)} field")
    unknown = sorted(set(value) - required - optional)
    if unknown:
        known = ", ".join(sorted(required | optional))
        raise ServiceError(422, f"{name} has unknown field(s) {', '.join(unknown)}; known: {known}")


def _b64(value: Any, name: str) -> bytes:
    if not isinstance(value, str):
        raise ServiceError(422, f"{name} must be a base64 string, got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ServiceError(422, f"{name} is not valid base64 ({exc})") from exc


def _codes_array(value: Any, name: str) -> np.ndarray:
    """JSON codes -> int64 [rows, frames]; 422 for anything but a rectangular list of lists of integers."""
    if not isinstance(value, list) or not value or not all(isinstance(row, list) for row in value):
        raise ServiceError(
            422, f"{name} must be a list of rows, each a list of integer codes ([rows, frames])"
        )
    lengths = {len(row) for row in value}
    if len(lengths) != 1 or 0 in lengths:
        raise ServiceError(
            422, f"{name} must have rows of one non-zero length, got lengths {sorted(lengths)}"
        )
    for row in value:
        for code in row:
            if isinstance(code, bool) or not isinstance(code, int):
                raise ServiceError(422, f"{name} must hold integers only, got {code!r}")
    try:
        return np.array(value, dtype=np.int64)
    except OverflowError as exc:
        raise ServiceError(422, f"{name} holds an integer beyond 64 bits") from exc


def _subtype(sample_format: str) -> str:
    if sample_format not in SAMPLE_FORMATS:
        raise ServiceError(
            422, f"sample_format must be one of {', '.join(SAMPLE_FORMATS)}, got {sample_format!r}"
        )
    return SAMPLE_FORMATS[sample_format]


def _wav_bytes(audio: np.ndarray, sample_rate: int, subtype: str) -> bytes:
    """Mono float audio -> WAV bytes; 16-bit PCM clips to [-1, 1] (as ``save_audio`` does)."""
    if subtype == "PCM_16":
        audio = np.clip(audio, -1.0, 1.0)
    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, format="WAV", subtype=subtype)
    return buffer.getvalue()
