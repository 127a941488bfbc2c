"""The training data path on a large corpus: manifest loading, crops per second through DataLoader workers,
and the memory each worker adds.

A manifest of ``--files`` lines (default 300,000) names ``--distinct`` real audio files (cycled: the lines
differ, the audio repeats) with their lengths, as ``vqaudio prepare`` writes them; nothing is opened to learn a
duration. Each measurement runs in a fresh process:

* **load**: ``load_corpus`` + ``fill_headers`` + ``RandomCrops`` (what ``vqaudio train`` does before step 1):
  wall time and peak RSS;
* **crops**: training batches (``--batch-size`` x ``--segment-seconds``) read through a ``DataLoader`` with 0,
  1, 2 ... workers, windows decoded from the files, while the main process stands for a GPU training step by
  sleeping ``--step-ms`` per batch (the CPU is free for the workers, as it is while a GPU computes); steps
  per second, the share of time spent waiting for data, and the ratio to 0 workers in the same run; the
  private (unshared) memory of each worker after the run, from ``/proc/PID/smaps_rollup``;
* **cache**: the same from the in-memory int16 cache (``train.audio_cache_mb``), on a corpus small enough.

    python benchmarks/bench_data.py                                  # 300k lines, workers 0,1,2
    python benchmarks/bench_data.py --files 1000000 --workers 0,2,4 --json data.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000


def make_corpus(folder: Path, files: int, distinct: int) -> Path:
    """``distinct`` speech-like FLAC files of 2-6 s and a manifest of ``files`` lines cycling over them."""
    import numpy as np
    import soundfile as sf

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_memory import speech_segment

    audio_dir = folder / "audio"
    audio_dir.mkdir(parents=True, exist_ok=True)
    lengths = []
    for index in range(distinct):
        seconds = 2 + 4 * ((index * 7919) % distinct) / max(1, distinct)
        audio = speech_segment(seconds, RATE, index % 8)
        sf.write(str(audio_dir / f"f{index:04d}.flac"), audio, RATE)
        lengths.append(len(audio))
    rng = np.random.default_rng(0)
    manifest = folder / "train.tsv"
    with manifest.open("w", encoding="utf-8") as out:
        out.write(f"{audio_dir}\nid\tpath\tsamples\tsample_rate\tspeaker\ttext\n")
        for line in range(files):
            index = int(rng.integers(distinct))
            out.write(f"utt{line:08d}\tf{index:04d}.flac\t{lengths[index]}\t{RATE}\tspk{line % 2000}\t\n")
    return manifest


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints one JSON line."""
    import torch
    from torch.utils.data import DataLoader

    from vqaudio.data.corpus import fill_headers, load_corpus
    from vqaudio.data.crops import RandomCrops

    torch.set_num_threads(1)
    started = time.perf_counter()
    utterances = fill_headers(load_corpus(args.manifest), progress=False)
    if args.mode == "cache":
        utterances = utterances[: args.cache_files]
    crops = RandomCrops(
        utterances,
        RATE,
        round(args.segment_seconds * RATE),
        args.batch_size,
        seed=0,
        cache=args.mode == "cache",
    )
    del utterances
    load_seconds = time.perf_counter() - started
    result: dict[str, object] = {
        "mode": args.mode,
        "utterances": crops.num_utterances,
        "load_seconds": round(load_seconds, 2),
        "load_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    if args.mode != "load":
        loader = DataLoader(
            crops,
            batch_size=None,
            sampler=range(args.warmup + args.steps),
            num_workers=args.num_workers,
            prefetch_factor=4 if args.num_workers else None,
        )
        batches = iter(loader)
        for _ in range(args.warmup):
            next(batches)
        started = time.perf_counter()
        waited = 0.0
        for _ in range(args.steps):
            asked = time.perf_counter()
            next(batches)
            waited += time.perf_counter() - asked
            time.sleep(args.step_ms / 1000)  # the training step
        seconds = time.perf_counter() - started
        workers = getattr(batches, "_workers", [])
        result.update(
            workers=args.num_workers,
            batches_per_second=round(args.steps / seconds, 2),
            waiting_share=round(waited / seconds, 3),
            audio_seconds_per_second=round(args.steps * args.batch_size * args.segment_seconds / seconds, 1),
            worker_private_mb=[round(private_mb(worker.pid), 1) for worker in workers],
        )
        del batches
    print(json.dumps(result))


def private_mb(pid: int) -> float:
    """Private (not shared with the parent) resident memory of a process, in MB (Linux)."""
    fields = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    kb = sum(int(line.split()[1]) for line in fields if line.startswith(("Private_Clean", "Private_Dirty")))
    return kb / 1024


def measure(args: argparse.Namespace, manifest: Path, mode: str, workers: int = 0) -> dict[str, object]:
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--manifest",
        str(manifest),
        "--num-workers",
        str(workers),
        *("--steps", str(args.steps), "--warmup", str(args.warmup), "--batch-size", str(args.batch_size)),
        *("--segment-seconds", str(args.segment_seconds), "--cache-files", str(args.cache_files)),
        *("--step-ms", str(args.step_ms)),
    ]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    output = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=300_000, help="manifest lines")
    parser.add_argument("--distinct", type=int, default=200, help="distinct audio files behind them")
    parser.add_argument(
        "--workers", default="0,1,2", help="DataLoader workers to compare (0 first: baseline)"
    )
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--segment-seconds", type=float, default=1.0)
    parser.add_argument(
        "--step-ms", type=float, default=50.0, help="the training step the main process sleeps"
    )
    parser.add_argument("--cache-files", type=int, default=2000, help="utterances of the cache run")
    parser.add_argument("--workdir", type=Path, help="keep the corpus here (default: a temporary folder)")
    parser.add_argument("--json", type=Path, help="write the results here too")
    parser.add_argument("--child", choices=["load", "files", "cache"], help=argparse.SUPPRESS)
    parser.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--num-workers", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.mode = args.child
        child(args)
        return
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        manifest = make_corpus(Path(tmp), args.files, args.distinct)
        rows = [measure(args, manifest, "load")]
        rows += [measure(args, manifest, "files", int(w)) for w in args.workers.split(",")]
        rows += [measure(args, manifest, "cache", int(w)) for w in args.workers.split(",")]
    print(f"cpu: {os.cpu_count()} cores; manifest of {args.files:,} lines over {args.distinct} files")
    load = rows[0]
    print(
        f"load: {load['load_seconds']} s, peak RSS {load['load_peak_rss_mb']} MB for {load['utterances']:,} utterances"
    )
    print(
        f"\nsteps of {args.step_ms:g} ms (slept), {args.batch_size} x {args.segment_seconds:g} s crops per step"
    )
    print(
        "| source | workers | steps/s | audio s/s | waiting for data | ratio to 0 workers | private MB per worker |"
    )
    print("|---|---:|---:|---:|---:|---:|---|")
    for mode in ("files", "cache"):
        group = [row for row in rows if row["mode"] == mode]
        base = float(group[0]["batches_per_second"])  # type: ignore[arg-type]
        for row in group:
            ratio = float(row["batches_per_second"]) / base  # type: ignore[arg-type]
            source = f"{mode} ({row['utterances']:,} utt.)"
            print(
                f"| {source} | {row['workers']} | {row['batches_per_second']} | {row['audio_seconds_per_second']} "
                f"| {100 * float(row['waiting_share']):.0f}% | {ratio:.2f} | {row['worker_private_mb']} |"  # type: ignore[arg-type]
            )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
