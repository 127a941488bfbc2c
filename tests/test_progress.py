"""Progress bars redraw rarely when their output goes to a log file, as usual on a terminal."""

from __future__ import annotations

import io

import pytest

from vqaudio import progress
from vqaudio.progress import LOG_FILE_INTERVAL, progress_bar


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("terminal", [False, True])
def test_bars_redraw_every_30_s_in_log_files_only(monkeypatch: pytest.MonkeyPatch, terminal: bool) -> None:
    stream = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(progress.sys, "stderr", stream)
    with progress_bar(total=1000, file=stream) as bar:
        for _ in range(1000):
            bar.update(1)
        interval = bar.mininterval
    assert interval == (0.1 if terminal else LOG_FILE_INTERVAL)
    # A log file gets the first and the final state, not a line per redraw.
    if not terminal:
        assert stream.getvalue().count("\r") <= 3
    with progress_bar(total=1, mininterval=0.5, file=stream) as bar:  # an explicit choice wins
        assert bar.mininterval == 0.5
