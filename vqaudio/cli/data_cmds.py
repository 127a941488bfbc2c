"""``vqaudio prepare``: corpora -> manifests (a thin wrapper)."""

from __future__ import annotations

from pathlib import Path

import typer

PREPARE_HELP = (
    "Write a manifest TSV (path, samples, sample_rate, speaker, text) for a corpus, and held-out splits.\n\n"
    "SOURCE is a LibriSpeech-layout tree (the root or one split; speakers and transcripts are read from it), "
    "any folder of audio files (recursive), a list file (.txt/.lst/.scp) or a manifest; several SOURCEs "
    "are merged into one corpus.\n\n"
    "MANIFEST gets every utterance. With --dev/--test > 0 its siblings <stem>.train.tsv, <stem>.dev.tsv "
    "and <stem>.test.tsv get a split in which dev and test hold out WHOLE SPEAKERS, so evaluation measures "
    "voices the codec never trained on. --dev/--test are fractions of the total duration; speakers are "
    "taken in a seeded random order until the fraction is reached. Files without a speaker (plain folders) "
    "are held out one by one.\n\n"
    "Use --dev 0 --test 0 for a corpus that is already one split (e.g. LibriSpeech dev-clean)."
)


def prepare(
    sources: list[Path] = typer.Argument(
        ..., help="LibriSpeech tree, audio folder, list file or manifest (one or more)."
    ),
    manifest: Path = typer.Argument(..., help="Output manifest (.tsv)."),
    dev: float = typer.Option(
        0.05, "--dev", min=0.0, max=0.95, help="Fraction held out for dev (whole speakers)."
    ),
    test: float = typer.Option(
        0.05, "--test", min=0.0, max=0.95, help="Fraction held out for test (whole speakers)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the speaker order for the split."),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Skip unreadable/empty files (listed) instead of failing."
    ),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing MANIFEST and its .train/.dev/.test siblings."
    ),
) -> None:
    """Corpus -> manifests (help: PREPARE_HELP)."""
    from vqaudio.data.prepare import prepare_manifests

    if dev + test >= 1:
        raise typer.BadParameter(f"--dev + --test must be below 1, got {dev} + {test}")
    result = prepare_manifests(
        sources, manifest, dev=dev, test=test, seed=seed, skip_bad=skip_bad, overwrite=overwrite
    )
    typer.echo(result.table())


def register(app: typer.Typer) -> None:
    """Add this module's commands to the vqaudio app."""
    app.command("prepare", help=PREPARE_HELP)(prepare)
