"""vqaudio serve: a real server process on a free loopback port, every endpoint and error status, the limits
(413 before and while reading, 429, 408), the client, the page, and the .vqa adapter (in-process)."""

from __future__ import annotations

import base64
import io
import json
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import numpy as np
import pytest
import soundfile as sf
from browser import Browser, is_blank, requires_chromium
from conftest import one_line_error, speech_like

from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.io.audio import load_audio
from vqaudio.serve.client import Client, Tokens
from vqaudio.serve.errors import ServiceError

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "vqaudio" / "serve" / "static"
# the test server's limits: small, so that refusals are cheap to provoke
MAX_BYTES, MAX_SECONDS, MAX_CONCURRENCY, BODY_TIMEOUT = 200_000, 4.0, 2, 2.0


class Server(NamedTuple):
    url: str
    port: int
    process: subprocess.Popen[str]
    log: Path


@pytest.fixture(scope="module")
def server(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    log = tmp_path_factory.mktemp("serve") / "stderr.txt"
    command = [
        sys.executable,
        "-m",
        "vqaudio.cli.main",
        "serve",
        "--model",
        str(tiny_model_dir),
        "--port",
        "0",
    ]
    command += ["--max-bytes", str(MAX_BYTES), "--max-seconds", str(MAX_SECONDS), "--threads", "1"]
    command += ["--max-concurrency", str(MAX_CONCURRENCY), "--body-timeout", str(BODY_TIMEOUT)]
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 60)
        line = process.stdout.readline() if ready else ""
        match = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert match, f"no 'serving on' line: {line!r}\n{log.read_text()}"
        url, port = match.group(0).rstrip("/"), int(match.group(1))
        _wait_healthy(url)
        yield Server(url, port, process, log)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def _wait_healthy(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{url}/healthz").json() == {"status": "ok"}:
                return
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.05)


def _wav(audio: np.ndarray, sample_rate: int = 16000, subtype: str = "PCM_16", format: str = "WAV") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, sample_rate, subtype=subtype, format=format)
    return buffer.getvalue()


def _error(response: httpx.Response, status: int, *needles: str) -> str:
    """The response is ``{"error": {"code": status, "message": ...}}`` holding every needle; its message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert error["code"] == status and isinstance(error["message"], str)
    for needle in needles:
        assert needle in error["message"], (needle, error["message"])
    return str(error["message"])


def _raw(port: int, head: str, body: bytes = b"") -> socket.socket:
    """A connection that has sent ``head`` (the request line and headers) and ``body``."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    connection.sendall(head.replace("\n", "\r\n").encode() + b"\r\n" + body)
    return connection


def _read_response(connection: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    headers = {key.lower(): value.strip() for key, value in (line.split(":", 1) for line in lines[1:])}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = connection.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def _in_flight(server: Server) -> int:
    return int(httpx.get(f"{server.url}/v1/info").json()["load"]["in_flight"])


def _hold_slots(server: Server, count: int) -> list[socket.socket]:
    """``count`` requests admitted and stuck receiving their bodies (a slow client)."""
    head = "POST /v1/tokenize HTTP/1.1\nHost: test\nContent-Type: audio/wav\nContent-Length: 1000\n"
    held = [_raw(server.port, head, b"RIFF") for _ in range(count)]
    deadline = time.monotonic() + 10
    while _in_flight(server) < count:
        assert time.monotonic() < deadline, "the slow requests were never admitted"
        time.sleep(0.02)
    return held


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 16 kHz 16-bit WAV, a 22.05 kHz stereo FLAC (resampled, downmixed)."""
    folder = tmp_path_factory.mktemp("clips")
    wav = folder / "a.wav"
    wav.write_bytes(_wav(speech_like(24000, seed=1)))
    stereo = np.stack([speech_like(22050, 22050, seed=2), speech_like(22050, 22050, seed=3)], axis=1)
    flac = folder / "b.flac"
    flac.write_bytes(_wav(stereo, 22050, format="FLAC"))
    return {"wav": wav, "flac": flac}


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path) -> Tokenizer:
    return Tokenizer.load(tiny_model_dir)


def _direct_codes(tok: Tokenizer, path: Path, n_q: int | None = None) -> np.ndarray:
    return tok.encode(load_audio(path, tok.sample_rate), tok.sample_rate, n_q=n_q).numpy()


# --------------------------------------------------------------------------------------------------
# The endpoints
# --------------------------------------------------------------------------------------------------
def test_health_and_info_describe_the_model_and_the_limits(server: Server, tok: Tokenizer) -> None:
    assert httpx.get(f"{server.url}/healthz").json() == {"status": "ok"}
    info = httpx.get(f"{server.url}/v1/info").json()
    model = info["model"]
    assert model["hash"] == tok.hash and model["name"] == "tiny"
    assert (model["sample_rate"], model["frame_rate"], model["num_codebooks"]) == (16000, 50.0, 3)
    assert [rate["kbps"] for rate in model["bitrates"]] == [0.2, 0.4, 0.6]  # 4 bits x 50 Hz per codebook
    limits = info["limits"]
    assert (limits["max_bytes"], limits["max_seconds"], limits["max_concurrency"]) == (
        MAX_BYTES,
        MAX_SECONDS,
        MAX_CONCURRENCY,
    )
    assert limits["max_codes_json_bytes"] < MAX_BYTES  # codes of 4 s at 16 bytes each, and slack
    assert info["compress"] is True  # constriction is in the dev extra
    assert httpx.get(f"{server.url}/docs").status_code == 404  # FastAPI's docs load from a CDN: off


@pytest.mark.parametrize("clip, n_q", [("wav", None), ("wav", 2), ("flac", 1)])
def test_tokenize_raw_audio_gives_the_codes_of_the_library(
    server: Server, tok: Tokenizer, clips: dict[str, Path], clip: str, n_q: int | None
) -> None:
    params = {} if n_q is None else {"n_q": n_q}
    response = httpx.post(f"{server.url}/v1/tokenize", content=clips[clip].read_bytes(), params=params)
    assert response.status_code == 200, response.text
    result = response.json()
    expected = _direct_codes(tok, clips[clip], n_q)
    np.testing.assert_array_equal(np.array(result["codes"]), expected)
    used = n_q or 3
    assert result["n_q"] == used and result["frames"] == expected.shape[1] and result["pitch_rows"] == 0
    assert result["kbps"] == pytest.approx(0.2 * used) and result["model_hash"] == tok.hash
    assert result["num_samples"] == len(load_audio(clips[clip], 16000))


def test_tokenize_instances_in_the_tf_serving_style(
    server: Server, tok: Tokenizer, clips: dict[str, Path]
) -> None:
    instances = [{"b64": base64.b64encode(clips[name].read_bytes()).decode()} for name in ("wav", "flac")]
    response = httpx.post(f"{server.url}/v1/tokenize", json={"instances": instances, "n_q": 2})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert len(predictions) == 2
    for prediction, name in zip(predictions, ("wav", "flac"), strict=True):
        np.testing.assert_array_equal(np.array(prediction["codes"]), _direct_codes(tok, clips[name], 2))


def test_tokenize_then_resynth_equals_decode(server: Server, tok: Tokenizer, clips: dict[str, Path]) -> None:
    tokens = httpx.post(f"{server.url}/v1/tokenize", content=clips["wav"].read_bytes()).json()
    codes = np.array(tokens["codes"])
    expected = tok.decode(codes, num_samples=tokens["num_samples"]).numpy()
    request = {"codes": tokens["codes"], "num_samples": tokens["num_samples"]}

    exact = httpx.post(f"{server.url}/v1/resynth", json=request, params={"sample_format": "float32"})
    assert exact.status_code == 200 and exact.headers["content-type"] == "audio/wav"
    assert exact.headers["x-vqaudio-model-hash"] == tok.hash and exact.headers["x-vqaudio-n-q"] == "3"
    audio, rate = sf.read(io.BytesIO(exact.content), dtype="float32")
    assert rate == 16000 and audio.shape == expected.shape
    np.testing.assert_allclose(audio, expected, atol=1e-6)

    pcm = httpx.post(f"{server.url}/v1/resynth", json=request)  # the default: 16-bit PCM
    audio16, _ = sf.read(io.BytesIO(pcm.content), dtype="float32")
    assert sf.info(io.BytesIO(pcm.content)).subtype == "PCM_16"
    np.testing.assert_allclose(audio16, np.clip(expected, -1, 1), atol=1 / 32768 + 1e-6)

    fewer = httpx.post(
        f"{server.url}/v1/resynth", json=request, params={"n_q": 1, "sample_format": "float32"}
    )
    audio1, _ = sf.read(io.BytesIO(fewer.content), dtype="float32")
    np.testing.assert_allclose(audio1, tok.decode(codes, n_q=1, num_samples=len(expected)).numpy(), atol=1e-6)
    assert fewer.headers["x-vqaudio-kbps"] == "0.2"

    batch = httpx.post(f"{server.url}/v1/resynth", json={"instances": [request, {"codes": tokens["codes"]}]})
    assert batch.status_code == 200, batch.text
    first, second = batch.json()["predictions"]
    assert first["num_samples"] == len(expected) and second["num_samples"] == codes.shape[1] * 320
    wav, _ = sf.read(io.BytesIO(base64.b64decode(first["b64"])), dtype="float32")
    np.testing.assert_allclose(wav, np.clip(expected, -1, 1), atol=1 / 32768 + 1e-6)


# --------------------------------------------------------------------------------------------------
# Refusals: clear JSON errors
# --------------------------------------------------------------------------------------------------
SILENCE = np.zeros(1600, dtype=np.float32)
NAN = np.concatenate([SILENCE, [np.nan]]).astype(np.float32)
CODES = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]

BAD_REQUESTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    # endpoint, what, request arguments, status, a phrase of the message
    (
        "tokenize",
        "garbage bytes",
        {"content": b"\x00garbage" * 100},
        415,
        "not audio that soundfile can read",
    ),
    ("tokenize", "an empty body", {"content": b""}, 422, "is empty"),
    ("tokenize", "NaN samples", {"content": _wav(NAN, subtype="FLOAT")}, 422, "NaN"),
    ("tokenize", "a 500 Hz rate", {"content": _wav(SILENCE, 500)}, 422, "sample rate 500 Hz"),
    (
        "tokenize",
        "5 s of audio",
        {"content": _wav(np.zeros(80000, np.float32))},
        413,
        "over the limit of 4.00 s",
    ),
    ("tokenize", "n_q 0", {"content": _wav(SILENCE), "params": {"n_q": 0}}, 422, "between 1 and 3"),
    ("tokenize", "n_q 4", {"content": _wav(SILENCE), "params": {"n_q": 4}}, 422, "between 1 and 3"),
    ("tokenize", "n_q not a number", {"content": b"x", "params": {"n_q": "x"}}, 422, "n_q"),
    ("tokenize", "no instances", {"json": {"instances": []}}, 422, "non-empty list"),
    ("tokenize", "bad base64", {"json": {"instances": [{"b64": "@@"}]}}, 422, "instances[0].b64"),
    (
        "tokenize",
        "an unknown field",
        {"json": {"instances": [{"b64": "", "x": 1}]}},
        422,
        "unknown field(s) x",
    ),
    (
        "tokenize",
        "3 s + 3 s in instances",
        {
            "json": {
                "instances": [{"b64": base64.b64encode(_wav(np.zeros(24000, np.float32), 8000)).decode()}] * 2
            }
        },
        413,
        "instances[1]",
    ),
    ("resynth", "codes out of range", {"json": {"codes": [[1, 2], [3, 99]]}}, 422, "codebook_size is 16"),
    ("resynth", "ragged rows", {"json": {"codes": [[1, 2], [3]]}}, 422, "rows of one non-zero length"),
    ("resynth", "float codes", {"json": {"codes": [[1.5, 2]]}}, 422, "integers only"),
    ("resynth", "4 rows", {"json": {"codes": [[1]] * 4}}, 422, "the model takes 1..3"),
    ("resynth", "codes not a list", {"json": {"codes": "1 2 3"}}, 422, "list of rows"),
    ("resynth", "no codes", {"json": {"num_samples": 3}}, 422, "no codes field"),
    ("resynth", "6 s of codes", {"json": {"codes": [[0] * 300]}}, 413, "6.00 s of audio"),
    ("resynth", "num_samples too long", {"json": {"codes": CODES, "num_samples": 961}}, 422, "num_samples"),
    ("resynth", "n_q above the rows", {"json": {"codes": [[1]], "n_q": 2}}, 422, "hold only 1 codebooks"),
    ("resynth", "two n_q", {"json": {"codes": CODES, "n_q": 2}, "params": {"n_q": 3}}, 422, "give it once"),
    (
        "resynth",
        "not JSON",
        {"content": b"{nope", "headers": {"content-type": "application/json"}},
        400,
        "not JSON",
    ),
    ("resynth", "a JSON list", {"json": [1, 2]}, 422, "must be an object"),
    (
        "resynth",
        "an mp3 sample format",
        {"json": {"codes": CODES}, "params": {"sample_format": "mp3"}},
        422,
        "pcm16",
    ),
    (
        "resynth",
        "a cut-off .vqa container",
        {"content": b"VQA\x01"},
        422,
        "the .vqa container cannot be decoded",
    ),
    ("resynth", "not a .vqa container", {"content": b"not json codes"}, 422, "cannot be decoded"),
    ("compress", "JSON", {"json": {"instances": []}}, 415, "not JSON"),
]


@pytest.mark.parametrize(
    "endpoint, what, arguments, status, phrase", BAD_REQUESTS, ids=[row[1] for row in BAD_REQUESTS]
)
def test_refusals_are_json_errors_with_their_status(
    server: Server, endpoint: str, what: str, arguments: dict[str, Any], status: int, phrase: str
) -> None:
    _error(httpx.post(f"{server.url}/v1/{endpoint}", **arguments), status, phrase)


def test_unknown_paths_and_methods_are_json_errors_too(server: Server) -> None:
    _error(httpx.get(f"{server.url}/v1/nothing"), 404)
    _error(httpx.get(f"{server.url}/v1/tokenize"), 405)


def test_a_declared_oversized_body_is_refused_before_it_is_sent(server: Server) -> None:
    connection = _raw(server.port, "POST /v1/tokenize HTTP/1.1\nHost: test\nContent-Length: 1000000000\n")
    with connection:
        status, headers, body = _read_response(connection)
    assert (
        status == 413 and "over this endpoint's limit of 200000 bytes" in json.loads(body)["error"]["message"]
    )
    # codes bodies have a lower limit, derived from the duration limit
    limit = httpx.get(f"{server.url}/v1/info").json()["limits"]["max_codes_json_bytes"]
    codes = json.dumps({"codes": [[0] * 100]}).encode() + b" " * limit
    _error(
        httpx.post(f"{server.url}/v1/resynth", content=codes, headers={"content-type": "application/json"}),
        413,
    )


def test_a_chunked_body_is_cut_off_at_the_limit(server: Server) -> None:
    head = "POST /v1/tokenize HTTP/1.1\nHost: test\nTransfer-Encoding: chunked\n"
    chunk = b"%x\r\n" % 50_000 + b"\0" * 50_000 + b"\r\n"
    with _raw(server.port, head, chunk * 5 + b"0\r\n\r\n") as connection:  # 250 kB without a Content-Length
        status, _, body = _read_response(connection)
    assert status == 413 and "more than 200000" in json.loads(body)["error"]["message"]


def test_the_concurrency_limit_refuses_with_429_and_slow_bodies_time_out(
    server: Server, clips: dict[str, Path]
) -> None:
    rejected = httpx.get(f"{server.url}/v1/info").json()["load"]["rejected"]
    held = _hold_slots(server, MAX_CONCURRENCY)
    try:
        refused = httpx.post(f"{server.url}/v1/tokenize", content=clips["wav"].read_bytes())
        _error(refused, 429, "--max-concurrency")
        assert refused.headers["retry-after"] == "1"
        assert httpx.get(f"{server.url}/healthz").status_code == 200  # GETs are not limited
        # a refused client still sending its body gets the 429 once it is sent, not a connection reset (with
        # Connection: close, as urllib sends, the server closes the connection after its response)
        head = "POST /v1/tokenize HTTP/1.1\nHost: test\nConnection: close\nContent-Length: 150000\n"
        with _raw(server.port, head) as sending:
            for _ in range(10):
                time.sleep(0.03)
                sending.sendall(b"\0" * 15000)  # raises if the server has closed the connection
            status, _, _ = _read_response(sending)
        assert status == 429
        assert httpx.get(f"{server.url}/v1/info").json()["load"]["rejected"] == rejected + 2
        for connection in held:  # the slow clients get 408 after --body-timeout, and free their slots
            status, _, body = _read_response(connection)
            assert status == 408 and "did not arrive within 2 s" in json.loads(body)["error"]["message"]
    finally:
        for connection in held:
            connection.close()
    assert httpx.post(f"{server.url}/v1/tokenize", content=clips["wav"].read_bytes()).status_code == 200


def test_requests_in_parallel_within_the_limit_are_all_served_exactly(
    server: Server, tok: Tokenizer, clips: dict[str, Path]
) -> None:
    expected = _direct_codes(tok, clips["flac"])
    results: list[np.ndarray] = []

    def one() -> None:
        response = httpx.post(f"{server.url}/v1/tokenize", content=clips["flac"].read_bytes(), timeout=30)
        results.append(np.array(response.json()["codes"]))

    threads = [threading.Thread(target=one) for _ in range(MAX_CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == MAX_CONCURRENCY
    for codes in results:
        np.testing.assert_array_equal(codes, expected)


# --------------------------------------------------------------------------------------------------
# The client
# --------------------------------------------------------------------------------------------------
def test_the_client(server: Server, tok: Tokenizer, clips: dict[str, Path]) -> None:
    client = Client(server.url, retries=0)
    assert client.health() and client.info()["model"]["hash"] == tok.hash
    expected = _direct_codes(tok, clips["wav"], 2)
    from_path = client.tokenize(clips["wav"], n_q=2)
    assert isinstance(from_path, Tokens) and from_path.n_q == 2 and from_path.kbps == pytest.approx(0.4)
    np.testing.assert_array_equal(from_path.codes, expected)
    np.testing.assert_array_equal(client.tokenize(clips["wav"].read_bytes(), n_q=2).codes, expected)
    array = load_audio(clips["wav"], 16000).numpy()
    np.testing.assert_array_equal(client.tokenize(array, 16000, n_q=2).codes, expected)  # sent as float WAV
    many = client.tokenize_many([clips["wav"], clips["flac"]], n_q=2)
    np.testing.assert_array_equal(many[1].codes, _direct_codes(tok, clips["flac"], 2))

    audio, rate = client.resynth(from_path.codes, num_samples=from_path.num_samples)
    assert rate == 16000
    np.testing.assert_allclose(audio, tok.decode(expected, num_samples=len(array)).numpy(), atol=1e-6)

    with pytest.raises(ServiceError, match="between 1 and 3") as caught:
        client.tokenize(clips["wav"], n_q=9)
    assert caught.value.status == 422
    packed = client.compress(clips["wav"], n_q=2)  # the .vqa container, lossless for the codes
    assert packed[:3] == b"VQA"
    unpacked, _ = client.decompress(packed)
    np.testing.assert_allclose(unpacked, tok.decode(expected, num_samples=len(array)).numpy(), atol=1e-4)
    with pytest.raises(ServiceError, match="over the server's limit of 200000 bytes") as caught:
        client.tokenize(b"\0" * (MAX_BYTES + 1))  # refused before it is sent
    assert caught.value.status == 413


def test_the_client_retries_when_the_server_is_busy(server: Server, clips: dict[str, Path]) -> None:
    held = _hold_slots(server, MAX_CONCURRENCY)
    try:
        with pytest.raises(ServiceError) as caught:
            Client(server.url, retries=0).tokenize(clips["wav"])
        assert caught.value.status == 429
        patient = Client(server.url, retries=6, backoff=0.1)
        releaser = threading.Timer(0.3, lambda: [connection.close() for connection in held])
        releaser.start()
        tokens = patient.tokenize(clips["wav"])  # the slots free up while it backs off
        releaser.join()
        assert patient.retried >= 1 and tokens.codes.shape[0] == 3
    finally:
        for connection in held:
            connection.close()


def test_the_client_imports_neither_torch_nor_fastapi() -> None:
    script = "import sys\nfrom vqaudio.serve import Client\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT
    )
    modules = set(done.stdout.split())
    assert "vqaudio.serve.client" in modules and not {"torch", "fastapi", "uvicorn"} & modules


# --------------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------------
def test_the_page_loads_only_from_its_own_origin(server: Server) -> None:
    page = httpx.get(f"{server.url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy and "connect-src 'self'" in policy
    references = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page.text)
    assert sorted(references) == ["/static/app.js", "/static/page.css"]
    for reference in references:
        assert httpx.get(f"{server.url}{reference}").status_code == 200
    for name in ("index.html", "app.js", "page.css"):
        text = (STATIC / name).read_text()
        assert "://" not in text and "@import" not in text, name  # no other origin, no CDN
    script = (STATIC / "app.js").read_text()
    called = re.findall(r"""call\(\s*[`"']([^`"'?]+)""", script)
    assert sorted(set(called)) == ["/v1/info", "/v1/resynth", "/v1/tokenize"]
    _error(httpx.get(f"{server.url}/static/../service.py"), 404)
    _error(httpx.get(f"{server.url}/static/other.js"), 404)


NODE_CHECKS = r"""
const page = require(process.argv[2]);
const fs = require("fs");
const out = {};
// WAV: float samples survive encode -> decode; the bytes are written for soundfile to read
const samples = page.syntheticClip(16000, 0.5);
const wav = page.encodeWav(samples, 16000);
const back = page.decodeWav(wav);
out.wavRate = back.sampleRate;
out.wavEqual = back.samples.length === samples.length && back.samples.every((v, i) => v === samples[i]);
fs.writeFileSync(process.argv[3], wav);
const played = page.decodeWav(page.encodeWav(samples, 16000, true)).samples;  // the 16-bit WAV the page plays
out.pcm16Close = played.length === samples.length && played.every((v, i) => Math.abs(v - samples[i]) < 1 / 16384);
// a 16-bit PCM WAV from soundfile
const pcm = page.decodeWav(new Uint8Array(fs.readFileSync(process.argv[4])));
out.pcm = Array.from(pcm.samples.slice(0, 4));
out.pcmLength = pcm.samples.length;
// base64 both ways
const bytes = Uint8Array.from({ length: 70000 }, (_, i) => (i * 7) % 256);
out.base64Equal = page.fromBase64(page.toBase64(bytes)).every((v, i) => v === bytes[i]);
// FFT against a direct DFT
const n = 64, re = new Float64Array(n), im = new Float64Array(n);
const x = Array.from({ length: n }, (_, i) => Math.sin(i * 0.37) + 0.5 * Math.cos(i * 1.9));
x.forEach((v, i) => (re[i] = v));
page.fft(re, im);
let worst = 0;
for (let k = 0; k < n; k++) {
  let sr = 0, si = 0;
  for (let t = 0; t < n; t++) { sr += x[t] * Math.cos(-2 * Math.PI * k * t / n); si += x[t] * Math.sin(-2 * Math.PI * k * t / n); }
  worst = Math.max(worst, Math.abs(sr - re[k]), Math.abs(si - im[k]));
}
out.fftError = worst;
// a 1 kHz tone peaks in bin 1000 / (16000 / 512) = 32
const tone = Float32Array.from({ length: 16000 }, (_, i) => Math.sin(2 * Math.PI * 1000 * i / 16000));
const spec = page.spectrogram(tone, 16000);
const row = spec.db.slice(50 * spec.bins, 51 * spec.bins);
out.spec = [spec.frames, spec.bins, row.indexOf(Math.max(...row))];
console.log(JSON.stringify(out));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_page_script_wav_fft_and_spectrogram_in_node(tmp_path: Path) -> None:
    checks = tmp_path / "checks.js"
    checks.write_text(NODE_CHECKS)
    pcm = np.array([0.5, -0.25, 0.0, 1 / 32768], dtype=np.float32)
    (tmp_path / "pcm.wav").write_bytes(_wav(np.tile(pcm, 10)))
    done = subprocess.run(
        ["node", str(checks), str(STATIC / "app.js"), str(tmp_path / "page.wav"), str(tmp_path / "pcm.wav")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["wavRate"] == 16000 and out["wavEqual"] and out["pcm16Close"] and out["base64Equal"]
    assert out["pcm"] == pytest.approx(pcm.tolist()) and out["pcmLength"] == 40
    assert out["fftError"] < 1e-9
    assert out["spec"] == [100, 257, 32]  # 1 s at 10 ms, 0-8 kHz in 257 bins, the tone's bin
    audio, rate = sf.read(tmp_path / "page.wav", dtype="float32")  # what the page uploads, soundfile reads
    assert rate == 16000 and len(audio) == 8000 and sf.info(tmp_path / "page.wav").subtype == "FLOAT"


@requires_chromium
def test_the_page_runs_in_headless_chromium(server: Server, tmp_path: Path) -> None:
    """?selftest tokenizes and resynthesizes a synthetic clip; both players then hold audio, the page says done
    with the token count (1.5 s: 75 frames x 3 rows), nothing went to the console, and the screenshot is not
    blank, at desktop and phone width."""
    with Browser(timeout=60) as browser:
        for mobile in (False, True):
            screenshot = tmp_path / f"{'phone' if mobile else 'desktop'}.png"
            page = browser.check(
                f"{server.url}/?selftest",
                screenshot=screenshot,
                width=390 if mobile else 1280,
                height=844 if mobile else 900,
                mobile=mobile,
                ready="document.body.dataset.state === 'done' && results.dataset.tokens === '225'",
            )
            assert page.console_errors == [], page.console_errors
            assert len(page.media) == 2 and all(state.error is None for state in page.media), page.media
            assert all(state.duration == pytest.approx(1.5, abs=0.05) for state in page.media), page.media
            assert page.scroll_width <= page.viewport_width  # no sideways scrolling on a phone
            assert not is_blank(screenshot)


# --------------------------------------------------------------------------------------------------
# The command, and the .vqa adapter
# --------------------------------------------------------------------------------------------------
def test_serve_without_fastapi_names_the_extra(run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "fastapi", None)
    one_line_error(run("serve", "--port", "0"), "fastapi", "pip install 'vqaudio[serve]'")


def test_a_port_in_use_and_limits_out_of_range_are_one_line_errors(run, tiny_model_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        one_line_error(run("serve", "--model", tiny_model_dir, "--port", port), f"127.0.0.1:{port}", "--port")
    one_line_error(run("serve", "--port", "0", "--max-seconds", "0"), "--max-seconds", "(0, 3600]")
    one_line_error(run("serve", "--port", "0", "--max-concurrency", "0"), "--max-concurrency")


def test_without_the_compress_extra_the_container_endpoints_answer_501(
    monkeypatch: pytest.MonkeyPatch, tiny_tokenizer: Tokenizer
) -> None:
    """In-process (FastAPI's TestClient), with constriction hidden."""
    from fastapi.testclient import TestClient

    from vqaudio.serve.app import create_app
    from vqaudio.serve.service import Service

    monkeypatch.setitem(sys.modules, "constriction", None)
    with TestClient(create_app(Service(tiny_tokenizer))) as client:
        assert client.get("/v1/info").json()["compress"] is False
        _error(client.post("/v1/compress", content=_wav(speech_like(8000))), 501, "vqaudio[compress]")
        _error(client.post("/v1/resynth", content=b"VQA\x01"), 501, "vqaudio[compress]")
        assert (
            client.post("/v1/resynth", json={"codes": CODES}).status_code == 200
        )  # codes as JSON still work


def test_sigterm_stops_the_server_after_its_requests(server: Server) -> None:
    """Last: it stops the module's server. Exit 143 and one line, the rule of every command."""
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(30) == 143
    assert "interrupted (SIGTERM): vqaudio serve stopped" in server.log.read_text()
