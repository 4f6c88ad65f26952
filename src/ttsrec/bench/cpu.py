"""CPU time of server process trees (tritonserver and its python-backend stubs), to see who is busy.

On a 2-core machine client and server share the cores: client % + server % near 200 means the
machine, not the serving path, is the limit.
"""

from __future__ import annotations

from collections.abc import Sequence

import psutil


def tree_cpu_seconds(pids: Sequence[int]) -> float:
    """User + system seconds of each process and its live descendants."""
    total = 0.0
    for pid in pids:
        try:
            root = psutil.Process(pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.Error:
            continue
        for proc in procs:
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
    return total
