"""The tools under ``tools/`` that the docs tell people to run, on a tiny model."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import speech_like
from PIL import Image

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
