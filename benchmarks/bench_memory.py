"""Peak memory of ``vqaudio tokenize`` and ``vqaudio resynth`` on long files, beside a 1-minute file in the same run.

Each command runs in its own process; its peak resident memory (``ru_maxrss`` of that child, from ``wait4``)
and wall time are reported, with the ratio to the 1-minute baseline. Long files are read and written window by
window, so the ratio should stay near 1 whatever the length. Inputs are a synthetic speech-like signal
(harmonics of a gliding pitch under moving formants, a syllable envelope, noise), written block by block with
soundfile into a temporary folder (or ``--workdir``), at the model's rate or ``--rate`` (resampled on the way
in).

    python benchmarks/bench_memory.py                           # 1 h and 10 h (10 h: ~15 min on 2 cores)
    python benchmarks/bench_memory.py --hours 0.1 --json mem.json
    python benchmarks/bench_memory.py --hours 1 --rate 44100 --format flac
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
SEGMENT_SECONDS = 60  # distinct segments of synthetic speech, cycled with varying gains to fill long files
NUM_SEGMENTS = 8


@functools.lru_cache(maxsize=NUM_SEGMENTS)
def speech_segment(seconds: float, rate: int, seed: int) -> np.ndarray:
    """[T] float32 speech-like audio, peak around 0.3 (the test suite's ``speech_like``, vectorised)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    pitch = (100 + 80 * rng.random()) * (1 + 0.15 * np.sin(2 * math.pi * (2 + 2 * rng.random()) * t))
    phase = 2 * math.pi * np.cumsum(pitch) / rate
    formant1 = 500 + 300 * np.sin(2 * math.pi * 1.3 * t + rng.random() * 6)
    formant2 = 1500 + 600 * np.sin(2 * math.pi * 0.7 * t + rng.random() * 6)
    voiced = np.zeros_like(t)
    for harmonic in range(1, 30):
        frequency = harmonic * pitch
        gain = np.exp(-(((frequency - formant1) / 200) ** 2)) + 0.5 * np.exp(
            -(((frequency - formant2) / 300) ** 2)
        )
        voiced += gain * np.sin(harmonic * phase) * (frequency < rate / 2)
    syllables = np.clip(np.sin(2 * math.pi * (3 + rng.random()) * t + rng.random() * 6), 0, None) ** 0.5
    return (0.15 * syllables * voiced + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def write_input(path: Path, seconds: float, rate: int) -> None:
    """A long file written one segment at a time (never whole in memory)."""
    segments = [speech_segment(SEGMENT_SECONDS, rate, seed) for seed in range(NUM_SEGMENTS)]
    gains = np.random.default_rng(0).uniform(0.5, 1.5, size=int(seconds // SEGMENT_SECONDS) + 1)
    remaining = int(seconds * rate)
    subtype = "PCM_16"
    with sf.SoundFile(str(path), "w", rate, 1, subtype=subtype, format=path.suffix[1:].upper()) as out:
        for index, gain in enumerate(gains):
            block = segments[index % NUM_SEGMENTS][:remaining] * gain
            out.write(block)
            remaining -= len(block)
            if remaining <= 0:
                break


def measure(command: list[str]) -> tuple[float, float]:
    """Peak RSS (MB) and wall seconds of ``command`` run as a child process; raises if it fails."""
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"failed with exit code {process.returncode}: {' '.join(command)}")
    return usage.ru_maxrss / 1024, seconds  # Linux: KiB


def run_case(label: str, seconds: float, args: argparse.Namespace, workdir: Path) -> dict[str, object]:
    audio = workdir / f"{label}.{args.format}"
    started = time.perf_counter()
    if not audio.exists():
        write_input(audio, seconds, args.rate)
    generated = time.perf_counter() - started
    cli = [sys.executable, "-m", "vqaudio.cli.main"]
    model = ["--model", str(args.model)] if args.model else []
    options = ["--no-progress", "--threads", str(args.threads)]
    tokens = workdir / f"{label}.npy"
    tokenize_mb, tokenize_s = measure(
        [*cli, "tokenize", str(audio), str(tokens), *model, *options, "--overwrite"]
    )
    resynth_mb, resynth_s = measure(
        [*cli, "resynth", str(tokens), str(workdir / f"{label}_wavs"), *model, *options, "--overwrite"]
    )
    row = {
        "input": label,
        "seconds": seconds,
        "file_mb": audio.stat().st_size / 2**20,
        "tokenize_peak_rss_mb": tokenize_mb,
        "resynth_peak_rss_mb": resynth_mb,
        "tokenize_seconds": tokenize_s,
        "resynth_seconds": resynth_s,
        "generate_seconds": generated,
    }
    print(
        f"  {label}: tokenize {tokenize_mb:.0f} MB in {tokenize_s:.0f} s, resynth {resynth_mb:.0f} MB in "
        f"{resynth_s:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    if not args.keep:
        for path in [audio, tokens, *workdir.glob(f"{label}.index.tsv"), *workdir.glob(f"{label}.meta.json")]:
            path.unlink(missing_ok=True)
        for wav in (workdir / f"{label}_wavs").glob("*"):
            wav.unlink()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--hours", type=float, nargs="+", default=[1.0, 10.0], help="Input lengths in hours.")
    parser.add_argument("--baseline-minutes", type=float, default=1.0, help="The baseline input (minutes).")
    parser.add_argument(
        "--model", type=Path, default=None, help="Tokenizer model (default: the embedded one)."
    )
    parser.add_argument("--rate", type=int, default=16000, help="Sample rate of the generated inputs.")
    parser.add_argument("--format", choices=["wav", "flac"], default="wav")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each command.")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="Where inputs and outputs go (default: temp)."
    )
    parser.add_argument("--keep", action="store_true", help="Keep the generated inputs and outputs.")
    parser.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_memory.") as temporary:
        workdir = args.workdir or Path(temporary)
        workdir.mkdir(parents=True, exist_ok=True)
        cases = [(f"{args.baseline_minutes:g}min", args.baseline_minutes * 60)]
        cases += [(f"{hours:g}h", hours * 3600) for hours in args.hours]
        rows = [run_case(label, seconds, args, workdir) for label, seconds in cases]

    baseline = rows[0]
    print(
        f"peak RSS of one command (MB), {args.rate} Hz {args.format}, {args.threads} thread(s); ratio to "
        f"{baseline['input']}"
    )
    print(f"{'input':>8} {'tokenize':>9} {'ratio':>6} {'resynth':>8} {'ratio':>6} {'tok s':>7} {'res s':>7}")
    for row in rows:
        tokenize_ratio = float(row["tokenize_peak_rss_mb"]) / float(baseline["tokenize_peak_rss_mb"])  # type: ignore[arg-type]
        resynth_ratio = float(row["resynth_peak_rss_mb"]) / float(baseline["resynth_peak_rss_mb"])  # type: ignore[arg-type]
        row["tokenize_ratio"], row["resynth_ratio"] = tokenize_ratio, resynth_ratio
        print(
            f"{row['input']:>8} {row['tokenize_peak_rss_mb']:>9.0f} {tokenize_ratio:>6.2f} "
            f"{row['resynth_peak_rss_mb']:>8.0f} {resynth_ratio:>6.2f} {row['tokenize_seconds']:>7.0f} "
            f"{row['resynth_seconds']:>7.0f}"
        )
    if args.json:
        settings = {
            key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()
        }
        args.json.write_text(json.dumps({"settings": settings, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
