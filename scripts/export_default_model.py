"""Copy a trained tokenizer (and optionally a prior) into the package as the embedded default models.

The weights are copied unchanged (same hash); the name and the training description are rewritten so that
`vqaudio info` says what the model is and how to retrain it.

    python scripts/export_default_model.py exp/fillets/codec --prior exp/fillets/prior \
        --data "fillets-ng voices, egs/fillets train split (cs-m, nl-v), 1.52 h" \
        --command "egs/fillets/run.sh --stage 0 --stop-stage 3 --set train.max_steps=14000"
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vqaudio.prior import Prior
from vqaudio.tokenizer import DEFAULT_MODEL_DIR, Tokenizer

DEFAULT_PRIOR_DIR = DEFAULT_MODEL_DIR.parent / "prior"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run", type=Path, help="trained tokenizer folder (a `vqaudio train` --out)")
    parser.add_argument("--prior", type=Path, help="trained prior folder (a `vqaudio prior train` --out)")
    parser.add_argument("--name", default="vqaudio-speech-16k-rvq8x1024")
    parser.add_argument("--prior-name", default="vqaudio-speech-16k-prior")
    parser.add_argument("--data", required=True, help="what the model was trained on, in words")
    parser.add_argument("--command", required=True, help="the command that retrains it")
    args = parser.parse_args()

    tok = Tokenizer.load(args.run)
    tok.name = args.name
    tok.training = {
        **tok.training,
        "data": args.data,
        "retrain": args.command,
        "local_data_path": str((tok.training.get("data") or {}).get("source", ""))
        if isinstance(tok.training.get("data"), dict)
        else "",
    }
    tok.save(DEFAULT_MODEL_DIR)
    print(f"tokenizer {tok.name} ({tok.hash[:12]}) -> {DEFAULT_MODEL_DIR}")
    if args.prior:
        prior = Prior.load(args.prior)
        if prior.tokenizer_hash != tok.hash:
            raise SystemExit(
                f"{args.prior}: trained on tokenizer {prior.tokenizer_hash[:12]}, not {tok.hash[:12]}"
            )
        prior.save(DEFAULT_PRIOR_DIR, name=args.prior_name)
        print(f"prior {args.prior_name} -> {DEFAULT_PRIOR_DIR}")


if __name__ == "__main__":
    main()
