"""vqaudio export: unit text, JSONL and Hugging Face datasets, each read back to the same codes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import one_line_error

from vqaudio.errors import TokenFileError
from vqaudio.io import export
from vqaudio.io.export import (
    codes_from_units,
    read_hf,
    read_jsonl,
    read_units,
    select_rows,
    units_from_codes,
    write_jsonl,
    write_units,
)
from vqaudio.io.token_file import TokenCorpus, TokenFileWriter, load_tokens

CODEBOOK_SIZE = 16
PITCH_LEVELS = 8
HOP = 320


def runs_of_codes(rng: np.random.Generator, rows: int, frames: int, high: int) -> np.ndarray:
    """[rows, frames] codes with runs of repeated frames (so deduplication has work) and some single frames."""
    lengths = rng.integers(1, 4, frames)
    distinct = rng.integers(0, high, (rows, frames))
    return np.repeat(distinct, lengths, axis=1)[:, :frames]


def write_token_file(
    path: Path, pitch: bool = True, source: str | None = None, ids: tuple[str, ...] = ("a", "b c", "spk/d")
) -> Path:
    """A token file like tokenize writes for a model with (or without) a pitch row and 3 codebooks of 16."""
    rng = np.random.default_rng(0)
    rows = 4 if pitch else 3
    extra = {"pitch_rows": int(pitch), "pitch_levels": PITCH_LEVELS if pitch else None, "n_q": 3}
    if source is not None:
        extra["source"] = source
    with TokenFileWriter(
        path,
        num_codebooks=rows,
        codebook_size=CODEBOOK_SIZE,
        sample_rate=16000,
        hop_length=HOP,
        model_name="tiny",
        model_hash="ab" * 32,
        extra_meta=extra,
    ) as writer:
        for index, utt_id in enumerate(ids):
            frames = 7 + 5 * index
            codes = runs_of_codes(rng, rows, frames, CODEBOOK_SIZE)
            if pitch:
                codes[0] %= PITCH_LEVELS
            writer.add(utt_id, f"/audio/{utt_id}.wav", codes, frames * HOP - 17)
    return path


@pytest.fixture
def corpus(tmp_path: Path) -> TokenCorpus:
    return load_tokens(write_token_file(tmp_path / "tokens.npy"))


def expected(corpus: TokenCorpus, rows: list[int]) -> dict[str, np.ndarray]:
    return {utt_id: np.asarray(corpus[utt_id])[rows] for utt_id in corpus}


def assert_same_codes(read: dict[str, np.ndarray], wanted: dict[str, np.ndarray]) -> None:
    assert list(read) == list(wanted)
    for utt_id, codes in wanted.items():
        assert read[utt_id].shape == codes.shape, utt_id
        assert np.array_equal(read[utt_id], codes), utt_id


# --------------------------------------------------------------------------------------------------
# Units <-> codes, in memory
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["flat", "interleave"])
@pytest.mark.parametrize("dedup", [False, True], ids=["plain", "dedup"])
@pytest.mark.parametrize("rows", [1, 3])
def test_units_round_trip_in_memory(layout: str, dedup: bool, rows: int) -> None:
    rng = np.random.default_rng(rows)
    for _ in range(20):
        codes = runs_of_codes(rng, rows, int(rng.integers(1, 40)), CODEBOOK_SIZE)
        units, durations = units_from_codes(codes, layout, CODEBOOK_SIZE, dedup)
        assert (durations is not None) == dedup
        assert np.array_equal(codes_from_units(units, rows, layout, CODEBOOK_SIZE, durations), codes)


def test_unit_layouts_and_durations_are_as_documented() -> None:
    codes = np.array([[1, 1, 1, 2], [5, 5, 6, 6]])  # frames (1,5) (1,5) (1,6) (2,6)
    flat, none = units_from_codes(codes, "flat", 16)
    assert none is None and flat.tolist() == [1, 21, 1, 21, 1, 22, 2, 22]  # row r's code c -> r * 16 + c
    interleave, _ = units_from_codes(codes, "interleave", 16)
    assert interleave.tolist() == [1, 5, 1, 5, 1, 6, 2, 6]  # frame by frame, codes as they are
    deduped, durations = units_from_codes(codes, "flat", 16, dedup=True)
    assert deduped.tolist() == [1, 21, 1, 22, 2, 22] and durations is not None
    assert durations.tolist() == [2, 1, 1]  # a run is of frames equal in every row
    single, lengths = units_from_codes(np.array([[3, 3, 3, 4, 3]]), "flat", 16, dedup=True)
    assert (
        single.tolist() == [3, 4, 3] and lengths is not None and lengths.tolist() == [3, 1, 1]
    )  # GSLM units


def test_units_that_cannot_be_codes_are_refused() -> None:
    with pytest.raises(ValueError, match="whole number of frames"):
        codes_from_units([1, 2, 3], 2, "flat", 16)
    with pytest.raises(ValueError, match=r"unit 5 \(frame 0, row 1\) is outside \[16, 32\)"):
        codes_from_units([1, 5], 2, "flat", 16)
    with pytest.raises(ValueError, match="outside"):
        codes_from_units([1, 16], 2, "interleave", 16)
    with pytest.raises(ValueError, match="2 durations for 1 frames"):
        codes_from_units([1, 17], 2, "flat", 16, durations=[1, 1])
    with pytest.raises(ValueError, match="at least 1"):
        codes_from_units([1, 17], 2, "flat", 16, durations=[0])
    with pytest.raises(ValueError, match="unknown layout"):
        units_from_codes(np.zeros((1, 2), dtype=int), "joint", 16)


def test_row_selection(corpus: TokenCorpus) -> None:
    meta = corpus.meta
    assert select_rows(meta) == ([0, 1, 2, 3], True, [0, 1, 2])  # everything, the pitch row first
    assert select_rows(meta, n_q=1, pitch=False) == ([1], False, [0])  # codebook 0 is row 1
    assert select_rows(meta, codebooks=[2, 0], pitch=True) == ([0, 3, 1], True, [2, 0])
    for kwargs, message in [
        ({"n_q": 4}, "between 1 and 3"),
        ({"codebooks": [3]}, "no codebook 3; the token file holds 3 codebooks"),
        ({"codebooks": [1, 1]}, "twice"),
        ({"n_q": 1, "codebooks": [0]}, "not both"),
        ({"codebooks": [], "pitch": False}, "nothing to export"),
    ]:
        with pytest.raises(ValueError, match=message):
            select_rows(meta, **kwargs)
    without = {"num_codebooks": 3, "pitch_rows": 0}
    assert select_rows(without) == ([0, 1, 2], False, [0, 1, 2])
    with pytest.raises(ValueError, match="no pitch row"):
        select_rows(without, pitch=True)


# --------------------------------------------------------------------------------------------------
# Files written and read back
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", ["flat", "interleave"])
@pytest.mark.parametrize("dedup", [False, True], ids=["plain", "dedup"])
@pytest.mark.parametrize(
    "choice",
    [{"n_q": 1, "pitch": False}, {"pitch": True}, {"codebooks": [2, 0], "pitch": False}],
    ids=["first", "pitch+all", "2,0"],
)
def test_units_file_round_trip(
    corpus: TokenCorpus, tmp_path: Path, layout: str, dedup: bool, choice: dict[str, Any]
) -> None:
    selection = select_rows(corpus.meta, **choice)
    out = tmp_path / "train.units"
    assert write_units(corpus, out, selection, layout=layout, dedup=dedup, progress=False) == (
        out,
        tmp_path / "train.units.json",
    )
    read = read_units(out)
    assert_same_codes(read.codes, expected(corpus, selection.rows))
    meta = read.meta
    assert (meta["layout"], meta["dedup"], meta["pitch_row"]) == (layout, dedup, selection.pitch_row)
    assert meta["codebooks"] == selection.codebooks and meta["units_per_frame"] == len(selection.rows)
    assert meta["model_hash"] == "ab" * 32 and meta["frame_rate"] == 50.0
    lines = out.read_text().splitlines()
    assert [line.split("\t")[0] for line in lines] == [
        "a",
        "b c",
        "spk/d",
    ]  # id order; a space stays in the id
    assert all(len(line.split("\t")) == (3 if dedup else 2) for line in lines)


def test_units_file_lines_are_exactly_the_documented_ones(corpus: TokenCorpus, tmp_path: Path) -> None:
    out = tmp_path / "u.txt"
    write_units(corpus, out, select_rows(corpus.meta, n_q=2, pitch=True), dedup=True, progress=False)
    codes = np.asarray(corpus["a"])[[0, 1, 2]]
    units, durations = units_from_codes(codes, "flat", CODEBOOK_SIZE, dedup=True)
    assert durations is not None
    line = "a\t" + " ".join(map(str, units)) + "\t" + " ".join(map(str, durations))
    assert out.read_text().splitlines()[0] == line
    assert max(units[1::3]) < 2 * CODEBOOK_SIZE <= min(units[2::3])  # each row's own range of units
    assert sum(durations) == codes.shape[1] and len(durations) < codes.shape[1]  # the runs were collapsed


def write_manifest(path: Path) -> Path:
    """Labels for two of the three utterances; "b c" has a speaker but no text."""
    path.write_text(
        "id\tpath\tspeaker\ttext\na\ta.wav\tS1\thello there\nb c\tb.wav\tS2\t\n", encoding="utf-8"
    )
    return path


def test_jsonl_round_trip_with_transcripts_and_speakers(tmp_path: Path) -> None:
    from vqaudio.data.corpus import labels_for_tokens

    manifest = write_manifest(tmp_path / "train.tsv")
    corpus = load_tokens(write_token_file(tmp_path / "tokens.npy", source=str(manifest)))
    labels = labels_for_tokens(corpus.meta, list(corpus))  # the manifest the tokens were made from
    selection = select_rows(corpus.meta)
    out = write_jsonl(corpus, tmp_path / "train.jsonl", selection, labels=labels, progress=False)
    read = read_jsonl(out)
    assert_same_codes(read.codes, expected(corpus, [0, 1, 2, 3]))
    first = json.loads(out.read_text().splitlines()[0])
    assert list(first) == list(export.RECORD_FIELDS)
    assert first["transcript"] == "hello there" and first["speaker"] == "S1"
    assert read.records["b c"]["transcript"] is None and read.records["b c"]["speaker"] == "S2"
    assert read.records["spk/d"]["transcript"] is None and read.records["spk/d"]["speaker"] is None
    entry = corpus.entry("spk/d")
    assert read.records["spk/d"]["n_frames"] == entry.num_frames
    assert read.records["spk/d"]["start"] == 0.0 and read.records["spk/d"]["end"] == entry.num_samples / 16000
    assert read.meta["pitch_row"] is True and read.meta["codebooks"] == [0, 1, 2]
    assert read.meta["model_hash"] == "ab" * 32 and read.meta["frame_rate"] == 50.0

    bare = write_jsonl(corpus, tmp_path / "bare.jsonl", select_rows(corpus.meta, n_q=1), progress=False)
    record = json.loads(bare.read_text().splitlines()[0])
    assert "transcript" not in record and "speaker" not in record  # no label source: no such fields
    assert_same_codes(read_jsonl(bare).codes, expected(corpus, [0, 1]))


def test_hf_dataset_round_trip(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    from vqaudio.data.corpus import labels_for_tokens
    from vqaudio.io.export import write_hf

    manifest = write_manifest(tmp_path / "train.tsv")
    corpus = load_tokens(write_token_file(tmp_path / "tokens.npy"))
    labels = labels_for_tokens(corpus.meta, list(corpus), manifest)
    out = write_hf(corpus, tmp_path / "train_hf", select_rows(corpus.meta), labels=labels, progress=False)
    read = read_hf(out)
    assert_same_codes(read.codes, expected(corpus, [0, 1, 2, 3]))
    assert read.records["a"]["transcript"] == "hello there" and read.records["b c"]["speaker"] == "S2"
    dataset = datasets.load_from_disk(str(out))  # what a downstream user does
    assert dataset.column_names == list(export.RECORD_FIELDS) and len(dataset) == 3
    assert dataset.features["codes"].feature.feature.dtype == "int16"
    assert [name for name in sorted(p.name for p in tmp_path.iterdir()) if "vqtmp" in name] == []


def test_readers_name_the_file_and_line(corpus: TokenCorpus, tmp_path: Path) -> None:
    out = tmp_path / "u.units"
    write_units(corpus, out, select_rows(corpus.meta, n_q=2), progress=False)
    lines = out.read_text().splitlines()
    out.write_text("\n".join([lines[0], lines[1] + " 99", lines[2]]) + "\n")
    with pytest.raises(TokenFileError, match=r"u.units:2: utterance 'b c': .*whole number of frames"):
        read_units(out)
    out.write_text(lines[0] + "\t1 1\n")
    with pytest.raises(TokenFileError, match=r"u.units:1: expected 2 tab-separated fields"):
        read_units(out)
    (tmp_path / "u.units.json").unlink()
    with pytest.raises(TokenFileError, match=r"u.units.json.*keep them together"):
        read_units(out)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "codes": [[1, 2], [3]]}\n')
    with pytest.raises(TokenFileError, match=r"bad.jsonl:1: 'codes' must be"):
        read_jsonl(bad)


# --------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------
def test_cli_end_to_end_from_a_manifest(
    tmp_path: Path, run: Any, tiny_model_dir: Path, audio_folder: Path
) -> None:
    """tokenize a manifest, export all three formats: the codes come back, with the manifest's labels."""
    manifest = audio_folder / "corpus.tsv"  # paths relative to the manifest's folder
    rows = ["id\tpath\tspeaker\ttext", "a\ta.wav\tS1\tone", "b\tb.wav\tS1\ttwo", "sub/d\tsub/d.wav\tS2\tfour"]
    manifest.write_text("\n".join(rows) + "\n")
    tokens = tmp_path / "tokens.npy"
    code, _, err = run("tokenize", manifest, tokens, "--model", tiny_model_dir, "--no-progress")
    assert code == 0, err
    corpus = load_tokens(tokens)

    code, out, err = run("export", tokens, tmp_path / "t.units", "--no-progress")
    assert code == 0, err
    assert "wrote 3 utterances (codebooks [0])" in out
    assert_same_codes(read_units(tmp_path / "t.units").codes, expected(corpus, [0]))  # no pitch row here
    args = ["--n-q", "2", "--layout", "interleave", "--dedup", "--no-progress"]
    assert run("export", tokens, tmp_path / "t2.units", *args)[0] == 0
    assert_same_codes(read_units(tmp_path / "t2.units").codes, expected(corpus, [0, 1]))

    code, _, err = run("export", tokens, tmp_path / "t.jsonl", "--format", "jsonl", "--no-progress")
    assert code == 0, err
    read = read_jsonl(tmp_path / "t.jsonl")
    assert_same_codes(read.codes, expected(corpus, [0, 1, 2]))
    assert read.records["sub/d"]["transcript"] == "four" and read.records["sub/d"]["speaker"] == "S2"

    if _has_datasets():
        code, _, err = run("export", tokens, tmp_path / "hf", "--format", "hf", "--codebooks", "2,1")
        assert code == 0, err
        hf = read_hf(tmp_path / "hf")
        assert_same_codes(hf.codes, expected(corpus, [2, 1]))
        assert hf.records["a"]["transcript"] == "one" and hf.meta["codebooks"] == [2, 1]


def _has_datasets() -> bool:
    try:
        import datasets  # noqa: F401
    except ImportError:
        return False
    return True


def test_cli_needs_overwrite_and_leaves_nothing_when_interrupted(
    corpus: TokenCorpus, tmp_path: Path, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = corpus.paths[0]
    out = tmp_path / "t.units"
    assert run("export", tokens, out, "--no-progress")[0] == 0
    before = (out.read_bytes(), (tmp_path / "t.units.json").read_bytes())
    one_line_error(run("export", tokens, out, "--n-q", "2"), "t.units", "--overwrite")
    calls = []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return units_from_codes(*args, **kwargs)

    monkeypatch.setattr(export, "units_from_codes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_units(corpus, out, select_rows(corpus.meta, n_q=2), overwrite=True, progress=False)
    assert (out.read_bytes(), (tmp_path / "t.units.json").read_bytes()) == before  # the old pair, as it was
    assert sorted(path.name for path in tmp_path.iterdir()) == ["t.units", "t.units.json", *_token_names()]
    monkeypatch.undo()
    assert run("export", tokens, out, "--n-q", "2", "--overwrite", "--no-progress")[0] == 0
    assert_same_codes(read_units(out).codes, expected(corpus, [1, 2]))


def _token_names() -> list[str]:
    return ["tokens.index.tsv", "tokens.meta.json", "tokens.npy"]


def test_cli_bad_options_are_one_line_errors(tmp_path: Path, run: Any) -> None:
    tokens = write_token_file(tmp_path / "tokens.npy")
    plain = write_token_file(tmp_path / "plain.npy", pitch=False)
    out = tmp_path / "out.units"
    jsonl = tmp_path / "out.jsonl"
    one_line_error(run("export", tokens, out, "--n-q", "4"), "--n-q", "between 1 and 3", "after a pitch row")
    one_line_error(run("export", tokens, out, "--codebooks", "0,3"), "no codebook 3")
    one_line_error(run("export", plain, out, "--pitch"), "no pitch row", "drop --pitch")
    # contradicting or malformed options are usage errors (exit 2), named in the usage message
    for args, needle in [
        (["--codebooks", "0,x"], "'0,x'"),
        (["--n-q", "1", "--codebooks", "0"], "not both"),
        (["--format", "jsonl", "--dedup"], "--format units"),
        (["--manifest", tmp_path / "m.tsv"], "jsonl/hf"),
    ]:
        code, _, err = run("export", tokens, jsonl if "jsonl" in args else out, *args)
        assert code == 2 and needle in err, (args, err)
    (tmp_path / "other.tsv").write_text("id\tpath\tspeaker\nzz\tzz.wav\tS9\n")
    one_line_error(
        run("export", tokens, jsonl, "--format", "jsonl", "--manifest", tmp_path / "other.tsv"),
        "other.tsv",
        "names none of the 3 utterances",
    )
    one_line_error(run("export", tmp_path / "missing.npy", out), "missing.npy")
    code, _, err = run("export", tokens, out, "--format", "csv")
    assert code == 2 and "csv" in err
    assert not out.exists() and not jsonl.exists()


def test_cli_hf_without_datasets_names_the_extra(
    tmp_path: Path, run: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tokens = write_token_file(tmp_path / "tokens.npy")
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    one_line_error(run("export", tokens, tmp_path / "hf", "--format", "hf"), "datasets", "vqaudio[hf]")
    assert not (tmp_path / "hf").exists()
