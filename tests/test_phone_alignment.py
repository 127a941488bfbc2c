"""Phone alignments (vqaudio.evaluation.phone_alignment, `vqaudio align`): frame labels on hand-made segments,
the folder format, and pocketsphinx's alignment of synthesized speech whose phones and word timing are known
(espeak-ng)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from vqaudio.data.manifest import read_manifest
from vqaudio.errors import DataError
from vqaudio.evaluation.phone_alignment import (
    PHONE_SET,
    SILENCE,
    PhoneSegment,
    _clean_segments,
    frame_labels,
    num_frames_at,
    read_alignments,
    read_phones,
)

HAS_POCKETSPHINX = shutil.which("espeak-ng") is not None
try:
    import pocketsphinx  # noqa: F401
except ImportError:
    HAS_POCKETSPHINX = False
needs_tools = pytest.mark.skipif(
    not HAS_POCKETSPHINX or shutil.which("espeak-ng") is None,
    reason="needs espeak-ng (Debian package) and pocketsphinx (the 'voice' extra)",
)


def segments(*items: tuple[float, float, str]) -> list[PhoneSegment]:
    return [PhoneSegment(start, end, phone, "w") for start, end, phone in items]


# --------------------------------------------------------------------------------------------------
# Frame labels and segment cleaning, on hand-made cases
# --------------------------------------------------------------------------------------------------
def test_frame_labels_take_the_phone_covering_most_of_each_frame() -> None:
    # 20 ms frames; boundaries at 0.03 (mid-frame 1), 0.05, 0.07 (mid-frames 2 and 3), 0.095 (frame 4)
    aligned = segments(
        (0, 0.03, SILENCE), (0.03, 0.05, "AA"), (0.05, 0.07, "B"), (0.07, 0.095, "K"), (0.095, 0.1, "T")
    )
    assert frame_labels(aligned, 5, 50.0) == [SILENCE, "AA", "B", "K", "K"]
    # frame 1 = [0.02, 0.04): SIL 10 ms, AA 10 ms -> a tie goes to the later phone
    # frame 2 = [0.04, 0.06): AA 10 ms, B 10 ms -> B; frame 3 = [0.06, 0.08): B 10 ms, K 10 ms -> K
    # frames past the last segment are silence
    assert frame_labels(aligned, 7, 50.0)[5:] == [SILENCE, SILENCE]
    assert frame_labels(aligned, 10, 100.0) == [
        SILENCE,
        SILENCE,
        SILENCE,
        "AA",
        "AA",
        "B",
        "B",
        "K",
        "K",
        "T",
    ]
    with pytest.raises(ValueError, match="frame_rate"):
        frame_labels(aligned, 3, 0.0)


def test_num_frames_counts_as_a_tokenizer_does() -> None:
    assert num_frames_at(16000, 16000, 50.0) == 50
    assert num_frames_at(16001, 16000, 50.0) == 51
    assert num_frames_at(1, 16000, 50.0) == 1
    assert num_frames_at(17526, 16000, 50.0) == 55  # ceil(17526 / 320)


def test_clean_segments_shift_merge_fill_and_cover_the_clip() -> None:
    # aligner frames of audio padded by 0.1 s: <s> and <sil> merge into one SIL, "was(2)" is plain "was"
    raw = [
        (0, 8, "SIL", "<s>"),
        (8, 13, "SIL", "<sil>"),
        (13, 20, "W", "was"),
        (20, 24, "AH", "was"),
        (26, 30, "Z", "was"),  # a gap 24..26 becomes SIL
        (30, 40, "+NSN+", "[NOISE]"),
    ]
    cleaned = _clean_segments(raw, duration=0.25, offset=0.1)
    assert cleaned == [
        PhoneSegment(0.0, 0.03, SILENCE, "<sil>"),
        PhoneSegment(0.03, 0.1, "W", "was"),
        PhoneSegment(0.1, 0.14, "AH", "was"),
        PhoneSegment(0.14, 0.16, SILENCE, "<sil>"),
        PhoneSegment(0.16, 0.2, "Z", "was"),
        PhoneSegment(0.2, 0.25, SILENCE, "<sil>"),  # the filler, stretched to the clip's end
    ]


# --------------------------------------------------------------------------------------------------
# The folder format
# --------------------------------------------------------------------------------------------------
def write_folder(folder: Path, audio_path: Path, phones_text: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "manifest.tsv").write_text(
        f"id\tpath\tsamples\tsample_rate\tspeaker\ttext\nu1\t{audio_path}\t16000\t16000\t\tgo\n"
    )
    (folder / "phones.tsv").write_text(phones_text)
    (folder / "frames.tsv").write_text("utt_id\tnum_frames\tlabels\n")
    meta = {"format": "vqaudio-phone-alignment", "format_version": 1, "aligner": "test", "frame_rate": 50}
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_read_alignments_checks_the_folder(tmp_path: Path, write_audio) -> None:  # type: ignore[no-untyped-def]
    audio = write_audio(tmp_path / "u1.wav", np.zeros(16000, np.float32))
    header = "utt_id\tstart\tend\tphone\tword\n"
    good = header + "u1\t0\t0.4\tSIL\t<sil>\nu1\t0.4\t0.7\tG\tgo\nu1\t0.7\t1\tOW\tgo\n"
    aligned = read_alignments(write_folder(tmp_path / "good", audio, good))
    assert [segment.phone for segment in aligned.segments["u1"]] == [SILENCE, "G", "OW"]
    assert aligned.utterances[0].text == "go" and aligned.meta["aligner"] == "test"
    with pytest.raises(DataError, match="unknown phone 'Q'"):
        read_alignments(write_folder(tmp_path / "q", audio, header + "u1\t0\t1\tQ\tgo\n"))
    with pytest.raises(DataError, match="does not start where the one before ends"):
        read_alignments(
            write_folder(tmp_path / "gap", audio, header + "u1\t0\t0.4\tG\tgo\nu1\t0.5\t1\tOW\tgo\n")
        )
    with pytest.raises(DataError, match="disagree"):
        read_alignments(write_folder(tmp_path / "other", audio, header + "u2\t0\t1\tG\tgo\n"))
    with pytest.raises(DataError, match="vqaudio align"):
        read_alignments(tmp_path / "good" / "manifest.tsv")


# --------------------------------------------------------------------------------------------------
# pocketsphinx on espeak-ng speech
# --------------------------------------------------------------------------------------------------
# espeak-ng's phoneme mnemonics (``-x``, en-us voice) -> the CMU dictionary's ARPAbet; stress marks dropped
ESPEAK_TO_ARPABET = {
    "a": "AE", "aa": "AE", "a#": "AH", "A:": "AA", "A@": "AA R", "aI": "AY", "aI@": "AY ER", "aI3": "AY ER",
    "aU": "AW", "b": "B", "d": "D", "dZ": "JH", "D": "DH", "e@": "EH R", "E": "EH", "eI": "EY", "3:": "ER",
    "3": "ER", "@": "AH", "@2": "AH", "@5": "AH", "@L": "AH L", "f": "F", "g": "G", "h": "HH", "i": "IY",
    "i:": "IY", "i@": "IH R", "i@3": "IH R", "I": "IH", "I#": "IH", "I2": "IH", "j": "Y", "k": "K", "l": "L",
    "m": "M", "n": "N", "N": "NG", "0": "AA", "o@": "AO R", "O": "AO", "O:": "AO", "O@": "AO R", "O2": "AA",
    "OI": "OY", "oU": "OW", "p": "P", "r": "R", "r-": "R", "s": "S", "S": "SH", "t": "T", "t#": "T", "tS": "CH",
    "T": "TH", "u": "UW", "u:": "UW", "U": "UH", "U@": "UH R", "V": "AH", "v": "V", "w": "W", "z": "Z",
    "Z": "ZH", "n-": "N", "l-": "L", "m-": "M",
}  # fmt: skip
SENTENCES = (
    "The small boat drifted slowly toward the rocky shore.",
    "She counted seven birds sitting on the telephone wire.",
    "His voice was calm, but his hands were shaking.",
)


def espeak(text: str, workdir: Path, voice: str = "en-us") -> np.ndarray:
    wav = workdir / "espeak.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(wav), text], check=True, capture_output=True)
    audio, rate = sf.read(str(wav), dtype="float32")
    return soxr.resample(audio, rate, 16000).astype(np.float32)


def espeak_phones(text: str, voice: str = "en-us") -> tuple[list[str], int]:
    """(the ARPAbet phones espeak-ng says it speaks, count of its phonemes this table cannot map)."""
    spoken = subprocess.run(
        ["espeak-ng", "-v", voice, "-q", "-x", "--sep=_", text], check=True, capture_output=True, text=True
    ).stdout
    phones, unknown = [], 0
    for token in re.split(r"[\s_]+", spoken):
        token = token.replace("'", "").replace(",", "")
        if token in ESPEAK_TO_ARPABET:
            phones += ESPEAK_TO_ARPABET[token].split()
        elif token:
            unknown += 1
    return phones, unknown


def edit_distance(a: list[str], b: list[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, start=1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, start=1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[-1]


def check_covering(aligned: list[PhoneSegment], duration: float) -> None:
    assert aligned[0].start == 0 and aligned[-1].end == pytest.approx(duration, abs=1e-4)
    for before, after in zip(aligned, aligned[1:], strict=False):
        assert before.start < before.end == pytest.approx(after.start, abs=1e-9)
    assert all(segment.phone in PHONE_SET for segment in aligned)


@needs_tools
def test_aligned_phones_are_the_phones_espeak_spoke(tmp_path: Path) -> None:
    """Tolerance: at least 80% of espeak-ng's phones, in order (1 - edit distance / their number). The
    dictionaries differ a little (espeak's "on" is AA, the CMU dictionary's AO), and a table cannot map
    every espeak phoneme; each such miss counts against the 80%."""
    from vqaudio.evaluation.phone_alignment import PhoneAligner

    aligner = PhoneAligner()
    for sentence in SENTENCES:
        audio = espeak(sentence, tmp_path)
        aligned = aligner.align(audio, sentence)
        check_covering(aligned, audio.shape[0] / 16000)
        expected, unknown = espeak_phones(sentence)
        got = [segment.phone for segment in aligned if segment.phone != SILENCE]
        agreement = 1 - (edit_distance(expected, got) + unknown) / (len(expected) + unknown)
        assert agreement >= 0.8, (sentence, expected, got)


@needs_tools
def test_aligned_words_sit_where_they_were_spoken(tmp_path: Path) -> None:
    """Words synthesized one by one and joined with 300 ms of silence: their true spans are known. Each
    aligned word starts and ends within 60 ms of its span, and the middle of every pause is labelled SIL."""
    from vqaudio.evaluation.phone_alignment import PhoneAligner

    words = ["seven", "purple", "bicycles", "wandered", "outside"]
    gap = np.zeros(4800, np.float32)
    pieces, spans, time = [gap], [], gap.shape[0] / 16000
    for word in words:
        audio = espeak(word, tmp_path)
        voiced = np.flatnonzero(np.abs(audio) > 1e-3)
        audio = audio[voiced[0] : voiced[-1] + 1]  # espeak's own leading and trailing silence trimmed
        spans.append((word, time, time + audio.shape[0] / 16000))
        pieces += [audio, gap]
        time += (audio.shape[0] + gap.shape[0]) / 16000
    audio = np.concatenate(pieces)
    aligned = PhoneAligner().align(audio, " ".join(words))
    check_covering(aligned, audio.shape[0] / 16000)
    found: dict[str, list[float]] = {}
    for segment in aligned:
        if segment.phone != SILENCE:
            found.setdefault(segment.word, [segment.start, segment.end])[1] = segment.end
    assert list(found) == words
    for word, start, end in spans:
        assert found[word][0] == pytest.approx(start, abs=0.06), word
        assert found[word][1] == pytest.approx(end, abs=0.06), word
    labels = frame_labels(aligned, num_frames_at(audio.shape[0], 16000, 50.0), 50.0)
    pauses = [0.5 * (spans[i][2] + spans[i + 1][1]) for i in range(len(spans) - 1)]
    assert all(labels[int(middle * 50)] == SILENCE for middle in pauses)


@needs_tools
def test_align_command_writes_the_folder_and_lists_what_it_left_out(tmp_path: Path, run) -> None:  # type: ignore[no-untyped-def]
    from conftest import one_line_error

    sf.write(tmp_path / "a.wav", espeak(SENTENCES[0], tmp_path), 16000, subtype="PCM_16")
    sf.write(tmp_path / "b.wav", espeak("the quick brown fox", tmp_path), 16000, subtype="PCM_16")
    manifest = tmp_path / "data.tsv"
    manifest.write_text(
        "id\tpath\ttext\n"
        f"a\ta.wav\t{SENTENCES[0]}\n"
        "b\tb.wav\tthe quick brown fox\n"
        "c\tb.wav\t\n"
        "d\tb.wav\tthe quick brown xyzzyq\n"
    )
    out = tmp_path / "aligned"
    one_line_error(run("align", manifest, out, "--no-progress"), "utterance d", "xyzzyq", "--skip-bad")
    assert not out.exists()
    status, stdout, err = run("align", manifest, out, "--no-progress", "--skip-bad")
    assert status == 0, err
    assert "aligned 2 utterances" in stdout and "1 without a transcript" in stdout and "1 skipped" in stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["untranscribed"] == ["c"] and [item["id"] for item in meta["skipped"]] == ["d"]
    assert "xyzzyq" in meta["skipped"][0]["reason"] and meta["frame_rate"] == 50.0
    assert [utt.id for utt in read_manifest(out / "manifest.tsv")] == ["a", "b"]
    phones = read_phones(out / "phones.tsv")
    frames = {
        line.split("\t")[0]: line.split("\t") for line in (out / "frames.tsv").read_text().splitlines()[1:]
    }
    for utt_id, duration in (
        ("a", sf.info(tmp_path / "a.wav").duration),
        ("b", sf.info(tmp_path / "b.wav").duration),
    ):
        check_covering(phones[utt_id], duration)
        count = int(frames[utt_id][1])
        assert count == num_frames_at(round(duration * 16000), 16000, 50.0)
        assert frames[utt_id][2].split(" ") == frame_labels(phones[utt_id], count, 50.0)
    one_line_error(run("align", manifest, out, "--no-progress", "--skip-bad"), "--overwrite")
