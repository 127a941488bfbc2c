"""``vqaudio compress`` and ``vqaudio decompress``: speech <-> .vqa files (``vqaudio.prior.compression``).

vqaudio compress speech.wav speech.vqa                   # one file
vqaudio compress a.wav b.flac corpus/ out/               # several inputs (files, folders): out/<id>.vqa
vqaudio compress speech.wav s.vqa --n-q 5 --no-prior     # fewer codebooks, the adaptive coder (no prior)
vqaudio decompress speech.vqa speech.wav                 # one file
vqaudio decompress out/ wavs/                            # several .vqa (files, folders): wavs/<id>.wav
vqaudio decompress damaged.vqa speech.wav --conceal      # fill damaged blocks from the prior
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, NamedTuple

import typer

from vqaudio.cli.options import device_option, parse_device
from vqaudio.errors import DataError

log = logging.getLogger(__name__)

SUFFIX = ".vqa"
MODEL_HELP = "Tokenizer model folder or .safetensors file (default: the model embedded in vqaudio)."
PRIOR_HELP = (
    "Prior model folder or .safetensors file; it must model the tokenizer's tokens. Default: the embedded prior "
    "where it models them (the embedded tokenizer's), else compress uses the adaptive coder; decompress needs "
    "the prior the file names."
)
COMPRESS_HELP = (
    "Compress speech into .vqa files: the tokenizer's codes, arithmetic-coded under the token prior (or, with "
    "--no-prior, under adaptive per-codebook frequencies: no prior, fast, smaller savings).\n\n"
    "One audio file and an OUT ending in .vqa: one file. Several inputs, or a folder (searched recursively "
    "for audio): OUT is a folder that gets <id>.vqa per input (a file's id is its name without the "
    "extension; in a folder, its relative path). The format is in docs/FORMATS.md: a header naming the "
    "tokenizer and the prior by hash, then blocks of --block-seconds, each with its own CRC. Nothing is "
    "written unless every input compresses."
)
DECOMPRESS_HELP = (
    "Decompress .vqa files to WAV (or FLAC by extension) at the tokenizer's sample rate, with the tokenizer "
    "and prior the file names (default: the embedded ones).\n\n"
    "One .vqa and an OUT ending in .wav or .flac: one file. Several .vqa, or a folder of them: OUT is a folder "
    "that gets <id>.wav per file. A damaged or truncated file is an error naming the block; with --conceal "
    "its damaged blocks are filled with the prior's continuation of the frames before them (a warning each) "
    "and every other block decodes exactly."
)


class _Item(NamedTuple):
    id: str
    path: Path


def _gather(inputs: list[Path], what: str, is_wanted: Any, find: Any) -> list[_Item]:
    """Input files and folders -> (id, path) pairs, ids unique: a file's stem, a folder's relative paths."""
    from vqaudio.io.inputs import regular_file_problem

    items: dict[str, Path] = {}
    for source in inputs:
        if source.is_dir():
            found = find(source)
        else:
            problem = regular_file_problem(source)
            if problem is not None:
                raise FileNotFoundError(f"{source}: {problem}")
            if not is_wanted(source):
                raise DataError(f"{source}: not {what}")
            found = [_Item(source.stem, source)]
        for item in found:
            if item.id in items:
                raise DataError(
                    f"{item.path} and {items[item.id]} would both be written as {item.id!r}; rename one, or "
                    "compress them in separate runs"
                )
            items[item.id] = item.path
    return [_Item(utt_id, items[utt_id]) for utt_id in sorted(items)]


def _audio_in_folder(folder: Path) -> list[_Item]:
    from vqaudio.data.corpus import read_audio_folder

    return [_Item(utterance.id, utterance.path) for utterance in read_audio_folder(folder)]


def _vqa_in_folder(folder: Path) -> list[_Item]:
    paths = sorted(path for path in folder.rglob(f"*{SUFFIX}") if path.is_file())
    if not paths:
        raise DataError(f"{folder}: no {SUFFIX} files found (looked recursively)")
    return [_Item(path.relative_to(folder).with_suffix("").as_posix(), path) for path in paths]


# --------------------------------------------------------------------------------------------------
# compress
# --------------------------------------------------------------------------------------------------
def compress_command(
    inputs: list[Path] = typer.Argument(..., help="Audio files or folders."),
    out: Path = typer.Argument(..., help="The .vqa file (one audio file in), or a folder."),
    model: Path | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    prior_path: Path | None = typer.Option(None, "--prior", help=PRIOR_HELP),
    no_prior: bool = typer.Option(
        False, "--no-prior", help="Adaptive per-codebook frequencies instead of the prior (fast, no model)."
    ),
    n_q: int | None = typer.Option(None, "--n-q", min=1, help="Codebooks to keep (default: all)."),
    block_seconds: float = typer.Option(
        2.0, "--block-seconds", min=0.02, help="Block length: the unit a damaged file loses."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    device: str = device_option(),
) -> None:
    """Speech -> .vqa (help: COMPRESS_HELP)."""
    from vqaudio.codec.tokenizer import Tokenizer
    from vqaudio.data.utterance import is_audio_file
    from vqaudio.errors import AudioError
    from vqaudio.io.atomic import atomic_folder, atomic_path
    from vqaudio.prior.compression import compress

    if no_prior and prior_path is not None:
        raise typer.BadParameter(
            "--prior and --no-prior exclude each other; pass one", param_hint="--no-prior"
        )
    single = _check_out(
        inputs, out, out.suffix == SUFFIX, f"one {SUFFIX} file", SUFFIX, "compress", overwrite
    )
    items = _gather(inputs, "an audio file", is_audio_file, _audio_in_folder)
    tokenizer = Tokenizer.load(model, device=parse_device(device))
    prior: Any = False if no_prior else "auto"
    if prior_path is not None:
        from vqaudio.prior import Prior

        prior = Prior.load(prior_path)  # once, for every input
    results: list[tuple[_Item, bytes]] = []

    def compress_one(item: _Item) -> bytes:
        try:
            data = compress(item.path, tokenizer=tokenizer, prior=prior, n_q=n_q, block_seconds=block_seconds)
        except AudioError as error:
            raise error.without_skip_hint() from error
        results.append((item, data))
        return data

    if single:
        data = compress_one(items[0])
        with atomic_path(out) as temporary:
            temporary.write_bytes(data)
    else:
        with atomic_folder(out, overwrite=overwrite) as staging:
            for item in items:
                target = staging / f"{item.id}{SUFFIX}"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(compress_one(item))
    typer.echo(_summary(results, tokenizer, n_q, out))


def _summary(results: list[tuple[_Item, bytes]], tokenizer: Any, n_q: int | None, out: Path) -> str:
    from vqaudio.io.bitstream import read_stream

    headers = [read_stream(data).header for _, data in results]
    seconds = sum(header.num_samples for header in headers) / tokenizer.sample_rate
    coder = " and ".join(sorted({header.coder for header in headers}))
    size = sum(len(data) for _, data in results)
    kbps = 8 * size / seconds / 1000
    nominal = tokenizer.bitrate_at(n_q or tokenizer.num_codebooks) / 1000
    what = f"{results[0][0].path}" if len(results) == 1 else f"{len(results)} files"
    change = 1 - kbps / nominal
    relation = f"{change:.0%} below" if change >= 0 else f"{-change:.0%} above"
    return (
        f"{what} -> {out}: {seconds:.2f} s, {size:,} bytes, {kbps:.2f} kbps ({coder} coder; {relation} the tokens' "
        f"nominal {nominal:.2f} kbps)"
    )


# --------------------------------------------------------------------------------------------------
# decompress
# --------------------------------------------------------------------------------------------------
def decompress_command(
    inputs: list[Path] = typer.Argument(..., help=".vqa files or folders."),
    out: Path = typer.Argument(..., help="The .wav or .flac file (one .vqa in), or a folder."),
    model: Path | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    prior_path: Path | None = typer.Option(None, "--prior", help=PRIOR_HELP),
    conceal: bool = typer.Option(
        False, "--conceal", help="Fill damaged or missing blocks with the prior's continuation."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output."),
    device: str = device_option(),
) -> None:
    """.vqa -> speech (help: DECOMPRESS_HELP)."""
    from vqaudio.codec.tokenizer import Tokenizer
    from vqaudio.io.atomic import atomic_folder
    from vqaudio.io.audio_stream import save_audio_blocks
    from vqaudio.io.bitstream import read_stream
    from vqaudio.prior.compression import check_tokenizer, decode_codes

    names_audio = out.suffix.lower() in (".wav", ".flac")
    single = _check_out(inputs, out, names_audio, "one audio file", ".wav", "decompress", overwrite)
    items = _gather(inputs, f"a {SUFFIX} file", lambda path: path.suffix == SUFFIX, _vqa_in_folder)
    tokenizer = Tokenizer.load(model, device=parse_device(device))
    prior: Any = None
    if prior_path is not None:
        from vqaudio.prior import Prior

        prior = Prior.load(prior_path)
    seconds = 0.0

    def write_one(item: _Item, target: Path) -> None:
        nonlocal seconds, prior
        data = item.path.read_bytes()
        header = read_stream(data, str(item.path)).header
        check_tokenizer(header, tokenizer, str(item.path))
        if prior is None and (header.coder == "prior" or conceal):
            from vqaudio.prior import Prior

            prior = Prior.load()  # once, for every file that needs it
        decoded = decode_codes(data, prior=prior, conceal=conceal, name=str(item.path))
        pieces = tokenizer.decode_stream(decoded.codes, num_samples=header.num_samples)
        save_audio_blocks(target, pieces, tokenizer.sample_rate)
        seconds += header.num_samples / tokenizer.sample_rate

    if single:
        write_one(items[0], out)
    else:
        with atomic_folder(out, overwrite=overwrite) as staging:
            for item in items:
                target = staging / f"{item.id}.wav"
                target.parent.mkdir(parents=True, exist_ok=True)
                write_one(item, target)
    what = f"{items[0].path}" if len(items) == 1 else f"{len(items)} files"
    typer.echo(f"{what} -> {out}: {seconds:.2f} s at {tokenizer.sample_rate} Hz")


def _check_out(
    inputs: list[Path],
    out: Path,
    names_a_file: bool,
    one_file: str,
    written_suffix: str,
    command: str,
    overwrite: bool,
) -> bool:
    """Whether OUT is one file (one input file, and OUT ``names_a_file``) or a folder of ``*written_suffix``
    files; checked (and an earlier output's rules applied) before any work."""
    from vqaudio.io.atomic import check_output

    single = len(inputs) == 1 and not inputs[0].is_dir() and names_a_file
    if names_a_file and not single:
        raise typer.BadParameter(
            f"{len(inputs)} inputs (or a folder) go to an output folder, not to {one_file}", param_hint="OUT"
        )
    if single:
        check_output(out, overwrite=overwrite)
    else:
        check_output(
            out,
            overwrite=overwrite,
            folder=True,
            replaceable=lambda path: path.suffix == written_suffix,
            what=f"`vqaudio {command}`",
        )
    return single


def register(app: typer.Typer) -> None:
    """Add this module's commands to the vqaudio app."""
    app.command("compress", help=COMPRESS_HELP)(compress_command)
    app.command("decompress", help=DECOMPRESS_HELP)(decompress_command)
