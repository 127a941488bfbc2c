"""``vqaudio align`` and ``vqaudio probe``: phone alignments of transcribed speech, and how phonetic the tokens are."""

from __future__ import annotations

from pathlib import Path

import typer

from vqaudio.cli.options import hold_option

ALIGN_HELP = (
    "Phone alignments of transcribed English speech, offline: pocketsphinx's forced aligner (its wheel ships "
    "a US English acoustic model, the CMU dictionary and its phone set; the 'voice' extra).\n\n"
    "DATA is a manifest with a text column or a LibriSpeech tree. Utterances without a transcript are left "
    "out (listed); an utterance whose words are not in the dictionary, or that cannot be aligned or read, stops "
    "the run unless --skip-bad, which leaves it out with a warning and lists it in OUT/meta.json.\n\n"
    "OUT is a folder: manifest.tsv (the aligned utterances), phones.tsv (utt_id, start, end, phone, word: "
    "ARPAbet phones without stress, SIL for silence, times in seconds covering each utterance), frames.tsv "
    "(utt_id, num_frames, labels: the phone covering most of each frame at --frame-rate) and meta.json. "
    "It is written atomically; an existing OUT needs --overwrite."
)

PROBE_HELP = (
    "How phonetic are a tokenizer's codes? On phone-aligned speech (a folder written by `vqaudio align`), for "
    "each codebook (and the pitch row, apart): PNMI (mutual information between phone and code over the phone "
    "entropy), phone purity (also held out: the code's phone learnt on other utterances), code purity, mean "
    "run length (frames per run of identical codes) and the deduplicated token rate; the same for k-means "
    "units of log-mel frames (fit on these frames; with --kmeans-fit DATA also fit on other speech) and for "
    "random codes with the same K, on the same frames. Linear probes "
    "(logistic regression) from the encoder latent, the quantized latent and log-mel frames to the phone, "
    "trained and tested on different utterances.\n\n"
    "OUT gets probe.json (every number), probe.md (tables) and probe.png, atomically; an existing OUT needs "
    "--overwrite."
)


def align_command(
    data: Path = typer.Argument(..., help="Manifest with a text column, or a LibriSpeech tree."),
    out: Path = typer.Argument(..., help="Alignment folder to create."),
    frame_rate: float = typer.Option(
        50.0, "--frame-rate", min=1.0, help="Frames per second of frames.tsv (the tokenizer's: 50)."
    ),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Leave out (and list) utterances that cannot be aligned or read."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Transcribed speech -> phone alignments (help: ALIGN_HELP)."""
    from vqaudio.evaluation.phone_alignment import align_corpus
    from vqaudio.optional import require

    require("pocketsphinx", "voice", "vqaudio align")  # before any work
    summary = align_corpus(
        data, out, frame_rate=frame_rate, skip_bad=skip_bad, overwrite=overwrite, progress=progress
    )
    left_out = []
    if summary.untranscribed:
        left_out.append(f"{len(summary.untranscribed)} without a transcript")
    if summary.skipped:
        left_out.append(f"{len(summary.skipped)} skipped (--skip-bad; reasons in meta.json)")
    typer.echo(
        f"aligned {summary.aligned} utterances ({summary.seconds / 60:.1f} min) into {summary.out}"
        + (f"; left out: {', '.join(left_out)}" if left_out else "")
    )


def probe_command(
    alignments: Path = typer.Argument(..., help="Alignment folder written by `vqaudio align`."),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model folder or .safetensors file (default: the embedded model)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder to create."),
    kmeans_k: str | None = typer.Option(
        None,
        "--kmeans-k",
        help="Comma-separated K of the k-means and random baselines (default: the codebook size), e.g. 1024,100.",
    ),
    kmeans_iterations: int = typer.Option(
        100, "--kmeans-iterations", min=1, help="At most this many Lloyd iterations."
    ),
    kmeans_fit: Path | None = typer.Option(
        None,
        "--kmeans-fit",
        help="Other speech (manifest, audio folder or LibriSpeech tree; e.g. the training data) to fit a second "
        "k-means baseline on, scored on the probed frames: units learnt elsewhere, as the codebooks are.",
    ),
    kmeans_fit_frames: int = typer.Option(
        200_000, "--kmeans-fit-frames", min=1, help="At most this many frames of --kmeans-fit speech."
    ),
    test_fraction: float = typer.Option(
        0.2, "--test-fraction", min=0.01, max=0.99, help="Share of utterances held out for the linear probes."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of k-means, the random codes and the utterance split."),
    threads: int = typer.Option(0, "--threads", min=0, help="Torch threads (0: torch's default)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
    hold: float | None = hold_option(),
) -> None:
    """Tokenizer on phone-aligned speech -> probe report folder OUT (help: PROBE_HELP)."""
    from vqaudio.optional import require

    require("matplotlib", "plots", "vqaudio probe (its plot)")  # before any work
    from vqaudio.codec.tokenizer import Tokenizer
    from vqaudio.evaluation.phone_alignment import read_alignments
    from vqaudio.evaluation.phonetic_probe import ProbeOptions
    from vqaudio.evaluation.probe_report import probe_markdown, run_probe_report

    k_values = parse_kmeans_k(kmeans_k)
    if out.exists() and not overwrite:  # before loading anything
        raise typer.BadParameter(
            f"{out} already exists; pass --overwrite or choose another --out", param_hint="--out"
        )
    read_alignments(alignments)  # a wrong folder fails here, before the model loads
    if kmeans_fit is not None:
        from vqaudio.data.corpus import load_corpus

        load_corpus(kmeans_fit)  # and so does a wrong --kmeans-fit
    tokenizer = Tokenizer.load(model)
    if hold is not None:
        tokenizer.first_codebook_hold = hold
    options = ProbeOptions(
        kmeans_k=k_values,
        kmeans_iterations=kmeans_iterations,
        kmeans_fit=None if kmeans_fit is None else str(kmeans_fit),
        kmeans_fit_frames=kmeans_fit_frames,
        test_fraction=test_fraction,
        seed=seed,
        threads=threads,
        progress=progress,
    )
    result = run_probe_report(alignments, tokenizer, out, options, overwrite=overwrite)
    typer.echo("\n".join(probe_markdown(result, plot=None)[4:]).rstrip())
    typer.echo(f"report: {out / 'probe.md'}")


def parse_kmeans_k(text: str | None) -> tuple[int, ...] | None:
    """ "1024,100" -> (1024, 100); None stays None (the codebook size)."""
    if text is None:
        return None
    try:
        values = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        values = ()
    if not values or any(value < 1 for value in values):
        raise typer.BadParameter(f"expected comma-separated positive integers such as 1024,100, got {text!r}")
    return values


def register(app: typer.Typer) -> None:
    """Add this module's commands to the vqaudio app."""
    app.command("align", help=ALIGN_HELP)(align_command)
    app.command("probe", help=PROBE_HELP)(probe_command)
