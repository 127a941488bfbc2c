"""Manifest TSV: one utterance per line, the fast way to load a corpus (no directory walk, no header reads).

Format (UTF-8, tab-separated)::

    /data/LibriSpeech/dev-clean                        <- optional root line (fairseq wav2vec style)
    id  path  samples  sample_rate  speaker  text      <- optional header line
    84-121123-0000  84/121123/84-121123-0000.flac  28800  16000  84  GO DO YOU HEAR

* Root line: a first line without a tab that is not an audio path. Relative paths are under it; a relative
  root is relative to the manifest's folder. Without a root line, paths are relative to the manifest's folder.
* Header line: names the columns (any order; ``path`` is required; known: id, path, samples, sample_rate,
  speaker, text). A first line that looks like a header but has no ``path`` column (``id  file  samples``)
  is an error, not a data row. Without a header the columns are positional: ``path samples speaker text``, trailing ones
  optional, so a fairseq manifest (root line + ``path<TAB>frames``) reads as is.
* Empty fields mean unknown. ``samples`` is at the file's own rate. Without an ``id`` column the id is the
  path relative to the root, without extension.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from vqaudio.data.utterance import Utterance, id_from_path, sort_and_check
from vqaudio.errors import DataError
from vqaudio.io.atomic import atomic_path
from vqaudio.io.audio import AUDIO_EXTENSIONS
from vqaudio.io.inputs import read_text, regular_file_problem, tsv_field_problem, utterance_id_problem

COLUMNS = ("id", "path", "samples", "sample_rate", "speaker", "text")
POSITIONAL_COLUMNS = ("path", "samples", "speaker", "text")
# names that other tools give columns: a first line made of them is a header, even without ``path``
HEADER_WORDS = frozenset(
    COLUMNS
    + ("utt", "utt_id", "utterance", "file", "filename", "file_name", "wav", "audio", "audio_path")
    + ("frames", "num_samples", "n_samples", "duration", "length", "rate", "sr", "transcript", "spk")
)


def read_manifest(manifest: str | Path, check_paths: bool = True) -> list[Utterance]:
    """Read a manifest TSV (see the module docstring); sorted by id.

    Args:
        manifest: the .tsv file.
        check_paths: verify that every listed audio file exists.
    Raises:
        DataError: an empty manifest, a root that is not a folder, unknown columns, malformed numbers or
            too many fields (named by file and line), duplicate ids, listed files that do not exist.
    """
    manifest = Path(manifest)
    # split on newlines only: str.splitlines would also split on \f, \x1c, U+2028, ...
    lines = read_text(manifest, DataError, "manifest").split("\n")
    numbered = [(number, line.rstrip("\r")) for number, line in enumerate(lines, start=1) if line.strip()]
    root = manifest.parent
    if numbered and "\t" not in numbered[0][1] and not _looks_like_audio(numbered[0][1]):
        number, line = numbered.pop(0)
        word = line.strip()
        # a one-column header is not a root (a column name is, when such a folder exists)
        header = word in ("path", "id") or (word.lower() in HEADER_WORDS and not (root / word).is_dir())
        if not header:
            root = manifest.parent / line.strip()
            if not root.is_dir():
                raise DataError(
                    f"{manifest}:{number}: root folder {line.strip()!r} does not exist; the first line of a "
                    "manifest, when it has no tab, names the folder that relative paths are under"
                )
        else:
            numbered.insert(0, (number, line))
    columns: tuple[str, ...] = POSITIONAL_COLUMNS
    if numbered and "path" in [field.strip() for field in numbered[0][1].split("\t")]:
        number, line = numbered.pop(0)
        columns = tuple(name.strip() for name in line.split("\t"))
        unknown = sorted(set(columns) - set(COLUMNS))
        if unknown or len(set(columns)) != len(columns):
            raise DataError(
                f"{manifest}:{number}: bad header {columns}; expected distinct column names from {COLUMNS}"
            )
    elif numbered and _looks_like_header(numbered[0][1]):
        number, line = numbered[0]
        fields = tuple(line.split("\t"))
        raise DataError(
            f"{manifest}:{number}: the header {fields} has no 'path' column; name the "
            f"audio file column 'path' (known columns: {', '.join(COLUMNS)})"
        )
    if not numbered:
        raise DataError(f"{manifest}: the manifest lists no utterances (an empty split?); regenerate it")

    utterances = [_parse_row(manifest, number, line, columns, root) for number, line in numbered]
    if check_paths:
        missing = [utt for utt in utterances if regular_file_problem(utt.path) is not None]
        if missing:
            raise DataError(
                f"{manifest}: {missing[0].path} {regular_file_problem(missing[0].path)} ({len(missing)} of "
                f"{len(utterances)} listed files missing or not regular files); fix the root line / paths or "
                "regenerate the manifest with vqaudio prepare"
            )
    return sort_and_check(utterances, where=str(manifest))


def write_manifest(
    utterances: Sequence[Utterance], manifest: str | Path, root: str | Path | None = None
) -> Path:
    """Write ``utterances`` as a manifest with a root line and a header, atomically.

    Args:
        utterances: any corpus (at least one utterance).
        manifest: the .tsv to write.
        root: the folder that paths are written relative to (absolute in the root line); default: the
            deepest folder holding every file.
    Returns:
        the manifest path.
    Raises:
        DataError: no utterances, or an id or path that a manifest cannot hold (``vqaudio.io.inputs``).
    """
    manifest = Path(manifest)
    if not utterances:
        raise DataError(f"{manifest}: refusing to write an empty manifest (no utterances in this split)")
    for utt in utterances:
        problem = utterance_id_problem(utt.id) or tsv_field_problem(str(utt.path))
        if problem is not None:
            raise DataError(f"{manifest}: utterance {utt.id!r} ({utt.path}): the id or path {problem}")
    paths = [utt.path.resolve() for utt in utterances]
    common = Path(os.path.commonpath([path.parent for path in paths]))
    root_path = Path(root).resolve() if root is not None else common
    rows = ["\t".join(COLUMNS)]
    for utt, path in zip(utterances, paths, strict=True):
        try:
            relative = path.relative_to(root_path).as_posix()
        except ValueError:
            relative = str(path)
        fields = (
            utt.id,
            relative,
            "" if utt.num_samples is None else str(utt.num_samples),
            "" if utt.sample_rate is None else str(utt.sample_rate),
            _clean(utt.speaker),
            _clean(utt.text),
        )
        rows.append("\t".join(fields))
    with atomic_path(manifest) as tmp:
        tmp.write_text(f"{root_path}\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return manifest


def _parse_row(manifest: Path, number: int, line: str, columns: Sequence[str], root: Path) -> Utterance:
    fields = line.split("\t")
    if len(fields) > len(columns):
        raise DataError(
            f"{manifest}:{number}: {len(fields)} fields but {len(columns)} columns ({', '.join(columns)}); "
            "transcripts must not contain tabs"
        )
    values = {name: (value.strip() or None) for name, value in zip(columns, fields, strict=False)}
    path_field = values.get("path")
    if path_field is None:
        raise DataError(f"{manifest}:{number}: empty path")
    # one Path per row, built from the joined string (pathlib's / operator parses both sides again)
    path = Path(os.path.join(root, path_field))
    utterance_id = values.get("id")
    if utterance_id is None:
        utterance_id = id_from_path(Path(path_field))
    return Utterance(
        id=utterance_id,
        path=path,
        num_samples=_integer(manifest, number, "samples", values.get("samples"), minimum=0),
        sample_rate=_integer(manifest, number, "sample_rate", values.get("sample_rate"), minimum=1),
        speaker=values.get("speaker"),
        text=values.get("text"),
    )


def _integer(manifest: Path, number: int, name: str, value: str | None, minimum: int) -> int | None:
    if value is None:
        return None
    try:
        result = int(value)
    except ValueError:
        result = minimum - 1
    if result < minimum:
        raise DataError(f"{manifest}:{number}: column {name} must be an integer >= {minimum}, got {value!r}")
    return result


def _looks_like_audio(line: str) -> bool:
    return Path(line.strip()).suffix.lower() in AUDIO_EXTENSIONS


def _looks_like_header(line: str) -> bool:
    """No field is an audio path and one is a column name (``id  file  samples``)."""
    fields = [field.strip() for field in line.split("\t")]
    return not any(_looks_like_audio(field) for field in fields) and any(
        field.lower() in HEADER_WORDS for field in fields
    )


def _clean(value: str | None) -> str:
    # tabs and newlines would break the row structure
    return "" if value is None else " ".join(value.split())
