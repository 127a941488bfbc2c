"""Progress bars (tqdm) on a terminal only, so logs stay readable.

On a terminal a bar redraws in place several times a second. Redirected to a file (``nohup``, CI, a job
scheduler's log), every redraw would become another line: a day of training writes megabytes of bars. So when
stderr is not a terminal the bars are off; the commands' log lines (and training's metrics.jsonl) say how far
a run got. ``VQAUDIO_PROGRESS=1`` forces them on even then, redrawn at most every ``LOG_FILE_INTERVAL`` seconds;
``VQAUDIO_PROGRESS=0`` turns them off everywhere. Every bar of vqaudio goes through ``progress_bar``.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm

LOG_FILE_INTERVAL = 30.0  # seconds between redraws when forced on where stderr is not a terminal
PROGRESS_VARIABLE = "VQAUDIO_PROGRESS"  # 1: bars also when stderr is not a terminal; 0: never


def progress_bar(*args: Any, **kwargs: Any) -> tqdm:
    """``tqdm(*args, **kwargs)``, disabled when stderr is not a terminal (see the module docstring).

    ``disable=True`` (a command's ``--no-progress``) always wins.
    """
    forced = os.environ.get(PROGRESS_VARIABLE, "").strip().lower()
    if forced in ("0", "false", "no", "off"):
        kwargs["disable"] = True
    elif not _stderr_is_terminal():
        if forced in ("1", "true", "yes", "on"):
            kwargs.setdefault("mininterval", LOG_FILE_INTERVAL)
            if kwargs.get("disable") is None:  # tqdm's None means "off unless a terminal"
                kwargs["disable"] = False
        else:
            kwargs["disable"] = True
    return tqdm(*args, **kwargs)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False
