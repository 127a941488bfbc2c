"""Cost of the reconstruction loss in a training step, against the stacked-STFT baseline, in one run.

The multi-resolution STFT loss transforms both the decoder's output and the reference. The reference needs
no gradient, so its STFT is taken outside autograd; stacking the two into one STFT (as vqaudio did before, and
the baseline here does) made the backward pass transform the reference too. Both give the same values and
gradients (``tests/test_losses.py``). Rows: the loss alone (forward + backward) and a whole first-stage
training step (model forward, loss, backward, AdamW) of ``--recipe``, batch ``--batch`` x ``--seconds``,
random weights and noise-like audio (speed does not depend on either), median of ``--repeats`` after a
warm-up.

    python benchmarks/bench_losses.py                       # recipes/rvq_mel.yaml, 8 x 1 s, 1 and 2 threads
    python benchmarks/bench_losses.py --threads 1 --repeats 9
"""

from __future__ import annotations

import argparse
from pathlib import Path

from timing import median_seconds, run_with_allocator_settings

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    run_with_allocator_settings()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", default=str(ROOT / "recipes" / "rvq_mel.yaml"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    import torch

    from vqaudio.codec import losses
    from vqaudio.codec.losses import ReconstructionLoss
    from vqaudio.codec.vqvae import build_model
    from vqaudio.config import load_yaml

    def stacked_stft(
        pred: torch.Tensor, target: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The baseline: one STFT of pred and target stacked, so autograd runs through the target's too."""
        batch = pred.shape[0]
        spec = torch.stft(
            torch.cat([pred, target]),
            n_fft=n_fft,
            hop_length=hop,
            win_length=window.shape[0],
            window=window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )
        return spec[:batch], spec[batch:]

    separate_stft = losses._paired_stft

    config = load_yaml(args.recipe)
    torch.manual_seed(0)
    model = build_model(config.model)
    loss = ReconstructionLoss(config.loss, config.model.sample_rate)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    num_samples = int(args.seconds * config.model.sample_rate)
    audio = 0.1 * torch.randn(args.batch, num_samples)
    output = (audio + 0.01 * torch.randn_like(audio)).requires_grad_(True)

    def loss_alone() -> None:
        output.grad = None
        loss(output, audio).total.backward()

    def training_step() -> None:
        decoded = model(audio).audio[..., :num_samples]
        loss(decoded, audio).total.backward()
        optimizer.step()
        optimizer.zero_grad()

    print(
        f"{Path(args.recipe).name}: batch {args.batch} x {args.seconds:g} s, median of {args.repeats}; "
        "baseline: pred and reference in one STFT"
    )
    print(f"{'threads':>7} {'row':<14} {'baseline s':>10} {'vqaudio s':>10} {'speed-up':>9}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        for name, run in (("loss alone", loss_alone), ("training step", training_step)):
            losses._paired_stft = stacked_stft
            baseline = median_seconds(run, args.repeats)
            losses._paired_stft = separate_stft
            current = median_seconds(run, args.repeats)
            print(f"{threads:>7} {name:<14} {baseline:>10.3f} {current:>10.3f} {baseline / current:>8.2f}x")


if __name__ == "__main__":
    main()
