"""The unit of every corpus: ``Utterance`` (one audio file and what is known about it), and what every
reader (folders, list files, manifests, the LibriSpeech layout) shares: the one folder walk
(``find_audio_files``), ids made from paths (``id_from_path``) and the checks of ``sort_and_check``.
"""

from __future__ import annotations

import logging
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath

from vqaudio.errors import DataError
from vqaudio.io.audio import AUDIO_EXTENSIONS
from vqaudio.io.inputs import tsv_field_problem, utterance_id_problem

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Utterance:
    """One audio file of a corpus and what is known about it."""

    id: str  # unique, stable; LibriSpeech "spk-chap-utt"; folders: relative path without extension (posix)
    path: Path
    num_samples: int | None  # at the file's own rate, None if unknown
    sample_rate: int | None
    speaker: str | None = None
    text: str | None = None

    @property
    def seconds(self) -> float | None:
        """Duration, when the header facts are known."""
        if self.num_samples is None or not self.sample_rate:
            return None
        return self.num_samples / self.sample_rate


def is_audio_file(path: str | Path) -> bool:
    """True for a visible file whose extension is one of ``vqaudio.io.audio.AUDIO_EXTENSIONS``."""
    name = Path(path).name
    # hidden files include the temporaries of atomic writes (".name.XXXX.flac")
    return not name.startswith(".") and Path(name).suffix.lower() in AUDIO_EXTENSIONS


def find_audio_files(folder: Path) -> Iterator[Path]:
    """Audio files below ``folder``: the one folder walk of every corpus reader (and so of tokenize, prepare,
    eval and train).

    * Deterministic: depth first, a folder's files (sorted by name) before its subfolders (sorted by name).
    * Hidden files and folders are skipped (they include the temporaries of atomic writes).
    * Symlinked folders are followed, but every real folder (by ``(st_dev, st_ino)``) is walked once: a loop
      such as ``sub/up -> ..`` ends, and a folder linked twice is not read twice. What was left out is
      logged as a warning.
    * Only regular files (or symlinks to them) are yielded: a FIFO, socket or device with an audio name is
      skipped with a warning (reading a FIFO would block). A broken symlink is yielded, so that reading it
      fails with its name (or is skipped by ``--skip-bad``).
    * A subfolder that cannot be listed (permissions) is skipped with a warning.

    Raises:
        DataError: ``folder`` itself is not a folder or cannot be listed.
    """
    folder = Path(folder)
    try:
        root = os.stat(folder)
    except OSError as exc:
        raise DataError(f"{folder}: cannot read the folder ({exc.strerror or exc})") from exc
    if not stat.S_ISDIR(root.st_mode):
        raise DataError(f"{folder}: not a folder")
    seen: dict[tuple[int, int], Path] = {(root.st_dev, root.st_ino): folder}
    repeated: list[tuple[Path, Path]] = []  # (link, the folder already walked)
    special: list[Path] = []
    unlisted: list[tuple[Path, str]] = []
    stack: list[Path] = [folder]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as listing:
                entries = sorted(listing, key=lambda entry: entry.name)
        except OSError as exc:
            if directory == folder:
                raise DataError(f"{folder}: cannot list the folder ({exc.strerror or exc})") from exc
            unlisted.append((directory, exc.strerror or str(exc)))
            continue
        subfolders: list[Path] = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                info = entry.stat()  # follows symlinks
            except OSError:  # a broken symlink: the reader names it
                if is_audio_file(entry.name):
                    yield path
                continue
            if stat.S_ISDIR(info.st_mode):
                key = (info.st_dev, info.st_ino)
                if key in seen:
                    repeated.append((path, seen[key]))
                else:
                    seen[key] = path
                    subfolders.append(path)
            elif is_audio_file(entry.name):
                if stat.S_ISREG(info.st_mode):
                    yield path
                else:
                    special.append(path)
        stack.extend(reversed(subfolders))
    if repeated:
        link, target = repeated[0]
        log.warning(
            "%s: %d symlinked folder(s) lead to a folder already walked and were not followed (a loop or a "
            "second link), e.g. %s (same folder as %s)",
            folder,
            len(repeated),
            link,
            target,
        )
    if special:
        log.warning(
            "%s: skipped %d audio-named entr%s, e.g. %s",
            folder,
            len(special),
            "y that is not a regular file (FIFO, socket or device)"
            if len(special) == 1
            else "ies that are not regular files (FIFOs, sockets or devices)",
            special[0],
        )
    if unlisted:
        log.warning(
            "%s: skipped %d subfolder(s) that cannot be listed, e.g. %s (%s)",
            folder,
            len(unlisted),
            *unlisted[0],
        )


def id_from_path(relative: str | PurePath) -> str:
    """An utterance id from a path relative to a corpus root: ``spk/utt1.flac`` -> ``spk/utt1``.

    The extension, a leading ``/`` and ``.``/``..`` parts are dropped (``../audio/a.wav`` -> ``audio/a``), so a
    derived id is always a relative name that resynth can write; two paths that then clash are reported by
    ``sort_and_check`` as duplicate ids.
    """
    path = PurePath(relative)
    parts = [part for part in path.parts if part not in (path.anchor, ".", "..")]
    if parts:
        parts[-1] = PurePath(parts[-1]).stem
    return "/".join(parts)


def sort_and_check(utterances: Iterable[Utterance], where: str) -> list[Utterance]:
    """Sort by id; raise DataError on an unusable id or path (``vqaudio.io.inputs``: empty, absolute, ``..``,
    tabs or line breaks, ...), naming the file, or on duplicate ids (naming the first two files that clash)."""
    ordered = sorted(utterances, key=lambda utt: utt.id)
    for utt in ordered:
        problem = tsv_field_problem(str(utt.path))
        if problem is not None:
            raise DataError(
                f"{where}: the file name {str(utt.path)!r} {problem}; rename the file (token indexes and "
                "manifests are TSV files)"
            )
        problem = utterance_id_problem(utt.id)
        if problem is not None:
            raise DataError(
                f"{where}: utterance id {utt.id!r} ({utt.path}) {problem}; fix the id (a manifest's id "
                "column, a .scp line's first field) or rename the file"
            )
    counts = Counter(utt.id for utt in ordered)
    duplicates = [utterance_id for utterance_id, count in counts.items() if count > 1]
    if duplicates:
        first = duplicates[0]
        paths = [str(utt.path) for utt in ordered if utt.id == first][:2]
        raise DataError(
            f"{where}: duplicate utterance id {first!r} ({' and '.join(paths)}; {len(duplicates)} duplicate "
            "ids in all); ids must be unique: rename one file or keep one format per recording"
        )
    return ordered
