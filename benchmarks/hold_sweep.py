"""Sweep of the first codebook's hold margin (``Tokenizer.first_codebook_hold``, issue 26): run length and phone
information of the first codebook, reconstruction quality, and the prior's bits per token, for every margin.

Each utterance goes through the encoder (and the pitch tracker) once; its latent is then quantized with every
margin (``VQVAE.quantize_latent``, what ``Tokenizer.encode(..., hold=)`` runs on each whole input), so a margin
costs only its quantization, decoding and scoring. The codes equal ``vqaudio tokenize --hold`` 's: the encoder runs
on whole utterances here, in 10 s windows there, equal up to float rounding.

    python benchmarks/hold_sweep.py --holds 0,0.5,1,2,4,8 \\
        --probe dev=ALIGN_DEV --probe test=ALIGN_TEST \\
        --quality fillets_dev=DATA/dev.tsv@20 --quality fillets_test=DATA/test.tsv@20 --quality english=CLIPS.tsv \\
        --prior fillets_test=DATA/test.tsv --prior-train DATA/train_plus_voices.tsv --prior-train-every 4 \\
        --json-out hold_sweep.json

- ``--probe NAME=FOLDER`` (an alignment folder of `vqaudio align`): per codebook 1 (and 2) PNMI, phone purity,
  held-out phone purity, mean run length and deduplicated tokens/s (``phonetic_probe.code_scores``, as `vqaudio
  probe` computes them).
- ``--quality NAME=CORPUS[@N]``: STOI, PESQ-WB, log-mel distance, voicing and F0 (``metrics.score_clip``) of the
  decoded audio at each ``--n-q`` (the pitch row always kept); every N-th utterance in id order (default: all).
- ``--prior NAME=CORPUS``: bits per token of the prior (default: the embedded one) on the held codes of the corpus,
  beside the unigram and bigram baselines counted on ``--prior-train`` (every ``--prior-train-every``-th
  utterance) encoded with the same margin: the n-gram models of the held codes themselves.

``--rule first-stage`` measures the rule the library does not use, for the record (docs/EXPERIMENTS.md): a frame
keeps its previous first code while that code's squared distance to the latent is within (1 + margin) times the
nearest code's, judged at the first stage alone (``first_stage_rule``).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from vqaudio.codec.quantization import Codebook, ResidualVQ
from vqaudio.codec.tokenizer import Tokenizer
from vqaudio.data import load_corpus
from vqaudio.evaluation.metrics import score_clip, unavailable_metrics
from vqaudio.evaluation.phone_alignment import PHONE_SET, frame_labels, read_alignments
from vqaudio.evaluation.phonetic_probe import HELDOUT_FOLDS, code_scores, mean_run_length, utterance_folds
from vqaudio.evaluation.voice import VoiceAnalysis
from vqaudio.io.audio import load_audio
from vqaudio.prior import Prior
from vqaudio.prior.data import Utterances
from vqaudio.prior.evaluation import evaluate_prior
from vqaudio.prior.ngram import count_ngrams

QUALITY = ("stoi", "pesq_wb", "mel_distance", "voicing_recall", "voicing_precision", "f0_error_cents")
NOT_SCORED = frozenset({"wer", "dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "stft_distance", "si_sdr"})


def named(specs: list[str], option: str) -> dict[str, str]:
    """["name=path", ...] -> {name: path}."""
    result = {}
    for spec in specs:
        name, separator, path = spec.partition("=")
        if not separator or not name or not path:
            raise SystemExit(f"error: {option} takes NAME=PATH, got {spec!r}")
        result[name] = path
    return result


def first_stage_rule(tokenizer: Tokenizer, latent: torch.Tensor, hold: float) -> torch.Tensor:
    """[1, D, F] latent -> [1, K, F] codes, the first held by its own distances: frame t keeps code_{t-1} when
    ``||z_t - c[code_{t-1}]||^2 <= (1 + hold) ||z_t - c[best_t]||^2``; the later stages quantize the rest."""
    quantizer = tokenizer.model.quantizer
    assert isinstance(quantizer, ResidualVQ)
    stages = [cast(Codebook, stage) for stage in quantizer.stages]
    best = stages[0].lookup(latent)[0]  # [F]
    vectors = stages[0].latent_codebooks()[0]  # [C, D]
    x = latent[0].T  # [F, D]
    limit = (1.0 + hold) * (x - vectors[best]).pow(2).sum(dim=1)
    first = best.clone()
    for frame in range(1, x.shape[0]):
        previous = first[frame - 1]
        if (x[frame] - vectors[previous]).pow(2).sum() <= limit[frame]:
            first[frame] = previous
    codes, residual = [first[None]], latent - stages[0].embed(first[None])
    for stage in stages[1:]:
        codes.append(stage.lookup(residual))
        residual = residual - stage.embed(codes[-1])
    return torch.stack(codes, dim=1)


class Encoded:
    """One utterance through the encoder: its latent [1, D, F] and pitch row [1, 1, F] (or None)."""

    def __init__(self, tokenizer: Tokenizer, wav: torch.Tensor, rule: str) -> None:
        self.tokenizer, self.rule = tokenizer, rule
        model = tokenizer.model
        with torch.inference_mode():
            self.latent = model.encode_latent(wav[None])
            self.pitch = model.encode_pitch(wav[None])[:, None] if tokenizer.pitch_rows else None

    def codes(self, hold: float) -> torch.Tensor:
        """[P + K, F] the tokenizer's codes with this margin, by ``rule`` ("stack": the library's)."""
        tokenizer = self.tokenizer
        with torch.inference_mode():
            if self.rule == "first-stage" and hold > 0:
                codes = first_stage_rule(tokenizer, self.latent, hold)
            else:
                codes = tokenizer.model.quantize_latent(self.latent, None, hold)
            if self.pitch is not None:
                codes = torch.cat([self.pitch, codes], dim=1)
        return codes[0]


def encoded_corpus(
    tokenizer: Tokenizer, source: str, rule: str, every: int = 1
) -> Iterator[tuple[str, torch.Tensor, Encoded]]:
    """(id, audio [T], encoding) of every ``every``-th utterance of ``source`` in id order."""
    for utterance in load_corpus(source)[::every]:
        wav = load_audio(utterance.path, tokenizer.sample_rate)
        yield utterance.id, wav, Encoded(tokenizer, wav, rule)


# --------------------------------------------------------------------------------------------------
def probe(tokenizer: Tokenizer, folder: str, holds: list[float], rule: str) -> dict[str, Any]:
    aligned = read_alignments(folder)
    index = {phone: position for position, phone in enumerate(PHONE_SET)}
    lengths, phones, codes = [], [], {hold: [] for hold in holds}  # type: ignore[var-annotated]
    for utterance in aligned.utterances:
        wav = load_audio(utterance.path, tokenizer.sample_rate)
        encoded = Encoded(tokenizer, wav, rule)
        num_frames = encoded.latent.shape[-1]
        labels = frame_labels(aligned.segments[utterance.id], num_frames, tokenizer.frame_rate)
        lengths.append(num_frames)
        phones.append(np.array([index[label] for label in labels], dtype=np.int64))
        for hold in holds:
            codes[hold].append(encoded.codes(hold).T.numpy())  # [F, P + K]
    folds = np.repeat(utterance_folds(len(lengths), HELDOUT_FOLDS, 0), lengths)  # as `vqaudio probe --seed 0`
    all_phones = np.concatenate(phones)
    result: dict[str, Any] = {"utterances": len(lengths), "frames": int(sum(lengths))}
    for hold in holds:
        stacked = np.concatenate(codes[hold])
        rows = {}
        for codebook in (1, 2):
            scores = code_scores(
                f"codebook {codebook}",
                "codebook",
                stacked[:, tokenizer.pitch_rows + codebook - 1],
                all_phones,
                lengths,
                tokenizer.codebook_size,
                tokenizer.frame_rate,
                folds,
            )
            rows[f"codebook{codebook}"] = scores._asdict()
        result[str(hold)] = rows
    return result


def quality(
    tokenizer: Tokenizer, source: str, every: int, holds: list[float], n_q_values: list[int], rule: str
) -> dict[str, Any]:
    skip = NOT_SCORED | frozenset(unavailable_metrics())
    scores: dict[tuple[float, int], list[list[float]]] = {(h, n): [] for h in holds for n in n_q_values}
    first_rows: dict[float, list[np.ndarray]] = {hold: [] for hold in holds}
    count = 0
    for _, wav, encoded in encoded_corpus(tokenizer, source, rule, every):
        reference = wav.numpy()
        voice = VoiceAnalysis(reference, tokenizer.sample_rate)
        count += 1
        for hold in holds:
            codes = encoded.codes(hold)
            first_rows[hold].append(codes[tokenizer.pitch_rows].numpy())
            for n_q in n_q_values:
                decoded = tokenizer.decode(codes[: tokenizer.pitch_rows + n_q], num_samples=len(wav))
                clip = score_clip(decoded.numpy(), reference, tokenizer.sample_rate, skip, voice)
                scores[(hold, n_q)].append([getattr(clip, name) for name in QUALITY])
    return {
        "utterances": count,
        "run_length": {str(hold): run_length(rows) for hold, rows in first_rows.items()},
        **{
            f"{hold}/{n_q}": dict(zip(QUALITY, np.nanmean(values, axis=0).tolist(), strict=True))
            for (hold, n_q), values in scores.items()
        },
    }


def run_length(rows: list[np.ndarray]) -> float:
    """Mean frames per run of identical codes over utterances' first-codebook rows ([F] each)."""
    return mean_run_length(np.concatenate(rows), [len(row) for row in rows])[0]


def prior_bits(
    tokenizer: Tokenizer,
    prior: Prior,
    sets: dict[str, str],
    train: str,
    train_every: int,
    holds: list[float],
    rule: str,
) -> dict[str, Any]:
    train_encoded = [encoded for _, _, encoded in encoded_corpus(tokenizer, train, rule, train_every)]
    test_encoded = {name: list(encoded_corpus(tokenizer, source, rule)) for name, source in sets.items()}
    result: dict[str, Any] = {"train_utterances": len(train_encoded)}
    for hold in holds:
        train_codes = [encoded.codes(hold).numpy() for encoded in train_encoded]
        counts = count_ngrams(train_codes, tokenizer.codebook_size)
        for name, items in test_encoded.items():
            ids = [utt_id for utt_id, _, _ in items]
            codes = [encoded.codes(hold).numpy() for _, _, encoded in items]
            result[f"{name}/{hold}/run_length"] = run_length([row[tokenizer.pitch_rows] for row in codes])
            report = evaluate_prior(
                prior.model,
                Utterances(ids, codes, None),
                tokenizer.frame_rate,
                counts,
                f"{train} every {train_every}",
            )
            result[f"{name}/{hold}"] = report.to_dict()
    return result


# --------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="Tokenizer (default: the embedded one).")
    parser.add_argument("--holds", default="0,0.5,1,2,4,8", help="Comma-separated margins.")
    parser.add_argument("--probe", action="append", default=[], help="NAME=ALIGNMENT_FOLDER (repeatable).")
    parser.add_argument("--quality", action="append", default=[], help="NAME=CORPUS[@N] (repeatable).")
    parser.add_argument("--n-q", default="5,8", help="Comma-separated codebook counts decoded for --quality.")
    parser.add_argument("--prior", action="append", default=[], help="NAME=CORPUS scored by the prior.")
    parser.add_argument("--prior-model", type=Path, default=None, help="Prior (default: the embedded one).")
    parser.add_argument("--prior-train", default=None, help="Corpus whose held codes give the n-gram counts.")
    parser.add_argument("--prior-train-every", type=int, default=4, help="Every N-th utterance of it.")
    parser.add_argument("--json-out", type=Path, default=None, help="Write every number here.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads.")
    parser.add_argument(
        "--rule", choices=("stack", "first-stage"), default="stack", help="stack: the library's rule."
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    holds = [float(value) for value in args.holds.split(",")]
    tokenizer = Tokenizer.load(args.model)
    results: dict[str, Any] = {
        "model": tokenizer.hash,
        "rule": args.rule,
        "holds": holds,
        "probe": {},
        "quality": {},
        "prior": {},
    }

    def save() -> None:
        if args.json_out is not None:
            args.json_out.write_text(json.dumps(results, indent=1) + "\n")

    for name, folder in named(args.probe, "--probe").items():
        start = time.perf_counter()
        results["probe"][name] = probe(tokenizer, folder, holds, args.rule)
        print(f"probe {name}: {time.perf_counter() - start:.0f} s", flush=True)
        for hold in holds:
            row = results["probe"][name][str(hold)]["codebook1"]
            print(
                f"  hold {hold:g}: run {row['mean_run_length']:.3f}, dedup {row['dedup_rate']:.1f}/s, "
                f"PNMI {row['pnmi']:.3f}, purity {row['phone_purity']:.3f}, "
                f"held-out purity {row['heldout_phone_purity']:.3f}",
                flush=True,
            )
        save()
    n_q_values = [int(value) for value in args.n_q.split(",")]
    for name, spec in named(args.quality, "--quality").items():
        start = time.perf_counter()
        source, _, every = spec.partition("@")
        results["quality"][name] = quality(tokenizer, source, int(every or 1), holds, n_q_values, args.rule)
        print(f"quality {name}: {time.perf_counter() - start:.0f} s", flush=True)
        for hold in holds:
            print(f"  hold {hold:g}: run {results['quality'][name]['run_length'][str(hold)]:.3f}", flush=True)
            for n_q in n_q_values:
                row = results["quality"][name][f"{hold}/{n_q}"]
                print(
                    f"  hold {hold:g} n_q {n_q}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()),
                    flush=True,
                )
        save()
    if args.prior:
        if args.prior_train is None:
            raise SystemExit("error: --prior needs --prior-train (the corpus of the n-gram baselines)")
        start = time.perf_counter()
        prior = Prior.load(args.prior_model)
        sets = named(args.prior, "--prior")
        results["prior"] = prior_bits(
            tokenizer, prior, sets, args.prior_train, args.prior_train_every, holds, args.rule
        )
        print(f"prior: {time.perf_counter() - start:.0f} s", flush=True)
        for name in sets:
            for hold in holds:
                report = results["prior"][f"{name}/{hold}"]
                line = " ".join(
                    f"{row['bits_per_token']:.2f}/{row['unigram_bits_per_token']:.2f}"
                    for row in report["codebooks"]
                )
                print(f"  {name} hold {hold:g}: prior/unigram per row {line}", flush=True)
    save()


if __name__ == "__main__":
    main()
