"""Memory copy bandwidth, measured in the same run: the floor that batch-1 latency cannot beat.

At batch 1 every member's dense weights are read once per request, so M members cost at least
M × dense weight bytes / bandwidth. Bandwidth counts bytes read plus bytes written (STREAM's
convention for a copy), which approximates what a read-mostly stream of weights achieves.
"""

from __future__ import annotations

import time

import numpy as np


def copy_bandwidth(megabytes: int = 128, repeats: int = 5) -> float:
    """Best-of-`repeats` numpy copy of a buffer far larger than the caches, in bytes per second."""
    src = np.ones(megabytes * (1 << 20) // 8, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in before timing
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best


def latency_floor_us(m: int, member_weight_bytes: float, bandwidth: float) -> float:
    """M × member dense weight bytes / bandwidth, in microseconds."""
    return 1e6 * m * member_weight_bytes / bandwidth
