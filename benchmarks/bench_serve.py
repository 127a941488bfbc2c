"""Load test of ``vqaudio serve`` on loopback: throughput and latency at 1, 4 and 16 concurrent clients, and
that no request is lost or corrupted.

Starts ``vqaudio serve`` (the embedded model unless ``--model``) on a free 127.0.0.1 port, and at each level of
concurrency sends a fixed number of requests from that many client threads (``vqaudio.serve.Client``, which
retries a 429 after 0.05, 0.1, 0.2 ... s, at most 0.5 s): ``/v1/tokenize`` with 3 s excerpts of the example clips (16-bit
WAV), then ``/v1/resynth`` with their codes. Every response is checked: the codes must equal a direct
``Tokenizer.encode`` of the same clip in this process (same torch thread count), the audio a direct
``Tokenizer.decode`` (float32 WAV, within 1e-5). Every request sent must come back, and the server's own counts
(``/v1/info``'s ``load``) must agree: the requests it finished are those answered, the ones it refused (429) those
the clients retried. Latency is per request, end to end, retries included.

Bounded: at most 200 requests and ``--time-limit`` seconds in all (a level that runs out of time stops sending
and says so). Loopback only.

    python benchmarks/bench_serve.py
    python benchmarks/bench_serve.py --requests 12,24,48 --max-concurrency 16 --json serve.json
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import queue
import re
import select
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
import torch
from timing import ALLOCATOR_ENV

import vqaudio
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.io.audio import to_model_input
from vqaudio.serve.client import Client
from vqaudio.serve.errors import ServiceError

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "vqaudio" / "examples"
MAX_REQUESTS = 200
SERVER_LOG = Path(tempfile.gettempdir()) / f"bench_serve.{os.getpid()}.log"


def make_clips(seconds: float) -> list[bytes]:
    """3 s excerpts (``seconds``) of the example clips as 16-bit WAV bytes: two from each clip long enough."""
    clips = []
    for path in sorted(EXAMPLES.glob("*.flac")):
        audio, rate = sf.read(path, dtype="float32")
        length = round(seconds * rate)
        starts = [0] if len(audio) < 2 * length else [0, len(audio) - length]
        for start in starts:
            buffer = io.BytesIO()
            sf.write(buffer, audio[start : start + length], rate, format="WAV", subtype="PCM_16")
            clips.append(buffer.getvalue())
    return clips


def start_server(arguments: list[str]) -> tuple[subprocess.Popen[str], str]:
    command = [sys.executable, "-m", "vqaudio.cli.main", "-q", "serve", "--host", "127.0.0.1", "--port", "0"]
    # the server runs the vqaudio this script imported
    source = str(Path(vqaudio.__file__).resolve().parents[1])
    path = os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **ALLOCATOR_ENV, "PYTHONPATH": path}
    # the server's log goes to a file, shown when the load test fails
    process = subprocess.Popen(
        command + arguments, stdout=subprocess.PIPE, stderr=SERVER_LOG.open("w"), text=True, env=env, cwd=ROOT
    )
    assert process.stdout is not None
    ready, _, _ = select.select([process.stdout], [], [], 120)
    line = process.stdout.readline() if ready else ""
    match = re.search(r"http://127\.0\.0\.1:\d+", line)
    if match is None:
        process.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    url = match.group(0)
    client = Client(url)
    for _ in range(600):
        try:
            if client.health():
                return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the server never answered /healthz")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def run_level(
    url: str,
    endpoint: str,
    clients: int,
    count: int,
    deadline: float,
    send: Any,
    check: Any,
) -> dict[str, Any]:
    """``count`` requests from ``clients`` threads; each thread takes the next request index from a queue."""
    jobs: queue.Queue[int] = queue.Queue()
    for index in range(count):
        jobs.put(index)
    latencies: list[float] = []
    outcome = {"ok": 0, "wrong": 0, "failed": 0, "retried": 0, "not_sent": 0}
    lock = threading.Lock()
    errors: list[str] = []

    def worker() -> None:
        client = Client(url, timeout=120, retries=50, backoff=0.05, max_backoff=0.5)
        while True:
            try:
                index = jobs.get_nowait()
            except queue.Empty:
                break
            if time.monotonic() > deadline:
                with lock:
                    outcome["not_sent"] += 1
                continue
            started = time.perf_counter()
            try:
                result = send(client, index)
                good = check(index, result)
            except (ServiceError, OSError) as exc:
                with lock:
                    outcome["failed"] += 1
                    errors.append(f"{endpoint} #{index}: {exc}")
                continue
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed)
                outcome["ok" if good else "wrong"] += 1
        with lock:
            outcome["retried"] += client.retried

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    done = len(latencies)
    return {
        **outcome,
        "endpoint": endpoint,
        "clients": clients,
        "requests": count,
        "wall_seconds": wall,
        "requests_per_second": done / wall,
        "p50_ms": 1000 * statistics.median(latencies) if latencies else math.nan,
        "p99_ms": 1000 * float(np.percentile(latencies, 99)) if latencies else math.nan,
        "errors": errors[:5],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=None, help="Model folder (default: the embedded model).")
    parser.add_argument("--clients", default="1,4,16", help="Concurrent clients per level.")
    parser.add_argument("--requests", default="12,24,48", help="Requests per level and endpoint.")
    parser.add_argument("--clip-seconds", type=float, default=3.0)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the server and of the reference."
    )
    parser.add_argument("--workers", type=int, default=1, help="The server's --workers.")
    parser.add_argument("--max-concurrency", type=int, default=8, help="The server's --max-concurrency.")
    parser.add_argument("--time-limit", type=float, default=120.0, help="Seconds for the whole load.")
    parser.add_argument("--json", type=Path, default=None, help="Write the results here too.")
    args = parser.parse_args()
    levels = [int(value) for value in args.clients.split(",")]
    counts = [int(value) for value in args.requests.split(",")]
    if len(levels) != len(counts) or 2 * sum(counts) > MAX_REQUESTS:
        parser.error(f"--clients and --requests must pair up, with at most {MAX_REQUESTS} requests in all")

    torch.set_num_threads(args.threads)
    tok = Tokenizer.load(args.model)
    clips = make_clips(args.clip_seconds)
    wavs = [
        to_model_input(*sf.read(io.BytesIO(clip), dtype="float32"), tok.sample_rate, "clip") for clip in clips
    ]
    expected_codes = [tok.encode(wav, tok.sample_rate).numpy() for wav in wavs]
    expected_audio = [tok.decode(codes).numpy() for codes in expected_codes]
    audio_seconds = [len(wav) / tok.sample_rate for wav in wavs]

    server_args = ["--threads", str(args.threads), "--workers", str(args.workers)]
    server_args += ["--max-concurrency", str(args.max_concurrency)]
    if args.model:
        server_args += ["--model", args.model]
    process, url = start_server(server_args)
    try:
        client = Client(url)
        info = client.info()
        assert info["model"]["hash"] == tok.hash, "the server runs another model"
        client.tokenize(clips[0])  # warm-up: the first call builds the model's buffers
        deadline = time.monotonic() + args.time_limit
        rows = []
        for endpoint in ("tokenize", "resynth"):
            for clients, count in zip(levels, counts, strict=True):
                before = client.info()["load"]
                if endpoint == "tokenize":

                    def send(c: Client, i: int) -> Any:
                        return c.tokenize(clips[i % len(clips)])

                    def check(i: int, result: Any) -> bool:
                        return bool(np.array_equal(result.codes, expected_codes[i % len(clips)]))
                else:

                    def send(c: Client, i: int) -> Any:
                        return c.resynth(expected_codes[i % len(clips)])

                    def check(i: int, result: Any) -> bool:
                        audio, _ = result
                        reference = expected_audio[i % len(clips)]
                        return audio.shape == reference.shape and bool(
                            np.allclose(audio, reference, atol=1e-5)
                        )

                row = run_level(url, endpoint, clients, count, deadline, send, check)
                after = client.info()["load"]  # GETs are not counted: only the level's POSTs
                row["server_answered"] = after["finished"] - before["finished"]
                row["server_rejected"] = after["rejected"] - before["rejected"]
                # every request sent came back (ok, wrong or failed), and the server saw exactly those and the 429s
                row["lost"] = row["requests"] - row["not_sent"] - row["ok"] - row["wrong"] - row["failed"]
                row["counts_match"] = (
                    row["server_answered"] == row["ok"] + row["wrong"] + row["failed"]
                    and row["server_rejected"] == row["retried"]
                )
                row["audio_seconds_per_second"] = (
                    sum(audio_seconds[i % len(clips)] for i in range(row["ok"] + row["wrong"]))
                    / row["wall_seconds"]
                )
                row["server_peak_rss_mb"] = peak_rss_mb(process.pid)
                rows.append(row)
                print(
                    f"{endpoint:8s} {clients:2d} clients: {row['ok']}/{count} ok, {row['wrong']} wrong, "
                    f"{row['failed']} failed, {row['retried']} 429s retried, {row['requests_per_second']:.1f} req/s, "
                    f"p50 {row['p50_ms']:.0f} ms, p99 {row['p99_ms']:.0f} ms",
                    file=sys.stderr,
                )
    finally:
        process.terminate()
        process.wait(60)
    log = SERVER_LOG.read_text()
    SERVER_LOG.unlink()

    print(
        f"\nserver: {info['model']['name']} ({tok.hash[:12]}), {args.threads} torch thread(s), {args.workers} "
        f"worker(s), --max-concurrency {args.max_concurrency}; {len(clips)} clips of {args.clip_seconds:g} s; "
        f"{os.cpu_count()} CPUs\n"
    )
    print(
        "| endpoint | clients | requests | ok | wrong | lost | 429s retried | server count | req/s | audio s/s "
        "| p50 ms | p99 ms | server peak RSS |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['endpoint']} | {row['clients']} | {row['requests']} | {row['ok']} | {row['wrong']} | "
            f"{row['lost'] + row['failed']} | {row['retried']} | {'matches' if row['counts_match'] else 'DIFFERS'} | "
            f"{row['requests_per_second']:.1f} | "
            f"{row['audio_seconds_per_second']:.0f} | {row['p50_ms']:.0f} | {row['p99_ms']:.0f} | "
            f"{row['server_peak_rss_mb']:.0f} MB |"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    bad = [row for row in rows if row["wrong"] or row["failed"] or row["lost"] or not row["counts_match"]]
    if bad:
        print(log[-3000:], file=sys.stderr)
        raise SystemExit(f"{len(bad)} level(s) lost or corrupted requests: {[row['errors'] for row in bad]}")


if __name__ == "__main__":
    main()
