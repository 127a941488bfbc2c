"""Token files into the formats that downstream models read, and back: unit text (fairseq / GSLM style), JSON
Lines, and a Hugging Face ``datasets`` dataset saved to disk.

Each format is written from a ``TokenCorpus`` (``load_tokens``), and each has a reader here that gives the same
codes back: ``read_units``, ``read_jsonl``, ``read_hf`` return ``utt_id -> codes [rows, frames]`` equal to the
token file's selected rows. ``docs/FORMATS.md`` defines the files exactly.

    units  OUT        utt_id<TAB>u u u ...[<TAB>d d d ...]    one line per utterance, in id order
           OUT.json   how units map back to codes: rows, layout, codebook size, dedup; the model
    jsonl  OUT        one JSON object per utterance (``record_fields``): id, codes [rows][frames], n_frames,
                      frame_rate, start, end, transcript and speaker (when known), rows, model
    hf     OUT/       the same records as a ``datasets.Dataset`` (``save_to_disk``); needs the ``hf`` extra

Rows: a token file holds a pitch row (when its meta says ``pitch_rows: 1``) and then n_q codebooks.
``select_rows`` picks some of them: the pitch row or not, and codebooks by number (0-based, the pitch row not
counted) or the first n_q.

Unit layouts (one frame of R selected rows, codebook size K, frames f = 0, 1, ...):

    flat        frame-major with per-row offsets: row r's code c becomes r * K + c (vocabulary R * K), so the
                units of frame f are c[0,f], K + c[1,f], 2K + c[2,f], ...; with one row, the codes themselves
    interleave  frame-major without offsets: c[0,f] c[1,f] ... c[R-1,f] (vocabulary K)

Deduplication (``dedup``): a run of identical frames (equal in every selected row) becomes one frame, and its
length in frames goes in a third column, one duration per kept frame (GSLM's units with durations). The reader
repeats each frame by its duration, so the codes come back exactly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple, TextIO

import numpy as np

from vqaudio._version import __version__
from vqaudio.errors import InputError, TokenFileError
from vqaudio.io.atomic import (
    OutputFiles,
    atomic_folder,
    atomic_path,
    check_output,
    temporary_file,
    writing_to,
)
from vqaudio.io.inputs import regular_file_problem
from vqaudio.io.token_file import TokenCorpus, storage_dtype
from vqaudio.optional import require
from vqaudio.progress import progress_bar

log = logging.getLogger(__name__)

FORMATS = ("units", "jsonl", "hf")
LAYOUTS = ("flat", "interleave")
UNITS_FORMAT = "vqaudio-units"
UNITS_FORMAT_VERSION = 1
# the fields of one JSONL line / dataset row, in order; transcript and speaker only when a label source has them
RECORD_FIELDS = (
    "id",  # utterance id
    "codes",  # [rows][frames] integers: the selected rows of the token file
    "n_frames",
    "frame_rate",  # frames per second
    "start",  # seconds: 0, each utterance is a whole audio file
    "end",  # seconds: the utterance's audio length
    "transcript",
    "speaker",
    "pitch_row",  # true when codes[0] is the pitch row (F0 and voicing)
    "codebooks",  # the codebook number of each following row (0-based, the pitch row not counted)
    "model",  # the tokenizer that made the codes: name and weights hash
    "model_hash",
)
LABEL_FIELDS = ("transcript", "speaker")
_HF_FILES = ("dataset_info.json", "state.json")  # with data-NNNNN-of-NNNNN.arrow: what save_to_disk writes

# utterance id -> {"transcript": ..., "speaker": ...}; a missing key or None: unknown
Labels = Mapping[str, Mapping[str, str | None]]


class RowSelection(NamedTuple):
    """Which rows of a token file go into an export."""

    rows: list[int]  # indices into the token file's rows [pitch row?, codebook 0, codebook 1, ...]
    pitch_row: bool  # rows[0] is the pitch row
    codebooks: list[int]  # codebook number of each other row (0-based, the pitch row not counted)


class Exported(NamedTuple):
    """An export read back."""

    codes: dict[str, np.ndarray]  # utt_id -> int64 [rows, frames], the selected rows as written
    records: dict[str, dict[str, Any]]  # utt_id -> the other fields of its JSONL line / row ({} for units)
    meta: dict[str, Any]  # units: OUT.json; jsonl / hf: rows and model as the first record gives them


# --------------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------------
def select_rows(
    meta: Mapping[str, Any],
    *,
    n_q: int | None = None,
    codebooks: Sequence[int] | None = None,
    pitch: bool | None = None,
) -> RowSelection:
    """The rows to export from a token file described by ``meta`` (``TokenCorpus.meta``).

    Args:
        meta: ``num_codebooks`` (rows stored) and ``pitch_rows`` (1: row 0 is the pitch row).
        n_q: the first ``n_q`` codebooks (None: all, unless ``codebooks`` is given).
        codebooks: codebook numbers, 0-based, the pitch row not counted, in the order wanted (not with ``n_q``).
        pitch: include the pitch row (first); None: when the file has one.
    Raises:
        ValueError: both ``n_q`` and ``codebooks``, a codebook the file does not hold, a repeated one, or
            ``pitch`` for a file without a pitch row; the message says what the file holds.
    """
    pitch_rows = int(meta.get("pitch_rows") or 0)
    stored = int(meta["num_codebooks"]) - pitch_rows
    holds = f"the token file holds {stored} codebooks (0-{stored - 1})" + (
        " after a pitch row" if pitch_rows else " and no pitch row"
    )
    if n_q is not None and codebooks is not None:
        raise InputError("give --n-q (the first codebooks) or --codebooks (a list), not both")
    if n_q is not None:
        if not 1 <= n_q <= stored:
            raise InputError(f"--n-q must be between 1 and {stored}, got {n_q}: {holds}")
        chosen = list(range(n_q))
    elif codebooks is not None:
        chosen = [int(number) for number in codebooks]
        bad = [number for number in chosen if not 0 <= number < stored]
        if bad:
            raise InputError(f"--codebooks {','.join(map(str, chosen))}: no codebook {bad[0]}; {holds}")
        if len(set(chosen)) != len(chosen):
            raise InputError(f"--codebooks {','.join(map(str, chosen))} names a codebook twice")
    else:
        chosen = list(range(stored))
    if pitch and not pitch_rows:
        raise InputError(f"--pitch: {holds}; drop --pitch")
    with_pitch = bool(pitch_rows) if pitch is None else bool(pitch)
    if not chosen and not with_pitch:
        raise InputError(f"nothing to export: no codebook and no pitch row selected; {holds}")
    rows = ([0] if with_pitch else []) + [pitch_rows + number for number in chosen]
    return RowSelection(rows, with_pitch, chosen)


def parse_codebooks(text: str) -> list[int]:
    """``"0,2,3"`` -> [0, 2, 3]; ValueError naming the option for anything else."""
    try:
        numbers = [int(part) for part in text.split(",")]
    except ValueError:
        raise InputError(
            f"--codebooks takes codebook numbers separated by commas (0-based, e.g. 0,1), got {text!r}"
        ) from None
    return numbers


# --------------------------------------------------------------------------------------------------
# Units <-> codes
# --------------------------------------------------------------------------------------------------
def units_from_codes(
    codes: np.ndarray, layout: str, codebook_size: int, dedup: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """One utterance's codes -> its units (and durations, with ``dedup``).

    Args:
        codes: [R, F] integer codes in ``[0, codebook_size)``.
        layout: ``flat`` (row r's code c -> r * codebook_size + c) or ``interleave`` (codes as they are);
            both frame-major (the module docstring).
        codebook_size: K, the offset step of ``flat``.
        dedup: collapse runs of identical frames and return their lengths.
    Returns:
        (units int64 [R * F'], durations int64 [F'] or None); F' = F without dedup.
    """
    _check_layout(layout)
    codes = np.asarray(codes, dtype=np.int64)
    if codes.ndim != 2 or codes.shape[1] < 1:
        raise InputError(f"expected codes [rows, frames >= 1], got shape {codes.shape}")
    durations = None
    if dedup:
        changes = np.ones(codes.shape[1], dtype=bool)
        changes[1:] = np.any(
            codes[:, 1:] != codes[:, :-1], axis=0
        )  # a frame that differs from the one before
        starts = np.flatnonzero(changes)
        durations = np.diff(np.append(starts, codes.shape[1]))
        codes = codes[:, starts]  # [R, F']
    if layout == "flat":
        codes = codes + codebook_size * np.arange(codes.shape[0], dtype=np.int64)[:, None]
    return codes.T.reshape(-1), durations  # frame-major: [F', R] -> [F' * R]


def codes_from_units(
    units: Sequence[int] | np.ndarray,
    num_rows: int,
    layout: str,
    codebook_size: int,
    durations: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Units (and durations) -> codes int64 [num_rows, frames]; the inverse of ``units_from_codes``.

    Raises:
        ValueError: a unit count that is not a multiple of ``num_rows``, a unit outside its row's range, a
            duration count that is not the frame count, or a duration below 1.
    """
    _check_layout(layout)
    units = np.asarray(units, dtype=np.int64)
    if units.ndim != 1 or units.size == 0 or units.size % num_rows:
        raise InputError(f"{units.size} units are not a whole number of frames of {num_rows} rows")
    codes = units.reshape(-1, num_rows).T.copy()  # [R, F']
    if layout == "flat":
        codes -= codebook_size * np.arange(num_rows, dtype=np.int64)[:, None]
    bad = (codes < 0) | (codes >= codebook_size)
    if bad.any():
        row, frame = (int(value[0]) for value in np.nonzero(bad))
        unit = int(units[frame * num_rows + row])
        low = row * codebook_size if layout == "flat" else 0
        raise InputError(
            f"unit {unit} (frame {frame}, row {row}) is outside [{low}, {low + codebook_size}), the range of "
            f"its row in the {layout} layout"
        )
    if durations is not None:
        lengths = np.asarray(durations, dtype=np.int64)
        if lengths.shape != (codes.shape[1],):
            raise InputError(f"{lengths.size} durations for {codes.shape[1]} frames; expected one per frame")
        if lengths.min() < 1:
            raise InputError(f"durations must be at least 1 frame, got {int(lengths.min())}")
        codes = np.repeat(codes, lengths, axis=1)
    return codes


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")


# --------------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------------
def units_meta_path(out: str | Path) -> Path:
    """``train.units`` -> ``train.units.json``: the description beside a units file."""
    out = Path(out)
    return out.with_name(out.name + ".json")


def check_can_export(out: str | Path, format: str, overwrite: bool) -> list[Path]:
    """Check before the work that ``format`` can be written to ``out`` (``vqaudio.io.atomic.check_output`` for
    each output); the output paths. FileExistsError without ``overwrite``, OutputError if unwritable."""
    out = Path(out)
    if format == "units":
        return [check_output(path, overwrite=overwrite) for path in (out, units_meta_path(out))]
    if format == "jsonl":
        return [check_output(out, overwrite=overwrite)]
    if format == "hf":
        what = "`vqaudio export --format hf`"
        return [check_output(out, overwrite=overwrite, folder=True, replaceable=_hf_file, what=what)]
    raise InputError(f"unknown export format {format!r}; expected one of {', '.join(FORMATS)}")


def write_units(
    corpus: TokenCorpus,
    out: str | Path,
    selection: RowSelection,
    *,
    layout: str = "flat",
    dedup: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> tuple[Path, Path]:
    """Write ``corpus`` as unit text ``out`` and its description ``out.json`` (committed together).

    Args:
        corpus: the token file.
        out: the units file; ``out.json`` goes beside it.
        selection: the rows (``select_rows``).
        layout: ``flat`` or ``interleave`` (the module docstring).
        dedup: collapse runs of identical frames; their durations go in a third column.
        overwrite: replace existing outputs; otherwise FileExistsError naming the file.
        progress: show a progress bar on a terminal.
    Returns:
        (units path, description path).
    """
    _check_layout(layout)
    out, meta_path = check_can_export(out, "units", overwrite)
    size = corpus.codebook_size
    meta = {
        "format": UNITS_FORMAT,
        "format_version": UNITS_FORMAT_VERSION,
        "layout": layout,
        "dedup": dedup,
        "pitch_row": selection.pitch_row,
        "codebooks": selection.codebooks,
        "units_per_frame": len(selection.rows),
        "codebook_size": size,
        "vocab_size": size * len(selection.rows) if layout == "flat" else size,
        **_source_facts(corpus),
    }
    with OutputFiles([out, meta_path], overwrite=overwrite) as files:  # the description last
        with open(files.stage(out, ".txt"), "w", encoding="utf-8", newline="\n") as handle:
            for utt_id, codes in _selected(corpus, selection, progress, "units"):
                units, durations = units_from_codes(codes, layout, size, dedup)
                line = f"{utt_id}\t{_numbers(units)}"
                if durations is not None:
                    line += f"\t{_numbers(durations)}"
                handle.write(line + "\n")
        files.stage(meta_path).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out, meta_path


def write_jsonl(
    corpus: TokenCorpus,
    out: str | Path,
    selection: RowSelection,
    *,
    labels: Labels | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write ``corpus`` as JSON Lines: one ``records`` object per utterance, in id order, atomically.

    Args:
        corpus, selection, overwrite, progress: as ``write_units``.
        labels: transcripts and speakers by utterance id (``vqaudio.data.corpus.labels_for_tokens``); a field is
            written when any utterance has it (null for the others).
    """
    (out,) = check_can_export(out, "jsonl", overwrite)
    with atomic_path(out, ".jsonl") as staged, open(staged, "w", encoding="utf-8", newline="\n") as handle:
        for record in records(corpus, selection, labels, progress, "jsonl"):
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return out


def write_hf(
    corpus: TokenCorpus,
    out: str | Path,
    selection: RowSelection,
    *,
    labels: Labels | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Write ``corpus`` as a Hugging Face dataset folder (``datasets.Dataset.save_to_disk``) of ``records``.

    ``datasets.load_from_disk(out)`` opens it. The rows are written to an Arrow file beside ``out`` (memory
    stays at one batch), saved into a staging folder, and the folder replaces ``out`` when complete.

    Args: as ``write_jsonl``.
    Raises:
        MissingDependency: the ``datasets`` package is not installed (``pip install 'vqaudio[hf]'``).
    """
    datasets = import_datasets()
    from datasets.arrow_writer import ArrowWriter

    (out,) = check_can_export(out, "hf", overwrite)
    fields = _label_fields(labels)
    code = datasets.Value(storage_dtype(corpus.codebook_size).name)
    types = {
        "id": datasets.Value("string"),
        "codes": datasets.Sequence(datasets.Sequence(code)),
        "n_frames": datasets.Value("int64"),
        "frame_rate": datasets.Value("float64"),
        "start": datasets.Value("float64"),
        "end": datasets.Value("float64"),
        **{field: datasets.Value("string") for field in fields},
        "pitch_row": datasets.Value("bool"),
        "codebooks": datasets.Sequence(datasets.Value("int32")),
        "model": datasets.Value("string"),
        "model_hash": datasets.Value("string"),
    }
    features = datasets.Features(types)
    scratch = temporary_file(out, ".arrow")  # beside OUT; a killed run's is removed by the next check_output
    try:
        with writing_to(out):
            writer = ArrowWriter(features=features, path=str(scratch))
            try:
                for record in records(corpus, selection, labels, progress, "hf"):
                    writer.write(record)
                writer.finalize()
            finally:
                writer.close()
        dataset = datasets.Dataset.from_file(str(scratch))
        with atomic_folder(out, overwrite=overwrite) as staging, _quiet_datasets(datasets):
            dataset.save_to_disk(str(staging))
    finally:
        scratch.unlink(missing_ok=True)
    return out


def records(
    corpus: TokenCorpus,
    selection: RowSelection,
    labels: Labels | None = None,
    progress: bool = False,
    what: str = "records",
) -> Iterator[dict[str, Any]]:
    """One JSON-ready record per utterance, in id order: the JSONL line / dataset row (``RECORD_FIELDS``)."""
    fields = _label_fields(labels)
    facts = _source_facts(corpus)
    for utt_id, codes in _selected(corpus, selection, progress, what):
        entry = corpus.entry(utt_id)
        known = (labels or {}).get(utt_id) or {}
        yield {
            "id": utt_id,
            "codes": codes.tolist(),
            "n_frames": int(codes.shape[1]),
            "frame_rate": corpus.frame_rate,
            "start": 0.0,
            "end": entry.num_samples / corpus.sample_rate,
            **{field: known.get(field) for field in fields},
            "pitch_row": selection.pitch_row,
            "codebooks": selection.codebooks,
            "model": facts["model_name"],
            "model_hash": facts["model_hash"],
        }


def _selected(
    corpus: TokenCorpus, selection: RowSelection, progress: bool, what: str
) -> Iterator[tuple[str, np.ndarray]]:
    """(utt_id, codes [selected rows, frames]) in id order, with a progress bar."""
    rows = np.asarray(selection.rows)
    with progress_bar(
        total=len(corpus), unit="utt", desc=f"export {what}", disable=None if progress else True
    ) as bar:
        for utt_id in corpus:
            yield utt_id, np.asarray(corpus[utt_id])[rows]
            bar.update(1)


def _source_facts(corpus: TokenCorpus) -> dict[str, Any]:
    meta = corpus.meta
    return {
        "frame_rate": corpus.frame_rate,
        "sample_rate": corpus.sample_rate,
        "pitch_levels": meta.get("pitch_levels") if meta.get("pitch_rows") else None,
        "model_name": meta.get("model_name"),
        "model_hash": meta.get("model_hash"),
        "num_utterances": len(corpus),
        "tokens": [str(path) for path in corpus.paths],
        "vqaudio_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def _label_fields(labels: Labels | None) -> list[str]:
    """The label fields that some utterance has, in ``LABEL_FIELDS`` order."""
    present = {key for value in (labels or {}).values() for key, text in value.items() if text is not None}
    return [field for field in LABEL_FIELDS if field in present]


def _numbers(values: np.ndarray) -> str:
    return " ".join(map(str, values.tolist()))


def _hf_file(relative: Path) -> bool:
    name = str(relative)
    return name in _HF_FILES or (name.startswith("data-") and name.endswith(".arrow") and "/" not in name)


def import_datasets() -> Any:
    """The ``datasets`` module, or MissingDependency naming the extra to install."""
    return require("datasets", "hf", "the Hugging Face format")


@contextmanager
def _quiet_datasets(datasets: Any) -> Iterator[None]:
    """Without datasets' own progress bars (ours counts the utterances), restored afterwards."""
    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


# --------------------------------------------------------------------------------------------------
# Readers
# --------------------------------------------------------------------------------------------------
def read_units(path: str | Path) -> Exported:
    """Read a units file and its ``.json`` description back into codes.

    Returns:
        ``Exported``: codes int64 [rows, frames] per utterance (durations applied), records empty, meta the
        description.
    Raises:
        TokenFileError: a missing or malformed file, naming it (and the line) and the fix.
    """
    path = Path(path)
    meta_path = units_meta_path(path)
    meta = _read_units_meta(meta_path)
    num_rows, layout, size = meta["units_per_frame"], meta["layout"], meta["codebook_size"]
    columns = 3 if meta["dedup"] else 2
    codes: dict[str, np.ndarray] = {}
    with _text_lines(path, "units file") as lines:
        for number, line in lines:
            fields = line.split("\t")
            if len(fields) != columns:
                raise TokenFileError(
                    f"{path}:{number}: expected {columns} tab-separated fields (id, units"
                    f"{', durations' if columns == 3 else ''}) as {meta_path.name} says, got {len(fields)}"
                )
            utt_id = fields[0]
            if utt_id in codes:
                raise TokenFileError(f"{path}:{number}: utterance {utt_id!r} is listed twice")
            try:
                units = [int(unit) for unit in fields[1].split(" ")]
                durations = [int(value) for value in fields[2].split(" ")] if columns == 3 else None
                codes[utt_id] = codes_from_units(units, num_rows, layout, size, durations)
            except ValueError as exc:
                raise TokenFileError(f"{path}:{number}: utterance {utt_id!r}: {exc}") from None
    if not codes:
        raise TokenFileError(f"{path}: no utterance; re-run `vqaudio export`")
    return Exported(codes, {utt_id: {} for utt_id in codes}, meta)


def read_jsonl(path: str | Path) -> Exported:
    """Read a JSONL export back: codes int64 [rows, frames] and the other fields of each line.

    Raises:
        TokenFileError: a missing file, a line that is not such a record, naming the file and line.
    """
    path = Path(path)
    codes: dict[str, np.ndarray] = {}
    fields: dict[str, dict[str, Any]] = {}
    with _text_lines(path, "JSONL export") as lines:
        for number, line in lines:
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError) as exc:
                raise TokenFileError(f"{path}:{number}: not a JSON object ({exc})") from None
            where = f"{path}:{number}"
            utt_id, array = _record_codes(record, where)
            if utt_id in codes:
                raise TokenFileError(f"{where}: utterance {utt_id!r} is listed twice")
            codes[utt_id] = array
            fields[utt_id] = {key: value for key, value in record.items() if key not in ("id", "codes")}
    if not codes:
        raise TokenFileError(f"{path}: no utterance; re-run `vqaudio export`")
    return Exported(codes, fields, _records_meta(fields))


def read_hf(path: str | Path) -> Exported:
    """Read a Hugging Face dataset folder written by ``write_hf`` back (as ``read_jsonl``).

    Raises:
        MissingDependency: ``datasets`` is not installed; TokenFileError: not such a dataset folder.
    """
    datasets = import_datasets()
    path = Path(path)
    if not path.is_dir():
        raise TokenFileError(f"{path}: no such dataset folder; write it with `vqaudio export --format hf`")
    try:
        dataset = datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError) as exc:
        raise TokenFileError(f"{path}: not a dataset saved by datasets.save_to_disk ({exc})") from exc
    if not isinstance(dataset, datasets.Dataset):
        raise TokenFileError(f"{path}: holds a {type(dataset).__name__}, expected one Dataset")
    codes: dict[str, np.ndarray] = {}
    fields: dict[str, dict[str, Any]] = {}
    for number, record in enumerate(dataset):
        where = f"{path}: row {number}"
        utt_id, array = _record_codes(record, where)
        if utt_id in codes:
            raise TokenFileError(f"{where}: utterance {utt_id!r} is listed twice")
        codes[utt_id] = array
        fields[utt_id] = {key: value for key, value in record.items() if key not in ("id", "codes")}
    if not codes:
        raise TokenFileError(f"{path}: the dataset has no rows; re-run `vqaudio export`")
    return Exported(codes, fields, _records_meta(fields))


def _record_codes(record: Any, where: str) -> tuple[str, np.ndarray]:
    """A record's id and codes int64 [rows, frames], checked."""
    if not isinstance(record, dict) or not isinstance(record.get("id"), str) or "codes" not in record:
        raise TokenFileError(f"{where}: expected an object with a string 'id' and 'codes' [rows][frames]")
    rows = record["codes"]
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        rows = []
    if not rows or len({len(row) for row in rows}) != 1 or not rows[0]:
        raise TokenFileError(f"{where}: 'codes' must be a non-empty list of rows of equal, non-zero length")
    if not all(isinstance(code, int) and not isinstance(code, bool) for row in rows for code in row):
        raise TokenFileError(f"{where}: 'codes' must hold integers")
    array = np.asarray(rows, dtype=np.int64)
    if "n_frames" in record and record["n_frames"] != array.shape[1]:
        raise TokenFileError(
            f"{where}: n_frames is {record['n_frames']} but 'codes' has {array.shape[1]} frames"
        )
    return record["id"], array


def _records_meta(fields: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    first = next(iter(fields.values()))
    keys = ("frame_rate", "pitch_row", "codebooks", "model", "model_hash")
    return {key: first.get(key) for key in keys} | {"num_utterances": len(fields)}


def _read_units_meta(path: Path) -> dict[str, Any]:
    problem = regular_file_problem(path)
    if problem is not None:
        raise TokenFileError(
            f"{path}: the units description {problem}; `vqaudio export` writes it beside the units file: keep "
            "them together"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise TokenFileError(f"{path}: not a readable units description ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != UNITS_FORMAT:
        raise TokenFileError(f'{path}: not a vqaudio units description (no "format": "{UNITS_FORMAT}")')
    if meta.get("format_version", 1) > UNITS_FORMAT_VERSION:
        raise TokenFileError(
            f"{path}: units format version {meta['format_version']} is newer than this vqaudio reads"
        )
    checks = {
        "layout": lambda value: value in LAYOUTS,
        "dedup": lambda value: isinstance(value, bool),
        "units_per_frame": lambda value: (
            isinstance(value, int) and not isinstance(value, bool) and value >= 1
        ),
        "codebook_size": lambda value: isinstance(value, int) and not isinstance(value, bool) and value >= 2,
    }
    for key, good in checks.items():
        if not good(meta.get(key)):
            raise TokenFileError(
                f"{path}: bad or missing {key!r} ({meta.get(key)!r}); re-run `vqaudio export`"
            )
    return meta


@contextmanager
def _text_lines(path: Path, what: str) -> Iterator[Iterator[tuple[int, str]]]:
    """(line number, line) of a UTF-8 text file, blank lines skipped, streamed; errors name the file."""
    problem = regular_file_problem(path)
    if problem is not None:
        raise TokenFileError(f"{path}: the {what} {problem}")
    try:
        handle: TextIO = open(path, encoding="utf-8", newline="\n")  # noqa: SIM115 (closed below)
    except OSError as exc:
        raise TokenFileError(f"{path}: cannot read the {what} ({exc.strerror or exc})") from exc

    def lines() -> Iterator[tuple[int, str]]:
        number = 0
        try:
            for number, line in enumerate(handle, start=1):  # noqa: B007 (number is reported on errors)
                line = line.rstrip("\r\n")
                if line:
                    yield number, line
        except UnicodeDecodeError as exc:
            raise TokenFileError(
                f"{path}:{number + 1}: the {what} is not UTF-8 text ({exc.reason})"
            ) from None

    try:
        yield lines()
    finally:
        handle.close()
