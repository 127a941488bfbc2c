"""Copy a trained tokenizer into the package as the embedded default model.

The weights are copied unchanged (same hash); the name and the training description are rewritten so that
`vqaudio info` says what the model is and how to retrain it.

    python tools/export_default_model.py exp/fillets/codec \
        --data "fillets-ng voices, egs/fillets train split (cs-m, nl-v), 1.52 h" \
        --command "egs/fillets/run.sh --stage 0 --stop-stage 3" \
        --stages "recipes/rvq_mel.yaml 3000 steps, then recipes/rvq_mel_gan.yaml 1500 steps from it"

The embedded prior must be trained on the new tokenizer's tokens and exported after it
(tools/export_default_prior.py): a prior names the tokenizer whose tokens it models.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from export_default_prior import repo_relative  # the sibling script (tools/ is on sys.path when run)

from vqaudio.codec.tokenizer import DEFAULT_MODEL_DIR, Tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="trained tokenizer folder (a `vqaudio train` --out)")
    parser.add_argument("--name", default="vqaudio-speech-16k-f0-rvq8x1024")
    parser.add_argument("--data", required=True, help="what the model was trained on, in words")
    parser.add_argument("--command", required=True, help="the command that retrains it")
    parser.add_argument("--stages", default="", help="the training stages, in words (optional)")
    parser.add_argument(
        "--license",
        default=None,
        help="the weights' licence, in words (default: the embedded model's, kept across releases)",
    )
    args = parser.parse_args()

    license_text = args.license
    if license_text is None and (DEFAULT_MODEL_DIR / "config.json").exists():
        license_text = Tokenizer.load(DEFAULT_MODEL_DIR).license
    tok = Tokenizer.load(args.run)
    tok.name = args.name
    tok.license = license_text or None
    tok.training = {
        **tok.training,
        "data": args.data,
        "retrain": args.command,
        "local_data_path": str((tok.training.get("data") or {}).get("source", ""))
        if isinstance(tok.training.get("data"), dict)
        else "",
    }
    if args.stages:
        tok.training["stages"] = args.stages
    if tok.training.get("recipe"):  # egs scripts pass absolute paths
        tok.training["recipe"] = repo_relative(str(tok.training["recipe"]))
    tok.save(DEFAULT_MODEL_DIR)
    print(f"tokenizer {tok.name} ({tok.hash[:12]}) -> {DEFAULT_MODEL_DIR}")
    print("now retrain and export the embedded prior on its tokens: tools/export_default_prior.py")


if __name__ == "__main__":
    main()
