"""The scripts under ``scripts/`` that the README tells people to run, on a tiny model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import speech_like
from PIL import Image

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
TOOLS = Path(__file__).resolve().parent.parent / "tools"


def _plot(*args: object) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(TOOLS / "plot_narrowband.py"), *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_plot_narrowband_draws_a_row_per_system(
    tmp_path: Path, tiny_model_dir: Path, write_audio: Callable[..., Path]
) -> None:
    clip = write_audio(tmp_path / "clip.wav", speech_like(24000, seed=3))
    two_rows = tmp_path / "two.png"
    result = _plot(clip, "--model", tiny_model_dir, "--seconds", "1", "--out", two_rows)
    assert result.returncode == 0, result.stderr
    assert f"wrote {two_rows}" in result.stdout
    width, height = Image.open(two_rows).size
    assert width > 400 and height > 200
    if shutil.which("c2enc") and shutil.which("c2dec"):
        three_rows = tmp_path / "three.png"
        result = _plot(clip, "--model", tiny_model_dir, "--baseline", "codec2_3200", "--out", three_rows)
        assert result.returncode == 0, result.stderr
        assert Image.open(three_rows).size[1] == pytest.approx(1.5 * height, rel=0.05)
    result = _plot(clip, "--model", tiny_model_dir, "--baseline", "mp3_128", "--out", tmp_path / "x.png")
    assert result.returncode == 2 and "codec2_3200" in result.stderr
    assert not (tmp_path / "x.png").exists()


FAKE_FESTIVAL = '''#!{python}
"""Stands in for festival -b: every (utt.save.wave ...) gets 1 s of a 200 Hz tone at 32 kHz, unless the
voice is in $FAKE_FESTIVAL_MISSING (then it says nothing, as festival does for a voice it lacks)."""
import os, re, sys
import numpy as np, soundfile as sf
script = open(sys.argv[-1], "rb").read().decode("latin-1")
voice = re.search(r"\\(voice_(\\w+)\\)", script).group(1)
if voice in os.environ.get("FAKE_FESTIVAL_MISSING", "").split(","):
    sys.exit(0)
for path in re.findall(r'"([^"]+\\.wav)"', script):
    sf.write(path, 0.9 * np.sin(2 * np.pi * 200 * np.arange(32000) / 32000), 32000)
'''


def test_synthesize_voices_writes_a_corpus_and_names_missing_voices(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fillets = tmp_path / "fillets"
    (fillets / "sound").mkdir(parents=True)
    level = fillets / "script" / "city"
    level.mkdir(parents=True)
    entries = [
        f'dialogId("c-{i}", "font_small", "Line {i}.")\ndialogStr("Věta číslo {i} je tady.")'
        for i in range(6)
    ]
    entries.append('dialogId("c-short", "font_small", "Hi.")\ndialogStr("Ahoj.")')  # too short: skipped
    (level / "dialogs_cs.lua").write_text("\n".join(entries), encoding="utf-8")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    festival = bin_dir / "festival"
    festival.write_text(FAKE_FESTIVAL.replace("{python}", sys.executable))
    festival.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(SCRIPTS / "synthesize_voices.py"), *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    out = tmp_path / "voices"
    result = run(fillets, out, "--voices", "tts-cs-dita,tts-cs-krb", "--lines", "4")
    assert result.returncode == 0, result.stderr
    for speaker in ("tts-cs-dita", "tts-cs-krb"):
        clips = sorted((out / speaker / "city").glob("*.flac"))
        assert len(clips) == 4
        audio, rate = sf.read(clips[0])
        assert rate == 16000 and len(audio) == 16000
        assert 10 ** (-12.5 / 20) < np.abs(audio).max() < 10 ** (-2.5 / 20)
        transcript = (out / speaker / "city" / f"{speaker}-city.trans.txt").read_text(encoding="utf-8")
        assert len(transcript.splitlines()) == 4 and "Věta číslo" in transcript and "Ahoj" not in transcript
    assert run(fillets, out, "--lines", "2").returncode == 1  # exists, no --overwrite

    monkeypatch.setenv("FAKE_FESTIVAL_MISSING", "czech_krb")
    again = tmp_path / "again"
    result = run(fillets, again, "--voices", "tts-cs-dita,tts-cs-krb", "--lines", "2")
    assert result.returncode == 1 and "apt-get install festvox-czech-krb" in result.stderr
    assert not [path for path in tmp_path.iterdir() if "again" in path.name]  # no staging folder left
    before = sorted(path.relative_to(out) for path in out.rglob("*"))
    result = run(fillets, out, "--voices", "tts-cs-dita,tts-cs-krb", "--lines", "2", "--overwrite")
    assert result.returncode == 1
    assert sorted(path.relative_to(out) for path in out.rglob("*")) == before  # the old corpus is kept


def test_gather_voices_keeps_non_english_voices_trims_and_caps_them(tmp_path: Path) -> None:
    root = tmp_path / "root"

    def clip(path: Path, seconds: float, rate: int = 44100, seed: int = 0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        speech = speech_like(int(seconds * rate), rate, seed)
        silence = np.zeros(rate // 2, dtype=np.float32)  # half a second each side, to be trimmed
        sf.write(path, np.concatenate([silence, speech, silence]), rate, format="OGG", subtype="VORBIS")

    for index in range(6):
        clip(root / "usr/share/klettres/cs/syllab" / f"s{index}.ogg", 1.0, seed=index)
    clip(root / "usr/share/klettres/en/alpha/a.ogg", 1.0)  # English: left out
    clip(root / "usr/share/klettres/de/alpha/b.ogg", 0.1)  # too short once trimmed: skipped
    clip(root / "usr/share/klettres/de/alpha/c.ogg", 1.0, rate=22050)
    voices = root / "usr/share/games/hedgewars/Data/Sounds/voices"
    clip(voices / "Default_pl" / "Hello.ogg", 1.0)
    clip(voices / "Pirate" / "Arr.ogg", 1.0)  # an English pack: left out

    def run(*args: object) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(SCRIPTS / "gather_voices.py"), *map(str, args)]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    out = tmp_path / "voices"
    result = run(root, out, "--max-minutes", 3.5 / 60)
    assert result.returncode == 0, result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["hw-default-pl", "kl-cs", "kl-de"]
    cs = sorted((out / "kl-cs" / "syllab").glob("*.flac"))
    assert len(cs) == 4  # 1 s each, capped at 3.5 s: the fourth clip crosses the cap, then it stops
    audio, rate = sf.read(cs[0])
    assert rate == 16000 and 0.95 * rate < len(audio) < 1.1 * rate  # the silence is trimmed
    transcript = (out / "kl-cs" / "syllab" / "kl-cs-syllab.trans.txt").read_text().splitlines()
    assert len(transcript) == 4 and all(line.split()[0] in {p.stem for p in cs} for line in transcript)
    assert [path.name for path in (out / "kl-de").rglob("*.flac")] != [] and not (out / "kl-en").exists()
    assert len(list((out / "kl-de").rglob("*.flac"))) == 1
    assert run(root, out).returncode == 1  # exists, no --overwrite

    empty = run(tmp_path / "nothing", tmp_path / "none")
    assert empty.returncode == 1 and "apt-get download klettres-data hedgewars-data" in empty.stderr
    assert not (tmp_path / "none").exists()
