"""``vqaudio demo``: the main job on the embedded model, end to end, in one command.

Tokenizes the example clips shipped in the package (``vqaudio/examples/``) to a token file and resynthesizes them, printing the bitrate,
the token count and where the WAVs are.
"""

from __future__ import annotations

from pathlib import Path

import typer

from vqaudio.cli.options import device_option, parse_device

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"  # package data: works from a wheel


def demo_command(
    input: Path | None = typer.Argument(
        None,
        help="Audio to tokenize: folder, file, list or manifest (default: the five clips shipped in vqaudio/examples/).",
    ),
    out: Path = typer.Option(
        Path("demo_out"), "--out", help="Folder for tokens.npy and the resynthesized WAVs."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Model folder or file (default: the embedded model)."
    ),
    n_q: int | None = typer.Option(None, "--n-q", min=1, help="Codebooks to use (residual models)."),
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Replace an earlier demo's --out folder (as a whole)."
    ),
    device: str = device_option(),
) -> None:
    """Tokenize the example clips with the embedded model and resynthesize them."""
    from vqaudio.codec.corpus_coding import resynthesize_tokens, tokenize_corpus
    from vqaudio.codec.tokenizer import Tokenizer
    from vqaudio.io.atomic import atomic_folder, check_output
    from vqaudio.io.token_file import token_paths

    source = input if input is not None else EXAMPLES
    if not source.exists():
        raise FileNotFoundError(
            f"{source}: no example clips here; pass a folder of audio files to `vqaudio demo`"
        )
    check_output(out, overwrite=overwrite, folder=True, replaceable=_demo_file, what="`vqaudio demo`")
    tok = Tokenizer.load(model, device=parse_device(device))
    data = (tok.training or {}).get("data", "unknown data")
    trained = f"{data.get('hours', 0):.2f} h of {data.get('source')}" if isinstance(data, dict) else str(data)
    typer.echo(f"model: {tok.name} ({tok.num_parameters / 1e6:.1f} M parameters, trained on {trained})")
    typer.echo(
        f"       {tok.sample_rate} Hz, {tok.frame_rate:g} frames/s, {tok.num_codebooks} codebooks of "
        f"{tok.codebook_size}: {tok.bitrate_at(n_q or tok.num_codebooks) / 1000:.2f} kbps"
    )
    # one output, replaced as a whole: no WAV of an earlier demo stays beside the new ones
    with atomic_folder(out, overwrite=overwrite) as staging:
        summary = tokenize_corpus(tok, source, staging / "tokens.npy", n_q=n_q)
        wavs = resynthesize_tokens(tok, staging / "tokens.npy", staging / "resynth")
    typer.echo(summary._replace(paths=token_paths(out / "tokens.npy")).line())
    typer.echo(
        f"{summary.num_frames * summary.n_q} tokens ({summary.num_frames} frames x {summary.n_q} codebooks) "
        f"for {summary.seconds:.1f} s of audio at {summary.bitrate / 1000:.2f} kbps"
    )
    typer.echo(f"resynthesized {len(wavs)} WAVs in {out / 'resynth'}/ (originals: {source})")


def _demo_file(relative: Path) -> bool:
    """What a demo writes: tokens.npy/.index.tsv/.meta.json and resynth/**.wav."""
    from vqaudio.io.token_file import token_paths

    if relative.parts[0] == "resynth":
        return relative.suffix.lower() == ".wav"
    return relative in token_paths(Path("tokens.npy"))


def register(app: typer.Typer) -> None:
    """Add ``vqaudio demo`` to the app."""
    app.command("demo")(demo_command)
