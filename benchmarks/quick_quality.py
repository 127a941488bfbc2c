"""STOI and mel distance of one or more tokenizers at one bitrate, on two small fixed clip sets, in seconds.

``vqaudio eval`` is the full measurement (every metric, every bitrate, the classical baselines, a report);
this is the quick check used while training experiments run (docs/EXPERIMENTS.md): the same clips for
every model, one CPU thread, about 10 s per model.

    python benchmarks/quick_quality.py exp/default_gan exp/other_run \
        --english data/pocketsphinx/clips --fillets data/fillets/corpus/test --n-q 6

The English set is every audio file under --english (13 clips for pocketsphinx-testdata); the fillets set is
every 40th file of --fillets in sorted order, 12 of them. ``--bands`` also prints STOI per one-third-octave
band (``vqaudio.evaluation.metrics.stoi_bands``), which shows where in frequency a model loses.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.data.utterance import find_audio_files
from vqaudio.evaluation.metrics import mel_distance, stoi, stoi_bands
from vqaudio.io.audio import load_audio


def clips(folder: Path, every: int, count: int | None) -> list[Path]:
    """Audio files under ``folder``, sorted, every ``every``-th, at most ``count``."""
    found = sorted(find_audio_files(folder))
    if not found:
        raise SystemExit(f"error: no audio files under {folder}")
    return found[::every][:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="Tokenizer folders (or .safetensors files).")
    parser.add_argument("--english", type=Path, required=True, help="pocketsphinx-testdata clips folder.")
    parser.add_argument("--fillets", type=Path, required=True, help="The fillets recipe's test folder.")
    parser.add_argument("--n-q", type=int, default=6, help="Codebooks decoded (6 = 3 kbps for the default).")
    parser.add_argument("--bands", action="store_true", help="Also print STOI per one-third-octave band.")
    parser.add_argument("--estoi", action="store_true", help="Also print extended STOI (ESTOI).")
    args = parser.parse_args()
    torch.set_num_threads(1)
    sets = {"english": clips(args.english, 1, None), "fillets": clips(args.fillets, 40, 12)}
    for model_path in args.models:
        tokenizer = Tokenizer.load(model_path)
        rate = tokenizer.sample_rate
        line = [f"{model_path}: n_q {args.n_q} ({tokenizer.bitrate_at(args.n_q) / 1000:g} kbps)"]
        for name, paths in sets.items():
            scores, bands = [], []
            for path in paths:
                wav = load_audio(path, rate)
                decoded = tokenizer.decode(tokenizer.encode(wav, rate, n_q=args.n_q), num_samples=len(wav))
                if args.bands:  # STOI is the mean over bands: one pass of pystoi's analysis, not two
                    centres, per_band = stoi_bands(decoded, wav, rate)
                    bands.append(per_band)
                    intelligibility = float(per_band.mean())
                else:
                    intelligibility = stoi(decoded, wav, rate)
                extended = stoi(decoded, wav, rate, extended=True) if args.estoi else np.nan
                scores.append((intelligibility, mel_distance(decoded, wav, rate), extended))
            mean_stoi, mean_mel, mean_estoi = np.mean(scores, axis=0)
            line.append(f"{name} ({len(paths)} clips) STOI {mean_stoi:.3f} mel {mean_mel:.3f}")
            if args.estoi:
                line[-1] += f" ESTOI {mean_estoi:.3f}"
            if args.bands:
                mean_bands = np.mean(bands, axis=0)
                by_band = " ".join(f"{c:.0f}:{b:.3f}" for c, b in zip(centres, mean_bands, strict=True))
                line.append(f"{name} STOI by band (Hz:score) {by_band}")
        print("; ".join(line), flush=True)


if __name__ == "__main__":
    main()
