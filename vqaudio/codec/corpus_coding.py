"""Whole corpora through a tokenizer: audio files -> one token file, and a token file -> one WAV per utterance.

Both stream (memory is bounded by a batch, not the corpus, and a file longer than a chunk is read, or written,
window by window, so a file's length does not matter either) and leave nothing half-written when they fail or
are interrupted: the token file is renamed into place when complete (``TokenFileWriter``), and a new output
folder of WAVs is built under a temporary name and swapped in when complete (``vqaudio.io.atomic``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from vqaudio.config import CHUNK_SECONDS, DEFAULT_CHUNK_SECONDS, check_value
from vqaudio.data.batching import batch_by_length
from vqaudio.data.corpus import load_corpus
from vqaudio.data.utterance import Utterance
from vqaudio.errors import AudioError, DataError, InputError, TokenFileError
from vqaudio.io.atomic import atomic_folder, check_output
from vqaudio.io.audio import audio_info, check_audio_header, load_audio, save_audio
from vqaudio.io.audio_stream import save_audio_blocks
from vqaudio.io.inputs import utterance_id_problem
from vqaudio.io.token_file import TokenCorpus, TokenFileWriter, TokenPaths, check_can_write, load_tokens
from vqaudio.progress import progress_bar

if TYPE_CHECKING:
    from vqaudio.codec.tokenizer import Tokenizer

log = logging.getLogger(__name__)


class TokenizeSummary(NamedTuple):
    """What ``tokenize_corpus`` wrote."""

    paths: TokenPaths
    num_utterances: int
    num_frames: int
    seconds: float
    n_q: int
    bitrate: float  # bits per second at n_q
    skipped: list[dict[str, str]]  # {"utt_id", "path", "error"} of each skipped file
    hold: float = 0.0  # the first codebook's hold margin

    def line(self) -> str:
        """One line for the console."""
        skipped = f", {len(self.skipped)} skipped" if self.skipped else ""
        hold = f", first-codebook hold {self.hold:g}" if self.hold else ""
        return (
            f"tokenized {self.num_utterances} utterances ({self.seconds / 3600:.3f} h, "
            f"{self.num_frames} frames, n_q={self.n_q}, {self.bitrate / 1000:.2f} kbps{hold}{skipped}) "
            f"-> {self.paths.array_path}"
        )


def tokenize_corpus(
    tokenizer: Tokenizer,
    source: str | Path,
    out: str | Path,
    *,
    n_q: int | None = None,
    batch_size: int = 16,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    skip_bad: bool = False,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
    hold: float | None = None,
) -> TokenizeSummary:
    """Tokenize a corpus into one token file, streaming (memory bounded by a batch, not the corpus).

    Args:
        tokenizer: the model.
        source: anything ``vqaudio.data.load_corpus`` reads (folder, audio file, list file, manifest).
        out: the ``.npy`` path; its index and metadata go beside it.
        n_q: codebooks to keep (None: all).
        batch_size: utterances per forward pass (also capped by audio length, see ``batch_by_length``).
        chunk_seconds: long files are encoded in windows of this length (same tokens, bounded memory).
        skip_bad: skip unreadable, empty or non-finite files (listed in the metadata) instead of failing.
        overwrite: replace an existing token file.
        shard: (K, N), 1 <= K <= N: tokenize only utterances K-1, K-1+N, ... of the sorted corpus.
        progress: show a progress bar (files and audio hours) on a terminal.
        hold: the first codebook's hold margin (``Tokenizer.first_codebook_hold``, the default when None);
            recorded as ``first_codebook_hold`` in the metadata.
    Returns:
        a TokenizeSummary; ``.line()`` is the console summary.
    Raises:
        AudioError, DataError, FileExistsError: naming the file and the fix; nothing is written then.
    """
    check_can_write(out, overwrite)
    if batch_size < 1:
        raise InputError(f"batch_size must be at least 1, got {batch_size}")
    n_q = tokenizer.num_codebooks if n_q is None else n_q
    tokenizer.bitrate_at(n_q)  # validates n_q before any work
    hold = tokenizer.first_codebook_hold if hold is None else hold
    tokenizer.model.check_hold(hold)
    check_value("chunk_seconds", chunk_seconds, CHUNK_SECONDS)
    utterances = _select_shard(load_corpus(source), shard, source)
    rejects = _Rejects(skip_bad)
    usable, lengths = _lengths_from_headers(utterances, tokenizer.sample_rate, rejects)
    # the tokenizer splits a batch further if its padded size exceeds one chunk; keep them aligned
    chunk_samples = max(1, int(chunk_seconds * tokenizer.sample_rate))
    batches = batch_by_length(lengths, batch_size, chunk_samples)
    writer = _token_file_writer(tokenizer, out, n_q, hold, source, shard, overwrite)
    total_hours = sum(lengths) / tokenizer.sample_rate / 3600
    bar = progress_bar(
        total=len(utterances), unit="file", desc="tokenizing", disable=None if progress else True
    )
    done_seconds = 0.0
    with writer, bar:
        bar.update(len(utterances) - len(usable))  # files rejected from their headers
        for batch in batches:
            members = [usable[position] for position in batch]
            # a file longer than a chunk has a batch of its own and is read from disk window by window
            stream = lengths[batch[0]] > chunk_samples
            encoded = _encode_batch(members, tokenizer, n_q, hold, chunk_seconds, writer, rejects, stream)
            for num_samples in encoded:
                done_seconds += num_samples / tokenizer.sample_rate
            bar.update(len(batch))
            bar.set_postfix_str(f"{done_seconds / 3600:.2f}/{total_hours:.2f} h")
        for item in rejects.skipped:
            writer.skip(item["path"], item["error"], item["utt_id"])
        if writer.num_utterances == 0:
            raise DataError(
                f"{source}: none of the {len(utterances)} audio files could be read (first: "
                f"{rejects.skipped[0]['error']}); nothing was written"
            )
    num_frames = len(np.load(writer.paths.array_path, mmap_mode="r"))
    return TokenizeSummary(
        writer.paths,
        len(utterances) - len(rejects.skipped),
        num_frames,
        done_seconds,
        n_q,
        tokenizer.bitrate_at(n_q),
        rejects.skipped,
        hold,
    )


def _select_shard(
    utterances: list[Utterance], shard: tuple[int, int] | None, source: str | Path
) -> list[Utterance]:
    """Shard (K, N) of the sorted corpus: utterances K-1, K-1+N, ... (all of them without a shard)."""
    if shard is None:
        return utterances
    index, count = shard
    if not 1 <= index <= count:
        raise InputError(f"shard must be K/N with 1 <= K <= N, got {index}/{count}")
    utterances = utterances[index - 1 :: count]
    if not utterances:
        raise DataError(f"{source}: shard {index}/{count} holds no utterance; use fewer shards")
    return utterances


class _Rejects:
    """Files that cannot be tokenized: an error, or with ``skip_bad`` a warning and a row of ``skipped``."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.skipped: list[dict[str, str]] = []  # {"utt_id", "path", "error"} of each skipped file

    def __call__(self, utterance: Utterance, error: AudioError) -> None:
        if not self.skip_bad:
            raise error
        log.warning("skipping %s (--skip-bad)", error.reason)
        self.skipped.append({"utt_id": utterance.id, "path": str(utterance.path), "error": error.reason})


def _lengths_from_headers(
    utterances: list[Utterance], sample_rate: int, reject: _Rejects
) -> tuple[list[Utterance], list[int]]:
    """The usable utterances and their lengths at ``sample_rate``, from the headers (no decoding), to batch
    similar lengths together; empty or unreadable files go to ``reject``."""
    usable, lengths = [], []
    for utterance in utterances:
        try:
            if utterance.num_samples is None or not utterance.sample_rate:
                info = audio_info(utterance.path)
                num_samples, file_rate = info.num_samples, info.sample_rate
            else:
                num_samples, file_rate = utterance.num_samples, utterance.sample_rate
            check_audio_header(utterance.path, file_rate, num_samples)  # also rates a manifest gives
            if num_samples <= 0:
                raise AudioError(f"{utterance.path}: audio is empty (0 samples)", fix="remove it")
        except AudioError as error:
            reject(utterance, error)
            continue
        usable.append(utterance)
        lengths.append(-(-num_samples * sample_rate // file_rate))
    return usable, lengths


def _token_file_writer(
    tokenizer: Tokenizer,
    out: str | Path,
    n_q: int,
    hold: float,
    source: str | Path,
    shard: tuple[int, int] | None,
    overwrite: bool,
) -> TokenFileWriter:
    """The writer of ``out``, with the model's facts and how the tokens were made in the metadata."""
    extra_meta = {
        "model_path": None if tokenizer.path is None else str(tokenizer.path),
        "model_num_codebooks": tokenizer.num_codebooks,
        "n_q": n_q,
        # the first codebook's hold margin the codes were made with (0: nearest codes; absent in older files)
        "first_codebook_hold": float(hold),
        "pitch_rows": tokenizer.pitch_rows,  # row 0 of every utterance is the pitch row when 1
        "pitch_levels": tokenizer.config.model.pitch.levels if tokenizer.pitch_rows else None,
        "source": str(source),
        "shard": None if shard is None else {"index": shard[0], "count": shard[1]},
    }
    return TokenFileWriter(
        out,
        num_codebooks=tokenizer.pitch_rows + n_q,  # rows stored
        codebook_size=tokenizer.codebook_size,
        sample_rate=tokenizer.sample_rate,
        hop_length=tokenizer.hop_length,
        model_name=tokenizer.name,
        model_hash=tokenizer.hash,
        extra_meta=extra_meta,
        overwrite=overwrite,
    )


def _encode_batch(
    batch: list[Utterance],
    tokenizer: Tokenizer,
    n_q: int,
    hold: float,
    chunk_seconds: float,
    writer: TokenFileWriter,
    reject: _Rejects,
    stream: bool = False,
) -> list[int]:
    """Decode, encode and write one batch of utterances; the sample count of each one written (unreadable
    files go to ``reject``). With ``stream`` (a batch of one long file) the file is read window by window
    (``Tokenizer.encode_file``: the same codes, memory bounded by a window)."""
    if stream:
        (utterance,) = batch
        try:
            coded = tokenizer.encode_file(utterance.path, n_q, chunk_seconds, hold=hold)
        except AudioError as error:
            reject(utterance, error)
            return []
        writer.add(utterance.id, utterance.path, coded.codes, coded.num_samples)
        return [coded.num_samples]
    members, waveforms = [], []
    for utterance in batch:
        try:
            waveforms.append(load_audio(utterance.path, tokenizer.sample_rate))
            members.append(utterance)
        except AudioError as error:
            reject(utterance, error)
    if not members:
        return []
    codes = tokenizer.encode_batch(waveforms, tokenizer.sample_rate, n_q, chunk_seconds, hold=hold)
    for row, utterance in enumerate(members):
        length = int(codes.lengths[row])
        writer.add(utterance.id, utterance.path, codes.codes[row, :, :length], len(waveforms[row]))
    return [len(waveform) for waveform in waveforms]


def resynthesize_tokens(
    tokenizer: Tokenizer,
    tokens: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    *,
    n_q: int | None = None,
    force: bool = False,
    overwrite: bool = False,
    batch_size: int = 16,
    chunk_seconds: float = DEFAULT_CHUNK_SECONDS,
    progress: bool = True,
) -> list[Path]:
    """Decode a token file to one WAV per utterance: ``out_dir/<utt_id>.wav`` (ids with '/' make folders).

    Args:
        tokenizer: must be the model that made the tokens (checked by hash) unless ``force``.
        tokens: a token file (or shards, as ``load_tokens`` takes).
        out_dir: the output folder; it appears complete or not at all, and replaces an existing one (only with
            ``overwrite``, and only if it holds nothing but WAVs) when complete.
        n_q: decode only the first n_q codebooks (None: all stored).
        force: decode tokens from another model anyway (same codebook size needed).
        overwrite: replace an existing, non-empty ``out_dir`` as a whole (no WAV of an earlier run stays).
        batch_size, chunk_seconds: decoding batch and window sizes (the audio does not depend on them).
        progress: show a progress bar on a terminal.
    Returns:
        the written WAV paths, in id order.
    Raises:
        TokenFileError: invalid token file, tokens of another model, codes outside the codebook.
        FileExistsError: ``out_dir`` is not empty and ``overwrite`` is False.
        OutputError: ``out_dir`` cannot be written, or holds files other than WAVs.
    """
    check_value("chunk_seconds", chunk_seconds, CHUNK_SECONDS)
    corpus = load_tokens(tokens)
    where = (
        corpus.paths[0] if len(corpus.paths) == 1 else f"{corpus.paths[0]} (+{len(corpus.paths) - 1} shards)"
    )
    pitch_rows = _check_model(corpus, tokenizer, where, force)
    stored = corpus.num_codebooks - pitch_rows  # codebooks stored
    if n_q is not None and not 1 <= n_q <= stored:
        raise InputError(f"--n-q must be between 1 and the {stored} codebooks stored, got {n_q}")
    corpus.validate(codebook_size=tokenizer.codebook_size)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, [out_dir / _wav_name(utt_id, where) for utt_id in corpus], overwrite)
    ids = list(corpus)
    entries = [corpus.entry(utt_id) for utt_id in ids]
    max_frames = max(1, int(chunk_seconds * tokenizer.frame_rate))
    # planned before the staging folder exists, so a bad batch_size leaves nothing behind
    batches = batch_by_length([entry.num_frames for entry in entries], batch_size, max_frames)
    # built under a temporary name and swapped in when complete: an existing folder stays as it was until then
    written = []
    with atomic_folder(out_dir, overwrite=overwrite) as staging:
        with progress_bar(
            total=len(ids), unit="file", desc="decoding", disable=None if progress else True
        ) as bar:
            for batch in batches:
                if entries[batch[0]].num_frames > max_frames:  # alone in its batch: decoded window by window
                    utt_id, entry = ids[batch[0]], entries[batch[0]]
                    rows = corpus[utt_id] if n_q is None else corpus[utt_id][: pitch_rows + n_q]
                    pieces = tokenizer.decode_stream(
                        rows, num_samples=entry.num_samples, chunk_seconds=chunk_seconds
                    )
                    save_audio_blocks(staging / _wav_name(utt_id, where), pieces, tokenizer.sample_rate)
                    written.append(out_dir / _wav_name(utt_id, where))
                    bar.update(1)
                    continue
                codes = [np.asarray(corpus[ids[position]], dtype=np.int64) for position in batch]
                if n_q is not None:
                    codes = [item[: pitch_rows + n_q] for item in codes]
                audio = tokenizer.decode_batch(
                    codes,
                    num_samples=[entries[position].num_samples for position in batch],
                    chunk_seconds=chunk_seconds,
                )
                for position, wav in zip(batch, audio, strict=True):
                    final = out_dir / _wav_name(ids[position], where)
                    save_audio(
                        staging / _wav_name(ids[position], where), wav, tokenizer.sample_rate, name=final
                    )
                    written.append(final)
                bar.update(len(batch))
    return sorted(written)


def _check_model(corpus: TokenCorpus, tokenizer: Tokenizer, where: object, force: bool) -> int:
    """Check that ``tokenizer`` can decode ``corpus`` (made by it, or ``force``; the same pitch rows; no more
    codebooks than it has); the token file's pitch rows."""
    made_by, model_hash = corpus.meta.get("model_name"), str(corpus.meta["model_hash"])
    if model_hash != tokenizer.hash:
        message = (
            f"{where}: the tokens were made by model {made_by!r} (hash {model_hash[:12]}) but the model "
            f"given is {tokenizer.name!r} (hash {tokenizer.hash[:12]})"
        )
        if not force:
            raise TokenFileError(
                f"{message}; pass the model that made them (--model), or --force to decode anyway"
            )
        log.warning("%s; decoding anyway (--force)", message)
    pitch_rows = int(corpus.meta.get("pitch_rows", 0))
    if pitch_rows != tokenizer.pitch_rows:
        has = "has a pitch row" if pitch_rows else "has no pitch row"
        raise TokenFileError(
            f"{where}: {has} but model {tokenizer.name!r} {'needs' if tokenizer.pitch_rows else 'has none'}; the "
            f"tokens were made by model {made_by!r}: decode them with that model, or re-tokenize the audio"
        )
    if corpus.codebook_size != tokenizer.codebook_size:
        raise TokenFileError(
            f"{where}: codes of a {corpus.codebook_size}-code codebook, but model {tokenizer.name!r} has "
            f"{tokenizer.codebook_size}; pass the model that made the tokens"
        )
    stored = corpus.num_codebooks - pitch_rows  # codebooks stored
    if stored > tokenizer.num_codebooks:
        raise TokenFileError(
            f"{where}: holds {stored} codebooks but the model has {tokenizer.num_codebooks}; "
            "pass the model that made the tokens"
        )
    return pitch_rows


def _check_out_dir(out_dir: Path, targets: list[Path], overwrite: bool) -> None:
    """Refuse an output that is a file, or (without ``overwrite``) a folder that is not empty; with it, a folder
    holding anything but WAVs (it is replaced as a whole). Checked before any decoding."""
    if out_dir.is_dir() and not overwrite:
        clashes = [path for path in targets if path.exists()]
        if clashes:
            raise FileExistsError(
                f"{clashes[0]} already exists ({len(clashes)} of {len(targets)} outputs do); "
                "pass --overwrite to replace the folder"
            )
    check_output(out_dir, overwrite=overwrite, folder=True, replaceable=_is_wav, what="`vqaudio resynth`")


def _is_wav(relative: Path) -> bool:
    return relative.suffix.lower() == ".wav"


def _wav_name(utt_id: str, where: object) -> Path:
    """``spk/utt1`` -> ``spk/utt1.wav``; ids that would leave the output folder are refused (the same rule as
    tokenize's, ``utterance_id_problem``)."""
    problem = utterance_id_problem(utt_id)
    if problem is not None:
        raise TokenFileError(
            f"{where}: utterance id {utt_id!r} {problem}; it cannot be a file name under the output folder"
        )
    parts = utt_id.split("/")
    return Path(*parts[:-1], parts[-1] + ".wav")
