"""``vqaudio prior train | eval | sample``: the WaveNet token prior (thin wrappers over ``vqaudio.prior``)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import typer

from vqaudio.cli.options import TRAIN_DEVICE_HELP, device_option, parse_device, training_processes
from vqaudio.errors import InputError

log = logging.getLogger(__name__)

prior_app = typer.Typer(
    name="prior",
    help="WaveNet prior over token sequences: train it, measure bits per token, sample speech from it.",
    no_args_is_help=True,
    rich_markup_mode=None,  # help text as written: "[n_q, frames]" is not markup
)

TRAIN_HELP = (
    "Train a WaveNet prior on a token file (from `vqaudio tokenize`).\n\n"
    "Random fixed-length windows of frames, AdamW with warm-up + cosine decay, validation in bits per token "
    "(on --valid, else on utterances held out of TOKENS), checkpoints in OUT that a rerun of the same "
    "command resumes exactly, metrics.jsonl and TensorBoard logs (OUT/tensorboard). OUT also receives the "
    "release model (model.safetensors + config.json), naming the tokenizer (hash) the tokens came from.\n\n"
    "Several processes: torchrun --nproc_per_node N -m vqaudio.cli.main prior train ... (gloo on the CPU, "
    "NCCL on CUDA); train.batch_size is per process."
)
EVAL_HELP = (
    "Bits per token, per frame and per second of audio of the prior (default: the embedded one) on (held-out) "
    "token files, beside per-codebook unigram and bigram baselines: cross-entropies of n-gram models estimated "
    "on the training tokens (counts stored with a trained prior, or --train). A prior without counts (the "
    "embedded one) is scored without baselines unless --train is given; the output says which."
)
SAMPLE_HELP = (
    "Sample token sequences from the prior and decode them to WAVs with the tokenizer the prior names "
    "(found by hash: the recorded path, then the embedded default; --tokenizer overrides).\n\n"
    "With --prompt, each sample continues the prompt audio's tokens (kept unchanged; the WAV holds prompt + "
    "continuation). Writes the codes as one ordinary token file, OUT/samples.npy + samples.index.tsv + "
    "samples.meta.json (utterances sample_000, sample_001, ...: `vqaudio resynth`, `info`, `export` and "
    "`prior eval` read it), each sample's audio as OUT/sample_NNN.wav, and the settings in OUT/samples.json. "
    "An existing OUT that is not empty is replaced as a whole, and only with --overwrite."
)
INFO_HELP = (
    "Describe a prior model (default: the embedded one): architecture, receptive field, the tokenizer it "
    "models, the training record. `vqaudio info PATH` says the same about a prior folder."
)
PRIOR_HELP = "Prior model folder or .safetensors file (default: the prior embedded in vqaudio)."


def _load_token_set(path: Path) -> Any:
    from vqaudio.io.token_file import load_tokens
    from vqaudio.prior.training import TokenSet

    corpus = load_tokens(path)
    return TokenSet(corpus, corpus.meta, str(path))


@prior_app.command("train", help=TRAIN_HELP)
def train_command(
    tokens: Path = typer.Argument(..., help="Training token file (out.npy from vqaudio tokenize)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints, logs and the release prior."),
    config: Path | None = typer.Option(
        None,
        "--config",
        "-c",
        help="Recipe YAML (e.g. recipes/prior_small.yaml); default: built-in defaults.",
    ),
    valid: Path | None = typer.Option(None, "--valid", help="Held-out token file for validation."),
    manifest: Path | None = typer.Option(
        None, "--manifest", help="Manifest TSV with a speaker column: condition the prior on the speaker."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a recipe field, e.g. --set train.max_steps=200 (repeatable)."
    ),
    steps: int | None = typer.Option(
        None, "--until-step", min=1, help="Stop after this many updates (resumable), before train.max_steps."
    ),
    tokenizer_path: Path | None = typer.Option(
        None,
        "--tokenizer",
        help="The tokenizer TOKENS came from, recorded for `prior sample` (hash checked).",
    ),
    force: bool = typer.Option(
        False, "--force", help="Accept tokens of different tokenizers for train/valid."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Start over even if OUT holds a run."),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Show a progress bar (on a terminal)."
    ),
    threads: int | None = typer.Option(
        None, "--threads", min=0, help="Torch CPU threads (sets train.num_threads; 0: torch's default)."
    ),
    device: str = device_option(TRAIN_DEVICE_HELP),
) -> None:
    from vqaudio.config import PriorRunConfig, load_yaml, parse_override, replace_path
    from vqaudio.prior.data import read_speakers
    from vqaudio.prior.training import train_prior

    run_config = load_yaml(config, PriorRunConfig) if config is not None else PriorRunConfig()
    for text in overrides:
        key, value = parse_override(text)
        run_config = replace_path(run_config, key, value)
    if threads is not None:
        run_config = replace_path(run_config, "train.num_threads", threads)
    train_set = _load_token_set(tokens)
    if tokenizer_path is not None:
        from vqaudio.codec.tokenizer import Tokenizer

        tokenizer_hash = Tokenizer.load(tokenizer_path).hash
        if tokenizer_hash != train_set.meta.get("model_hash"):
            raise InputError(
                f"--tokenizer {tokenizer_path} has hash {tokenizer_hash[:12]}, but {tokens} was made by "
                f"{str(train_set.meta.get('model_hash'))[:12]}; pass the tokenizer that wrote the tokens"
            )
    with training_processes(parse_device(device)) as (context, torch_device):
        try:
            result = train_prior(
                train_set,
                run_config,
                out,
                valid=_load_token_set(valid) if valid is not None else None,
                speaker_of=read_speakers(manifest) if manifest is not None else None,
                force=force,
                overwrite=overwrite,
                progress=progress,
                until_step=steps,
                tokenizer_path=str(tokenizer_path.resolve()) if tokenizer_path is not None else None,
                recipe=str(config) if config is not None else None,
                overrides=overrides,
                device=torch_device,
                context=context,
            )
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    if not context.is_main:
        return
    valid_text = (
        ""
        if result.valid_bits_per_token is None
        else f", validation {result.valid_bits_per_token:.3f} bits/token"
    )
    typer.echo(f"{result.out}: prior after {result.step} steps{valid_text}")


@prior_app.command("eval", help=EVAL_HELP)
def eval_command(
    tokens: Path = typer.Argument(..., help="Token file to score (held-out tokens)."),
    prior_path: Path | None = typer.Option(None, "--prior", help=PRIOR_HELP),
    train: Path | None = typer.Option(
        None,
        "--train",
        help="Training token file for the n-gram baselines (default: counts stored with the prior).",
    ),
    manifest: Path | None = typer.Option(
        None, "--manifest", help="Speakers, for a speaker-conditioned prior."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    json_out: Path | None = typer.Option(
        None,
        "--json-out",
        help="Also write the JSON object to this file (atomically); the table still prints.",
    ),
    force: bool = typer.Option(False, "--force", help="Score tokens of another tokenizer anyway."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --json-out file."),
    device: str = device_option(),
) -> None:
    from vqaudio.io.atomic import atomic_path, check_output
    from vqaudio.prior import Prior
    from vqaudio.prior.data import read_speakers, validated_utterances, with_conditions
    from vqaudio.prior.evaluation import evaluate_prior, format_report
    from vqaudio.prior.ngram import COUNTS_FILE, count_ngrams, load_counts

    if json_out is not None:
        check_output(json_out, overwrite=overwrite)  # before any work
    prior = Prior.load(prior_path).to(parse_device(device))
    token_set = _load_token_set(tokens)
    prior.check_tokens(token_set.meta, force=force, where=str(tokens))
    utterances = validated_utterances(token_set.corpus, prior.num_codebooks, prior.codebook_size, str(tokens))
    if prior.speakers:
        if manifest is None:
            raise InputError(
                "this prior is speaker-conditioned; pass --manifest with the utterances' speakers"
            )
        index = {name: i for i, name in enumerate(prior.speakers)}
        speaker_of = read_speakers(manifest)
        unknown = sorted({speaker_of[u] for u in utterances.ids if u in speaker_of} - set(index))
        if unknown:
            raise InputError(
                f"speakers unknown to the prior: {unknown[:5]}; it knows {list(prior.speakers)[:10]}"
            )
        utterances = with_conditions(utterances, {u: index[s] for u, s in speaker_of.items() if s in index})
    counts, source = None, ""
    if train is not None:
        train_set = _load_token_set(train)
        prior.check_tokens(train_set.meta, force=force, where=str(train))
        train_utterances = validated_utterances(
            train_set.corpus, prior.num_codebooks, prior.codebook_size, str(train)
        )
        counts, source = count_ngrams(train_utterances.codes, prior.codebook_size), f"--train {train}"
    elif prior.path is not None and (prior.path.parent / COUNTS_FILE).is_file():
        counts, source = load_counts(prior.path.parent / COUNTS_FILE), "counts stored with the prior"
    report = evaluate_prior(prior.model, utterances, prior.frame_rate, counts, source)
    label = str(prior_path) if prior_path is not None else "(embedded default)"
    text = json.dumps({"tokens": str(tokens), "prior": label, **report.to_dict()})
    if json_out is not None:
        with atomic_path(json_out) as tmp:
            tmp.write_text(text + "\n")
    typer.echo(text if as_json else format_report(report, f"prior {label} on {tokens}"))


@prior_app.command("sample", help=SAMPLE_HELP)
def sample_command(
    out: Path = typer.Argument(..., help="Output folder for tokens and WAVs."),
    prior_path: Path | None = typer.Option(None, "--prior", help=PRIOR_HELP),
    seconds: float = typer.Option(5.0, "--seconds", "-s", help="Seconds to generate (after the prompt)."),
    num_samples: int = typer.Option(1, "-n", "--num-samples", min=1, help="Number of samples."),
    temperature: float = typer.Option(
        1.0, "--temperature", "-t", min=0.0, help="Softmax temperature (0: greedy)."
    ),
    top_k: int | None = typer.Option(
        None, "--top-k", min=1, help="Sample among the k most likely codes only."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Random seed (same seed, same tokens)."),
    prompt: Path | None = typer.Option(
        None, "--prompt", help="Speech file to continue (any rate: resampled)."
    ),
    prompt_seconds: float | None = typer.Option(
        None, "--prompt-seconds", help="Use only the first seconds of --prompt."
    ),
    speaker: str | None = typer.Option(None, "--speaker", help="Speaker, for a speaker-conditioned prior."),
    tokenizer_path: Path | None = typer.Option(
        None, "--tokenizer", help="Tokenizer to decode with (default: found by the prior's tokenizer hash)."
    ),
    tokens_only: bool = typer.Option(
        False, "--tokens-only", help="Write tokens, no audio (no tokenizer needed)."
    ),
    naive: bool = typer.Option(
        False, "--naive", help="Rerun the network over the receptive field per frame (slow; same tokens)."
    ),
    force: bool = typer.Option(False, "--force", help="Decode with a --tokenizer whose hash differs."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier run's OUT folder (as a whole)."
    ),
    device: str = device_option(),
) -> None:
    from vqaudio.prior import Prior
    from vqaudio.prior.audio_io import (
        check_samples_folder,
        encode_prompt,
        find_tokenizer,
        frames_for,
        speaker_list,
        write_samples,
    )

    check_samples_folder(out, overwrite)  # before any work
    torch_device = parse_device(device)
    prior = Prior.load(prior_path).to(torch_device)
    num_frames = frames_for(seconds, prior.frame_rate)
    conditions = speaker_list(prior, speaker, num_samples)
    tokenizer = None if tokens_only else find_tokenizer(prior, tokenizer_path, force, device=torch_device)
    prompt_codes = None
    if prompt is not None:
        if tokenizer is None:
            raise typer.BadParameter("--prompt needs a tokenizer to encode it; drop --tokens-only")
        prompt_codes = encode_prompt(tokenizer, prompt, prior, prompt_seconds)
    elif prompt_seconds is not None:
        raise typer.BadParameter("--prompt-seconds needs --prompt")
    tic = time.perf_counter()
    codes = prior.generate(
        num_frames,
        prompt=prompt_codes,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
        condition=conditions,
        fast=not naive,
        num_samples=num_samples,
    )
    elapsed = time.perf_counter() - tic
    settings = {
        "seconds": seconds,
        "num_frames": num_frames,
        "temperature": temperature,
        "top_k": top_k,
        "seed": seed,
        "prompt": str(prompt) if prompt else None,
        "prompt_frames": 0 if prompt_codes is None else int(prompt_codes.shape[1]),
        "speaker": speaker,
        "fast": not naive,
    }
    files = write_samples(out, codes, prior, tokenizer, settings, overwrite=overwrite)
    log.info(
        "%d x %d frames in %.1f s (%.0f frames/s)",
        num_samples,
        num_frames,
        elapsed,
        num_samples * num_frames / max(elapsed, 1e-9),
    )
    for index, utt_id in enumerate(files.ids):
        audio = f"  {files.audio[index]}" if files.audio else ""
        typer.echo(f"{utt_id}{audio}")
    typer.echo(f"tokens: {files.tokens}")


@prior_app.command("info", help=INFO_HELP)
def info_command(
    path: Path | None = typer.Argument(None, help=PRIOR_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
) -> None:
    from vqaudio.io.model_file import read_meta
    from vqaudio.prior import Prior, describe

    prior = Prior.load(path)  # checks the files (hash, strict load), not only their description
    assert prior.path is not None
    meta = read_meta(prior.path)
    description = describe(meta)
    facts = {"kind": "prior", "path": str(prior.path), "description": description, "meta": meta}
    typer.echo(json.dumps(facts, indent=2, default=str) if as_json else f"{prior.path}\n{description}")


def register(app: typer.Typer) -> None:
    """Add the ``prior`` command group to the vqaudio app."""
    app.add_typer(prior_app, name="prior")
