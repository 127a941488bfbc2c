"""``vqaudio export``: a token file into unit text, JSON Lines or a Hugging Face dataset (``vqaudio.io.export``).

vqaudio export tokens.npy train.units                              # first codebook, GSLM-style units
vqaudio export tokens.npy train.units --n-q 4 --layout interleave --dedup
vqaudio export tokens.npy train.jsonl --format jsonl --manifest data/train.tsv
vqaudio export tokens.npy train_hf/ --format hf                    # needs pip install 'vqaudio[hf]'
"""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path

import typer

log = logging.getLogger(__name__)


class Format(str, Enum):
    units = "units"
    jsonl = "jsonl"
    hf = "hf"


class Layout(str, Enum):
    flat = "flat"
    interleave = "interleave"


EXPORT_HELP = (
    "Export a token file for downstream models (docs/FORMATS.md defines each format; vqaudio.io.export reads "
    "each back).\n\n"
    "units: OUT is a text file, one line per utterance, 'utt_id<TAB>units' (space-separated), in id order, "
    "and OUT.json says how to map units back to codes. By default only the first codebook. With several rows "
    "--layout flat (the default) writes each frame's codes frame by frame with row r's code c as "
    "r * codebook_size + c; --layout interleave writes them without offsets. --dedup collapses runs of "
    "identical frames and adds a third column with each run's length in frames.\n\n"
    "jsonl: one JSON object per line: id, codes (a list of rows of frames), n_frames, frame_rate, start, end (seconds), "
    "transcript and speaker when known, pitch_row, codebooks, model, model_hash. By default every row.\n\n"
    "hf: the same records as a Hugging Face dataset folder (datasets.load_from_disk(OUT)); needs "
    "pip install 'vqaudio\\[hf]'.\n\n"
    "The pitch row (row 0 of a model with pitch_rows 1) is left out of units unless --pitch, and kept in "
    "jsonl/hf unless --no-pitch. Transcripts and speakers come from --manifest, else from the manifest or "
    "LibriSpeech tree the tokens were made from, if it is still there. Outputs are written atomically; "
    "--overwrite replaces them."
)


def export(
    tokens: str = typer.Argument(
        ..., help="Token file (.npy from vqaudio tokenize or prior sample), or a glob of shards."
    ),
    out: Path = typer.Argument(..., help="Output: a units or .jsonl file, or a folder for --format hf."),
    format: Format = typer.Option(Format.units, "--format", "-f", help="units, jsonl or hf."),
    n_q: int | None = typer.Option(
        None, "--n-q", help="Export the first N codebooks (default: 1 for units, all for jsonl/hf)."
    ),
    codebooks: str | None = typer.Option(
        None,
        "--codebooks",
        help="Export these codebooks, 0-based, comma-separated (e.g. 0,1); not with --n-q.",
    ),
    pitch: bool | None = typer.Option(
        None,
        "--pitch/--no-pitch",
        help="Include the pitch row first (default: not for units, yes for jsonl/hf when the file has one).",
    ),
    layout: Layout | None = typer.Option(
        None, "--layout", help="units: flat (per-row offsets, the default) or interleave (raw codes)."
    ),
    dedup: bool = typer.Option(
        False, "--dedup", help="units: collapse runs of identical frames; durations in a third column."
    ),
    manifest: Path | None = typer.Option(
        None,
        "--manifest",
        help="jsonl/hf: manifest .tsv giving transcripts and speakers, joined by utterance id.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Token file -> units / JSONL / HF dataset (help: EXPORT_HELP)."""
    from vqaudio.errors import InputError
    from vqaudio.io.export import (
        check_can_export,
        import_datasets,
        parse_codebooks,
        select_rows,
        write_hf,
        write_jsonl,
        write_units,
    )
    from vqaudio.io.token_file import load_tokens

    units = format is Format.units
    # options that contradict each other, or a malformed list: usage errors (exit 2), before anything is read
    if not units:
        given = [name for name, value in (("--layout", layout), ("--dedup", dedup)) if value]
        if given:
            raise typer.BadParameter(
                f"{' and '.join(given)} only shape unit text; drop it or use --format units"
            )
    elif manifest is not None:
        raise typer.BadParameter(
            "--manifest adds transcripts and speakers to jsonl/hf; unit text has no place for them"
        )
    if n_q is not None and codebooks is not None:
        raise typer.BadParameter("give --n-q (the first codebooks) or --codebooks (a list), not both")
    try:
        chosen = None if codebooks is None else parse_codebooks(codebooks)
    except InputError as exc:
        raise typer.BadParameter(str(exc)) from None
    if format is Format.hf:
        import_datasets()  # the missing extra, before any work
    check_can_export(out, format.value, overwrite)
    corpus = load_tokens(tokens)
    selection = select_rows(
        corpus.meta,
        n_q=1 if units and n_q is None and codebooks is None else n_q,
        codebooks=chosen,
        pitch=(False if units else None) if pitch is None else pitch,
    )
    what = ("pitch row + " if selection.pitch_row else "") + f"codebooks {selection.codebooks}"
    if units:
        written = write_units(
            corpus,
            out,
            selection,
            layout=(layout or Layout.flat).value,
            dedup=dedup,
            overwrite=overwrite,
            progress=progress,
        )
        typer.echo(f"wrote {len(corpus)} utterances ({what}) to {written[0]} + {written[1].name}")
        return
    from vqaudio.data.corpus import labels_for_tokens

    labels = labels_for_tokens(corpus.meta, list(corpus), manifest)
    writer = write_jsonl if format is Format.jsonl else write_hf
    path = writer(corpus, out, selection, labels=labels, overwrite=overwrite, progress=progress)
    typer.echo(f"wrote {len(corpus)} utterances ({what}) to {path}")


def register(app: typer.Typer) -> None:
    """Add ``vqaudio export`` to the vqaudio app."""
    app.command("export", help=EXPORT_HELP)(export)
