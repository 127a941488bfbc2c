"""Stopping a training loop cleanly: the first Ctrl-C / SIGTERM finishes the step, a checkpoint is written,
then the loop stops; a second Ctrl-C raises KeyboardInterrupt at once.

Shared by the tokenizer's and the prior's training loops. The handlers are installed explicitly because a
process started in the background by a non-interactive shell inherits SIGINT as ignored, and Python then
never raises KeyboardInterrupt: ``kill -INT`` would do nothing.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger(__name__)

SIGNAL_REPEAT_SECONDS = 1.0  # a second Ctrl-C sooner than this is the same keypress, delivered twice


class StopRequest:
    """Set by the first Ctrl-C / SIGTERM; the training loop polls ``requested`` after each step."""

    def __init__(self) -> None:
        self.requested = False
        self.first_signal_time = 0.0


@contextmanager
def stop_on_signals(request: StopRequest, announce: bool = True) -> Iterator[StopRequest]:
    """Within the block, SIGINT and SIGTERM set ``request`` instead of stopping at once; the previous handlers
    are put back on exit. Outside the main thread signals cannot be handled: the block runs without them.

    Args:
        request: what the handlers set.
        announce: log that the run stops after this step (rank 0 only under DDP).
    """
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum: int, frame: Any) -> None:
        # One terminal Ctrl-C can arrive twice (torchrun or a parent shell forwarding it to the group).
        if request.requested:
            if (
                signum == signal.SIGINT
                and time.monotonic() - request.first_signal_time > SIGNAL_REPEAT_SECONDS
            ):
                raise KeyboardInterrupt
            return
        request.requested = True
        request.first_signal_time = time.monotonic()
        if announce:
            log.warning("stopping after this step to write a checkpoint (Ctrl-C again to stop at once)")

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
