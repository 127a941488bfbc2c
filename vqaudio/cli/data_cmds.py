"""``vqaudio prepare`` and ``vqaudio prepare-fillets``: corpora -> manifests (thin wrappers)."""

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

FILLETS_HELP = (
    "Convert the Fish Fillets NG voice clips (Czech + Dutch, ~3 h) to a 16 kHz speaker-held-out corpus "
    "in the LibriSpeech layout.\n\n"
    "Speech = clips with a literal subtitle in their own language, a known speaker (<lang>-<character>) and "
    "at least --min-seconds; effects, music and one-off creatures are skipped and counted. The voices not "
    "in --train-speakers go to dev/test, divided by level. Prints hours per split, language and speaker "
    "and saves them in OUT/summary.json."
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
) -> None:
    """Corpus -> manifests (help: PREPARE_HELP)."""
    from vqaudio.data.prepare import prepare_manifests

    if dev + test >= 1:
        raise typer.BadParameter(f"--dev + --test must be below 1, got {dev} + {test}")
    result = prepare_manifests(sources, manifest, dev=dev, test=test, seed=seed, skip_bad=skip_bad)
    typer.echo(result.table())


def prepare_fillets_command(
    src: Path = typer.Argument(
        ..., help="Extracted fillets-ng-data(-cs,-nl) packages (dpkg -x root) or the fillets-ng folder."
    ),
    out: Path = typer.Argument(
        ..., help="Output folder: train/, dev/, test/ in the LibriSpeech layout + summary.json."
    ),
    languages: str = typer.Option("cs,nl", "--languages", help="Comma-separated voice languages."),
    train_speakers: str = typer.Option(
        "cs-m,nl-v",
        "--train-speakers",
        help="Comma-separated <lang>-<character> voices to train on; all others are held out.",
    ),
    min_seconds: float = typer.Option(0.5, "--min-seconds", min=0.0, help="Skip shorter clips."),
    sample_rate: int = typer.Option(16000, "--sample-rate", min=1000, help="Output sample rate."),
    jobs: int = typer.Option(0, "--jobs", "-j", min=0, help="Conversion processes (0: one per CPU)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an OUT prepared with other settings."),
) -> None:
    """Fillets-ng clips -> LibriSpeech-layout corpus (help: FILLETS_HELP)."""
    from vqaudio.data.fillets import prepare_fillets

    summary = prepare_fillets(
        src,
        out,
        languages=_split_list(languages),
        train_speakers=_split_list(train_speakers),
        sample_rate=sample_rate,
        min_seconds=min_seconds,
        jobs=jobs or None,
        overwrite=overwrite,
    )
    typer.echo(summary.table())
    typer.echo(f"summary: {out / 'summary.json'}")


def _split_list(value: str) -> list[str]:
    items = [item.strip() for item in value.split(",") if item.strip()]
    if not items:
        raise typer.BadParameter(f"expected a comma-separated list, got {value!r}")
    return items


def register(app: typer.Typer) -> None:
    """Add this module's commands to the vqaudio app."""
    app.command("prepare", help=PREPARE_HELP)(prepare)
    app.command("prepare-fillets", help=FILLETS_HELP)(prepare_fillets_command)
