"""Copy a trained prior into the package as the embedded default prior (``vqaudio/pretrained/prior/``).

The prior must model the tokens of the embedded tokenizer (its weights hash is checked) and be unconditioned.
Only what ``Prior.load()``, ``vqaudio prior eval`` and ``prior sample`` need is copied: ``model.safetensors``
(float16 by default, loaded as float32: half the size, a change in bits per token that this script measures
and bounds) and ``config.json``. The n-gram counts are left behind (19 MB for the fillets tokens), so
``prior eval`` with the embedded prior reports no baselines unless given ``--train``; ``--test`` records the
prior's bits per token beside the training-count baselines in the model's training record instead. The
training record also gets the data, recipe and retraining command, which ``vqaudio prior info`` prints.
The new folder is written beside the old one and swapped in by renames: a failed or interrupted export
leaves the previous prior in place.

    python tools/export_default_prior.py exp/fillets/prior --test exp/fillets/tokens/test.npy
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.io.token_file import load_tokens, token_paths
from vqaudio.prior import Prior
from vqaudio.prior.data import validated_utterances
from vqaudio.prior.evaluation import evaluate_prior
from vqaudio.prior.ngram import COUNTS_FILE, load_counts
from vqaudio.prior.prior import PRETRAINED_DIR, WEIGHTS_DTYPES

REPO = Path(__file__).resolve().parents[1]
DEFAULT_COMMAND = (
    "egs/fillets/run.sh --stage 4 --stop-stage 4 (on exp/fillets/tokens from the embedded tokenizer), then "
    "python tools/export_default_prior.py exp/fillets/prior --test exp/fillets/tokens/test.npy"
)
# The most that storing the weights in a smaller dtype may change the bits per token of a sampled sequence.
MAX_DTYPE_CHANGE_BITS = 0.01


def bits_per_token(prior: Prior, codes: torch.Tensor) -> float:
    return float(-prior.log_prob(codes).mean()) / math.log(2)


def repo_relative(path: str) -> str:
    """An absolute recipe path as the repository names it (``recipes/x.yaml``) when it lies inside it."""
    absolute = Path(path)
    if absolute.is_absolute() and absolute.resolve().is_relative_to(REPO):
        return str(absolute.resolve().relative_to(REPO))
    return path


def record_license(folder: Path, license_text: str | None) -> None:
    """The embedded prior's weights come from the tokenizer's training data: its config.json carries the
    embedded tokenizer's licence (``vqaudio prior info`` prints it)."""
    if not license_text:
        return
    path = folder / "config.json"
    meta: dict[str, Any] = {}
    for key, value in json.loads(path.read_text()).items():
        meta[key] = value
        if key == "name":  # where the tokenizer's config.json has it
            meta["license"] = license_text
    path.write_text(json.dumps(meta, indent=2) + "\n")


def test_record(prior: Prior, run: Path, tokens: Path) -> dict[str, Any]:
    """Bits per token of ``prior`` on a token file, beside the run's training-count n-gram baselines."""
    corpus = load_tokens(tokens)
    prior.check_tokens(corpus.meta, where=str(tokens))
    utterances = validated_utterances(corpus, prior.num_codebooks, prior.codebook_size, str(tokens))
    counts = load_counts(run / COUNTS_FILE) if (run / COUNTS_FILE).is_file() else None
    report = evaluate_prior(prior.model, utterances, prior.frame_rate, counts, "the training tokens")
    return {
        "tokens": str(tokens),
        "utterances": report.num_utterances,
        "frames": report.num_frames,
        "bits_per_token": round(report.bits_per_token, 4),
        "unigram_bits_per_token": rounded(report.unigram_bits_per_token),
        "bigram_bits_per_token": rounded(report.bigram_bits_per_token),
    }


def training_tokens_description(prior: Prior, tokenizer_name: str) -> str | None:
    """What the prior was trained on, from its training token file's description; None when it is gone.

    The tokenizer's own training data can differ (the embedded one also saw synthetic voices), so the prior's
    data is read from the tokens it was trained on, not copied from the tokenizer.
    """
    path = prior.training.get("train_tokens")
    if not path or not token_paths(path).meta_path.is_file():
        return None
    meta = load_tokens(path).meta
    source = Path(str(meta.get("source") or path))
    hours = float(meta.get("seconds") or 0.0) / 3600
    return (
        f"tokens of {tokenizer_name} on {source.parent.name}/{source.name} "
        f"({meta['num_utterances']} utterances, {hours:.2f} h)"
    )


def rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="trained prior folder (a `vqaudio prior train` --out)")
    parser.add_argument("--name", default="vqaudio-speech-16k-prior")
    parser.add_argument(
        "--data",
        help="what the prior was trained on, in words (default: the source and length of its training tokens)",
    )
    parser.add_argument("--command", default=DEFAULT_COMMAND, help="the commands that retrain it")
    parser.add_argument("--recipe", help="the recipe it was trained with (default: the one the run recorded)")
    parser.add_argument("--test", type=Path, help="held-out token file: record bits per token on it")
    parser.add_argument("--weights-dtype", choices=sorted(WEIGHTS_DTYPES), default="float16")
    args = parser.parse_args()

    tokenizer = Tokenizer.load()
    prior = Prior.load(args.run)
    if prior.tokenizer_hash != tokenizer.hash:
        sys.exit(
            f"{args.run}: trained on tokens of tokenizer {prior.tokenizer_hash[:12]} "
            f"({prior.tokens.get('tokenizer_name')}), but the embedded tokenizer is {tokenizer.name} "
            f"({tokenizer.hash[:12]}); tokenize with the embedded tokenizer and retrain the prior"
        )
    if prior.speakers:
        sys.exit(f"{args.run}: a speaker-conditioned prior; the embedded prior must be unconditioned")
    recipe = args.recipe or prior.training.get("recipe")
    if not recipe:
        sys.exit(f"{args.run}: the run recorded no recipe; pass --recipe (e.g. recipes/prior_default.yaml)")
    data = args.data or training_tokens_description(prior, tokenizer.name)
    if not data:
        sys.exit(
            f"{args.run}: its training tokens ({prior.training.get('train_tokens')}) are not here; pass --data"
        )

    training = {
        **prior.training,
        "data": data,
        "recipe": repo_relative(recipe),
        "max_steps": prior.run_config.train.max_steps,  # of the schedule; "step" is the released one
        "retrain": args.command,
    }
    if args.test is not None:
        training["test"] = test_record(prior, args.run, args.test)
    # the embedded prior decodes with the embedded tokenizer; a local path would only mislead
    tokens = {**prior.tokens, "tokenizer_name": tokenizer.name, "tokenizer_path": None}
    release = Prior(prior.model, prior.run_config, tokens, (), training)

    PRETRAINED_DIR.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".prior.", dir=PRETRAINED_DIR.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp's 0700 would keep other users out of the installed package
    retired = PRETRAINED_DIR.parent / f"{staging.name}.old"
    try:
        release.save(staging, name=args.name, weights_dtype=args.weights_dtype)
        record_license(staging, tokenizer.license)
        copy = Prior.load(staging)
        sample = prior.generate(250, seed=0)  # 5 s the prior finds likely: where its precision matters
        original, stored = bits_per_token(prior, sample), bits_per_token(copy, sample)
        if abs(original - stored) > MAX_DTYPE_CHANGE_BITS:
            sys.exit(
                f"{args.weights_dtype} weights change the bits per token of a sample from {original:.4f} to "
                f"{stored:.4f}; export with --weights-dtype float32"
            )
        if PRETRAINED_DIR.exists():
            PRETRAINED_DIR.rename(retired)
        try:
            staging.rename(PRETRAINED_DIR)
        except OSError:
            if retired.exists():
                retired.rename(PRETRAINED_DIR)
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
    size = sum(f.stat().st_size for f in PRETRAINED_DIR.iterdir()) / 1e6
    print(
        f"prior {args.name} ({args.weights_dtype}, {size:.1f} MB; sample {original:.4f} -> {stored:.4f} bits "
        f"per token) -> {PRETRAINED_DIR}"
    )
    if "test" in training:
        print(f"on {args.test}: {training['test']}")


if __name__ == "__main__":
    main()
