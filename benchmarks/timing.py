"""Wall-clock timing shared by the benchmark scripts: the median of repeated runs after a warm-up, under one
allocator setting for every side of a comparison."""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

# glibc keeps freed memory instead of returning it to the OS on every call (measured on this 2-core CPU:
# with its defaults the DAC and SNAC architectures ran 1.6-2.35x slower and timings were noisy)
ALLOCATOR_ENV = {"MALLOC_MMAP_THRESHOLD_": "17179869184", "MALLOC_TRIM_THRESHOLD_": "17179869184"}


def run_with_allocator_settings() -> None:
    """Re-run this script with ``ALLOCATOR_ENV`` set where it is not: glibc reads it only at process start,
    so setting ``os.environ`` inside the running benchmark would change nothing."""
    missing = {key: value for key, value in ALLOCATOR_ENV.items() if key not in os.environ}
    if missing:
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **missing})


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
