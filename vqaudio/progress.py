"""Progress bars (tqdm) that stay readable in log files.

On a terminal a bar redraws in place several times a second. Redirected to a file (``nohup``, CI, a job
scheduler's log), every redraw becomes another line: a day of training writes megabytes of bars. When stderr
is not a terminal the bars here redraw at most every ``LOG_FILE_INTERVAL`` seconds instead.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

LOG_FILE_INTERVAL = 30.0  # seconds between redraws when stderr is not a terminal


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """``tqdm(*args, **kwargs)``, redrawn every ``LOG_FILE_INTERVAL`` s when stderr is not a terminal."""
    if not _stderr_is_terminal():
        kwargs.setdefault("mininterval", LOG_FILE_INTERVAL)
    return tqdm(*args, **kwargs)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False
