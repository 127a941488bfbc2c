"""The pocketsphinx recipe's stage 0 (egs/pocketsphinx/local/gather_clips.py and run.sh) on a fake package:
the clips keep their names, the manifest carries the package's transcripts, normalised as pocketsphinx's
output is, and no text where the package has none. Stage 6's training set (local/make_phone_training_set.py):
no voice or sentence of stage 4's held-out probe set, and a tiny run's LibriSpeech layout."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import soundfile as sf

from vqaudio.data.manifest import read_manifest
from vqaudio.errors import DataError

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "egs" / "pocketsphinx"


def load_gather_clips() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gather_clips", RECIPE / "local" / "gather_clips.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


gather = load_gather_clips()


def fake_package(root: Path) -> Path:
    """The layout of pocketsphinx-testdata once unpacked: 2 LibriVox clips, 1 card, 1 raw recording."""
    data = root / "usr/share/pocketsphinx/test/data"
    tone = (0.1 * np.sin(np.arange(1600) * 0.05)).astype(np.float32)
    for name in ("librivox/book-0870", "librivox/book-0880", "cards/001"):
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(data / f"{name}.wav", tone, 16000, subtype="PCM_16")
    (data / "librivox/transcription").write_text(
        "<s> And Mister John, had then LEISURE </s> (book-0870)\n\n<s> he was not ill-disposed </s> (book-0880)\n"
    )
    (data / "cards/cards.transcription").write_text("<s> ten of clubs  </s> (001)\n")
    (tone * 32767).astype("<i2").tofile(data / "goforward.raw")
    (data / "goforward.gram").write_text("#JSGF V1.0;\n")  # not a transcript
    return root


def test_gather_writes_the_clips_and_a_manifest_with_the_packages_transcripts(tmp_path: Path) -> None:
    root = fake_package(tmp_path / "root")
    summary = gather.gather_clips(root, tmp_path / "clips")
    assert (summary.clips, summary.with_text, summary.manifest) == (4, 3, tmp_path / "clips.tsv")
    names = sorted(path.name for path in (tmp_path / "clips").iterdir())
    assert names == ["book-0870.wav", "book-0880.wav", "cards-001.wav", "goforward.wav"]
    info = sf.info(tmp_path / "clips" / "goforward.wav")
    assert (info.samplerate, info.channels, info.frames) == (16000, 1, 1600)
    utterances = {utt.id: utt for utt in read_manifest(summary.manifest)}
    assert {utt_id: utt.text for utt_id, utt in utterances.items()} == {
        "book-0870": "and mister john had then leisure",
        "book-0880": "he was not ill disposed",
        "cards-001": "ten of clubs",
        "goforward": None,
    }
    assert utterances["book-0870"].speaker == "librivox-sense-and-sensibility"
    assert utterances["cards-001"].speaker is None and utterances["goforward"].num_samples == 1600
    with pytest.raises(DataError, match="--overwrite"):
        gather.gather_clips(root, tmp_path / "clips")


def test_gather_rejects_transcripts_it_cannot_place(tmp_path: Path) -> None:
    root = fake_package(tmp_path / "root")
    cards = root / "usr/share/pocketsphinx/test/data/cards/cards.transcription"
    cards.write_text("<s> ten of clubs </s> (001)\n<s> five five </s> (004)\n")
    with pytest.raises(DataError, match=r"not in .*cards: \['004'\]"):
        gather.gather_clips(root, tmp_path / "clips")
    cards.write_text("<s> ten of clubs </s>\n")
    with pytest.raises(DataError, match=r"cards\.transcription:1: expected"):
        gather.gather_clips(root, tmp_path / "clips")
    with pytest.raises(DataError, match="dpkg -x"):
        gather.gather_clips(tmp_path, tmp_path / "clips")
    assert not (tmp_path / "clips").exists() and not (tmp_path / "clips.tsv").exists()


@pytest.mark.skipif(
    not (shutil.which("bash") and shutil.which("dpkg") and shutil.which("dpkg-deb")), reason="needs dpkg"
)
def test_recipe_stage0_gathers_from_the_deb_into_a_manifest(tmp_path: Path) -> None:
    package = fake_package(tmp_path / "package")
    (package / "DEBIAN").mkdir()
    (package / "DEBIAN" / "control").write_text(
        "Package: pocketsphinx-testdata\nVersion: 1\nArchitecture: all\nMaintainer: test <t@t>\n"
        "Description: fake\n"
    )
    debs = tmp_path / "debs"
    debs.mkdir()
    built = subprocess.run(
        ["dpkg-deb", "--build", str(package), str(debs / "pocketsphinx-testdata_1_all.deb")],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    env = {**os.environ, "VQAUDIO": f"{sys.executable} -m vqaudio.cli.main"}
    command = ["bash", str(RECIPE / "run.sh"), "--stage", "0", "--stop-stage", "0", "--data", "data"]
    result = subprocess.run(
        [*command, "--exp", "exp", "--debs", str(debs)], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "4 clips" in result.stdout and "3 with the package's transcript" in result.stdout
    utterances = read_manifest(tmp_path / "data" / "clips.tsv")
    assert [utt.text for utt in utterances if utt.id == "cards-001"] == ["ten of clubs"]
    assert (tmp_path / "data" / ".stage0.done").is_file()


# stage 6: the phone-labelled training set (local/make_phone_training_set.py), disjoint from stage 4's probe set


def load_script(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


phone_set = load_script(RECIPE / "local" / "make_phone_training_set.py", "make_phone_training_set")
probe_set = load_script(REPO / "egs" / "mini" / "local" / "make_corpus.py", "make_corpus_for_test")


def normalised(sentence: str) -> str:
    return " ".join(re.sub(r"[^\w']+", " ", sentence.lower()).split())


def test_phone_training_set_shares_no_voice_or_sentence_with_the_probe_set() -> None:
    ours, theirs = phone_set.VOICES, probe_set.VOICES
    assert 24 <= len(ours) and len({voice for voice, _, _ in ours}) == len(ours)
    variants = {voice.split("+")[1].lower() for voice, _, _ in ours}
    assert len(variants) == len(ours)  # every speaker a different variant
    assert not variants & {voice.split("+")[1].lower() for voice, _, _ in theirs}
    assert not {(pitch, rate) for _, pitch, rate in ours} & {(pitch, rate) for _, pitch, rate in theirs}
    assert "whisper" not in variants
    # speaker ids: 2000.. here, 1000..1011 in make_corpus
    assert phone_set.FIRST_SPEAKER_ID >= 1000 + len(theirs)
    sentences = phone_set.read_sentences()
    assert 400 <= len(sentences) <= 600 and len({normalised(s) for s in sentences}) == len(sentences)
    assert all(5 <= len(normalised(s).split()) <= 15 for s in sentences)
    assert not {normalised(s) for s in sentences} & {normalised(s) for s in probe_set.SENTENCES}
    # letters only: no digits or abbreviations that espeak-ng would read out differently from the transcript
    assert all(re.fullmatch(r"[A-Za-z][A-Za-z ,']*[.?]", s) for s in sentences)
    plan = phone_set.assignments(32, 40, len(sentences), seed=0)
    assert all(len(set(chosen)) == 40 for chosen in plan)  # nobody reads a sentence twice
    readings = np.bincount([i for chosen in plan for i in chosen], minlength=len(sentences))
    assert readings.min() >= 2 and readings.max() - readings.min() <= 1  # spread evenly over the sentences


def test_phone_training_sentences_are_in_the_pocketsphinx_dictionary() -> None:
    pytest.importorskip("pocketsphinx")
    from vqaudio.evaluation.phone_alignment import PhoneAligner

    aligner = PhoneAligner()
    missing = {word for sentence in phone_set.read_sentences() for word in aligner.missing_words(sentence)}
    assert not missing


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng (Debian package)")
def test_make_phone_training_set_writes_the_librispeech_layout_deterministically(tmp_path: Path) -> None:
    def espeak_list(which: str) -> str:
        return subprocess.run(["espeak-ng", f"--voices={which}"], capture_output=True, text=True).stdout

    # espeak-ng falls back to its plain voice, silently, for a variant it does not have: each must exist
    variants = {
        name.strip().lower() for name in re.findall(r"!v/(.+?)\s*(?:\(.*)?$", espeak_list("variant"), re.M)
    }
    accents = {line.split()[1] for line in espeak_list("en").splitlines()[1:]}
    for voice, _, _ in phone_set.VOICES:
        accent, variant = voice.split("+")
        assert accent in accents and variant.lower() in variants, voice
    sentences = phone_set.read_sentences()
    args = ["--speakers", "2", "--sentences-per-speaker", "1"]
    assert phone_set.main([str(tmp_path / "a"), *args]) == 0
    assert phone_set.main([str(tmp_path / "b"), *args]) == 0
    for speaker, chapter in (("2000", "1"), ("2001", "2")):
        folder = tmp_path / "a" / speaker / chapter
        assert sorted(path.name for path in folder.iterdir()) == [
            f"{speaker}-{chapter}-0000.flac",
            f"{speaker}-{chapter}.trans.txt",
        ]
        info = sf.info(folder / f"{speaker}-{chapter}-0000.flac")
        assert info.samplerate == 16000 and info.channels == 1 and info.duration > 0.5
        transcript = (folder / f"{speaker}-{chapter}.trans.txt").read_text()
        utt_id, text = transcript.strip().split(" ", 1)
        assert utt_id == f"{speaker}-{chapter}-0000" and text == text.upper()
        assert normalised(text) in {normalised(s) for s in sentences}
        again = tmp_path / "b" / speaker / chapter  # the same seed: the same sentences and audio
        assert (again / f"{speaker}-{chapter}.trans.txt").read_text() == transcript
        assert np.array_equal(sf.read(again / f"{utt_id}.flac")[0], sf.read(folder / f"{utt_id}.flac")[0])
    voices = (tmp_path / "a" / "voices.tsv").read_text().splitlines()
    assert voices[1:] == [f"{2000 + i}\t{v}\t{p}\t{r}" for i, (v, p, r) in enumerate(phone_set.VOICES[:2])]
    with pytest.raises(SystemExit):  # refuses to write into a non-empty folder
        phone_set.main([str(tmp_path / "a"), *args])


# stage 7: the phonetic fine-tuning of the embedded tokenizer's last release stage
def test_recipe_stage7_merges_the_data_and_resumes_one_run_to_9000_steps(tmp_path: Path) -> None:
    """A stand-in vqaudio command records each call: stage 7 merges the codec's manifest with stage 6's set, then
    trains one run folder from MODEL three times, to 3,000, 6,000 and 9,000 steps (the released schedule)."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "fake_vqaudio.py"
    fake.write_text(
        f"import sys\nwith open({str(calls)!r}, 'a') as out:\n    out.write(' '.join(sys.argv[1:]) + '\\n')\n"
    )
    for name in ("codec.tsv", "dev.tsv", "data/phone_train.tsv"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("id\tpath\n")
    (tmp_path / "data" / "phone_train_alignments").mkdir()
    env = {**os.environ, "VQAUDIO": f"{sys.executable} {fake}"}
    command = ["bash", str(RECIPE / "run.sh"), "--stage", "7", "--stop-stage", "7", "--data", "data"]
    options = [
        "--exp",
        "exp",
        "--model",
        "base_model",
        "--codec-data",
        "codec.tsv",
        "--valid-data",
        "dev.tsv",
    ]
    result = subprocess.run([*command, *options], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    lines = calls.read_text().splitlines()
    assert lines[0].startswith(
        "prepare codec.tsv data/phone_train.tsv exp/phonetic_train.tsv --dev 0 --test 0"
    )
    trains = lines[1:]
    assert [re.search(r"--max-steps (\d+)", line).group(1) for line in trains] == ["3000", "6000", "9000"]  # type: ignore[union-attr]
    for line in trains:
        assert line.startswith("train ") and "rvq_mel_pitch_phonetic.yaml --init-from base_model" in line
        assert "--data exp/phonetic_train.tsv --phones data/phone_train_alignments --valid dev.tsv" in line
        assert "--out exp/phonetic" in line
    assert (tmp_path / "exp" / ".stage7.done").is_file()

    missing = subprocess.run(
        [*command, *options[:-2], "--valid-data", "absent.tsv", "--force", "true"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert missing.returncode != 0 and "absent.tsv" in missing.stderr
