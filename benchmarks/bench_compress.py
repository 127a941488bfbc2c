"""Compressed files: actual kbps against the tokens' nominal rate, coding speed, and concealment quality.

For every clip of each named set (a manifest, list file or folder: ``vqaudio.data.corpus.load_corpus``), the
tokenizer's codes (n_q 8; n_q 5 keeps their first codebooks) are compressed with the prior coder and the
adaptive coder (``vqaudio.prior.compression.encode_codes``), decoded back and checked equal. Reported per set,
n_q and coder:

* kbps: every byte of every file (the 35-byte header included) over the audio's seconds; "stream": without
  the headers, the rate of long files; and how far below the nominal rate (``Tokenizer.bitrate_at``) each is;
* encode / decode speed: seconds of audio per second of coding (models loaded, one torch thread: the coder
  forces it), beside the tokenizer's own encoding speed in the same run;
* with ``--conceal-clips N``: for N clips of at least three blocks, block 1 is lost and filled (a) with the
  prior's continuation (most likely codes, and sampled at each ``--temperatures``) or (b) with silence (zero
  audio); the mel distance (``vqaudio.codec.losses.mel_distance``) of that block's audio to the decode of the
  intact codes, lower is better.

    python benchmarks/bench_compress.py english=/tmp/ps_tx/clips.tsv fillets=/tmp/stage0run/data/test.tsv \
        --limit 40 --conceal-clips 6
    python benchmarks/bench_compress.py english=clips.tsv --block-seconds 1 2 4 --n-q 8 --coders prior
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from timing import run_with_allocator_settings


def main() -> None:
    run_with_allocator_settings()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("sets", nargs="+", help="NAME=PATH: a manifest, list file or folder of clips")
    parser.add_argument("--limit", type=int, default=40, help="clips per set, evenly spread over its ids")
    parser.add_argument("--n-q", type=int, nargs="+", default=[5, 8])
    parser.add_argument("--coders", nargs="+", default=["prior", "adaptive"], choices=["prior", "adaptive"])
    parser.add_argument("--block-seconds", type=float, nargs="+", default=[2.0])
    parser.add_argument("--conceal-clips", type=int, default=0, help="clips per set for the concealment test")
    parser.add_argument("--temperatures", type=float, nargs="*", default=[0.7, 1.0])
    parser.add_argument("--model", help="tokenizer (default: the embedded one)")
    parser.add_argument("--prior", help="prior (default: the embedded one)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()

    import numpy as np
    import torch

    from vqaudio.codec.tokenizer import Tokenizer
    from vqaudio.data.corpus import load_corpus
    from vqaudio.io.bitstream import read_stream
    from vqaudio.prior import Prior
    from vqaudio.prior.compression import decode_codes, encode_codes

    torch.set_num_threads(1)
    tokenizer = Tokenizer.load(args.model)
    prior = Prior.load(args.prior)
    results: dict[str, dict] = {}
    for spec in args.sets:
        name, _, source = spec.partition("=")
        utterances = load_corpus(source)
        step = max(1, len(utterances) // args.limit)
        clips = utterances[::step][: args.limit]
        tic = time.perf_counter()
        coded = [tokenizer.encode_file(clip.path) for clip in clips]  # n_q 8, the pitch row first
        tokenize_seconds = time.perf_counter() - tic
        seconds = sum(item.num_samples for item in coded) / tokenizer.sample_rate
        print(
            f"\n{name}: {len(clips)} clips, {seconds:.1f} s; the tokenizer encodes at "
            f"{seconds / tokenize_seconds:.1f}x real time"
        )
        rows = []
        for n_q in args.n_q:
            nominal = tokenizer.bitrate_at(n_q) / 1000
            for coder in args.coders:
                for block_seconds in args.block_seconds:
                    size = encode_time = decode_time = 0.0
                    headers = 0
                    for item in coded:
                        codes = np.asarray(item.codes[: 1 + n_q], dtype=np.int64)
                        tic = time.perf_counter()
                        data = encode_codes(
                            codes,
                            tokenizer,
                            prior=prior if coder == "prior" else False,
                            num_samples=item.num_samples,
                            block_seconds=block_seconds,
                        )
                        encode_time += time.perf_counter() - tic
                        tic = time.perf_counter()
                        decoded = decode_codes(data, prior=prior)
                        decode_time += time.perf_counter() - tic
                        if not np.array_equal(decoded.codes, codes):
                            raise SystemExit(f"{name}: the codes did not round-trip ({coder}, n_q {n_q})")
                        size += len(data)
                        headers += read_stream(data).header_size
                    kbps = 8 * size / seconds / 1000
                    stream_kbps = 8 * (size - headers) / seconds / 1000
                    row = {
                        "n_q": n_q,
                        "coder": coder,
                        "block_seconds": block_seconds,
                        "nominal_kbps": nominal,
                        "kbps": kbps,
                        "below_nominal": 1 - kbps / nominal,
                        "stream_kbps": stream_kbps,
                        "stream_below_nominal": 1 - stream_kbps / nominal,
                        "encode_x_real_time": seconds / encode_time,
                        "decode_x_real_time": seconds / decode_time,
                    }
                    rows.append(row)
                    print(
                        f"  n_q {n_q} {coder:8s} blocks {block_seconds:g} s: {kbps:.3f} kbps "
                        f"({row['below_nominal']:.1%} below nominal {nominal:.2f}); stream {stream_kbps:.3f} "
                        f"({row['stream_below_nominal']:.1%}); encode {row['encode_x_real_time']:.1f}x, "
                        f"decode {row['decode_x_real_time']:.1f}x real time"
                    )
        results[name] = {"clips": len(clips), "seconds": seconds, "rows": rows}
        if args.conceal_clips:
            results[name]["conceal"] = conceal_study(
                coded, tokenizer, prior, args.conceal_clips, args.temperatures
            )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def conceal_study(
    coded: list, tokenizer: object, prior: object, count: int, temperatures: list[float]
) -> dict:
    """Lose block 1 (of 2 s) of clips longer than two blocks; mel distance of its audio to the intact decode."""
    import numpy as np

    from vqaudio.codec.losses import mel_distance
    from vqaudio.io.bitstream import read_stream
    from vqaudio.prior.compression import encode_codes
    from vqaudio.prior.entropy_coding import continue_frames

    block_frames = round(2.0 * tokenizer.frame_rate)  # type: ignore[attr-defined]
    eligible = [item for item in coded if item.codes.shape[1] > 2 * block_frames]
    if not eligible:
        print("  concealment: no clip is longer than two blocks")
        return {}
    header = read_stream(encode_codes(np.asarray(eligible[0].codes), tokenizer, prior=False)).header
    span = header.block_frames_of(1)
    hop = header.hop_length
    samples = slice(span.start * hop, span.stop * hop)
    methods = ["silence", "prior, most likely codes"] + [f"prior, sampled at {t:g}" for t in temperatures]
    distances: dict[str, list[float]] = {method: [] for method in methods}
    for index, item in enumerate(eligible[:count]):
        codes = np.asarray(item.codes, dtype=np.int64)
        clean = tokenizer.decode(codes, num_samples=item.num_samples)  # type: ignore[attr-defined]
        silent = clean.clone()
        silent[samples] = 0
        variants = {"silence": silent}
        for method, temperature in zip(methods[1:], [0.0, *temperatures], strict=True):
            filled = codes.copy()
            filled[:, span] = continue_frames(
                prior, header.alphabets, codes[:, : span.start], len(span), temperature, seed=index
            )
            variants[method] = tokenizer.decode(filled, num_samples=item.num_samples)  # type: ignore[attr-defined]
        for method, audio in variants.items():
            distances[method].append(float(mel_distance(audio[samples], clean[samples], header.sample_rate)))
    print(
        f"  concealment: block 1 of {len(distances['silence'])} clips lost; mel distance to the intact decode"
    )
    summary = {}
    for method, values in distances.items():
        summary[method] = {"mean": float(np.mean(values)), "per_clip": values}
        print(f"    {method:28s} {np.mean(values):.3f}  ({', '.join(f'{value:.2f}' for value in values)})")
    return summary


if __name__ == "__main__":
    main()
