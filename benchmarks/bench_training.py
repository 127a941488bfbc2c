"""Training throughput of a tokenizer recipe: seconds of audio trained per second, in total and per process,
at each precision (``train.precision``) and number of data-parallel processes (``torchrun``), with the ratio to
the 1-process fp32 row of the same run.

Each row is one ``vqaudio train`` run in its own process group (``python -m torch.distributed.run
--standalone`` for more than one process: gloo on the CPU, NCCL and one GPU per process on CUDA), with
validation off and no checkpoint before the last step. The first ``--warmup-steps`` steps (k-means
initialisation of the codebooks, allocator and autotuning warm-up) are not timed; the rest are read back from
the run's ``metrics.jsonl``, whose train rows hold the throughput of each log window as the trainer measures
it (data loading and the update, not logging or checkpoints; rank 0's clock). ``train.batch_size`` is per
process, so N processes train N times the audio per step. The default corpus is synthetic speech-like audio
(``bench_memory.speech_segment``) written to a temporary folder; ``--data`` takes a real one.

    python benchmarks/bench_training.py                                  # default recipe, CPU, 1 thread each
    python benchmarks/bench_training.py --steps 20 --warmup-steps 5 --out train_speed.json
    python benchmarks/bench_training.py --device cuda --processes 1,2,4,8 --precisions fp32,bf16,fp16 \\
        --recipe recipes/rvq_mel_pitch_gpu.yaml --steps 200 --warmup-steps 20 --threads 4
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import soundfile as sf
import torch
from bench_memory import speech_segment
from timing import ALLOCATOR_ENV

from vqaudio.config import Config, load_yaml, parse_override, replace_path
from vqaudio.devices import resolve_device
from vqaudio.training.logs import METRICS_FILE, read_metrics
from vqaudio.training.precision import cpu_has_bf16_convolutions

ROOT = Path(__file__).resolve().parents[1]
FILE_SECONDS = 10.0  # length of each synthetic file


def device_name(device: torch.device) -> str:
    """The CPU's model name or the GPU's, with how many there are."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs"


def synthesize_corpus(folder: Path, minutes: float, sample_rate: int) -> Path:
    """``minutes`` of speech-like audio as 10 s WAV files in ``folder``; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(max(2, math.ceil(minutes * 60 / FILE_SECONDS))):
        audio = speech_segment(FILE_SECONDS, sample_rate, index)
        sf.write(str(folder / f"synthetic_{index:04d}.wav"), audio, sample_rate, subtype="PCM_16")
    return folder


def train_command(
    args: argparse.Namespace, processes: int, precision: str, out: Path, data: Path
) -> list[str]:
    """The command line of one row: ``vqaudio train`` alone or under torchrun."""
    total = args.warmup_steps + args.steps
    # a log window ends where the warm-up does, so the timed windows hold exactly the timed steps
    log_every = math.gcd(args.warmup_steps, total)
    launcher = [sys.executable, "-m", "vqaudio.cli.main"]
    if processes > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        launcher += ["--nproc-per-node", str(processes), "-m", "vqaudio.cli.main"]
    command = [*launcher, "train", str(args.recipe), "--data", str(data), "--out", str(out)]
    device = args.device if processes == 1 else args.device.split(":")[0]  # torchrun: the local rank's GPU
    command += ["--max-steps", str(total), "--threads", str(args.threads), "--device", device]
    command += ["--no-progress", "--no-resume", "--overwrite"]
    for text in args.set:
        command += ["--set", text]
    # after the user's: what the measurement depends on
    for text in (
        f"train.precision={precision}",
        "train.num_validation_files=0",  # no validation
        f"train.validate_every={total}",
        f"train.checkpoint_every={total}",  # one checkpoint, after the last step
        f"train.log_every={log_every}",
    ):
        command += ["--set", text]
    return command


def timed_throughput(metrics: list[dict[str, Any]], warmup_steps: int) -> tuple[int, float, float]:
    """Steps, audio seconds per second (all processes) and data-wait fraction of the train windows after
    ``warmup_steps``, from the rows of ``metrics.jsonl``."""
    windows = [row for row in metrics if row.get("kind") == "train" and row["step"] > warmup_steps]
    steps = sum(int(row["window_steps"]) for row in windows)
    # a window's audio is proportional to its steps (fixed crops), so its time is steps / speed up to a factor
    time_units = sum(row["window_steps"] / row["audio_seconds_per_second"] for row in windows)
    waited = sum(
        row["window_steps"] * row["data_wait_fraction"] / row["audio_seconds_per_second"] for row in windows
    )
    if not steps or not time_units:
        return 0, 0.0, 0.0
    return steps, steps / time_units, waited / time_units


def run_row(
    args: argparse.Namespace, processes: int, precision: str, workdir: Path, data: Path, env: dict[str, str]
) -> dict[str, Any]:
    label = f"{processes}proc_{precision}"
    out, log_path = workdir / "runs" / label, workdir / "logs" / f"{label}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    command = train_command(args, processes, precision, out, data)
    row: dict[str, Any] = {"processes": processes, "precision": precision, "command": command}
    started = time.perf_counter()
    with log_path.open("w") as log:
        result = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    row["wall_seconds"] = time.perf_counter() - started
    if result.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-8:]
        print(f"  {label}: failed with exit code {result.returncode} ({log_path}):", file=sys.stderr)
        print("    " + "\n    ".join(tail), file=sys.stderr)
        row["error"] = "\n".join(tail)
        return row
    steps, speed, wait = timed_throughput(read_metrics(out / METRICS_FILE), args.warmup_steps)
    row.update(
        steps_timed=steps,
        audio_seconds_per_second=speed,
        audio_seconds_per_second_per_process=speed / processes,
        data_wait_fraction=wait,
    )
    print(
        f"  {label}: {speed:.1f} s of audio per second over {steps} steps ({speed / processes:.1f} per process, "
        f"{100 * wait:.0f}% waiting for data; {row['wall_seconds']:.0f} s with start-up)",
        file=sys.stderr,
        flush=True,
    )
    return row


def resolved_config(args: argparse.Namespace) -> Config:
    """The recipe with the user's --set overrides: checked before any run starts."""
    config: Config = load_yaml(args.recipe, Config)
    for text in args.set:
        config = replace_path(config, *parse_override(text))
    return config


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes" / "rvq_mel_pitch.yaml")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="passed to vqaudio train; repeatable (precision, validation and the log and checkpoint "
        "cadence are the benchmark's)",
    )
    parser.add_argument(
        "--device", default="cpu", help="cpu, cuda or auto (each process takes its local GPU)"
    )
    parser.add_argument("--processes", default="1,2", help="process counts, comma-separated")
    parser.add_argument(
        "--precisions", default="fp32,bf16", help="fp32, bf16, fp16 (CUDA only), comma-separated"
    )
    parser.add_argument("--steps", type=int, default=50, help="timed steps of each row")
    parser.add_argument("--warmup-steps", type=int, default=10, help="untimed steps before them")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument(
        "--data", type=Path, default=None, help="training corpus (default: synthetic speech-like audio)"
    )
    parser.add_argument("--data-minutes", type=float, default=2.0, help="length of the synthetic corpus")
    parser.add_argument("--workdir", type=Path, default=None, help="runs, logs and audio (default: temp)")
    parser.add_argument("--out", type=Path, default=None, help="also write the settings and rows as JSON")
    args = parser.parse_args()

    processes = [int(value) for value in args.processes.split(",")]
    precisions = [value.strip() for value in args.precisions.split(",")]
    if args.steps < 1 or args.warmup_steps < 0 or min(processes) < 1 or args.threads < 1:
        parser.error("--steps, --processes and --threads must be at least 1, --warmup-steps at least 0")
    try:
        device = resolve_device(args.device)
        config = resolved_config(args)
    except ValueError as exc:  # InputError, ConfigError
        parser.error(str(exc))
    if device.type != "cuda" and "fp16" in precisions:
        parser.error(f"fp16 trains on CUDA only (--device {args.device}); use fp32 or bf16")
    args.device = str(device)  # auto resolved
    train = config.train

    print(f"device: {device_name(device)}", flush=True)
    if device.type == "cpu":  # without them bf16 convolutions take torch's slow reference code
        print(f"oneDNN bfloat16 kernels: {'yes' if cpu_has_bf16_convolutions() else 'no'}")
    print(
        f"torch {torch.__version__}, {args.threads} thread(s) per process, load average {os.getloadavg()[0]:.2f}",
        flush=True,
    )
    env = {**os.environ, **ALLOCATOR_ENV, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(args.threads)}
    if device.type == "cpu" and max(processes) * args.threads > (os.cpu_count() or 1):
        print(f"note: {max(processes)} x {args.threads} threads on {os.cpu_count()} CPUs", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_training.") as temporary:
        workdir = args.workdir or Path(temporary)
        data = args.data or synthesize_corpus(workdir / "audio", args.data_minutes, config.model.sample_rate)
        for count in processes:
            if device.type == "cuda" and count > torch.cuda.device_count():
                print(
                    f"  {count} processes: skipped, {torch.cuda.device_count()} GPU(s) here", file=sys.stderr
                )
                continue
            for precision in precisions:
                rows.append(run_row(args, count, precision, workdir, data, env))

    name = args.recipe.stem + "".join(f" {text}" for text in args.set)
    config_text = f"{name} ({train.batch_size} x {train.segment_seconds:g} s per process)"
    baseline = next(
        (r for r in rows if r["processes"] == 1 and r["precision"] == "fp32" and "error" not in r), None
    )
    print(
        "\n| config | processes | precision | steps timed | audio s/s total | audio s/s per process | vs 1 process fp32 |"
    )
    print("|---|---:|---|---:|---:|---:|---:|")
    for row in rows:
        if "error" in row:
            print(f"| {config_text} | {row['processes']} | {row['precision']} | failed | - | - | - |")
            continue
        speed = row["audio_seconds_per_second"]
        ratio = f"{speed / baseline['audio_seconds_per_second']:.2f}x" if baseline else "-"
        row["ratio_to_baseline"] = speed / baseline["audio_seconds_per_second"] if baseline else None
        print(
            f"| {config_text} | {row['processes']} | {row['precision']} | {row['steps_timed']} | {speed:.1f} | "
            f"{row['audio_seconds_per_second_per_process']:.1f} | {ratio} |"
        )
    if args.out:
        settings = {
            key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()
        }
        environment = {
            "device": device_name(device),
            "torch": torch.__version__,
            "threads_per_process": args.threads,
            "batch_size_per_process": train.batch_size,
            "segment_seconds": train.segment_seconds,
        }
        if device.type == "cpu":
            environment["onednn_bf16_kernels"] = cpu_has_bf16_convolutions()
        args.out.write_text(
            json.dumps({"settings": settings, "environment": environment, "results": rows}, indent=2) + "\n"
        )
    if any("error" in row for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
