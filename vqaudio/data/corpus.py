"""A corpus is a sorted list of utterances; ``load_corpus`` reads one from whatever the user points at.

Accepted sources, tried in this order:

* a manifest ``.tsv`` (see :mod:`vqaudio.data.manifest`),
* a list file (``.txt``/``.lst``: one audio path per line; ``.scp``: Kaldi-style ``id path`` lines),
  relative paths being under the list file's folder,
* one audio file,
* a LibriSpeech-layout tree (``<split>/<speaker>/<chapter>/*.trans.txt``; the root, or one split), read with
  speakers and transcripts (see :mod:`vqaudio.data.librispeech`),
* any other folder: every audio file below it, recursively.

``read_labels`` / ``labels_for_tokens`` give the transcripts and speakers of a manifest or LibriSpeech tree by
utterance id (for exports of token files). Enumerating never decodes audio. Headers are not read either unless ``read_headers=True`` (plain folders
then have ``num_samples=None``); manifests carry the lengths, so large corpora load in milliseconds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from vqaudio.data.librispeech import is_librispeech_tree, read_librispeech
from vqaudio.data.manifest import read_manifest
from vqaudio.data.utterance import Utterance, find_audio_files, id_from_path, sort_and_check
from vqaudio.errors import AudioError, DataError
from vqaudio.io.audio import AUDIO_EXTENSIONS, audio_info, check_audio_header
from vqaudio.io.inputs import read_text, regular_file_problem
from vqaudio.progress import progress_bar

log = logging.getLogger(__name__)

LIST_EXTENSIONS = (".txt", ".lst", ".scp")
MANIFEST_EXTENSIONS = (".tsv",)


def load_corpus(source: str | Path, *, read_headers: bool = False) -> list[Utterance]:
    """Read a corpus from a manifest, a list file, one audio file, a LibriSpeech tree or an audio folder.

    Args:
        source: see the module docstring for what is accepted.
        read_headers: fill ``num_samples``/``sample_rate`` from the file headers where the source does not
            give them (one ``sf.info`` per file, with a progress bar). Unreadable files raise ``AudioError``.
    Returns:
        utterances sorted by id.
    Raises:
        DataError: missing path, no audio found, duplicate ids, manifest or list paths that do not exist,
            malformed manifest or transcripts. The message names the file or folder and the fix.
    """
    source = Path(source)
    if not source.exists():
        raise DataError(f"{source}: no such file or folder; pass a manifest .tsv, list file or audio folder")
    if not source.is_file() and not source.is_dir():
        raise DataError(
            f"{source}: {regular_file_problem(source)}; pass a manifest .tsv, list file, audio file or folder"
        )
    if source.is_file():
        suffix = source.suffix.lower()
        if suffix in MANIFEST_EXTENSIONS:
            utterances = read_manifest(source)
        elif suffix in LIST_EXTENSIONS:
            utterances = read_list_file(source)
        elif suffix in AUDIO_EXTENSIONS:
            utterance = Utterance(id=source.stem, path=source, num_samples=None, sample_rate=None)
            utterances = sort_and_check([utterance], where=str(source))
        else:
            raise DataError(
                f"{source}: not a manifest (.tsv), list file ({', '.join(LIST_EXTENSIONS)}) or audio file "
                f"({', '.join(AUDIO_EXTENSIONS)}); pass one of those or a folder"
            )
    else:
        if is_librispeech_tree(source):
            utterances = read_librispeech(source)
        else:
            utterances = read_audio_folder(source)
    if read_headers:
        utterances = fill_headers(utterances)
    return utterances


def read_audio_folder(folder: str | Path) -> list[Utterance]:
    """Every audio file below ``folder`` (recursive, hidden files and folders skipped), ids = relative paths.

    Raises:
        DataError: the folder holds no audio file, or two files differ only by extension (same id).
    """
    folder = Path(folder)
    paths = list(find_audio_files(folder))
    if not paths:
        raise DataError(
            f"{folder}: no audio files found (looked recursively for {', '.join(AUDIO_EXTENSIONS)}); "
            "point at the folder that holds the audio"
        )
    utterances = [
        Utterance(id=id_from_path(path.relative_to(folder)), path=path, num_samples=None, sample_rate=None)
        for path in paths
    ]
    return sort_and_check(utterances, where=str(folder))


def read_list_file(list_file: str | Path) -> list[Utterance]:
    """A list of audio files: ``.txt``/``.lst`` one path per line, ``.scp`` ``<id> <path>`` per line.

    Relative paths are under the list file's folder; blank lines and lines starting with ``#`` are skipped.
    Without explicit ids, an id is the path relative to the common folder of all listed files, without
    extension.

    Raises:
        DataError: an empty list, a listed file that does not exist (first one named, with the line), a
            Kaldi pipe command, duplicate ids.
    """
    list_file = Path(list_file)
    base = list_file.parent
    with_ids = list_file.suffix.lower() == ".scp"
    entries: list[tuple[str | None, Path, int]] = []
    for line_number, raw in enumerate(read_text(list_file, DataError, "list file").split("\n"), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        utterance_id: str | None = None
        if with_ids:
            fields = line.split(maxsplit=1)
            if len(fields) != 2:
                raise DataError(f"{list_file}:{line_number}: expected '<id> <path>', got {line!r}")
            utterance_id, line = fields
            if line.endswith("|"):
                raise DataError(
                    f"{list_file}:{line_number}: pipe commands are not supported; write the audio to files"
                )
        path = Path(line)
        entries.append((utterance_id, path if path.is_absolute() else base / path, line_number))
    if not entries:
        raise DataError(f"{list_file}: the list is empty; add one audio path per line")
    missing = [(path, number) for _, path, number in entries if regular_file_problem(path) is not None]
    if missing:
        path, number = missing[0]
        raise DataError(
            f"{list_file}:{number}: {path} {regular_file_problem(path)} ({len(missing)} of {len(entries)} "
            "listed files missing or not regular files); relative paths are read from the list file's folder"
        )
    common = Path(os.path.commonpath([str(path.resolve().parent) for _, path, _ in entries]))
    utterances = [
        Utterance(
            id=utterance_id if utterance_id is not None else id_from_path(path.resolve().relative_to(common)),
            path=path,
            num_samples=None,
            sample_rate=None,
        )
        for utterance_id, path, _ in entries
    ]
    return sort_and_check(utterances, where=str(list_file))


def fill_headers(
    utterances: Sequence[Utterance], *, skip_bad: bool = False, progress: bool = True
) -> list[Utterance]:
    """Fill ``num_samples``/``sample_rate`` from file headers (no decoding) where they are unknown, and check
    every rate (read or given, e.g. by a manifest) with ``vqaudio.io.audio.check_audio_header``.

    Args:
        utterances: any corpus.
        skip_bad: drop unreadable or empty files, or files with implausible rates (their count and names are
            logged) instead of raising.
        progress: show a tqdm bar (only when there are many files to read).
    Returns:
        the utterances with headers filled, unreadable ones removed when ``skip_bad``.
    Raises:
        AudioError: an unreadable or empty file (without ``skip_bad``): the message names it and the count.
    """
    result = list(utterances)
    todo = {index for index, utt in enumerate(result) if utt.num_samples is None or utt.sample_rate is None}
    bad: list[tuple[Utterance, AudioError]] = []
    quiet = not progress or len(todo) < 200
    bar = progress_bar(range(len(result)), desc="reading headers", unit="file", disable=quiet, leave=False)
    for index in bar:
        utt = result[index]
        try:
            if index in todo:
                info = audio_info(utt.path)
                utt = replace(utt, num_samples=info.num_samples, sample_rate=info.sample_rate)
            assert utt.sample_rate is not None and utt.num_samples is not None
            check_audio_header(utt.path, utt.sample_rate)
            if utt.num_samples == 0:
                raise AudioError(f"{utt.path}: audio is empty (0 samples)", fix="remove it")
        except AudioError as exc:
            bad.append((utt, exc))
            continue
        result[index] = utt
    if bad:
        if not skip_bad:
            more = f" (and {len(bad) - 1} more unreadable or unusable files)" if len(bad) > 1 else ""
            raise AudioError(f"{bad[0][1]}{more}")
        bad_ids = {utt.id for utt, _ in bad}
        log.warning("skipped %d unreadable, empty or implausible file(s) (--skip-bad):", len(bad))
        for _, error in bad:
            log.warning("  %s", error.reason)
        result = [utt for utt in result if utt.id not in bad_ids]
    return result


def read_labels(source: str | Path) -> dict[str, dict[str, str | None]]:
    """Transcripts and speakers by utterance id, from a manifest ``.tsv`` (its ``text`` and ``speaker``
    columns) or a LibriSpeech-layout tree; the audio files need not exist.

    Returns:
        ``utt_id -> {"transcript": text or None, "speaker": speaker or None}``.
    Raises:
        DataError: ``source`` is neither (other corpora carry no labels), or a malformed manifest.
    """
    source = Path(source)
    if source.is_file() and source.suffix.lower() in MANIFEST_EXTENSIONS:
        utterances = read_manifest(source, check_paths=False)
    elif source.is_dir() and is_librispeech_tree(source):
        utterances = read_librispeech(source)
    elif not source.exists():
        raise DataError(f"{source}: no such manifest; pass the manifest .tsv the tokens were made from")
    else:
        raise DataError(
            f"{source}: not a manifest (.tsv) or LibriSpeech tree, so it names no transcripts or speakers; "
            "pass a manifest with text / speaker columns (vqaudio prepare writes one)"
        )
    return {utt.id: {"transcript": utt.text, "speaker": utt.speaker} for utt in utterances}


def labels_for_tokens(
    meta: Mapping[str, object], ids: Collection[str], manifest: str | Path | None = None
) -> dict[str, dict[str, str | None]] | None:
    """The labels (``read_labels``) of a token file's utterances: from ``manifest`` when given, else from the
    corpus the tokens were made from (``source`` in their meta) when it is a manifest or LibriSpeech tree that
    is still there.

    Args:
        meta: the token file's meta (``TokenCorpus.meta``).
        ids: its utterance ids.
        manifest: the manifest to join by utterance id.
    Returns:
        the labels, or None when there is no label source.
    Raises:
        DataError: ``manifest`` cannot be read, or names none of ``ids``.
    """
    if manifest is None:
        source = meta.get("source")
        if not isinstance(source, str) or not source:
            return None
        path = Path(source)
        usable = (path.is_file() and path.suffix.lower() in MANIFEST_EXTENSIONS) or (
            path.is_dir() and is_librispeech_tree(path)
        )
        if not usable:
            return None
        try:
            labels = read_labels(path)
        except DataError as exc:
            log.warning(
                "no transcripts or speakers: the corpus the tokens were made from is unreadable (%s)", exc
            )
            return None
        where = f"{path} (the corpus the tokens were made from)"
    else:
        labels = read_labels(manifest)
        where = str(manifest)
    found = sum(utt_id in labels for utt_id in ids)
    if found == 0 and manifest is not None:
        example = next(iter(ids), "")
        raise DataError(
            f"{manifest}: names none of the {len(ids)} utterances of the token file (e.g. {example!r}); pass "
            "the manifest the tokens were made from"
        )
    if found < len(ids):
        log.warning(
            "%s: %d of %d utterances have no line; their transcript and speaker are unknown",
            where,
            len(ids) - found,
            len(ids),
        )
    log.info("transcripts and speakers from %s", where)
    return {utt_id: labels[utt_id] for utt_id in ids if utt_id in labels}
