"""Progress bars on a terminal only (logs stay readable); VQAUDIO_PROGRESS forces them on (sparse) or off."""

from __future__ import annotations

import io

import pytest

from vqaudio import progress
from vqaudio.progress import LOG_FILE_INTERVAL, PROGRESS_VARIABLE, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _draw(stream: io.StringIO, **kwargs: object) -> str:
    """Run a bar of 1000 updates drawing to ``stream`` (as stderr); what it wrote."""
    with progress_bar(total=1000, file=stream, desc="working", **kwargs) as bar:
        for _ in range(1000):
            bar.update(1)
    return stream.getvalue()


@pytest.mark.parametrize("terminal", [False, True])
def test_bars_draw_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    monkeypatch.delenv(PROGRESS_VARIABLE, raising=False)
    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", stream)
    written = _draw(stream)
    assert ("working" in written and "1000/1000" in written) == terminal, written
    with progress_bar(total=1, mininterval=0.5, file=stream) as bar:  # an explicit choice wins on a terminal
        assert not terminal or bar.mininterval == 0.5


def test_a_bar_turned_off_stays_off_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PROGRESS_VARIABLE, raising=False)
    stream = _Terminal()
    monkeypatch.setattr(progress.sys, "stderr", stream)
    assert _draw(stream, disable=True) == ""  # --no-progress
    monkeypatch.setenv(PROGRESS_VARIABLE, "0")
    assert _draw(stream) == ""


def test_the_variable_forces_sparse_bars_into_a_log(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", stream)
    monkeypatch.setenv(PROGRESS_VARIABLE, "1")
    with progress_bar(total=1000, file=stream, desc="working") as bar:
        for _ in range(1000):
            bar.update(1)
        assert bar.mininterval == LOG_FILE_INTERVAL
    # the first and the final state, not a line per redraw
    written = stream.getvalue()
    assert "1000/1000" in written and written.count("\r") <= 3, written
    assert _draw(io.StringIO(), disable=True) == ""  # --no-progress still wins
