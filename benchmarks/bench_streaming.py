"""Streaming latency of a causal tokenizer: the algorithmic latency, and the compute time per chunk on one thread.

Audio (the example clips, 10 s) is pushed through ``Tokenizer.stream("encode")`` in chunks of 20, 40 and 80 ms,
and the codes each chunk completes through ``Tokenizer.stream("decode")``; every push is timed. A chunk of C ms
must be processed in under C ms to keep up; the latency a listener hears is the algorithmic latency, plus the
chunk length (its first sample waits for the chunk), plus the compute time of the chunk. Weights are random
unless ``--model`` is given: the time does not depend on them.

    python benchmarks/bench_streaming.py                              # recipes/rvq_mel_causal.yaml, random weights
    python benchmarks/bench_streaming.py --model exp/causal --chunks 20,40,80 --seconds 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from timing import median_seconds, run_with_allocator_settings

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="a causal tokenizer (default: --recipe with random weights)")
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "rvq_mel_causal.yaml"))
    parser.add_argument("--chunks", default="20,40,80", help="chunk lengths in ms, comma-separated")
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per run")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    run_with_allocator_settings()

    import numpy as np
    import soundfile as sf
    import torch

    from vqaudio.codec.tokenizer import Tokenizer
    from vqaudio.codec.vqvae import build_model
    from vqaudio.config import load_yaml

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model:
        tok = Tokenizer.load(args.model)
    else:
        config = load_yaml(args.recipe)
        tok = Tokenizer(build_model(config.model).eval(), config, name="random-weights")
    rate = tok.sample_rate
    clips = [
        sf.read(path, dtype="float32")[0] for path in sorted((ROOT / "vqaudio" / "examples").glob("*.flac"))
    ]
    audio = np.concatenate(clips)
    audio = np.tile(audio, int(np.ceil(args.seconds * rate / len(audio))))[: int(args.seconds * rate)]
    latency = tok.stream("encode").latency
    print(
        f"model {tok.name} ({tok.num_parameters / 1e6:.2f} M parameters), torch {torch.__version__}, "
        f"{args.threads} thread(s), {args.seconds:g} s of audio"
    )
    print(
        f"algorithmic latency {latency.seconds * 1000:.0f} ms = frame {latency.frame / rate * 1000:.0f} ms + "
        f"encoder look-ahead {latency.encoder_lookahead / rate * 1000:.0f} ms + decoder look-ahead "
        f"{latency.decoder_lookahead / rate * 1000:.0f} ms"
    )
    print(
        "| chunk | encode ms/chunk (median, p95, max) | decode ms/chunk (median, p95, max) | both, median | real-time factor |"
    )
    print("|---:|---|---|---:|---:|")
    offline_codes = tok.encode(audio, rate)
    offline = median_seconds(lambda: tok.decode(tok.encode(audio, rate)), 3)
    for chunk_ms in (int(value) for value in args.chunks.split(",")):
        chunk = int(rate * chunk_ms / 1000)
        encode_times, decode_times = [], []
        for _repeat in range(2):  # the first pass warms up
            encoder, decoder = tok.stream("encode"), tok.stream("decode")
            encode_times, decode_times, pieces = [], [], []
            for start in range(0, len(audio), chunk):
                began = time.perf_counter()
                codes = encoder.push(audio[start : start + chunk])
                middle = time.perf_counter()
                pieces.append(decoder.push(codes))
                ended = time.perf_counter()
                encode_times.append(middle - began)
                decode_times.append(ended - middle)
            codes = encoder.flush()
            pieces += [decoder.push(codes), decoder.flush()]
        streamed = torch.cat(pieces)
        assert streamed.shape[-1] == offline_codes.shape[-1] * tok.hop_length

        def stats(times: list[float]) -> str:
            ms = sorted(1000 * value for value in times)
            return f"{statistics.median(ms):.2f}, {ms[int(0.95 * (len(ms) - 1))]:.2f}, {ms[-1]:.2f}"

        both = [a + b for a, b in zip(encode_times, decode_times, strict=True)]
        factor = len(audio) / rate / sum(both)
        print(
            f"| {chunk_ms} ms | {stats(encode_times)} | {stats(decode_times)} | "
            f"{1000 * statistics.median(both):.2f} ms | {factor:.1f}x |"
        )
    print(
        f"the same audio offline (one encode and one decode call, the machine's speed in this run): "
        f"{1000 * offline:.0f} ms, {len(audio) / rate / offline:.0f}x real time"
    )
    sys.stdout.flush()


if __name__ == "__main__":
    main()
