"""The pocketsphinx recipe's stage 0 (egs/pocketsphinx/local/gather_clips.py and run.sh) on a fake package:
the clips keep their names, the manifest carries the package's transcripts, normalised as pocketsphinx's
output is, and no text where the package has none."""

from __future__ import annotations

import importlib.util
import os
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
