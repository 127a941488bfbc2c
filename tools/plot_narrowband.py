"""Narrow-band spectrograms (0-4 kHz, 64 ms windows) of a clip, its resynthesis and a classical codec's.

At this resolution the harmonics of voiced speech are separate lines, which is what the wide-band
spectrograms of ``vqaudio eval`` reports blur away: this is the figure that shows whether a decoder rebuilds
pitch or only the spectral envelope (docs/MODEL_CARD.md, Known limits).

    python tools/plot_narrowband.py data/pocketsphinx/clips/goforward.wav --seconds 2 --n-q 5 \
        --baseline codec2_3200 --out docs/images/narrowband_goforward.png
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.evaluation.alignment import align_to_reference
from vqaudio.evaluation.baselines import default_baselines, run_baseline
from vqaudio.io.audio import load_audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("audio", type=Path, help="A speech clip (any rate; resampled to the model's).")
    parser.add_argument("--model", type=Path, default=None, help="Tokenizer (default: the embedded one).")
    parser.add_argument("--n-q", type=int, default=None, help="Codebooks to decode (default: all).")
    parser.add_argument("--baseline", action="append", default=[], help="e.g. codec2_3200, opus_6k.")
    parser.add_argument("--seconds", type=float, default=None, help="Plot only the first SECONDS.")
    parser.add_argument("--max-hz", type=float, default=4000.0)
    parser.add_argument("--out", type=Path, required=True, help="Output .png.")
    args = parser.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokenizer = Tokenizer.load(args.model)
    rate = tokenizer.sample_rate
    wav = load_audio(args.audio, rate).numpy()
    if args.seconds is not None:
        wav = wav[: int(args.seconds * rate)]
    codes = tokenizer.encode(torch.from_numpy(wav), rate, n_q=args.n_q)
    n_q = codes.shape[0] - tokenizer.pitch_rows  # codebooks (a pitch row, if any, comes first)
    kbps = tokenizer.bitrate_at(n_q) / 1000
    decoded = tokenizer.decode(codes, num_samples=len(wav)).numpy()
    pitch = " + pitch row" if tokenizer.pitch_rows else ""
    rows = [("original", wav), (f"vqaudio, {n_q} codebooks{pitch} ({kbps:.2f} kbps)", decoded)]
    baselines = {baseline.name: baseline for baseline in default_baselines()}
    for name in args.baseline:
        if name not in baselines:
            parser.error(f"--baseline {name}: expected one of {', '.join(baselines)}")
        decoded = run_baseline(baselines[name], wav, rate).audio
        rows.append(
            (f"{name} ({baselines[name].nominal_kbps:g} kbps)", align_to_reference(decoded, wav, rate).audio)
        )

    figure, axes = plt.subplots(len(rows), 1, figsize=(10, 2.4 * len(rows)), sharex=True, squeeze=False)
    window = int(0.064 * rate)
    for axis, (title, audio) in zip(axes[:, 0], rows, strict=True):
        audio = np.asarray(audio, dtype=np.float32)[: len(wav)]
        axis.specgram(
            audio + 1e-7, NFFT=window, Fs=rate, noverlap=window - rate // 100, cmap="magma", vmin=-110
        )
        axis.set_ylim(0, args.max_hz)
        axis.set_ylabel("Hz")
        axis.set_title(title, fontsize=10, loc="left")
    axes[-1, 0].set_xlabel("seconds")
    figure.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=60, format="png")
    # a palette of 128 colours: a third of the size, no visible change (the figure goes into the model card)
    Image.open(buffer).convert("RGB").quantize(128).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
