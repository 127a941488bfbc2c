"""A small Python client of ``vqaudio serve``, on the standard library (urllib): no extra to install.

    client = Client("http://127.0.0.1:8000")
    tokens = client.tokenize("speech.wav", n_q=4)      # a file, its bytes, or an array with its sample rate
    audio, sample_rate = client.resynth(tokens.codes, num_samples=tokens.num_samples)

Refusals raise ``ServiceError`` with the HTTP status and the service's message. A 429 (the server busy) is
retried ``retries`` times, after ``backoff``, 2 x ``backoff``, ... seconds (at most ``max_backoff``). A Client
holds no connection, so one may be shared by threads.

A body over the server's limit is refused here, before it is sent (the limits are read from ``/v1/info`` once,
for the first body over 64 KiB): a server refuses it with 413 without reading it, and a client that is still
sending then sees the connection reset rather than the 413.
"""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import soundfile as sf

from vqaudio.serve.errors import ServiceError

Audio = bytes | str | Path | np.ndarray


class Tokens(NamedTuple):
    """The codes of one clip, as ``/v1/tokenize`` returns them."""

    codes: np.ndarray  # int64 [pitch_rows + n_q, frames]
    n_q: int
    pitch_rows: int
    frame_rate: float
    sample_rate: int  # the model's
    num_samples: int  # the clip's length at the model's rate (pass it to resynth to get that length back)
    kbps: float
    model_hash: str

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Tokens:
        return cls(
            codes=np.asarray(value["codes"], dtype=np.int64),
            n_q=int(value["n_q"]),
            pitch_rows=int(value["pitch_rows"]),
            frame_rate=float(value["frame_rate"]),
            sample_rate=int(value["sample_rate"]),
            num_samples=int(value["num_samples"]),
            kbps=float(value["kbps"]),
            model_hash=str(value["model_hash"]),
        )


class Client:
    """The endpoints of a ``vqaudio serve`` at ``url``.

    Args:
        url: the server, e.g. ``http://127.0.0.1:8000``.
        timeout: seconds to wait for each response.
        retries: how many times a 429 is retried.
        backoff: seconds before the first retry, doubled for each next one up to ``max_backoff``.
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:8000",
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 1.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.retried = 0  # 429s retried so far (the load benchmark counts them)
        self._limits: dict[str, Any] | None = None  # the server's, from /v1/info, when first needed
        host = urllib.parse.urlsplit(self.url).hostname or ""
        # the proxy settings of the environment are for the outside world, not for a server on this machine
        handlers = [urllib.request.ProxyHandler({})] if _is_loopback(host) else []
        self._opener = urllib.request.build_opener(*handlers)

    # ----------------------------------------------------------------------------------------------
    def health(self) -> bool:
        """True when the server answers ``/healthz``."""
        return self._json("GET", "/healthz").get("status") == "ok"

    def info(self) -> dict[str, Any]:
        """The model (``info()["model"]``: rates, codebooks, bitrates per n_q, hash) and the limits."""
        return self._json("GET", "/v1/info")

    def tokenize(self, audio: Audio, sample_rate: int | None = None, n_q: int | None = None) -> Tokens:
        """One clip -> its codes.

        Args:
            audio: a path to an audio file, the bytes of one, or a float array [T] (or [T, channels]) with its
                ``sample_rate``.
            n_q: codebooks to keep (None: the model's all).
        """
        data = self._checked(_audio_bytes(audio, sample_rate), "max_bytes")
        return Tokens.from_json(self._json("POST", "/v1/tokenize", data, "application/octet-stream", n_q=n_q))

    def tokenize_many(
        self, clips: Sequence[Audio], sample_rate: int | None = None, n_q: int | None = None
    ) -> list[Tokens]:
        """Several clips in one request (``{"instances": [{"b64": ...}]}``); their durations add up against
        the server's limit."""
        instances = [
            {"b64": base64.b64encode(_audio_bytes(clip, sample_rate)).decode("ascii")} for clip in clips
        ]
        data = self._checked(_dump({"instances": instances}), "max_bytes")
        reply = self._json("POST", "/v1/tokenize", data, "application/json", n_q=n_q)
        return [Tokens.from_json(item) for item in reply["predictions"]]

    def resynth(
        self,
        codes: np.ndarray | Sequence[Sequence[int]],
        n_q: int | None = None,
        num_samples: int | None = None,
    ) -> tuple[np.ndarray, int]:
        """Codes [pitch_rows + n_q, F] -> (float32 audio [T], sample rate), as float32 WAV (no 16-bit rounding).

        Args:
            n_q: decode only the first n_q codebooks (None: all given).
            num_samples: crop to this length (``Tokens.num_samples`` gives the clip's own back).
        """
        request: dict[str, Any] = {"codes": np.asarray(codes).tolist()}
        if num_samples is not None:
            request["num_samples"] = int(num_samples)
        body = self._checked(_dump(request), "max_codes_json_bytes")
        data = self._request(
            "POST", "/v1/resynth", body, "application/json", n_q=n_q, sample_format="float32"
        )
        return _read_wav(data)

    def compress(self, audio: Audio, sample_rate: int | None = None, n_q: int | None = None) -> bytes:
        """One clip -> the bytes of a ``.vqa`` container (501 where the server has none)."""
        data = self._checked(_audio_bytes(audio, sample_rate), "max_bytes")
        return self._request("POST", "/v1/compress", data, "application/octet-stream", n_q=n_q)

    def decompress(self, container: bytes) -> tuple[np.ndarray, int]:
        """The bytes of a ``.vqa`` container -> (float32 audio [T], sample rate)."""
        body = self._checked(container, "max_container_bytes")
        data = self._request("POST", "/v1/resynth", body, "application/octet-stream", sample_format="float32")
        return _read_wav(data)

    # ----------------------------------------------------------------------------------------------
    def _checked(self, data: bytes, limit_name: str) -> bytes:
        """``data``, or ServiceError 413 when it is over the server's limit ``limit_name``."""
        if len(data) <= 64 * 1024:
            return data
        if self._limits is None:
            self._limits = dict(self.info()["limits"])
        limit = self._limits.get(limit_name)
        if isinstance(limit, int) and len(data) > limit:
            raise ServiceError(
                413,
                f"a request body of {len(data)} bytes is over the server's limit of {limit} bytes ({limit_name} "
                "in /v1/info); send less audio per request",
            )
        return data

    def _json(
        self, method: str, path: str, data: bytes | None = None, content_type: str | None = None, **query: Any
    ) -> dict[str, Any]:
        value = json.loads(self._request(method, path, data, content_type, **query))
        if not isinstance(value, dict):
            raise ServiceError(0, f"{self.url}{path} answered {type(value).__name__}, not a JSON object")
        return value

    def _request(
        self, method: str, path: str, data: bytes | None = None, content_type: str | None = None, **query: Any
    ) -> bytes:
        """The response body of a 2xx; ServiceError for any other status (429 after the retries)."""
        fields = {key: value for key, value in query.items() if value is not None}
        url = self.url + path + ("?" + urllib.parse.urlencode(fields) if fields else "")
        headers = {"Content-Type": content_type} if content_type else {}
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    return bytes(response.read())
            except urllib.error.HTTPError as exc:
                error = _service_error(exc)
                if error.status != 429 or attempt == self.retries:
                    raise error from None
            self.retried += 1
            time.sleep(min(self.max_backoff, self.backoff * 2**attempt))
        raise AssertionError("unreachable")  # the last attempt returns or raises


def _service_error(exc: urllib.error.HTTPError) -> ServiceError:
    """The service's ``{"error": {"code", "message"}}``, or the status line when the body is not that."""
    body = exc.read()
    try:
        message = str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = body.decode("utf-8", "replace").strip()[:500] or str(exc.reason)
    return ServiceError(exc.code, message)


def _audio_bytes(audio: Audio, sample_rate: int | None) -> bytes:
    """What tokenize sends: a file's bytes as they are; an array as a float32 WAV."""
    if isinstance(audio, (bytes, bytearray)):
        return bytes(audio)
    if isinstance(audio, (str, Path)):
        return Path(audio).read_bytes()
    if isinstance(audio, np.ndarray):
        if sample_rate is None:
            raise TypeError("tokenize() needs the sample_rate of an array")
        buffer = io.BytesIO()
        sf.write(buffer, np.asarray(audio, dtype=np.float32), int(sample_rate), format="WAV", subtype="FLOAT")
        return buffer.getvalue()
    raise TypeError(f"expected a path, bytes or a numpy array of audio, got {type(audio).__name__}")


def _read_wav(data: bytes) -> tuple[np.ndarray, int]:
    audio, sample_rate = sf.read(io.BytesIO(data), dtype="float32")
    return audio, int(sample_rate)


def _dump(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
