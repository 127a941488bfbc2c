"""Wall-clock timing shared by the benchmark scripts: the median of repeated runs after a warm-up."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_seconds(run: Callable[[], Any], repeats: int, warm_up: bool = True) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``run``, after one untimed call if ``warm_up``."""
    if warm_up:
        run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
