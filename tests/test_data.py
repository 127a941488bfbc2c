"""Corpora, manifests, speaker-held-out splits, bad input (synthetic data); the fillets-ng conversion is in
test_egs_fillets.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from vqaudio.cli.main import main
from vqaudio.data import Utterance, fill_headers, load_corpus, read_manifest, write_manifest
from vqaudio.data.librispeech import ChapterWriter
from vqaudio.data.prepare import prepare_manifests, split_by_speaker, split_manifest_path
from vqaudio.errors import AudioError, DataError
from vqaudio.io.atomic import atomic_folder

RATE = 16000


def write_tone(path: Path, seconds: float = 0.1, rate: int = RATE, seed: int = 0, channels: int = 1) -> int:
    """A short harmonic tone with a little noise; returns its length in samples."""
    rng = np.random.default_rng(seed)
    n = max(1, int(seconds * rate))
    t = np.arange(n) / rate
    f0 = 120 + 20 * seed
    wave = sum(0.2 / k * np.sin(2 * np.pi * k * f0 * t) for k in range(1, 4)) + 0.01 * rng.standard_normal(n)
    data = np.repeat(wave[:, None], channels, axis=1).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), data, rate)
    return n


def make_librispeech(root: Path, splits: dict[str, list[str]], utts: int = 2) -> dict[str, int]:
    """<root>/<split>/<spk>/<chap>/<spk>-<chap>-<utt>.flac + trans.txt; returns {id: samples}."""
    lengths = {}
    for split, speakers in splits.items():
        for s, speaker in enumerate(speakers):
            chapter = f"{100 + s}"
            folder = root / split / speaker / chapter
            lines = []
            for u in range(utts):
                utt_id = f"{speaker}-{chapter}-{u:04d}"
                lengths[utt_id] = write_tone(folder / f"{utt_id}.flac", 0.05 + 0.01 * u, seed=s)
                lines.append(f"{utt_id} HELLO WORLD NUMBER {u}")
            (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
    return lengths


# --------------------------------------------------------------------------------------------------
# LibriSpeech layout, folders, list files, manifests
# --------------------------------------------------------------------------------------------------
def test_librispeech_tree_root_and_single_split(tmp_path: Path) -> None:
    lengths = make_librispeech(tmp_path / "LS", {"train-clean-100": ["19", "26"], "dev-clean": ["84"]})
    corpus = load_corpus(tmp_path / "LS")
    assert [utt.id for utt in corpus] == sorted(lengths)
    first = corpus[0]
    assert (first.id, first.speaker, first.text) == ("19-100-0000", "19", "HELLO WORLD NUMBER 0")
    assert first.num_samples is None  # headers are read lazily

    dev = load_corpus(tmp_path / "LS" / "dev-clean", read_headers=True)
    assert [utt.id for utt in dev] == ["84-100-0000", "84-100-0001"]
    assert [utt.num_samples for utt in dev] == [lengths["84-100-0000"], lengths["84-100-0001"]]
    assert all(utt.sample_rate == RATE for utt in dev)


def test_chapter_writer_builds_a_tree_that_reads_back(tmp_path: Path) -> None:
    writer = ChapterWriter(tmp_path / "voices", RATE)
    writer.add("tts-a", "city", 3, np.full(RATE // 2, 0.5, dtype=np.float32), "first line")
    writer.add("tts-a", "city", 1, np.full(RATE, 2.0, dtype=np.float32), "second line")  # clipped
    writer.add("tts-b", "sea", 0, np.zeros(RATE // 4, dtype=np.float32), "third line")
    assert writer.seconds == pytest.approx(1.75)
    writer.write_transcripts()
    corpus = load_corpus(tmp_path / "voices", read_headers=True)
    assert [(utt.id, utt.speaker, utt.text, utt.num_samples) for utt in corpus] == [
        ("tts-a-city-0001", "tts-a", "second line", RATE),
        ("tts-a-city-0003", "tts-a", "first line", RATE // 2),
        ("tts-b-sea-0000", "tts-b", "third line", RATE // 4),
    ]
    transcript = (tmp_path / "voices/tts-a/city/tts-a-city.trans.txt").read_text().splitlines()
    assert transcript == ["tts-a-city-0003 first line", "tts-a-city-0001 second line"]  # order added
    audio, _ = sf.read(tmp_path / "voices/tts-a/city/tts-a-city-0001.flac")
    assert np.abs(audio).max() <= 1.0


@pytest.mark.parametrize("interruption", [RuntimeError, KeyboardInterrupt])
def test_atomic_folder_replaces_only_when_the_block_succeeds(
    tmp_path: Path, interruption: type[BaseException]
) -> None:
    out = tmp_path / "corpus"
    with atomic_folder(out) as staging:
        (staging / "a.txt").write_text("old")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corpus"]
    assert (out / "a.txt").read_text() == "old" and oct(out.stat().st_mode)[-3:] != "700"

    with pytest.raises(interruption), atomic_folder(out) as staging:
        (staging / "b.txt").write_text("new")
        raise interruption()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corpus"]  # no staging folder left
    assert sorted(path.name for path in out.iterdir()) == ["a.txt"]  # the old folder is untouched

    with atomic_folder(out) as staging:
        (staging / "b.txt").write_text("new")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corpus"]
    assert sorted(path.name for path in out.iterdir()) == ["b.txt"]


def test_prepare_writes_manifest_that_reads_back(tmp_path: Path) -> None:
    lengths = make_librispeech(tmp_path / "LS", {"dev-clean": ["84", "174"]})
    result = prepare_manifests(tmp_path / "LS" / "dev-clean", tmp_path / "data" / "dev.tsv", progress=False)
    assert set(result.manifests) == {"all"}
    lines = (tmp_path / "data" / "dev.tsv").read_text().splitlines()
    assert lines[0] == str((tmp_path / "LS" / "dev-clean").resolve())  # root line
    assert lines[1].split("\t") == ["id", "path", "samples", "sample_rate", "speaker", "text"]
    corpus = load_corpus(tmp_path / "data" / "dev.tsv")
    assert {utt.id: utt.num_samples for utt in corpus} == lengths
    assert corpus == load_corpus(tmp_path / "LS" / "dev-clean", read_headers=True)
    assert result.stats["all"].speakers == 2


def test_audio_folder_is_recursive_and_skips_hidden_files(tmp_path: Path) -> None:
    write_tone(tmp_path / "corpus" / "a.wav")
    write_tone(tmp_path / "corpus" / "sub" / "b.FLAC")
    write_tone(tmp_path / "corpus" / ".a.wav.tmp123.wav")  # an atomic write in progress
    write_tone(tmp_path / "corpus" / ".cache" / "c.wav")
    (tmp_path / "corpus" / "notes.txt").write_text("not audio")
    corpus = load_corpus(tmp_path / "corpus")
    assert [utt.id for utt in corpus] == ["a", "sub/b"]
    assert all(utt.speaker is None and utt.num_samples is None for utt in corpus)
    assert load_corpus(tmp_path / "corpus" / "a.wav")[0].id == "a"


def test_list_files_resolve_relative_paths(tmp_path: Path) -> None:
    write_tone(tmp_path / "audio" / "x" / "one.wav")
    write_tone(tmp_path / "audio" / "y" / "two.wav")
    (tmp_path / "audio" / "list.txt").write_text("# my files\nx/one.wav\n\ny/two.wav\n")
    corpus = load_corpus(tmp_path / "audio" / "list.txt")
    assert [utt.id for utt in corpus] == ["x/one", "y/two"]
    (tmp_path / "audio" / "wav.scp").write_text("utt2 y/two.wav\nutt1 x/one.wav\n")
    assert [(utt.id, utt.path.name) for utt in load_corpus(tmp_path / "audio" / "wav.scp")] == [
        ("utt1", "one.wav"),
        ("utt2", "two.wav"),
    ]
    (tmp_path / "audio" / "bad.lst").write_text("x/one.wav\nx/missing.wav\n")
    with pytest.raises(DataError, match=r"bad\.lst:2: .*missing\.wav does not exist"):
        load_corpus(tmp_path / "audio" / "bad.lst")


def test_fairseq_manifest_with_root_line_and_no_header(tmp_path: Path) -> None:
    n = write_tone(tmp_path / "wavs" / "spk" / "a.wav")
    write_tone(tmp_path / "wavs" / "spk" / "b.wav")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "train.tsv").write_text(f"{tmp_path / 'wavs'}\nspk/a.wav\t{n}\nspk/b.wav\t{n}\n")
    corpus = read_manifest(tmp_path / "lists" / "train.tsv")
    assert [(utt.id, utt.num_samples, utt.sample_rate) for utt in corpus] == [
        ("spk/a", n, None),
        ("spk/b", n, None),
    ]
    assert corpus[0].path == tmp_path / "wavs" / "spk" / "a.wav"
    # a relative root line is relative to the manifest's folder; columns by header in any order
    (tmp_path / "lists" / "rel.tsv").write_text("../wavs\ntext\tpath\nHI THERE\tspk/a.wav\n")
    (utt,) = load_corpus(tmp_path / "lists" / "rel.tsv")
    assert (utt.id, utt.text, utt.path.resolve()) == (
        "spk/a",
        "HI THERE",
        (tmp_path / "wavs/spk/a.wav").resolve(),
    )


def test_write_manifest_round_trip_keeps_every_field(tmp_path: Path) -> None:
    write_tone(tmp_path / "a" / "x.wav")
    write_tone(tmp_path / "b" / "y.wav")
    utterances = [
        Utterance("x", tmp_path / "a" / "x.wav", 1600, RATE, speaker="s1", text="TAB\tIN TEXT"),
        Utterance("y", tmp_path / "b" / "y.wav", None, None),
    ]
    write_manifest(utterances, tmp_path / "m.tsv")
    back = read_manifest(tmp_path / "m.tsv")
    assert back[0] == Utterance("x", (tmp_path / "a" / "x.wav").resolve(), 1600, RATE, "s1", "TAB IN TEXT")
    assert back[1] == Utterance("y", (tmp_path / "b" / "y.wav").resolve(), None, None)


# --------------------------------------------------------------------------------------------------
# Speaker-held-out splits
# --------------------------------------------------------------------------------------------------
def synthetic_corpus(num_speakers: int, per_speaker: int) -> list[Utterance]:
    return [
        Utterance(
            f"s{s:02d}-{u}", Path(f"s{s}/{u}.wav"), RATE * (1 + (s * 7 + u) % 5), RATE, speaker=f"s{s:02d}"
        )
        for s in range(num_speakers)
        for u in range(per_speaker)
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_split_by_speaker_has_no_speaker_overlap(seed: int) -> None:
    corpus = synthetic_corpus(num_speakers=20, per_speaker=6)
    splits = split_by_speaker(corpus, dev=0.1, test=0.15, seed=seed)
    speakers = [{utt.speaker for utt in part} for part in splits]
    assert all(speakers)
    assert (
        not (speakers[0] & speakers[1])
        and not (speakers[0] & speakers[2])
        and not (speakers[1] & speakers[2])
    )
    assert sorted(utt.id for part in splits for utt in part) == sorted(utt.id for utt in corpus)
    total = sum(utt.num_samples for utt in corpus)  # type: ignore[misc]
    dev_share = sum(utt.num_samples for utt in splits.dev) / total  # type: ignore[misc]
    assert 0.05 < dev_share <= 0.1 * 1.25
    assert split_by_speaker(corpus, dev=0.1, test=0.15, seed=seed) == splits  # deterministic


def test_split_refuses_when_no_training_speaker_would_remain() -> None:
    corpus = synthetic_corpus(num_speakers=2, per_speaker=3)
    with pytest.raises(DataError, match="2 speaker"):
        split_by_speaker(corpus, dev=0.3, test=0.3)
    with pytest.raises(ValueError, match="sum < 1"):
        split_by_speaker(corpus, dev=0.6, test=0.6)


def test_cli_prepare_merges_several_sources(tmp_path: Path) -> None:
    lengths = make_librispeech(tmp_path / "LS", {"train-a": ["1", "2"], "train-b": ["3"], "dev-clean": ["4"]})
    manifest = tmp_path / "train.tsv"
    args = ["prepare", str(tmp_path / "LS" / "train-a"), str(tmp_path / "LS" / "train-b"), str(manifest)]
    assert main([*args, "--dev", "0", "--test", "0"]) == 0
    corpus = load_corpus(manifest)
    assert {utt.id: utt.num_samples for utt in corpus} == {k: v for k, v in lengths.items() if k[0] in "123"}
    assert manifest.read_text().splitlines()[0] == str((tmp_path / "LS").resolve())


def test_cli_prepare_writes_speaker_disjoint_split_manifests(tmp_path: Path) -> None:
    speakers = [str(100 + s) for s in range(8)]
    make_librispeech(tmp_path / "LS", {"train-other": speakers})
    manifest = tmp_path / "out" / "manifest.tsv"
    assert main(["prepare", str(tmp_path / "LS"), str(manifest), "--dev", "0.2", "--test", "0.2"]) == 0
    parts = {split: load_corpus(split_manifest_path(manifest, split)) for split in ("train", "dev", "test")}
    assert sum(len(part) for part in parts.values()) == len(load_corpus(manifest)) == 16
    seen: set[str | None] = set()
    for part in parts.values():
        part_speakers = {utt.speaker for utt in part}
        assert part and not (part_speakers & seen)
        seen |= part_speakers


# --------------------------------------------------------------------------------------------------
# Bad input: one-line errors naming the file
# --------------------------------------------------------------------------------------------------
def test_missing_transcript_line_names_the_transcript_file(tmp_path: Path) -> None:
    make_librispeech(tmp_path / "LS", {"dev-clean": ["84"]})
    trans = tmp_path / "LS" / "dev-clean" / "84" / "100" / "84-100.trans.txt"
    trans.write_text("84-100-0000 ONLY ONE LINE\n")
    with pytest.raises(DataError, match=r"84-100\.trans\.txt: no transcript line for 84-100-0001\.flac"):
        load_corpus(tmp_path / "LS")


def test_malformed_transcript_line_names_file_and_line(tmp_path: Path) -> None:
    make_librispeech(tmp_path / "LS", {"dev-clean": ["84"]})
    trans = tmp_path / "LS" / "dev-clean" / "84" / "100" / "84-100.trans.txt"
    trans.write_text("84-100-0000 FINE\n84-100-0001\n")
    with pytest.raises(DataError, match=r"84-100\.trans\.txt:2: malformed transcript line"):
        load_corpus(tmp_path / "LS")


def test_chapter_folder_without_transcript_file_is_an_error(tmp_path: Path) -> None:
    make_librispeech(tmp_path / "LS", {"dev-clean": ["84", "85"]})
    (tmp_path / "LS" / "dev-clean" / "85" / "101" / "85-101.trans.txt").unlink()
    with pytest.raises(DataError, match=r"101: 2 audio files but no"):
        load_corpus(tmp_path / "LS")


def test_manifest_with_nonexistent_paths_names_the_manifest(tmp_path: Path) -> None:
    write_tone(tmp_path / "a.wav")
    (tmp_path / "m.tsv").write_text("path\tsamples\na.wav\t1600\ngone.wav\t1600\n")
    with pytest.raises(DataError, match=r"m\.tsv: .*gone\.wav does not exist \(1 of 2"):
        load_corpus(tmp_path / "m.tsv")
    (tmp_path / "n.tsv").write_text("path\tsamples\na.wav\tmany\n")
    with pytest.raises(DataError, match=r"n\.tsv:2: column samples must be an integer"):
        load_corpus(tmp_path / "n.tsv")
    (tmp_path / "empty.tsv").write_text(f"{tmp_path}\n")
    with pytest.raises(DataError, match="lists no utterances"):
        load_corpus(tmp_path / "empty.tsv")


def test_empty_folder_missing_path_and_duplicate_ids(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no audio files found"):
        load_corpus(tmp_path / "empty")
    with pytest.raises(DataError, match="no such file or folder"):
        load_corpus(tmp_path / "nowhere")
    write_tone(tmp_path / "dup" / "a.wav")
    write_tone(tmp_path / "dup" / "a.flac")
    with pytest.raises(DataError, match="duplicate utterance id 'a'"):
        load_corpus(tmp_path / "dup")


def test_unreadable_files_fail_or_are_skipped_with_skip_bad(tmp_path: Path) -> None:
    write_tone(tmp_path / "c" / "good.wav")
    (tmp_path / "c" / "broken.wav").write_bytes(b"RIFF not really a wave file")
    sf.write(str(tmp_path / "c" / "empty.wav"), np.zeros(0, dtype=np.float32), RATE)
    with pytest.raises(AudioError, match=r"broken\.wav: cannot read audio .*1 more unreadable"):
        prepare_manifests(tmp_path / "c", tmp_path / "m.tsv", progress=False)
    assert not (tmp_path / "m.tsv").exists()
    kept = fill_headers(load_corpus(tmp_path / "c"), skip_bad=True, progress=False)
    assert [utt.id for utt in kept] == ["good"]
    assert (
        main(
            [
                "prepare",
                str(tmp_path / "c"),
                str(tmp_path / "m.tsv"),
                "--dev",
                "0",
                "--test",
                "0",
                "--skip-bad",
            ]
        )
        == 0
    )
    assert [utt.id for utt in load_corpus(tmp_path / "m.tsv")] == ["good"]


def test_cli_error_is_one_line_with_exit_code_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["prepare", str(tmp_path / "empty"), str(tmp_path / "m.tsv")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "empty" in err[0]
