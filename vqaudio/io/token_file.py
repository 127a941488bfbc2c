"""Token corpora on disk: one memory-mappable ``.npy`` array plus a TSV index and a JSON description.

    out.npy          [total_frames, n_q] int16 (int32 when codebook_size > 32767), utterances concatenated
                     in sorted id order; np.load("out.npy", mmap_mode="r") works on a corpus of any size
    out.index.tsv    utt_id  path  frame_offset  num_frames  num_samples   (a header line, then one row each)
    out.meta.json    model name and weights hash, sample_rate, frame_rate, hop_length, num_codebooks (n_q),
                     codebook_size, counts, skipped files, vqaudio version, creation time

All three are plain numpy / text / JSON, readable without vqaudio. ``TokenFileWriter`` streams codes to a
temporary file as they are produced (the corpus is never held in memory) and only at the end writes the
three files and renames them into place, so an interrupted run leaves nothing behind. ``load_tokens`` reads
one file or merges shards into a ``TokenCorpus``, a read-only mapping ``utt_id -> [n_q, frames]`` of views
into the memory map, after checking that the three files agree.
"""

from __future__ import annotations

import bisect
import errno
import glob
import io
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import numpy as np
import torch

from vqaudio._version import __version__
from vqaudio.config import ConfigError, check_token_meta
from vqaudio.errors import InputError, TokenFileError
from vqaudio.io.atomic import OutputFiles, check_output, writing_to
from vqaudio.io.inputs import read_text, tsv_field_problem, utterance_id_problem

log = logging.getLogger(__name__)

FORMAT = "vqaudio-tokens"
FORMAT_VERSION = 1
INDEX_HEADER = ("utt_id", "path", "frame_offset", "num_frames", "num_samples")
REQUIRED_META = (
    "format",
    "model_name",
    "model_hash",
    "sample_rate",
    "hop_length",
    "num_codebooks",
    "codebook_size",
    "num_utterances",
    "num_frames",
)
_REWRITE = "re-run `vqaudio tokenize` to rewrite it"
_SCAN_ROWS = 1 << 20  # rows per block when scanning the array for out-of-range codes
MAX_META_BYTES = 256 * 2**20  # out.meta.json: a few KB, plus one line per skipped file


class IndexEntry(NamedTuple):
    """One row of ``out.index.tsv``: where an utterance's frames are in the array."""

    utt_id: str
    path: str  # the source audio file, as given to tokenize
    frame_offset: int  # first row of the utterance in its own shard's array
    num_frames: int
    num_samples: int  # audio length at the model's sample_rate


class TokenPaths(NamedTuple):
    """The three files of one token file."""

    array_path: Path  # out.npy
    index_path: Path  # out.index.tsv
    meta_path: Path  # out.meta.json


def token_paths(path: str | Path) -> TokenPaths:
    """``out.npy`` -> (``out.npy``, ``out.index.tsv``, ``out.meta.json``); ``out`` is read as ``out.npy``."""
    path = Path(path)
    if path.suffix != ".npy":
        path = path.with_name(path.name + ".npy")
    stem = path.name[: -len(".npy")]
    return TokenPaths(path, path.with_name(f"{stem}.index.tsv"), path.with_name(f"{stem}.meta.json"))


def storage_dtype(codebook_size: int) -> np.dtype:
    """int16 when every code fits (codebook_size <= 32767), else int32."""
    return np.dtype(np.int16) if codebook_size <= np.iinfo(np.int16).max else np.dtype(np.int32)


def check_can_write(path: str | Path, overwrite: bool) -> TokenPaths:
    """Check before the work that the token file can be written (``vqaudio.io.atomic.check_output`` for each
    of its three files): FileExistsError if one exists and ``overwrite`` is False, OutputError if one is a
    folder or the folder cannot be written. Temporaries a killed run left beside them are removed."""
    paths = token_paths(path)
    if Path(path).suffix != ".npy":
        raise InputError(f"{path}: a token file name must end in .npy (e.g. tokens/train.npy)")
    for output in paths:
        check_output(output, overwrite=overwrite)
    return paths


# --------------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------------
class TokenFileWriter:
    """Write a token file by streaming utterances in any order; committed atomically at the end.

    Use as a context manager: leaving the block normally commits (sorts by id, writes the three files,
    renames them into place); an exception or Ctrl-C inside it discards everything written so far. An
    existing output is only replaced at commit time, so a failed run leaves the previous one intact.

    Args:
        path: the ``.npy`` path; the index and metadata go beside it.
        num_codebooks: n_q, codes per frame stored.
        codebook_size: codes are in ``[0, codebook_size)``; picks the storage dtype.
        sample_rate, hop_length: the model's, to convert frames to seconds.
        model_name, model_hash: identify the model (``Tokenizer.name``, ``Tokenizer.hash``).
        extra_meta: more JSON-ready fields for ``out.meta.json`` (e.g. source, shard).
        overwrite: replace existing outputs; otherwise raise FileExistsError naming the file.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        num_codebooks: int,
        codebook_size: int,
        sample_rate: int,
        hop_length: int,
        model_name: str,
        model_hash: str,
        extra_meta: Mapping[str, Any] | None = None,
        overwrite: bool = False,
    ) -> None:
        self.paths = check_can_write(path, overwrite)
        if num_codebooks < 1 or codebook_size < 2:
            raise InputError(
                f"need num_codebooks >= 1 and codebook_size >= 2, got {num_codebooks}, {codebook_size}"
            )
        self.overwrite = overwrite
        self.num_codebooks = num_codebooks
        self.codebook_size = codebook_size
        self.dtype = storage_dtype(codebook_size)
        self.meta: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "vqaudio_version": __version__,
            "model_name": model_name,
            "model_hash": model_hash,
            "sample_rate": sample_rate,
            "frame_rate": sample_rate / hop_length,
            "hop_length": hop_length,
            "num_codebooks": num_codebooks,
            "codebook_size": codebook_size,
            "dtype": self.dtype.name,
            **dict(extra_meta or {}),
        }
        # metadata last: a reader that finds it finds the other two complete
        self._files = OutputFiles(self.paths, overwrite=overwrite)
        self._raw_path = self._files.scratch(self.paths.array_path, ".raw")
        self._raw = open(self._raw_path, "wb")  # noqa: SIM115 (closed by commit or abort)
        self._records: dict[str, tuple[str, int, int, int]] = {}  # id -> (path, raw row, frames, samples)
        self._rows = 0
        self._skipped: list[dict[str, str]] = []
        self._open = True

    def add(
        self, utt_id: str, source_path: str | Path, codes: np.ndarray | torch.Tensor, num_samples: int
    ) -> None:
        """Append one utterance.

        Args:
            utt_id: unique id that resynth can write as ``<out>/<utt_id>.wav`` (``utterance_id_problem``).
            source_path: the audio file it came from.
            codes: [n_q, frames] integer codes in ``[0, codebook_size)``.
            num_samples: the audio length at the model's sample rate.
        """
        self._check_open()
        if isinstance(codes, torch.Tensor):
            codes = codes.detach().cpu().numpy()
        codes = np.asarray(codes)
        if codes.ndim != 2 or codes.shape[0] != self.num_codebooks or codes.shape[1] < 1:
            raise InputError(
                f"{utt_id}: expected codes [n_q={self.num_codebooks}, frames >= 1], got shape {codes.shape}"
            )
        if not np.issubdtype(codes.dtype, np.integer):
            raise TypeError(f"{utt_id}: expected integer codes, got {codes.dtype}")
        if codes.min() < 0 or codes.max() >= self.codebook_size:
            raise InputError(
                f"{utt_id}: codes in [{codes.min()}, {codes.max()}] outside [0, {self.codebook_size})"
            )
        problem = utterance_id_problem(utt_id)
        if problem is not None:
            raise InputError(f"utterance id {utt_id!r} ({source_path}) {problem}")
        problem = tsv_field_problem(str(source_path)) if str(source_path) else "is empty"
        if problem is not None:
            raise InputError(
                f"{utt_id}: the path {str(source_path)!r} {problem}; the TSV index cannot store it"
            )
        if utt_id in self._records:
            raise InputError(
                f"duplicate utterance id {utt_id!r} ({self._records[utt_id][0]} and {source_path})"
            )
        with writing_to(self.paths.array_path):
            self._raw.write(np.ascontiguousarray(codes.T, dtype=self.dtype).tobytes())  # [frames, n_q] rows
        self._records[utt_id] = (str(source_path), self._rows, codes.shape[1], int(num_samples))
        self._rows += codes.shape[1]

    def skip(self, source_path: str | Path, reason: str, utt_id: str | None = None) -> None:
        """Record a file that could not be tokenized (listed in ``out.meta.json``)."""
        self._check_open()
        self._skipped.append({"utt_id": utt_id or "", "path": str(source_path), "error": reason})

    @property
    def num_utterances(self) -> int:
        return len(self._records)

    def commit(self) -> TokenPaths:
        """Write ``out.npy`` (sorted by id), the index and the metadata, then rename them into place together.

        The previous token file, if any, stays until the three new files are complete; if a rename fails
        it is restored (``OutputFiles``). A full disk or read-only folder raises OutputError and leaves no
        temporary behind.
        """
        self._check_open()
        self._open = False
        try:
            with writing_to(self.paths.array_path):
                self._raw.close()
            if not self._records:
                raise TokenFileError(f"{self.paths.array_path}: no utterance was tokenized, nothing to write")
            entries = self._write_array(self._files.stage(self.paths.array_path, ".npy"))
            num_samples = sum(entry.num_samples for entry in entries)
            meta = {
                **self.meta,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "num_utterances": len(entries),
                "num_frames": self._rows,
                "num_samples": num_samples,
                "seconds": num_samples / self.meta["sample_rate"],
                "skipped": self._skipped,
            }
            with writing_to(self.paths.index_path):
                self._files.stage(self.paths.index_path, ".tsv").write_text(
                    _format_index(entries), encoding="utf-8"
                )
            with writing_to(self.paths.meta_path):
                self._files.stage(self.paths.meta_path, ".json").write_text(
                    json.dumps(meta, indent=2) + "\n", encoding="utf-8"
                )
            self._files.commit()
        finally:
            self._files.discard()
        return self.paths

    def _write_array(self, target_path: Path) -> list[IndexEntry]:
        """Copy the streamed rows to ``target_path`` as an .npy in id order; the index entries.

        The space is reserved first (a full disk fails here, with ENOSPC, not later) and the rows are
        written with ordinary writes: a memory map of a sparse file would die of SIGBUS on a full disk.
        """
        order = sorted(self._records)
        total = self._rows
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(
            header,
            {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": (total, self.num_codebooks),
            },
        )
        size = len(header.getvalue()) + total * self.num_codebooks * self.dtype.itemsize
        source = np.memmap(self._raw_path, dtype=self.dtype, mode="r", shape=(total, self.num_codebooks))
        entries: list[IndexEntry] = []
        with writing_to(self.paths.array_path), open(target_path, "r+b") as target:
            _reserve(target.fileno(), size)
            target.write(header.getvalue())
            offset = 0
            for utt_id in order:  # copy utterance by utterance: memory stays at one utterance
                path, row, frames, samples = self._records[utt_id]
                target.write(np.ascontiguousarray(source[row : row + frames]).tobytes())
                entries.append(IndexEntry(utt_id, path, offset, frames, samples))
                offset += frames
            target.truncate(size)
        del source
        return entries

    def abort(self) -> None:
        """Discard everything written so far."""
        if self._open:
            self._open = False
            self._raw.close()
            self._files.discard()

    def __enter__(self) -> TokenFileWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def _check_open(self) -> None:
        if not self._open:
            raise RuntimeError("this TokenFileWriter is already committed or aborted")


def _reserve(handle: int, size: int) -> None:
    """Allocate ``size`` bytes of the open file ``handle`` on disk now (ENOSPC here rather than mid-write)."""
    try:
        os.posix_fallocate(handle, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # not supported: write anyway
            raise
    except AttributeError:  # no posix_fallocate on this platform
        pass


def _format_index(entries: Sequence[IndexEntry]) -> str:
    lines = ["\t".join(INDEX_HEADER)]
    lines += [
        f"{entry.utt_id}\t{entry.path}\t{entry.frame_offset}\t{entry.num_frames}\t{entry.num_samples}"
        for entry in entries
    ]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------
class _Shard(NamedTuple):
    paths: TokenPaths
    array: np.ndarray  # [frames, n_q] read-only memmap
    entries: list[IndexEntry]
    meta: dict[str, Any]


class TokenCorpus(Mapping[str, np.ndarray]):
    """A read-only mapping ``utt_id -> codes [n_q, frames]`` over one token file or several shards.

    Values are transposed views into the memory-mapped array (nothing is read until used); copy with
    ``np.array(corpus[utt_id])`` to get an owned, contiguous array.

    Attributes:
        meta: the ``out.meta.json`` contents (for merged shards: the first one's, with summed counts, all
            skipped files, and ``shards`` listing the files).
        entries: every IndexEntry in id order (frame offsets are into the entry's own shard array).
        paths: the ``.npy`` path of every shard.
    """

    def __init__(self, shards: Sequence[_Shard]) -> None:
        self._shards = list(shards)
        self._where: dict[str, tuple[int, int]] = {}
        for shard_index, shard in enumerate(self._shards):
            for entry_index, entry in enumerate(shard.entries):
                if entry.utt_id in self._where:
                    other = self._shards[self._where[entry.utt_id][0]].paths.array_path
                    raise TokenFileError(
                        f"{shard.paths.array_path}: utterance id {entry.utt_id!r} is also in {other}; "
                        "shards must hold disjoint utterances (were they made with different --shard K/N?)"
                    )
                self._where[entry.utt_id] = (shard_index, entry_index)
        self._ids = sorted(self._where)
        self._entries = [self.entry(utt_id) for utt_id in self._ids]
        self.meta = _merged_meta(self._shards)
        self.paths = [shard.paths.array_path for shard in self._shards]

    # Mapping protocol
    def __getitem__(self, utt_id: str) -> np.ndarray:
        shard_index, entry_index = self._where[utt_id]
        shard = self._shards[shard_index]
        entry = shard.entries[entry_index]
        return shard.array[entry.frame_offset : entry.frame_offset + entry.num_frames].T  # [n_q, frames]

    def __iter__(self) -> Iterator[str]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, utt_id: object) -> bool:
        return utt_id in self._where

    def __repr__(self) -> str:
        return (
            f"TokenCorpus({len(self)} utterances, {self.num_frames} frames, n_q={self.num_codebooks}, "
            f"model={self.meta.get('model_name')!r}, files={[str(path) for path in self.paths]})"
        )

    # Facts
    @property
    def entries(self) -> list[IndexEntry]:
        return list(self._entries)

    def entry(self, utt_id: str) -> IndexEntry:
        shard_index, entry_index = self._where[utt_id]
        return self._shards[shard_index].entries[entry_index]

    @property
    def array(self) -> np.ndarray:
        """The [total_frames, n_q] memory map (one file only; merged shards: see ``arrays``)."""
        if len(self._shards) != 1:
            raise ValueError(
                f"this corpus merges {len(self._shards)} shards, each with its own array; use .arrays, "
                "or index utterances by id"
            )
        return self._shards[0].array

    @property
    def arrays(self) -> list[np.ndarray]:
        """One [frames, n_q] memory map per shard."""
        return [shard.array for shard in self._shards]

    @property
    def num_codebooks(self) -> int:
        return int(self.meta["num_codebooks"])

    @property
    def codebook_size(self) -> int:
        return int(self.meta["codebook_size"])

    @property
    def sample_rate(self) -> int:
        return int(self.meta["sample_rate"])

    @property
    def hop_length(self) -> int:
        return int(self.meta["hop_length"])

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def num_frames(self) -> int:
        return sum(len(shard.array) for shard in self._shards)

    @property
    def seconds(self) -> float:
        return sum(entry.num_samples for shard in self._shards for entry in shard.entries) / self.sample_rate

    def validate(self, codebook_size: int | None = None) -> None:
        """Check that every code is in ``[0, codebook_size)`` (default: the recorded codebook size).

        Reads the whole array once, in blocks (bounded memory).

        Raises:
            TokenFileError: naming the file, the utterance, frame and codebook of the first bad code.
        """
        limit = self.codebook_size if codebook_size is None else codebook_size
        for shard in self._shards:
            array = shard.array
            for first in range(0, len(array), _SCAN_ROWS):
                block = np.asarray(array[first : first + _SCAN_ROWS])
                bad = (block < 0) | (block >= limit)
                if not bad.any():
                    continue
                row, codebook = (int(value[0]) for value in np.nonzero(bad))
                row += first
                offsets = [entry.frame_offset for entry in shard.entries]
                entry = shard.entries[bisect.bisect_right(offsets, row) - 1]
                raise TokenFileError(
                    f"{shard.paths.array_path}: utterance {entry.utt_id!r} holds code "
                    f"{int(array[row, codebook])} (frame {row - entry.frame_offset}, codebook {codebook}) "
                    f"outside [0, {limit}); the file is damaged or made for another model; {_REWRITE}"
                )


def load_tokens(path: str | Path | Sequence[str | Path]) -> TokenCorpus:
    """Open a token file, or merge shards, as a read-only ``TokenCorpus``.

    Args:
        path: ``out.npy`` (or ``out``); a glob such as ``"tokens/train.*.npy"``; or a list of such paths
            (shards written with ``--shard K/N``: ids must be disjoint and the model the same).
    Returns:
        the corpus; structure (shapes, dtypes, index and metadata consistency) is checked here, code values by
        ``TokenCorpus.validate()``.
    Raises:
        TokenFileError: a missing, malformed or inconsistent file, or shards that do not belong together; the
            message names the file and the fix.
    """
    if isinstance(path, (str, Path)):
        text = str(path)
        if any(character in text for character in "*?["):
            matches = sorted(match for match in glob.glob(text) if match.endswith(".npy"))
            if not matches:
                raise TokenFileError(f"{text}: matches no .npy token file; check the pattern")
            paths: list[str | Path] = list(matches)
        else:
            paths = [path]
    else:
        paths = list(path)
        if not paths:
            raise TokenFileError("load_tokens() got an empty list of token files")
    shards = [_read_shard(token_paths(item)) for item in paths]
    first = shards[0]
    for shard in shards[1:]:
        for key in ("model_hash", "sample_rate", "hop_length", "num_codebooks", "codebook_size"):
            if shard.meta[key] != first.meta[key]:
                raise TokenFileError(
                    f"{shard.paths.array_path}: {key} is {shard.meta[key]!r} but {first.paths.array_path} "
                    f"has {first.meta[key]!r}; only shards tokenized with the same model and --n-q merge"
                )
    return TokenCorpus(shards)


def _read_shard(paths: TokenPaths) -> _Shard:
    for required in paths:
        if not required.is_file():
            raise TokenFileError(
                f"{required}: missing; a token file is {paths.array_path.name} + {paths.index_path.name} + "
                f"{paths.meta_path.name}, written together by `vqaudio tokenize`; keep them side by side or "
                f"{_REWRITE}"
            )
    meta = _read_meta(paths.meta_path)
    try:
        array = np.load(paths.array_path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise TokenFileError(f"{paths.array_path}: not a readable .npy array ({exc}); {_REWRITE}") from exc
    expected_dtype = storage_dtype(int(meta["codebook_size"]))
    if array.ndim != 2 or array.shape[1] != meta["num_codebooks"]:
        raise TokenFileError(
            f"{paths.array_path}: array shape {array.shape}, expected [frames, n_q={meta['num_codebooks']}] "
            f"as {paths.meta_path.name} says; {_REWRITE}"
        )
    if array.dtype != expected_dtype:
        raise TokenFileError(
            f"{paths.array_path}: array dtype {array.dtype}, expected {expected_dtype} for codebook_size "
            f"{meta['codebook_size']}; {_REWRITE}"
        )
    if array.shape[0] != meta["num_frames"]:
        raise TokenFileError(
            f"{paths.array_path}: holds {array.shape[0]} frames but {paths.meta_path.name} records "
            f"{meta['num_frames']}; the files are from different runs; {_REWRITE}"
        )
    entries = _read_index(paths.index_path, int(meta["hop_length"]))
    if len(entries) != meta["num_utterances"]:
        raise TokenFileError(
            f"{paths.index_path}: lists {len(entries)} utterances but {paths.meta_path.name} records "
            f"{meta['num_utterances']}; the files are from different runs; {_REWRITE}"
        )
    indexed = entries[-1].frame_offset + entries[-1].num_frames if entries else 0
    if indexed != array.shape[0]:
        raise TokenFileError(
            f"{paths.index_path}: covers {indexed} frames but {paths.array_path.name} holds "
            f"{array.shape[0]}; {_REWRITE}"
        )
    return _Shard(paths, array, entries, meta)


def _read_meta(path: Path) -> dict[str, Any]:
    """``out.meta.json``, its geometry checked against the model limits (vqaudio.config.TOKEN_META_RANGES)."""
    if path.stat().st_size > MAX_META_BYTES:
        raise TokenFileError(
            f"{path}: {path.stat().st_size} bytes, more than a token file description's {MAX_META_BYTES}; "
            f"{_REWRITE}"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TokenFileError(f"{path}: not valid JSON ({exc}); {_REWRITE}") from exc
    except RecursionError as exc:
        raise TokenFileError(
            f"{path}: JSON nested too deeply to be a token file description; {_REWRITE}"
        ) from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise TokenFileError(f"{path}: not a vqaudio token file description (format {found!r}); {_REWRITE}")
    missing = [key for key in REQUIRED_META if key not in meta]
    if missing:
        raise TokenFileError(f"{path}: missing field(s) {missing}; {_REWRITE}")
    version = meta.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise TokenFileError(f"{path}: format_version must be an integer, got {version!r}; {_REWRITE}")
    if version > FORMAT_VERSION:
        raise TokenFileError(
            f"{path}: token format version {meta['format_version']} is newer than this vqaudio "
            f"({__version__}) reads; upgrade vqaudio"
        )
    try:
        check_token_meta(meta, str(path))
    except ConfigError as exc:
        raise TokenFileError(f"{exc}; {_REWRITE}") from exc
    return meta


def _read_index(path: Path, hop_length: int) -> list[IndexEntry]:
    """Parse and check the index: header, 5 columns, ids strictly sorted, offsets contiguous from 0."""
    # split on newlines only: str.splitlines would also split on \f, \x1c, U+2028, ...
    lines = [
        line.rstrip("\r") for line in read_text(path, TokenFileError, "token index", _REWRITE).split("\n")
    ]
    if lines and not lines[-1]:
        lines.pop()
    if not lines or tuple(lines[0].split("\t")) != INDEX_HEADER:
        header = "\\t".join(INDEX_HEADER)
        raise TokenFileError(f"{path}: the first line must be the header '{header}'; {_REWRITE}")
    entries: list[IndexEntry] = []
    offset = 0
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(INDEX_HEADER):
            raise TokenFileError(
                f"{path}:{number}: expected {len(INDEX_HEADER)} tab-separated fields, got {line!r}"
            )
        try:
            frame_offset, num_frames, num_samples = (int(value) for value in fields[2:])
        except ValueError as exc:
            raise TokenFileError(
                f"{path}:{number}: offset and counts must be integers, got {line!r}"
            ) from exc
        entry = IndexEntry(fields[0], fields[1], frame_offset, num_frames, num_samples)
        if entries and entry.utt_id <= entries[-1].utt_id:
            raise TokenFileError(
                f"{path}:{number}: utterance ids must be unique and sorted, {entry.utt_id!r} follows "
                f"{entries[-1].utt_id!r}; {_REWRITE}"
            )
        if frame_offset != offset or num_frames < 1:
            raise TokenFileError(
                f"{path}:{number}: utterance {entry.utt_id!r} has frame_offset {frame_offset} and num_frames "
                f"{num_frames}, expected offset {offset} and at least one frame; {_REWRITE}"
            )
        if num_samples < 1 or -(-num_samples // hop_length) != num_frames:
            raise TokenFileError(
                f"{path}:{number}: utterance {entry.utt_id!r} has {num_samples} samples, which is not "
                f"{num_frames} frames of hop {hop_length}; {_REWRITE}"
            )
        entries.append(entry)
        offset += num_frames
    return entries


def _merged_meta(shards: Sequence[_Shard]) -> dict[str, Any]:
    if len(shards) == 1:
        return dict(shards[0].meta)
    meta = dict(shards[0].meta)
    for key in ("num_utterances", "num_frames", "num_samples", "seconds"):
        meta[key] = sum(shard.meta.get(key, 0) for shard in shards)
    meta["skipped"] = [item for shard in shards for item in shard.meta.get("skipped", [])]
    meta["shards"] = [str(shard.paths.array_path) for shard in shards]
    meta.pop("shard", None)
    return meta
