"""Generation speed of the token prior: queue-based fast generation against the naive path, in one run.

Fast generation (Paine et al., 2016, https://arxiv.org/abs/1611.09482) keeps each layer's past inputs in a
queue, so a new frame costs one step per layer; the naive path reruns the trunk over the receptive field for
every frame. Both draw the same tokens for the same seed, which this script checks. Speed is token frames
per second (and the real-time factor: seconds of token audio per second), median of ``--repeats`` runs after
a warm-up, batch 1 unless ``--batch``. Weights are random unless ``--prior`` is given (speed does not depend
on them); the architecture comes from ``--recipe`` with 8 codebooks x 1024 codes, like the rvq_mel tokenizer.

    python benchmarks/bench_prior_generation.py               # prior_small, 500 frames (10 s at 50 Hz)
    python benchmarks/bench_prior_generation.py --prior exp/prior1 --threads 1 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from timing import median_seconds, run_with_allocator_settings

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    run_with_allocator_settings()  # the same allocator for both paths
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--prior", help="a trained prior folder (default: random weights of --recipe)")
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "prior_small.yaml"))
    parser.add_argument("--codebooks", type=int, default=8)
    parser.add_argument("--codebook-size", type=int, default=1024)
    parser.add_argument("--frames", type=int, default=500, help="frames to generate (500 = 10 s at 50 Hz)")
    parser.add_argument("--batch", type=int, default=1, help="sequences generated together")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from vqaudio.config import PriorRunConfig, load_yaml
    from vqaudio.prior import Prior
    from vqaudio.prior.prior import token_stream
    from vqaudio.prior.wavenet import WaveNetPrior

    if args.prior:
        prior = Prior.load(args.prior)
        source = args.prior
    else:
        run = load_yaml(args.recipe, PriorRunConfig)
        config = run.prior.__class__(
            **{**run.prior.__dict__, "num_codebooks": args.codebooks, "codebook_size": args.codebook_size}
        )
        torch.manual_seed(0)
        meta = {
            "model_hash": "random",
            "num_codebooks": args.codebooks,
            "codebook_size": args.codebook_size,
            "frame_rate": 50.0,
        }
        prior = Prior(WaveNetPrior(config), PriorRunConfig(prior=config, train=run.train), token_stream(meta))
        source = f"{Path(args.recipe).name} (random weights)"
    parameters = sum(p.numel() for p in prior.model.parameters())
    print(
        f"prior: {source}, {parameters / 1e6:.2f} M parameters, "
        f"{prior.num_codebooks} x {prior.codebook_size} codes, "
        f"receptive field {prior.receptive_field} frames ({prior.receptive_field_seconds:.2f} s)"
    )
    print(
        f"generating {args.frames} frames ({args.frames / prior.frame_rate:.1f} s), batch {args.batch}, "
        f"median of {args.repeats} after a warm-up\n"
    )
    header = (
        f"{'threads':>7}  {'path':<6}  {'seconds':>8}  {'frames/s':>9}  {'x real time':>11}  {'speed-up':>8}"
    )
    print(header)
    print("-" * len(header))
    for threads in args.threads:
        torch.set_num_threads(threads)
        results = {}
        tokens = {}
        for name, fast in (("fast", True), ("naive", False)):

            def run_once(fast: bool = fast) -> torch.Tensor:
                return prior.generate(args.frames, seed=0, fast=fast, num_samples=args.batch)

            tokens[name] = run_once(fast)  # warm-up, and the tokens to compare
            results[name] = median_seconds(run_once, args.repeats, warm_up=False)
        for name in ("fast", "naive"):
            seconds = results[name]
            frames_per_second = args.frames * args.batch / seconds
            speed_up = results["naive"] / seconds
            print(
                f"{threads:>7}  {name:<6}  {seconds:8.2f}  {frames_per_second:9.0f}  "
                f"{frames_per_second / prior.frame_rate:11.1f}  {speed_up:7.1f}x"
            )
        same = torch.equal(tokens["fast"], tokens["naive"])
        print(
            f"{'':>7}  fast / naive speed ratio {results['naive'] / results['fast']:.1f}; "
            f"identical tokens: {same}"
        )


if __name__ == "__main__":
    main()
