"""``vqaudio tokenize``, ``vqaudio resynth`` and ``vqaudio info``: thin wrappers over the library.

vqaudio tokenize wavs/ out.npy --model exp/run1          # folder, file, list file or manifest -> tokens
vqaudio resynth out.npy decoded/ --model exp/run1        # tokens -> one WAV per utterance
vqaudio resynth in.wav out.wav --model exp/run1 --n-q 4  # audio round trip
vqaudio info exp/run1 | out.npy [--json]                 # what a model or token file holds
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from pathlib import Path
from typing import Any

import typer

from vqaudio.cli.options import device_option, hold_option, parse_device

log = logging.getLogger(__name__)

MODEL_HELP = "Tokenizer model folder or .safetensors file (default: the model embedded in vqaudio)."
TOKENIZE_HELP = (
    "Turn a corpus into a token file: OUT.npy ([frames, n_q] codes) + OUT.index.tsv + OUT.meta.json.\n\n"
    "INPUT is a folder (searched recursively for audio), one audio file, a list file (.txt/.lst/.scp) or a "
    "manifest (.tsv). Audio at other sample rates is resampled and multi-channel audio averaged to mono. "
    "Utterances are stored in sorted id order; np.load(OUT, mmap_mode='r') reads the array without vqaudio. "
    "Nothing is written unless the whole run succeeds."
)
RESYNTH_HELP = (
    "Decode tokens back to audio.\n\n"
    "INPUT a token file (.npy): OUTPUT is a folder that gets one WAV per utterance (<utt_id>.wav; ids with "
    "'/' make subfolders). INPUT an audio file: OUTPUT is the round trip audio -> tokens -> audio, with the "
    "same number of samples at the model's sample rate."
)
INFO_HELP = (
    "Describe a tokenizer model (config, rates, bitrate at every n_q, parameters, training), a token file "
    "(utterances, frames, hours, model; with --usage each codebook's used codes and perplexity) or a prior model."
)


def _load_tokenizer(
    model: Path | None, threads: int = 0, device: str = "cpu", hold: float | None = None
) -> Any:
    import torch

    from vqaudio.codec.tokenizer import Tokenizer
    from vqaudio.config import THREADS, check_value

    check_value("--threads", threads, THREADS)
    if threads > 0:
        torch.set_num_threads(threads)
    tokenizer = Tokenizer.load(model, device=parse_device(device))
    if hold is not None:
        tokenizer.first_codebook_hold = hold  # InputError for a model that cannot hold its first codebook
    return tokenizer


def _parse_shard(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match.group(1)) <= int(match.group(2)):
        raise typer.BadParameter(
            f"expected K/N with 1 <= K <= N (e.g. 1/4), got {text!r}", param_hint="--shard"
        )
    return int(match.group(1)), int(match.group(2))


# --------------------------------------------------------------------------------------------------
# tokenize
# --------------------------------------------------------------------------------------------------
def tokenize(
    input: Path = typer.Argument(..., help="Audio folder, audio file, list file or manifest."),
    out: Path = typer.Argument(..., help="Output token file (.npy); .index.tsv and .meta.json go beside it."),
    model: Path | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    n_q: int | None = typer.Option(None, "--n-q", min=1, help="Codebooks to keep (default: all)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Utterances per forward pass."),
    chunk_seconds: float = typer.Option(
        10.0, "--chunk-seconds", min=0.01, help="Long files are encoded in windows of this length."
    ),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Skip unreadable, empty or NaN files (listed in OUT.meta.json)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing token file."),
    shard: str | None = typer.Option(
        None, "--shard", help="K/N: tokenize every N-th utterance, starting with the K-th (1-based)."
    ),
    threads: int = typer.Option(0, "--threads", min=0, help="torch CPU threads (0: torch's default)."),
    device: str = device_option(),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Show a progress bar (on a terminal)."
    ),
    hold: float | None = hold_option(),
) -> None:
    """Corpus -> token file (help: TOKENIZE_HELP)."""
    from vqaudio.codec.corpus_coding import tokenize_corpus
    from vqaudio.io.token_file import check_can_write

    if out.suffix != ".npy":
        raise typer.BadParameter(f"the token file must end in .npy, got {out}", param_hint="OUT")
    shard_pair = _parse_shard(shard)
    check_can_write(out, overwrite)  # before loading anything
    tokenizer = _load_tokenizer(model, threads, device, hold)
    summary = tokenize_corpus(
        tokenizer,
        input,
        out,
        n_q=n_q,
        batch_size=batch_size,
        chunk_seconds=chunk_seconds,
        skip_bad=skip_bad,
        overwrite=overwrite,
        shard=shard_pair,
        progress=progress,
    )
    typer.echo(summary.line())


# --------------------------------------------------------------------------------------------------
# resynth
# --------------------------------------------------------------------------------------------------
def resynth(
    input: Path = typer.Argument(..., help="Token file (.npy) or audio file."),
    output: Path = typer.Argument(..., help="Output folder (for a token file) or audio file (.wav/.flac)."),
    model: Path | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    n_q: int | None = typer.Option(None, "--n-q", min=1, help="Decode only the first n_q codebooks."),
    force: bool = typer.Option(False, "--force", help="Decode tokens made by another model anyway."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an existing output (a folder of WAVs as a whole)."
    ),
    chunk_seconds: float = typer.Option(
        10.0, "--chunk-seconds", min=0.01, help="Long inputs are processed in windows of this length."
    ),
    threads: int = typer.Option(0, "--threads", min=0, help="torch CPU threads (0: torch's default)."),
    device: str = device_option(),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Show a progress bar (on a terminal)."
    ),
    hold: float | None = hold_option(),
) -> None:
    """Tokens or audio -> audio (help: RESYNTH_HELP)."""
    from vqaudio.codec.corpus_coding import resynthesize_tokens
    from vqaudio.errors import AudioError
    from vqaudio.io.atomic import check_output
    from vqaudio.io.audio import AUDIO_EXTENSIONS
    from vqaudio.io.audio_stream import save_audio_blocks
    from vqaudio.io.token_file import token_paths

    suffix = input.suffix.lower()
    if suffix == ".npy" or (not input.exists() and token_paths(input).array_path.exists()):
        if hold is not None:
            raise typer.BadParameter(
                "it sets how audio is encoded, and a token file is decoded as it is: drop --hold",
                param_hint="--hold",
            )
        tokenizer = _load_tokenizer(model, threads, device)
        written = resynthesize_tokens(
            tokenizer,
            input,
            output,
            n_q=n_q,
            force=force,
            overwrite=overwrite,
            chunk_seconds=chunk_seconds,
            progress=progress,
        )
        typer.echo(f"wrote {len(written)} WAV files at {tokenizer.sample_rate} Hz to {output}")
        return
    if suffix not in AUDIO_EXTENSIONS:
        raise typer.BadParameter(
            f"{input}: expected a token file (.npy) or an audio file ({', '.join(AUDIO_EXTENSIONS)})",
            param_hint="INPUT",
        )
    if output.suffix.lower() not in (".wav", ".flac"):
        raise typer.BadParameter(
            f"{output}: the round trip output must be a .wav or .flac file", param_hint="OUTPUT"
        )
    check_output(output, overwrite=overwrite)  # before any work
    tokenizer = _load_tokenizer(model, threads, device, hold)
    # read and written window by window: memory does not grow with the file's length
    try:
        coded = tokenizer.encode_file(input, n_q=n_q, chunk_seconds=chunk_seconds)
    except AudioError as error:
        raise error.without_skip_hint() from error  # one file: no --skip-bad to suggest
    pieces = tokenizer.decode_stream(coded.codes, num_samples=coded.num_samples, chunk_seconds=chunk_seconds)
    save_audio_blocks(output, pieces, tokenizer.sample_rate)
    codes = coded.codes
    used = codes.shape[0] - tokenizer.pitch_rows  # codebooks (a pitch row is counted by bitrate_at)
    kbps = tokenizer.bitrate_at(used) / 1000
    pitch = " + a pitch row" if tokenizer.pitch_rows else ""
    typer.echo(
        f"{input} -> {codes.shape[1]} frames x {used} codebooks{pitch} ({kbps:.2f} kbps) -> {output}"
        f" ({coded.num_samples} samples at {tokenizer.sample_rate} Hz)"
    )


# --------------------------------------------------------------------------------------------------
# info
# --------------------------------------------------------------------------------------------------
def info(
    path: Path | None = typer.Argument(
        None, help="Model folder, .safetensors file, or token file (.npy); default: the embedded model."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
    prior: bool = typer.Option(False, "--prior", help="Describe the embedded prior instead (no PATH)."),
    usage: bool = typer.Option(
        False,
        "--usage",
        help="For a token file: also each codebook's used codes and perplexity (reads it all).",
    ),
) -> None:
    """Describe a model or token file (help: INFO_HELP)."""
    from vqaudio.codec.tokenizer import DEFAULT_MODEL_DIR
    from vqaudio.errors import InputError
    from vqaudio.io.model_file import read_meta
    from vqaudio.io.token_file import token_paths

    if prior:
        if path is not None:
            raise typer.BadParameter("--prior describes the embedded prior; pass PATH or --prior, not both")
        from vqaudio.prior import Prior
        from vqaudio.prior.prior import PRETRAINED_DIR

        Prior.load()  # one clear line when it is missing or damaged
        path = PRETRAINED_DIR
    if path is None:
        path = DEFAULT_MODEL_DIR
    if path.suffix == ".npy" or (not path.exists() and token_paths(path).meta_path.exists()):
        facts, text = _token_file_info(path, usage)
    elif path.is_dir() or path.suffix == ".safetensors":
        meta = read_meta(path)
        kind = meta.get("format")
        if kind == "vqaudio-tokenizer":
            facts, text = _tokenizer_info(path)
        elif kind == "vqaudio-prior":
            from vqaudio.prior import Prior

            Prior.load(path)  # checks the description (config, tokens record) against the weights first
            facts, text = _prior_info(meta)
        else:
            facts = {"kind": str(kind), "meta": meta}
            text = f"{path}: a {kind!r} model file (vqaudio {meta.get('vqaudio_version')})"
    elif not path.exists():
        raise FileNotFoundError(f"{path}: no such model folder, .safetensors file or token file")
    else:
        raise typer.BadParameter(
            f"{path}: expected a model folder, a .safetensors model file or a token file (.npy)",
            param_hint="PATH",
        )
    if usage and facts.get("kind") != "tokens":
        raise InputError(f"{path}: not a token file; --usage counts the codes of a token file (.npy)")
    typer.echo(json.dumps(facts, indent=2, default=str) if as_json else text)


def _tokenizer_info(path: Path) -> tuple[dict[str, Any], str]:
    from vqaudio.io.model_file import one_line

    tokenizer = _load_tokenizer(path)
    config = tokenizer.config.model
    residual = config.quantizer.kind == "residual"
    n_q_values = range(1, tokenizer.num_codebooks + 1) if residual else [tokenizer.num_codebooks]
    bitrates = {n_q: tokenizer.bitrate_at(n_q) for n_q in n_q_values}
    training = tokenizer.training
    facts = {
        "kind": "tokenizer",
        "path": str(tokenizer.path),
        "name": tokenizer.name,
        "hash": tokenizer.hash,
        "sample_rate": tokenizer.sample_rate,
        "frame_rate": tokenizer.frame_rate,
        "hop_length": tokenizer.hop_length,
        "num_codebooks": tokenizer.num_codebooks,
        "codebook_size": tokenizer.codebook_size,
        "quantizer": config.quantizer.kind,
        "bitrate": bitrates,
        "num_parameters": tokenizer.num_parameters,
        "causal": config.causal,
        "encoder": {
            "input": config.encoder.input,
            "channels": config.encoder.channels,
            "strides": config.encoder.strides,
        },
        "decoder": {
            "output": config.decoder.output,
            "channels": config.decoder.channels,
            "strides": config.decoder.strides,
        },
        "latent_dim": config.latent_dim,
        "pitch_rows": tokenizer.pitch_rows,
        "pitch": dataclasses.asdict(config.pitch) if tokenizer.pitch_rows else None,
        "receptive_field_seconds": tokenizer.model.receptive_field / tokenizer.sample_rate,
        "training": training,
        "license": tokenizer.license,
    }
    rates = ", ".join(f"{n_q}: {bps / 1000:.2f}" for n_q, bps in bitrates.items())
    training_text = "".join(f"\n    {key}: {one_line(value)}" for key, value in training.items())
    lines = [
        f"tokenizer {tokenizer.name!r} ({tokenizer.path})",
        f"  {config.encoder.input} encoder (channels {config.encoder.channels}, strides "
        f"{'-'.join(map(str, config.encoder.strides))}) -> {config.latent_dim}-d latent -> "
        f"{config.quantizer.kind} VQ -> {config.decoder.output} decoder{', causal' if config.causal else ''}",
        f"  sample rate {tokenizer.sample_rate} Hz, hop {tokenizer.hop_length} samples, "
        f"frame rate {tokenizer.frame_rate:g} Hz, receptive field {facts['receptive_field_seconds']:.3f} s",
        f"  codebooks {tokenizer.num_codebooks} x {tokenizer.codebook_size} codes "
        f"({math.log2(tokenizer.codebook_size):g} bits each)"
        + (
            f", after a pitch row of {config.pitch.levels} levels ({math.log2(config.pitch.levels):g} bits: F0 "
            f"{config.pitch.min_f0:g}-{config.pitch.max_f0:g} Hz and voicing; codes are [1 + n_q, frames])"
            if tokenizer.pitch_rows
            else ""
        ),
        f"  bitrate in kbps by n_q: {rates}",
        f"  parameters {tokenizer.num_parameters:,}",
        f"  training:{training_text or ' not recorded'}",
        f"  weights sha256 {tokenizer.hash}",
        f"  weights licence: {tokenizer.license or 'not recorded (ask whoever trained the model)'}",
    ]
    return facts, "\n".join(lines)


def _token_file_info(path: Path, usage: bool = False) -> tuple[dict[str, Any], str]:
    from vqaudio.io.token_file import load_tokens

    corpus = load_tokens(path)
    meta = corpus.meta
    n_q, codebook_size = corpus.num_codebooks, corpus.codebook_size
    pitch_rows = int(meta.get("pitch_rows") or 0)  # row 0 is each frame's F0 and voicing when 1
    pitch_levels = int(meta.get("pitch_levels") or 256) if pitch_rows else 0  # 256: files of 0.2.0 lack it
    codebooks = n_q - pitch_rows
    bitrate = (
        codebooks * math.log2(codebook_size) + pitch_rows * math.log2(max(pitch_levels, 1))
    ) * corpus.frame_rate
    seconds = corpus.seconds
    facts = {
        "kind": "tokens",
        "path": str(corpus.paths[0]),
        "num_utterances": len(corpus),
        "num_frames": corpus.num_frames,
        "hours": seconds / 3600,
        "n_q": codebooks,
        "pitch_rows": pitch_rows,
        "codebook_size": codebook_size,
        "bitrate": bitrate,
        "dtype": str(corpus.arrays[0].dtype),
        "meta": meta,
    }
    skipped = meta.get("skipped") or []
    shard = meta.get("shard")
    hold = meta.get("first_codebook_hold") or 0  # absent in files written before the option
    lines = [
        f"token file {corpus.paths[0]}",
        f"  {len(corpus)} utterances, {corpus.num_frames} frames, {seconds / 3600:.3f} h "
        f"({seconds:.1f} s)" + (f", {len(skipped)} files skipped" if skipped else ""),
        f"  {'a pitch row of ' + str(pitch_levels) + ' levels and ' if pitch_rows else ''}"
        f"n_q {codebooks} x {codebook_size} codes ({corpus.arrays[0].dtype}), {corpus.frame_rate:g} frames/s, "
        f"{bitrate / 1000:.2f} kbps, sample rate {corpus.sample_rate} Hz, hop {corpus.hop_length}",
        f"  model {meta.get('model_name')!r} (hash {str(meta.get('model_hash'))[:12]})"
        + (f", first-codebook hold {hold:g}" if hold else ""),
        f"  made {meta.get('created')} by vqaudio {meta.get('vqaudio_version')} from {meta.get('source')}"
        + (f", shard {shard['index']}/{shard['count']}" if isinstance(shard, dict) else ""),
    ]
    if usage:
        import numpy as np

        from vqaudio.evaluation.codebook_stats import code_histograms, usage_from_histograms

        corpus.validate()  # a code outside the recorded codebook size: one line naming utterance and frame
        counts = np.sum([code_histograms(array.T, codebook_size) for array in corpus.arrays], axis=0)
        # the pitch row's statistics over its own levels; the codebooks' over their codes
        pitch_stats = [
            usage_from_histograms(counts[row : row + 1, :pitch_levels])[0] for row in range(pitch_rows)
        ]
        stats = usage_from_histograms(counts[pitch_rows:])
        facts["codebook_usage"] = [stat._asdict() for stat in stats]
        facts["pitch_usage"] = [stat._asdict() for stat in pitch_stats]
        lines.append("  codebook  used codes  perplexity  entropy (bits)")
        labels = ["pitch"] * pitch_rows + [str(index) for index in range(1, len(stats) + 1)]
        lines += [
            f"  {label:>8}  {stat.used_fraction:9.1%}  {stat.perplexity:10.1f}  "
            f"{stat.entropy_bits:5.2f} of {stat.max_entropy_bits:.2f}"
            for label, stat in zip(labels, [*pitch_stats, *stats], strict=True)
        ]
    return facts, "\n".join(lines)


def _prior_info(meta: dict[str, Any]) -> tuple[dict[str, Any], str]:
    try:
        from vqaudio.prior import describe
    except ImportError:
        text = f"token prior {meta.get('name')!r} (vqaudio {meta.get('vqaudio_version')})"
    else:
        text = describe(meta)
    return {"kind": "prior", "description": text, "meta": meta}, text


def register(app: typer.Typer) -> None:
    """Add this module's commands to the vqaudio app."""
    app.command("tokenize", help=TOKENIZE_HELP)(tokenize)
    app.command("resynth", help=RESYNTH_HELP)(resynth)
    app.command("info", help=INFO_HELP)(info)
