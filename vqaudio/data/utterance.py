"""The unit of every corpus: ``Utterance`` (one audio file and what is known about it), and the checks that
every reader (folders, list files, manifests, the LibriSpeech layout) shares.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vqaudio.errors import DataError
from vqaudio.io.audio import AUDIO_EXTENSIONS


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


def find_audio_files(folder: Path) -> Iterable[Path]:
    """Audio files below ``folder`` in a stable (sorted) walk order; hidden folders are not entered."""
    for directory, subdirs, files in os.walk(folder, followlinks=True):
        subdirs[:] = sorted(name for name in subdirs if not name.startswith("."))
        for name in sorted(files):
            if is_audio_file(name):
                yield Path(directory) / name


def sort_and_check(utterances: Iterable[Utterance], where: str) -> list[Utterance]:
    """Sort by id; raise DataError on duplicate ids (naming the first two files that clash)."""
    ordered = sorted(utterances, key=lambda utt: utt.id)
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
