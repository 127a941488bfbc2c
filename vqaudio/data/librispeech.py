"""The LibriSpeech layout (Panayotov et al., 2015, "LibriSpeech: an ASR corpus based on public domain audio
books"): ``<root>/<split>/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac`` with one
``<speaker>-<chapter>.trans.txt`` per chapter folder, each line ``<utt-id> <TRANSCRIPT>``.

``root`` may be the corpus root (several splits) or one split. Any tree in this layout reads the same way;
the fillets recipe (``egs/fillets/local/``) writes its output in it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from vqaudio.data.utterance import Utterance, find_audio_files, sort_and_check
from vqaudio.errors import DataError
from vqaudio.io.atomic import atomic_path
from vqaudio.io.audio import save_audio
from vqaudio.io.inputs import read_text, regular_file_problem

log = logging.getLogger(__name__)

TRANSCRIPT_SUFFIX = ".trans.txt"


def write_transcripts(lines_by_chapter: Mapping[Path, Sequence[str]]) -> None:
    """Write ``<speaker>-<chapter>.trans.txt`` (lines ``<utt-id> <text>``, in the order given) into each chapter
    folder ``.../<speaker>/<chapter>``, atomically: the writer of this layout for the recipes' preparation scripts."""
    for folder, lines in lines_by_chapter.items():
        name = f"{folder.parent.name}-{folder.name}{TRANSCRIPT_SUFFIX}"
        with atomic_path(folder / name) as tmp:
            tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")


class ChapterWriter:
    """Writes clips of one corpus as ``root/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac``, then their
    transcripts: the voice scripts' way to build a corpus that ``vqaudio prepare`` reads."""

    def __init__(self, root: Path, sample_rate: int) -> None:
        self.root = root
        self.sample_rate = sample_rate
        self.seconds = 0.0
        self._lines: dict[Path, list[str]] = {}

    def add(self, speaker: str, chapter: str, number: int, audio: np.ndarray, text: str) -> None:
        """Write one mono clip (clipped to [-1, 1]) and remember its transcript line."""
        target = self.root / speaker / chapter / f"{speaker}-{chapter}-{number:04d}.flac"
        save_audio(target, audio, self.sample_rate)
        self._lines.setdefault(target.parent, []).append(f"{target.stem} {text}")
        self.seconds += audio.size / self.sample_rate

    def write_transcripts(self) -> None:
        """One ``.trans.txt`` per chapter folder, lines in the order the clips were added."""
        write_transcripts(self._lines)


def is_librispeech_tree(root: str | Path) -> bool:
    """True when ``root`` is a split (``<speaker>/<chapter>/*.trans.txt``) or a root of splits."""
    root = Path(root)
    for pattern in (f"*/*/*{TRANSCRIPT_SUFFIX}", f"*/*/*/*{TRANSCRIPT_SUFFIX}"):
        if next(root.glob(pattern), None) is not None:
            return True
    return False


def read_transcripts(transcript_file: str | Path) -> dict[str, str]:
    """``<utt-id> <TEXT>`` lines -> {utt_id: text}.

    Raises:
        DataError: a line without text or a repeated id; the message names the file and line number.
    """
    transcript_file = Path(transcript_file)
    texts: dict[str, str] = {}
    content = read_text(transcript_file, DataError, "transcript file")
    for line_number, raw in enumerate(content.split("\n"), start=1):
        line = raw.strip()
        if not line:
            continue
        fields = line.split(maxsplit=1)
        if len(fields) != 2:
            raise DataError(
                f"{transcript_file}:{line_number}: malformed transcript line {line!r}; "
                "expected '<utterance-id> <text>'"
            )
        utterance_id, text = fields
        if utterance_id in texts:
            raise DataError(f"{transcript_file}:{line_number}: utterance {utterance_id!r} is listed twice")
        texts[utterance_id] = text
    return texts


def read_librispeech(root: str | Path) -> list[Utterance]:
    """Every utterance below ``root`` with speaker (the speaker folder) and transcript; sorted by id.

    Handling of imperfect trees: an audio file without a transcript line, or a folder of audio files
    without a ``.trans.txt``, is an error (so a corpus never silently loses its transcripts); transcript
    lines without an audio file are counted and logged (nothing is lost). Lengths are not read here
    (``num_samples=None``); see ``vqaudio.data.corpus.fill_headers``.

    Raises:
        DataError: as above, naming the transcript file or folder; no audio at all; duplicate ids.
    """
    root = Path(root)
    by_folder: dict[Path, list[Path]] = defaultdict(list)
    for path in find_audio_files(root):
        by_folder[path.parent].append(path)
    if not by_folder:
        raise DataError(f"{root}: no audio files found in this LibriSpeech-layout tree")
    utterances: list[Utterance] = []
    orphan_lines = 0
    for folder in sorted(by_folder):
        transcript_files = sorted(
            path for path in folder.glob(f"*{TRANSCRIPT_SUFFIX}") if regular_file_problem(path) is None
        )
        if not transcript_files:
            raise DataError(
                f"{folder}: {len(by_folder[folder])} audio files but no <spk>-<chapter>{TRANSCRIPT_SUFFIX}; "
                "restore the transcript file or move the audio out of the LibriSpeech tree"
            )
        texts: dict[str, str] = {}
        for transcript_file in transcript_files:
            texts.update(read_transcripts(transcript_file))
        speaker = folder.parent.name
        for path in by_folder[folder]:
            text = texts.pop(path.stem, None)
            if text is None:
                raise DataError(
                    f"{transcript_files[0]}: no transcript line for {path.name} (expected a line "
                    f"'{path.stem} <text>'); add the line or remove the audio file"
                )
            utterances.append(Utterance(path.stem, path, None, None, speaker=speaker, text=text))
        orphan_lines += len(texts)
    if orphan_lines:
        log.warning("%s: %d transcript line(s) have no audio file (ignored)", root, orphan_lines)
    return sort_and_check(utterances, where=str(root))
