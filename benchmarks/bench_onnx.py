"""onnxruntime against torch on one thread: encode and decode 10 s of speech with a tokenizer and its ONNX export.

Both run in this process, one after the other for each repeat, on the example clips tiled to ``--seconds``: torch
``Tokenizer.encode`` / ``decode`` (one window: 10 s is below the default ``chunk_seconds``) and the onnxruntime
sessions of ``vqaudio export-onnx`` (CPU provider, one intra-op thread); the median of ``--repeats`` runs after a
warm-up. The codes and audio are compared too.

    python benchmarks/bench_onnx.py                        # the embedded model, exported to a temporary folder
    python benchmarks/bench_onnx.py --model exp/run1 --onnx exp/run1_onnx --seconds 10 --repeats 7
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from timing import median_seconds, run_with_allocator_settings

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="tokenizer (default: the embedded model)")
    parser.add_argument("--onnx", help="its export (default: export it now to a temporary folder)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    run_with_allocator_settings()

    import numpy as np
    import onnxruntime
    import soundfile as sf
    import torch

    from vqaudio.codec.onnx_export import export_onnx, load_sessions
    from vqaudio.codec.tokenizer import Tokenizer

    torch.set_num_threads(1)
    tok = Tokenizer.load(args.model)
    rate = tok.sample_rate
    clips = [
        sf.read(path, dtype="float32")[0] for path in sorted((ROOT / "vqaudio" / "examples").glob("*.flac"))
    ]
    audio = np.concatenate(clips)
    audio = np.tile(audio, int(np.ceil(args.seconds * rate / len(audio))))[: int(args.seconds * rate)]
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.onnx) if args.onnx else Path(scratch) / "onnx"
        if not args.onnx:
            export_onnx(tok, folder, check=False)
        sessions = load_sessions(folder, threads=1)
        with torch.inference_mode():
            codes = tok.encode(audio, rate)
            decoded = tok.decode(codes).numpy()
        codes_np = codes.numpy()
        onnx_codes = sessions.encode(audio)
        onnx_audio = sessions.decode(codes_np)
        times = {}
        with torch.inference_mode():
            times["torch encode"] = median_seconds(lambda: tok.encode(audio, rate), args.repeats)
            times["onnxruntime encode"] = median_seconds(lambda: sessions.encode(audio), args.repeats)
            times["torch decode"] = median_seconds(lambda: tok.decode(codes), args.repeats)
            times["onnxruntime decode"] = median_seconds(lambda: sessions.decode(codes_np), args.repeats)
    print(
        f"model {tok.name} ({tok.hash[:12]}), torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"one thread, {args.seconds:g} s of audio, median of {args.repeats}"
    )
    print(
        f"codes equal: {100 * float((onnx_codes == codes_np).mean()):.2f}%; audio max |onnxruntime - torch| "
        f"{float(np.abs(onnx_audio - decoded).max()):.2g}, RMS {float(np.sqrt(np.mean((onnx_audio - decoded) ** 2))):.2g}"
    )
    print("| | torch | onnxruntime | onnxruntime / torch speed |")
    print("|---|---:|---:|---:|")
    for op in ("encode", "decode"):
        torch_s, onnx_s = times[f"torch {op}"], times[f"onnxruntime {op}"]
        print(
            f"| {op} | {1000 * torch_s:.0f} ms ({args.seconds / torch_s:.0f}x real time) | {1000 * onnx_s:.0f} ms "
            f"({args.seconds / onnx_s:.0f}x real time) | {torch_s / onnx_s:.2f}x |"
        )


if __name__ == "__main__":
    main()
