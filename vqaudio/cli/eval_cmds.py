"""``vqaudio eval``: reconstruction, voice, bitrate and codebook usage of a tokenizer against Opus and Codec2."""

from __future__ import annotations

from pathlib import Path

import typer

from vqaudio.cli.options import device_option, hold_option, parse_device

EVAL_HELP = (
    "Evaluate a tokenizer on a corpus and write a report folder: report.json (every number), report.md "
    "(tables), report.html (the tables, the plots and audio players with narrow-band spectrograms of the "
    "example clips, in one self-contained page), quality-vs-bitrate and codebook-usage plots, spectrograms "
    "and WAVs of a few clips: the median, worst and best by PESQ-WB of the model at its highest n_q.\n\n"
    "DATA is a manifest .tsv, a LibriSpeech-layout tree or split, an audio folder, a list file or one audio "
    "file. Whole utterances are scored at every bitrate the model serves (each n_q of a residual VQ trained "
    "with quantizer dropout; all codebooks otherwise): SI-SDR, log-mel L1, multi-resolution STFT distance, "
    "PESQ-WB and STOI (these two need the pesq and pystoi packages: the 'metrics' extra), kbps, tokens/s, "
    "encode and decode real-time factors, and per-codebook usage, entropy and perplexity.\n\n"
    "The voice (the 'voice' extra: praat-parselmouth, speechmos, onnxruntime, pocketsphinx): Praat's voicing "
    "recall and precision, median F0 error and gross F0 errors, HNR drop; DNSMOS P.835 SIG/BAK/OVRL, also of "
    "the original; with --wer (or --language en) the word error rate of pocketsphinx, against the corpus "
    "transcripts or else against what it hears in the original (English only, about real time per "
    "system). A missing package leaves its metrics out, with a note in the report.\n\n"
    "Baselines run on the same clips when their tools are installed: Codec2 3200/2400/1600/700C (Debian "
    "package codec2) and Opus 6/8/12 kbps (opus-tools); their output is aligned to the reference first.\n\n"
    "With --probe ALIGNMENTS (a folder from `vqaudio align`) the report also holds the phonetic probe of the "
    "model on those utterances (`vqaudio probe`).\n\n"
    "OUT is written atomically (a temporary folder renamed at the end); an existing OUT needs --overwrite."
)


def eval_command(
    data: Path = typer.Argument(
        ..., help="Manifest, LibriSpeech tree, audio folder, list file or audio file."
    ),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model folder or .safetensors file (default: the embedded model)."
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Report folder to create."),
    n_q: str | None = typer.Option(
        None, "--n-q", help="Comma-separated codebook counts, e.g. 1,2,4,8 (default: every served bitrate)."
    ),
    max_utterances: int | None = typer.Option(
        None, "--max-utterances", min=1, help="Evaluate a seeded random subset of this many utterances."
    ),
    max_seconds: float | None = typer.Option(
        None,
        "--max-seconds",
        min=0.0,
        help="Stop adding utterances after this much audio (whole utterances).",
    ),
    baselines: bool = typer.Option(
        True, "--baselines/--no-baselines", help="Run the Codec2 and Opus baselines."
    ),
    examples: int = typer.Option(
        3,
        "--examples",
        min=0,
        help="Example clips (WAVs, spectrograms, players in report.html): the median, worst and best by "
        "PESQ-WB of the highest n_q, then quartiles.",
    ),
    threads: int = typer.Option(
        0, "--threads", min=0, help="Torch threads (0: torch's default); RTFs use it."
    ),
    device: str = device_option(),
    seed: int = typer.Option(
        0, "--seed", help="Seed of the subset chosen by --max-utterances/--max-seconds."
    ),
    skip_bad: bool = typer.Option(
        False, "--skip-bad", help="Skip unreadable files (listed in the report) instead of failing."
    ),
    voice: bool = typer.Option(
        True, "--voice/--no-voice", help="Praat voicing, F0 and HNR, and DNSMOS (the 'voice' extra)."
    ),
    wer: bool = typer.Option(
        False, "--wer", help="Word error rates of pocketsphinx (English speech only; slow)."
    ),
    language: str | None = typer.Option(
        None, "--language", help="Language of DATA, when known; 'en' turns on --wer."
    ),
    probe: Path | None = typer.Option(
        None,
        "--probe",
        help="An alignment folder (`vqaudio align`): add the phonetic probe of the model on its utterances "
        "(see `vqaudio probe --help`).",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing OUT."),
    progress: bool = typer.Option(
        True, "--progress/--no-progress", help="Show a progress bar (on a terminal)."
    ),
    hold: float | None = hold_option(),
) -> None:
    """Tokenizer + baselines on DATA -> report folder OUT (help: EVAL_HELP)."""
    from vqaudio.optional import require

    require("matplotlib", "plots", "vqaudio eval (its plots)")  # before any work
    from vqaudio.codec.tokenizer import Tokenizer
    from vqaudio.evaluation.evaluate import EvalOptions, check_n_q, is_english, run_evaluation
    from vqaudio.evaluation.html_report import REPORT_HTML
    from vqaudio.evaluation.report import markdown_summary

    requested = _parse_n_q(n_q)
    if out.exists() and not overwrite:  # before loading anything: fail in a second, not after the run
        raise FileExistsError(f"{out} already exists; pass --overwrite or choose another --out")
    if max_seconds is not None and max_seconds <= 0:
        raise typer.BadParameter(f"must be positive, got {max_seconds}", param_hint="--max-seconds")
    if wer and language is not None and not is_english(language):
        raise typer.BadParameter(
            f"--wer needs English speech (pocketsphinx ships a US English model), got --language {language}",
            param_hint="--wer",
        )
    if probe is not None:
        from vqaudio.evaluation.phone_alignment import read_alignments

        read_alignments(probe)  # a wrong folder fails now, not after the evaluation
    tokenizer = Tokenizer.load(model, device=parse_device(device))
    if hold is not None:
        tokenizer.first_codebook_hold = hold
    check_n_q(tokenizer, requested)  # InputError (exit 1): an n_q this model does not serve
    options = EvalOptions(
        n_q=requested,
        max_utterances=max_utterances,
        max_seconds=max_seconds,
        baselines=baselines,
        skip_bad=skip_bad,
        num_examples=examples,
        threads=threads,
        seed=seed,
        progress=progress,
        voice=voice,
        wer=wer,
        language=language,
        probe=None if probe is None else str(probe),
    )
    result = run_evaluation(data, tokenizer, out, options, overwrite=overwrite, model_path=model)
    typer.echo(markdown_summary(result))
    typer.echo(f"report: {out / 'report.md'}")
    typer.echo(f"html: {out / REPORT_HTML}")


def _parse_n_q(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        values = tuple(int(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers such as 1,2,4,8, got {text!r}") from None
    if not values:
        raise typer.BadParameter(f"expected comma-separated integers such as 1,2,4,8, got {text!r}")
    return values


def register(app: typer.Typer) -> None:
    """Add this module's commands to the vqaudio app."""
    app.command("eval", help=EVAL_HELP)(eval_command)
