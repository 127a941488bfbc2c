"""Cost of a training step with each codebook kind (model.quantizer.codebook: vq, gumbel, fsq), in one run.

One training step (model forward in training mode, the recipe's reconstruction loss plus the quantizer's,
backward, AdamW) of each of ``--recipes`` (by default rvq_mel_pitch.yaml and its gumbel and fsq variants), on
random-weight models and noise-like audio (speed does not depend on either), batch ``--batch`` x ``--seconds``. The kinds take turns step by
step (``--rounds`` rounds after a warm-up round, which also runs the first-batch initialisations), so a
shared machine's load slows them alike; the medians and their ratios to the first recipe are printed. ``--reduced`` takes the
encoder and decoder widths of the 2026-12-07 comparison in docs/EXPERIMENTS.md (128/256 and 192/384).

    python benchmarks/bench_quantizer_kinds.py --reduced          # the three recipes, 8 x 1 s, 1 thread
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from timing import run_with_allocator_settings

ROOT = Path(__file__).resolve().parents[1]
REDUCED = {
    "model.encoder.channels": 128,
    "model.encoder.max_channels": 256,
    "model.decoder.channels": 192,
    "model.decoder.max_channels": 384,
}


def main() -> None:
    run_with_allocator_settings()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--recipes",
        nargs="+",
        default=[str(ROOT / "recipes" / f"rvq_mel_pitch{kind}.yaml") for kind in ("", "_gumbel", "_fsq")],
    )
    parser.add_argument(
        "--reduced", action="store_true", help="the comparison's narrower encoder and decoder"
    )
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()

    import torch

    from vqaudio.codec.losses import ReconstructionLoss
    from vqaudio.codec.vqvae import build_model
    from vqaudio.config import Config, load_yaml, replace_path

    torch.set_num_threads(args.threads)
    configs: dict[str, Config] = {}
    for recipe in args.recipes:
        config = load_yaml(recipe)
        for key, value in (REDUCED if args.reduced else {}).items():
            config = replace_path(config, key, value)
        configs[f"{Path(recipe).stem} ({config.model.quantizer.codebook})"] = config

    num_samples = int(args.seconds * next(iter(configs.values())).model.sample_rate)
    audio = 0.1 * torch.randn(args.batch, num_samples)
    steps = {}
    for kind, config in configs.items():
        torch.manual_seed(0)
        model = build_model(config.model).train()
        loss = ReconstructionLoss(config.loss, config.model.sample_rate)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step(model=model, loss=loss, optimizer=optimizer) -> None:  # type: ignore[no-untyped-def]
            output = model(audio)
            (loss(output.audio, audio).total + output.quantizer.loss).backward()
            optimizer.step()
            optimizer.zero_grad()

        steps[kind] = step
    times: dict[str, list[float]] = {kind: [] for kind in steps}
    for round_index in range(args.rounds + 1):
        for kind, step in steps.items():
            start = time.perf_counter()
            step()
            if round_index:  # round 0: warm-up and first-batch initialisation
                times[kind].append(time.perf_counter() - start)
    print(
        f"one training step{' (reduced widths)' if args.reduced else ''}, batch {args.batch} x {args.seconds:g} s, "
        f"{args.threads} thread(s), median of {args.rounds} interleaved rounds"
    )
    baseline = statistics.median(next(iter(times.values())))
    print(f"{'recipe (codebook)':<32} {'s/step':>8} {'ratio':>7}")
    for kind, values in times.items():
        median = statistics.median(values)
        print(f"{kind:<32} {median:>8.3f} {median / baseline:>6.2f}x")


if __name__ == "__main__":
    main()
