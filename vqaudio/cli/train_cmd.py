"""``vqaudio train``: recipe + corpus -> a trained tokenizer in OUT (a thin wrapper of vqaudio.training)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import typer

from vqaudio.cli.options import TRAIN_DEVICE_HELP, device_option, parse_device, training_processes

if TYPE_CHECKING:
    from vqaudio.config import Config, TrainConfig
    from vqaudio.data.utterance import Utterance

log = logging.getLogger("vqaudio.train")

TRAIN_HELP = """Train a tokenizer from a recipe on a corpus; resumable, with a progress bar.

    vqaudio train recipes/tiny.yaml --data DIR --out exp/run1

RECIPE is a YAML file overriding the defaults of vqaudio/config.py (unknown keys and wrong types are
errors); `base: other.yaml` (relative to the recipe's folder) starts it from another recipe, merged key by
key. --set section.field=value then changes one field (repeatable, e.g. --set train.batch_size=16).
--data is anything `vqaudio prepare` reads: a manifest, a list file, a LibriSpeech tree or an audio folder.
Without --valid, train.num_validation_files files of --data are held out for validation (a choice seeded
by train.seed, reported in the log); with --valid, at most that many of its files are used.

OUT gets checkpoint.pt (training state), model.safetensors + config.json (the release model, refreshed at
every checkpoint, so `vqaudio tokenize --model OUT` works mid-training), metrics.jsonl and tensorboard/.
Running the same command again resumes from the checkpoint (--no-resume --overwrite starts over).
--init-from MODEL starts a new run from a trained tokenizer's weights (fine-tuning, e.g. adversarial
training of a model trained without it: recipes/rvq_mel_gan.yaml). --phones ALIGNMENTS (a `vqaudio align`
folder of utterances also in --data) gives the phone loss (loss.phone_weight) its labels. Ctrl-C
stops after the current step and writes a checkpoint (exit code 130).

Several processes: torchrun --nproc_per_node N -m vqaudio.cli.main train ... (gloo on CPU, NCCL on CUDA).
"""


def train_command(
    recipe: Path = typer.Argument(..., help="Recipe YAML, e.g. recipes/rvq_waveform.yaml."),
    data: Path = typer.Option(
        ..., "--data", help="Training corpus: manifest, list file, LibriSpeech or folder."
    ),
    out: Path = typer.Option(..., "--out", help="Run folder (checkpoint, release model, logs)."),
    valid: Path | None = typer.Option(
        None, "--valid", help="Held-out corpus (default: train.num_validation_files files split off --data)."
    ),
    overrides: list[str] | None = typer.Option(
        None, "--set", help="Override a recipe field: section.field=value (YAML value); repeatable."
    ),
    max_steps: int | None = typer.Option(None, "--max-steps", min=1, help="Set train.max_steps."),
    init_from: str | None = typer.Option(
        None,
        "--init-from",
        help="Start a new run from a trained tokenizer's weights (fine-tuning; same architecture): a model "
        "folder or file, or 'default' for the embedded model (./default for a folder of that name).",
    ),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="Continue from OUT/checkpoint.pt when there is one."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run already in OUT."),
    threads: int | None = typer.Option(None, "--threads", min=1, help="Torch threads per process."),
    device: str = device_option(TRAIN_DEVICE_HELP),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Skip unreadable, empty, NaN/Inf or implausible audio files (each warned)."
    ),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Show the progress bar (on a terminal)."
    ),
    phones: list[Path] | None = typer.Option(
        None,
        "--phones",
        help="A `vqaudio align` folder labelling utterances of --data with phones, for loss.phone_weight; "
        "repeatable.",
    ),
) -> None:
    from vqaudio.codec.training import train_tokenizer

    config = _config(recipe, overrides or [], max_steps, threads)
    with training_processes(parse_device(device)) as (context, torch_device):
        train_utterances, valid_utterances = _corpora(
            data, valid, config.train, skip_bad=skip_bad, progress=context.is_main
        )
        try:
            result = train_tokenizer(
                config,
                train_utterances,
                valid_utterances,
                out,
                run={
                    "data": str(data),
                    "valid": None if valid is None else str(valid),
                    "recipe": str(recipe),
                    "overrides": list(overrides or []),
                },
                init_from=init_from,
                resume=resume,
                overwrite=overwrite,
                device=torch_device,
                context=context,
                progress=progress,
                skip_bad=skip_bad,
                phone_alignments=phones or [],
            )
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    if context.is_main:
        summary = f"model: {result.out} (step {result.step} of {config.train.max_steps})"
        if result.validation:
            summary += (
                f"; validation mel distance {result.validation['mel_distance']:.3f} at step "
                f"{result.validation['step']}"
            )
        typer.echo(summary)


def _config(recipe: Path, overrides: list[str], max_steps: int | None, threads: int | None) -> Config:
    """The recipe with the --set overrides, --max-steps and --threads applied, checked before any work."""
    from vqaudio.config import Config, ConfigError, load_yaml, parse_override, replace_path
    from vqaudio.data.augment import Augmentation

    config: Config = load_yaml(recipe, Config)
    for text in overrides:
        key, value = parse_override(text)
        try:
            config = replace_path(config, key, value)
        except ConfigError as exc:
            raise ConfigError(f"--set {text}: {exc}") from exc
    if max_steps is not None:
        config = replace_path(config, "train.max_steps", max_steps)
    if threads is not None:
        config = replace_path(config, "train.num_threads", threads)
    config.model.validate()
    Augmentation(config.train.speed_perturbation, config.train.gain_perturbation_db)  # ranges checked now
    return config


def _corpora(
    data: Path, valid: Path | None, train_config: TrainConfig, *, skip_bad: bool, progress: bool
) -> tuple[list[Utterance], list[Utterance]]:
    """The training and validation utterances: train.num_validation_files files held out of --data, or at
    most that many files of --valid (a choice seeded by train.seed)."""
    from vqaudio.codec.validation import hold_out
    from vqaudio.data.corpus import fill_headers, load_corpus

    utterances = fill_headers(load_corpus(data), skip_bad=skip_bad, progress=progress)
    if valid is None:
        train_utterances, valid_utterances = hold_out(
            utterances, train_config.num_validation_files, train_config.seed
        )
        log.info(
            "validation: %d of the %d files of --data held out (train.num_validation_files, chosen with "
            "train.seed=%d); pass --valid for a separate set",
            len(valid_utterances),
            len(utterances),
            train_config.seed,
        )
        return train_utterances, valid_utterances
    train_utterances = utterances
    valid_utterances = fill_headers(load_corpus(valid), skip_bad=skip_bad, progress=progress)
    if len(valid_utterances) > train_config.num_validation_files:
        rng = np.random.default_rng(train_config.seed)
        keep = sorted(rng.permutation(len(valid_utterances))[: train_config.num_validation_files])
        log.info(
            "validation: %d of the %d files of --valid (train.num_validation_files, chosen with "
            "train.seed=%d)",
            len(keep),
            len(valid_utterances),
            train_config.seed,
        )
        valid_utterances = [valid_utterances[index] for index in keep]
    shared = {utt.path.resolve() for utt in train_utterances} & {
        utt.path.resolve() for utt in valid_utterances
    }
    if shared:
        log.warning("%d validation files are also in the training data", len(shared))
    return train_utterances, valid_utterances


def register(app: typer.Typer) -> None:
    """Add this module's commands to the vqaudio app."""
    app.command("train", help=TRAIN_HELP)(train_command)
