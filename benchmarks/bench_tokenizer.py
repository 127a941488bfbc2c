"""Encode / decode speed and peak memory of a tokenizer on this CPU, beside EnCodec measured in the same run.

Each measurement runs in a fresh process (so peak memory is its own): batch 1, ``torch.inference_mode()``,
median of ``--repeats`` runs after a warm-up, 1 and 2 threads, 10 s and 10 min inputs. Speed is the real-time
factor (seconds of audio per second). Weights are random unless ``--model`` is given: speed does not
depend on them. The comparison is EnCodec's 24 kHz architecture at 6 kbps (the ``encodec`` package, random
weights; its torchaudio import is stubbed, it is only used for resampling helpers), under the same
allocator settings (glibc keeps freed memory instead of returning it to the OS after every call; see
``timing.ALLOCATOR_ENV``).

    python benchmarks/bench_tokenizer.py                      # the default recipe, 10 s and 10 min
    python benchmarks/bench_tokenizer.py --model exp/run1 --lengths 10 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import types
from pathlib import Path

from timing import ALLOCATOR_ENV, median_seconds

ROOT = Path(__file__).resolve().parents[1]


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(args: argparse.Namespace) -> None:
    """One measurement in this process; prints one JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    seconds = args.seconds
    if args.system == "vqaudio":
        from vqaudio.codec.tokenizer import Tokenizer
        from vqaudio.codec.vqvae import build_model
        from vqaudio.config import Config, load_yaml

        if args.model:
            tok = Tokenizer.load(args.model)
        else:
            config = load_yaml(args.recipe, Config) if args.recipe else Config()
            tok = Tokenizer(build_model(config.model).eval(), config, name="random-weights")
        rate = tok.sample_rate
        wav = 0.1 * torch.randn(int(seconds * rate))
        base_rss = _peak_rss_mb()
        with torch.inference_mode():
            codes = tok.encode(wav, rate)
            if args.op == "encode":
                elapsed = median_seconds(lambda: tok.encode(wav, rate), args.repeats)
            else:
                elapsed = median_seconds(lambda: tok.decode(codes), args.repeats)
        params = sum(p.numel() for p in tok.model.parameters())
    else:
        sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))  # only resampling helpers use it
        from encodec import EncodecModel

        model = EncodecModel.encodec_model_24khz(pretrained=False)
        model.set_target_bandwidth(6.0)
        model.eval()
        rate = model.sample_rate
        wav = 0.1 * torch.randn(1, 1, int(seconds * rate))
        base_rss = _peak_rss_mb()
        with torch.inference_mode():
            frames = model.encode(wav)
            if args.op == "encode":
                elapsed = median_seconds(lambda: model.encode(wav), args.repeats)
            else:
                elapsed = median_seconds(lambda: model.decode(frames), args.repeats)
        params = sum(p.numel() for p in model.parameters())
    print(
        json.dumps(
            {
                "system": args.system,
                "op": args.op,
                "threads": args.threads,
                "seconds": seconds,
                "rtf": seconds / elapsed,
                "peak_mb": _peak_rss_mb() - base_rss,
                "params_m": params / 1e6,
            }
        )
    )


def _run_child(system: str, op: str, threads: int, seconds: float, args: argparse.Namespace) -> dict | None:
    cmd = [sys.executable, __file__, "--child", "--system", system, "--op", op]
    cmd += ["--threads", str(threads), "--seconds", str(seconds), "--repeats", str(args.repeats)]
    if args.model:
        cmd += ["--model", args.model]
    if args.recipe:
        cmd += ["--recipe", args.recipe]
    env = {**os.environ, **ALLOCATOR_ENV, "OMP_NUM_THREADS": str(threads)}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if result.returncode != 0:
        print(f"  {system} {op} failed: {result.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="a trained model folder (default: random weights of --recipe)")
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "rvq_mel_pitch.yaml"))
    parser.add_argument("--lengths", default="10,600", help="input lengths in seconds, comma-separated")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-encodec", action="store_true", help="skip the EnCodec comparison")
    parser.add_argument("--json", help="also write all rows to this JSON file")
    # internal: one measurement
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--system", default="vqaudio", help=argparse.SUPPRESS)
    parser.add_argument("--op", default="encode", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=10.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.threads = int(args.threads)
        _child(args)
        return

    lengths = [float(x) for x in args.lengths.split(",")]
    threads = [int(x) for x in args.threads.split(",")]
    try:
        sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))  # as in _child
        import encodec  # noqa: F401

        systems = ["vqaudio"] if args.no_encodec else ["vqaudio", "encodec"]
    except ImportError:
        print(
            "encodec is not installed (pip install --no-deps encodec einops): no comparison", file=sys.stderr
        )
        systems = ["vqaudio"]
    rows = []
    for seconds in lengths:
        for n in threads:
            for system in systems:
                if system == "encodec" and seconds > 60:
                    continue  # EnCodec's reference speed is quoted on 10 s clips
                for op in ("encode", "decode"):
                    row = _run_child(system, op, n, seconds, args)
                    if row:
                        rows.append(row)
                        print(
                            f"{system:8s} {op:6s} {seconds:6.0f} s  {n} thread(s): {row['rtf']:8.1f}x real time, "
                            f"peak +{row['peak_mb']:.0f} MB",
                            flush=True,
                        )
    print("\n| system | op | input | threads | real-time factor | vs EnCodec | peak memory |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        ref = next(
            (
                r
                for r in rows
                if r["system"] == "encodec"
                and r["op"] == row["op"]
                and r["threads"] == row["threads"]
                and r["seconds"] == row["seconds"]
            ),
            None,
        )
        ratio = f"{row['rtf'] / ref['rtf']:.2f}x" if ref else "-"
        print(
            f"| {row['system']} ({row['params_m']:.1f} M) | {row['op']} | {row['seconds']:.0f} s | {row['threads']} | "
            f"{row['rtf']:.1f}x | {ratio} | +{row['peak_mb']:.0f} MB |"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
