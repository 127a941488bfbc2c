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


def _plot(*args: object) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(SCRIPTS / "plot_narrowband.py"), *map(str, args)]
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
    assert not again.exists() and not (tmp_path / "again.partial").exists()
