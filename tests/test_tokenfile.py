"""Token files: format, atomic streaming writes, validation on load, shards; and length batching."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

import vqaudio
from vqaudio.data.batching import batch_by_length
from vqaudio.errors import TokenFileError
from vqaudio.io import token_file as tokenfile
from vqaudio.io.token_file import IndexEntry, TokenFileWriter, load_tokens, token_paths

HOP = 320


def random_utterances(
    count: int, n_q: int = 3, codebook_size: int = 16, seed: int = 0
) -> dict[str, np.ndarray]:
    """id -> codes [n_q, frames], ids deliberately not in sorted order."""
    rng = np.random.default_rng(seed)
    ids = [f"spk{index % 3}/utt{count - index:03d}" for index in range(count)]
    return {utt_id: rng.integers(0, codebook_size, (n_q, int(rng.integers(1, 40)))) for utt_id in ids}


def write_tokens(
    path: Path,
    utterances: dict[str, np.ndarray],
    codebook_size: int = 16,
    model_hash: str = "abc123",
    overwrite: bool = False,
) -> None:
    n_q = next(iter(utterances.values())).shape[0]
    with TokenFileWriter(
        path,
        num_codebooks=n_q,
        codebook_size=codebook_size,
        sample_rate=16000,
        hop_length=HOP,
        model_name="unit",
        model_hash=model_hash,
        extra_meta={"n_q": n_q},
        overwrite=overwrite,
    ) as writer:
        for utt_id, codes in utterances.items():
            writer.add(utt_id, f"/audio/{utt_id}.wav", codes, codes.shape[1] * HOP - 5)
        writer.skip("/audio/broken.wav", "cannot read audio", "broken")


def files_in(folder: Path) -> list[str]:
    """Every file below ``folder``, hidden temporaries included."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


# --------------------------------------------------------------------------------------------------
# Format
# --------------------------------------------------------------------------------------------------
def test_round_trip_sorted_memory_mapped_and_readable_without_vqaudio(tmp_path: Path) -> None:
    utterances = random_utterances(12)
    out = tmp_path / "out.npy"
    write_tokens(out, utterances)
    assert files_in(tmp_path) == ["out.index.tsv", "out.meta.json", "out.npy"]

    # plain numpy / csv / json
    array = np.load(out, mmap_mode="r")
    assert isinstance(array, np.memmap) and array.dtype == np.int16
    with open(tmp_path / "out.index.tsv", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [row["utt_id"] for row in rows] == sorted(utterances)
    for row in rows:
        start, frames = int(row["frame_offset"]), int(row["num_frames"])
        np.testing.assert_array_equal(array[start : start + frames].T, utterances[row["utt_id"]])
    meta = json.loads((tmp_path / "out.meta.json").read_text())
    assert meta["num_utterances"] == 12 and meta["num_frames"] == len(array)
    assert meta["n_q"] == meta["num_codebooks"] == 3 and meta["codebook_size"] == 16
    assert meta["frame_rate"] == 50 and meta["hop_length"] == HOP and meta["sample_rate"] == 16000
    assert meta["model_name"] == "unit" and meta["model_hash"] == "abc123"
    assert meta["seconds"] == pytest.approx(sum(c.shape[1] * HOP - 5 for c in utterances.values()) / 16000)
    assert meta["skipped"] == [
        {"utt_id": "broken", "path": "/audio/broken.wav", "error": "cannot read audio"}
    ]
    assert meta["vqaudio_version"] == vqaudio.__version__ and meta["created"]

    corpus = vqaudio.load_tokens(out)
    assert list(corpus) == sorted(utterances) and len(corpus) == 12
    for utt_id, codes in utterances.items():
        np.testing.assert_array_equal(corpus[utt_id], codes)
        assert corpus[utt_id].shape == codes.shape
    assert corpus.array.shape == (sum(c.shape[1] for c in utterances.values()), 3)
    assert isinstance(corpus.entries[0], IndexEntry) and corpus.entries[0].frame_offset == 0
    assert corpus.meta["model_hash"] == "abc123"
    with pytest.raises(ValueError, match="read-only"):
        corpus[corpus.entries[0].utt_id][0, 0] = 1
    corpus.validate()


def test_large_codebooks_are_stored_as_int32(tmp_path: Path) -> None:
    utterances = {"a": np.array([[0, 40000, 65535]]), "b": np.array([[7]])}
    write_tokens(tmp_path / "big.npy", utterances, codebook_size=65536)
    corpus = load_tokens(tmp_path / "big.npy")
    assert corpus.array.dtype == np.int32
    np.testing.assert_array_equal(corpus["a"], utterances["a"])


def test_token_paths_accepts_the_stem() -> None:
    assert token_paths("x/train") == token_paths("x/train.npy")
    assert token_paths("x/train.npy").index_path.name == "train.index.tsv"


def test_writer_rejects_bad_utterances(tmp_path: Path) -> None:
    with TokenFileWriter(
        tmp_path / "t.npy",
        num_codebooks=2,
        codebook_size=16,
        sample_rate=16000,
        hop_length=HOP,
        model_name="m",
        model_hash="h",
    ) as writer:
        writer.add("a", "a.wav", np.zeros((2, 3), np.int64), 900)
        with pytest.raises(ValueError, match="duplicate utterance id 'a'"):
            writer.add("a", "b.wav", np.zeros((2, 3), np.int64), 900)
        with pytest.raises(ValueError, match="n_q=2"):
            writer.add("c", "c.wav", np.zeros((3, 3), np.int64), 900)
        with pytest.raises(ValueError, match=r"outside \[0, 16\)"):
            writer.add("d", "d.wav", np.full((2, 3), 16), 900)
        with pytest.raises(ValueError, match="tab"):
            writer.add("e\tf", "e.wav", np.zeros((2, 3), np.int64), 900)
    assert list(load_tokens(tmp_path / "t.npy")) == ["a"]


# --------------------------------------------------------------------------------------------------
# Atomicity
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_interrupted_write_leaves_nothing(tmp_path: Path, interruption: type[BaseException]) -> None:
    with pytest.raises(interruption):
        with TokenFileWriter(
            tmp_path / "out.npy",
            num_codebooks=1,
            codebook_size=16,
            sample_rate=16000,
            hop_length=HOP,
            model_name="m",
            model_hash="h",
        ) as writer:
            writer.add("a", "a.wav", np.zeros((1, 5), np.int64), 1600)
            raise interruption()
    assert files_in(tmp_path) == []


def test_failure_while_committing_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The index rename fails after the array was renamed into place: both are removed again."""
    calls = []
    real_replace = os.replace

    def failing_replace(source: object, target: object) -> None:
        calls.append(target)
        if len(calls) == 2:
            raise OSError("disk full")
        real_replace(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(tokenfile.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_tokens(tmp_path / "out.npy", random_utterances(3))
    assert files_in(tmp_path) == []


def test_existing_output_needs_overwrite_and_survives_a_failed_run(tmp_path: Path) -> None:
    out = tmp_path / "out.npy"
    first = random_utterances(3, seed=1)
    write_tokens(out, first)
    with pytest.raises(FileExistsError, match=r"out\.npy already exists; pass --overwrite"):
        write_tokens(out, random_utterances(3, seed=2))
    with pytest.raises(RuntimeError):
        with TokenFileWriter(
            out,
            num_codebooks=3,
            codebook_size=16,
            sample_rate=16000,
            hop_length=HOP,
            model_name="m",
            model_hash="h",
            overwrite=True,
        ):
            raise RuntimeError("crash")
    corpus = load_tokens(out)  # the previous output is intact
    for utt_id, codes in first.items():
        np.testing.assert_array_equal(corpus[utt_id], codes)
    second = random_utterances(4, seed=3)
    write_tokens(out, second, overwrite=True)
    assert sorted(load_tokens(out)) == sorted(second)


def test_empty_writer_refuses_to_commit(tmp_path: Path) -> None:
    with pytest.raises(TokenFileError, match="no utterance"):
        with TokenFileWriter(
            tmp_path / "out.npy",
            num_codebooks=1,
            codebook_size=16,
            sample_rate=16000,
            hop_length=HOP,
            model_name="m",
            model_hash="h",
        ):
            pass
    assert files_in(tmp_path) == []


# --------------------------------------------------------------------------------------------------
# Validation on load
# --------------------------------------------------------------------------------------------------
@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    out = tmp_path / "out.npy"
    write_tokens(out, random_utterances(6))
    return out


@pytest.mark.parametrize("missing", ["index", "meta", "array"])
def test_missing_companion_file(token_file: Path, missing: str) -> None:
    victim = getattr(token_paths(token_file), f"{missing}_path")
    victim.unlink()
    with pytest.raises(TokenFileError, match=rf"{victim.name}: missing.*vqaudio tokenize"):
        load_tokens(token_file)


def test_wrong_shape_and_dtype(token_file: Path) -> None:
    array = np.load(token_file)
    np.save(token_file, array[:, :2])
    with pytest.raises(TokenFileError, match=r"out\.npy: array shape \(\d+, 2\), expected \[frames, n_q=3\]"):
        load_tokens(token_file)
    np.save(token_file, array.astype(np.int64))
    with pytest.raises(TokenFileError, match="dtype int64, expected int16"):
        load_tokens(token_file)
    np.save(token_file, array[:-1])
    with pytest.raises(TokenFileError, match="records"):
        load_tokens(token_file)
    token_file.write_bytes(b"not an array")
    with pytest.raises(TokenFileError, match="not a readable .npy"):
        load_tokens(token_file)


def test_inconsistent_index(token_file: Path) -> None:
    index = token_paths(token_file).index_path
    lines = index.read_text().splitlines()
    fields = lines[2].split("\t")
    fields[2] = str(int(fields[2]) + 1)
    index.write_text("\n".join([*lines[:2], "\t".join(fields), *lines[3:]]) + "\n")
    with pytest.raises(TokenFileError, match=r"out\.index\.tsv:3: .*expected offset"):
        load_tokens(token_file)
    first, second = lines[1].split("\t"), lines[2].split("\t")
    first[0], second[0] = second[0], first[0]  # ids out of order, offsets still contiguous
    index.write_text("\n".join([lines[0], "\t".join(first), "\t".join(second), *lines[3:]]) + "\n")
    with pytest.raises(TokenFileError, match="unique and sorted"):
        load_tokens(token_file)
    index.write_text("id\tpath\n" + "\n".join(lines[1:]) + "\n")
    with pytest.raises(TokenFileError, match="header"):
        load_tokens(token_file)
    index.write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(TokenFileError, match="lists 5 utterances but out.meta.json records 6"):
        load_tokens(token_file)


def test_bad_metadata(token_file: Path) -> None:
    meta_path = token_paths(token_file).meta_path
    meta = json.loads(meta_path.read_text())
    meta_path.write_text("{")
    with pytest.raises(TokenFileError, match="not valid JSON"):
        load_tokens(token_file)
    meta_path.write_text(json.dumps({**meta, "format": "something"}))
    with pytest.raises(TokenFileError, match="not a vqaudio token file"):
        load_tokens(token_file)
    meta_path.write_text(json.dumps({key: value for key, value in meta.items() if key != "codebook_size"}))
    with pytest.raises(TokenFileError, match="codebook_size"):
        load_tokens(token_file)


def test_validate_finds_codes_outside_the_codebook(token_file: Path) -> None:
    corpus = load_tokens(token_file)
    victim = corpus.entries[3]
    array = np.load(token_file, mmap_mode="r+")
    array[victim.frame_offset + 1, 2] = 99
    array.flush()
    del array
    corpus = load_tokens(token_file)  # the structure is fine: values are checked by validate()
    with pytest.raises(TokenFileError, match=rf"'{victim.utt_id}' holds code 99 \(frame 1, codebook 2\)"):
        corpus.validate()


def test_validate_against_a_smaller_codebook(tmp_path: Path) -> None:
    write_tokens(tmp_path / "out.npy", {"a": np.array([[0, 3, 9]]), "b": np.array([[1]])})
    load_tokens(tmp_path / "out.npy").validate(codebook_size=10)
    with pytest.raises(TokenFileError, match=r"'a' holds code 9 \(frame 2, codebook 0\) outside \[0, 8\)"):
        load_tokens(tmp_path / "out.npy").validate(codebook_size=8)


# --------------------------------------------------------------------------------------------------
# Shards
# --------------------------------------------------------------------------------------------------
def test_shards_merge_by_list_and_glob(tmp_path: Path) -> None:
    everything = random_utterances(9)
    ids = sorted(everything)
    write_tokens(tmp_path / "train.1.npy", {utt_id: everything[utt_id] for utt_id in ids[0::2]})
    write_tokens(tmp_path / "train.2.npy", {utt_id: everything[utt_id] for utt_id in ids[1::2]})
    for source in ([tmp_path / "train.1.npy", tmp_path / "train.2.npy"], str(tmp_path / "train.*.npy")):
        corpus = load_tokens(source)
        assert list(corpus) == ids
        for utt_id in ids:
            np.testing.assert_array_equal(corpus[utt_id], everything[utt_id])
        assert corpus.meta["num_utterances"] == 9 and len(corpus.meta["skipped"]) == 2
        assert len(corpus.arrays) == 2
        with pytest.raises(ValueError, match="arrays"):
            _ = corpus.array
    with pytest.raises(TokenFileError, match="matches no"):
        load_tokens(str(tmp_path / "nothing.*.npy"))


def test_shards_must_be_disjoint_and_from_one_model(tmp_path: Path) -> None:
    utterances = random_utterances(4)
    write_tokens(tmp_path / "a.npy", utterances)
    write_tokens(tmp_path / "b.npy", utterances)
    with pytest.raises(TokenFileError, match="is also in"):
        load_tokens([tmp_path / "a.npy", tmp_path / "b.npy"])
    write_tokens(tmp_path / "c.npy", random_utterances(2, seed=5), model_hash="other")
    with pytest.raises(TokenFileError, match="model_hash.*same model"):
        load_tokens([tmp_path / "a.npy", tmp_path / "c.npy"])


# --------------------------------------------------------------------------------------------------
# Length batching
# --------------------------------------------------------------------------------------------------
def test_batch_by_length_covers_everything_within_the_caps() -> None:
    rng = np.random.default_rng(0)
    lengths = [int(value) for value in rng.integers(1, 1000, 200)]
    batches = batch_by_length(lengths, max_batch_size=8, max_batch_samples=3000)
    assert sorted(index for batch in batches for index in batch) == list(range(200))
    for batch in batches:
        assert len(batch) <= 8
        assert len(batch) == 1 or len(batch) * max(lengths[index] for index in batch) <= 3000
        assert [lengths[index] for index in batch] == sorted(
            (lengths[index] for index in batch), reverse=True
        )
    assert batches == batch_by_length(lengths, max_batch_size=8, max_batch_samples=3000)  # deterministic


def test_batch_by_length_groups_similar_lengths_and_isolates_long_items() -> None:
    lengths = [10, 500, 11, 12, 501, 5000]
    assert batch_by_length(lengths, max_batch_size=2, max_batch_samples=1100) == [[5], [4, 1], [3, 2], [0]]
    assert batch_by_length(lengths, max_batch_size=10) == [[5, 4, 1, 3, 2, 0]]
    assert batch_by_length([], max_batch_size=4) == []
    with pytest.raises(ValueError, match="max_batch_size"):
        batch_by_length(lengths, max_batch_size=0)
    with pytest.raises(ValueError, match=r"lengths\[1\]"):
        batch_by_length([3, -1], max_batch_size=2)
