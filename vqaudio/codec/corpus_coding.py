"""Whole corpora through a tokenizer: audio files -> one token file, and a token file -> one WAV per utterance.

Both stream (memory is bounded by a batch, not the corpus) and leave nothing half-written when they fail or
are interrupted: the token file is renamed into place when complete (``TokenFileWriter``), and a new output
folder of WAVs is built under a temporary name.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from vqaudio.config import CHUNK_SECONDS, check_value
from vqaudio.data.batching import batch_by_length
from vqaudio.data.corpus import load_corpus
from vqaudio.data.utterance import Utterance
from vqaudio.errors import AudioError, DataError, TokenFileError
from vqaudio.io.audio import audio_info, load_audio, save_audio
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

    def line(self) -> str:
        """One line for the console."""
        skipped = f", {len(self.skipped)} skipped" if self.skipped else ""
        return (
            f"tokenized {self.num_utterances} utterances ({self.seconds / 3600:.3f} h, "
            f"{self.num_frames} frames, n_q={self.n_q}, {self.bitrate / 1000:.2f} kbps{skipped}) "
            f"-> {self.paths.array_path}"
        )


def tokenize_corpus(
    tokenizer: Tokenizer,
    source: str | Path,
    out: str | Path,
    *,
    n_q: int | None = None,
    batch_size: int = 16,
    chunk_seconds: float = 30.0,
    skip_bad: bool = False,
    overwrite: bool = False,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
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
    Returns:
        a TokenizeSummary; ``.line()`` is the console summary.
    Raises:
        AudioError, DataError, FileExistsError: naming the file and the fix; nothing is written then.
    """
    check_can_write(out, overwrite)
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    n_q = tokenizer.num_codebooks if n_q is None else n_q
    tokenizer.bitrate_at(n_q)  # validates n_q before any work
    check_value("chunk_seconds", chunk_seconds, CHUNK_SECONDS)
    utterances = _select_shard(load_corpus(source), shard, source)
    rejects = _Rejects(skip_bad)
    usable, lengths = _lengths_from_headers(utterances, tokenizer.sample_rate, rejects)
    # the tokenizer splits a batch further if its padded size exceeds one chunk; keep them aligned
    batches = batch_by_length(lengths, batch_size, max(1, int(chunk_seconds * tokenizer.sample_rate)))
    writer = _token_file_writer(tokenizer, out, n_q, source, shard, overwrite)
    total_hours = sum(lengths) / tokenizer.sample_rate / 3600
    bar = progress_bar(
        total=len(utterances), unit="file", desc="tokenizing", disable=None if progress else True
    )
    done_seconds = 0.0
    with writer, bar:
        bar.update(len(utterances) - len(usable))  # files rejected from their headers
        for batch in batches:
            members = [usable[position] for position in batch]
            for num_samples in _encode_batch(members, tokenizer, n_q, chunk_seconds, writer, rejects):
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
    )


def _select_shard(
    utterances: list[Utterance], shard: tuple[int, int] | None, source: str | Path
) -> list[Utterance]:
    """Shard (K, N) of the sorted corpus: utterances K-1, K-1+N, ... (all of them without a shard)."""
    if shard is None:
        return utterances
    index, count = shard
    if not 1 <= index <= count:
        raise ValueError(f"shard must be K/N with 1 <= K <= N, got {index}/{count}")
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
        log.warning("skipping %s", error)
        self.skipped.append({"utt_id": utterance.id, "path": str(utterance.path), "error": str(error)})


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
            if num_samples <= 0:
                raise AudioError(
                    f"{utterance.path}: audio is empty (0 samples); remove it or pass --skip-bad"
                )
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
    source: str | Path,
    shard: tuple[int, int] | None,
    overwrite: bool,
) -> TokenFileWriter:
    """The writer of ``out``, with the model's facts and how the tokens were made in the metadata."""
    extra_meta = {
        "model_path": None if tokenizer.path is None else str(tokenizer.path),
        "model_num_codebooks": tokenizer.num_codebooks,
        "n_q": n_q,
        "pitch_rows": tokenizer.pitch_rows,  # row 0 of every utterance is the pitch row when 1
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
    chunk_seconds: float,
    writer: TokenFileWriter,
    reject: _Rejects,
) -> list[int]:
    """Decode, encode and write one batch of utterances; the sample count of each one written (unreadable
    files go to ``reject``)."""
    members, waveforms = [], []
    for utterance in batch:
        try:
            waveforms.append(load_audio(utterance.path, tokenizer.sample_rate))
            members.append(utterance)
        except AudioError as error:
            reject(utterance, error)
    if not members:
        return []
    codes = tokenizer.encode_batch(waveforms, tokenizer.sample_rate, n_q, chunk_seconds)
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
    chunk_seconds: float = 30.0,
    progress: bool = True,
) -> list[Path]:
    """Decode a token file to one WAV per utterance: ``out_dir/<utt_id>.wav`` (ids with '/' make folders).

    Args:
        tokenizer: must be the model that made the tokens (checked by hash) unless ``force``.
        tokens: a token file (or shards, as ``load_tokens`` takes).
        out_dir: the output folder; a new folder appears complete or not at all.
        n_q: decode only the first n_q codebooks (None: all stored).
        force: decode tokens from another model anyway (same codebook size needed).
        overwrite: replace WAVs that already exist in ``out_dir``.
        batch_size, chunk_seconds: decoding batch and window sizes (the audio does not depend on them).
        progress: show a progress bar on a terminal.
    Returns:
        the written WAV paths, in id order.
    Raises:
        TokenFileError: invalid token file, tokens of another model, codes outside the codebook.
        FileExistsError: an output WAV exists and ``overwrite`` is False.
    """
    check_value("chunk_seconds", chunk_seconds, CHUNK_SECONDS)
    corpus = load_tokens(tokens)
    where = (
        corpus.paths[0] if len(corpus.paths) == 1 else f"{corpus.paths[0]} (+{len(corpus.paths) - 1} shards)"
    )
    pitch_rows = _check_model(corpus, tokenizer, where, force)
    stored = corpus.num_codebooks - pitch_rows  # codebooks stored
    if n_q is not None and not 1 <= n_q <= stored:
        raise ValueError(f"--n-q must be between 1 and the {stored} codebooks stored, got {n_q}")
    corpus.validate(codebook_size=tokenizer.codebook_size)
    out_dir = Path(out_dir)
    _check_out_dir(out_dir, [out_dir / _wav_name(utt_id, where) for utt_id in corpus], overwrite)
    ids = list(corpus)
    entries = [corpus.entry(utt_id) for utt_id in ids]
    max_frames = max(1, int(chunk_seconds * tokenizer.frame_rate))
    # planned before the staging folder exists, so a bad batch_size leaves nothing behind
    batches = batch_by_length([entry.num_frames for entry in entries], batch_size, max_frames)
    # a new folder is built under a temporary name and renamed when complete
    staging = None
    if not out_dir.exists():
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    root = staging or out_dir
    written = []
    try:
        with progress_bar(
            total=len(ids), unit="file", desc="decoding", disable=None if progress else True
        ) as bar:
            for batch in batches:
                codes = [np.asarray(corpus[ids[position]], dtype=np.int64) for position in batch]
                if n_q is not None:
                    codes = [item[: pitch_rows + n_q] for item in codes]
                audio = tokenizer.decode_batch(
                    codes,
                    num_samples=[entries[position].num_samples for position in batch],
                    chunk_seconds=chunk_seconds,
                )
                for position, wav in zip(batch, audio, strict=True):
                    save_audio(root / _wav_name(ids[position], where), wav, tokenizer.sample_rate)
                    written.append(out_dir / _wav_name(ids[position], where))
                bar.update(len(batch))
        if staging is not None:
            os.replace(staging, out_dir)
            staging = None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
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
    """Refuse an output that is a file, or (without ``overwrite``) a folder that holds one of ``targets``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder; token files resynthesize to a folder")
    if out_dir.exists() and not overwrite:
        clashes = [path for path in targets if path.exists()]
        if clashes:
            raise FileExistsError(
                f"{clashes[0]} already exists ({len(clashes)} of {len(targets)} outputs do); "
                "pass --overwrite to replace them"
            )


def _wav_name(utt_id: str, where: object) -> Path:
    """``spk/utt1`` -> ``spk/utt1.wav``; ids that would leave the output folder are refused."""
    parts = utt_id.split("/")
    if utt_id.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise TokenFileError(
            f"{where}: utterance id {utt_id!r} cannot be used as a file name under the output folder"
        )
    return Path(*parts[:-1], parts[-1] + ".wav")
