"""Python-backend shared memory in /dev/shm: a killed tritonserver can leave its regions behind, and
each python model instance needs at least 1 MiB there, so stale ones are worth removing."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

SHM_DIR = Path("/dev/shm")
REGION_PREFIX = "triton_python_backend_shm_region_"


def mapped_regions() -> set[str]:
    """Names of /dev/shm files some live process has mapped (read from /proc/*/maps)."""
    names: set[str] = set()
    for maps in Path("/proc").glob("[0-9]*/maps"):
        try:
            text = maps.read_text()
        except OSError:  # process ended meanwhile, or not ours to read
            continue
        for line in text.splitlines():
            at = line.find(str(SHM_DIR) + "/")
            if at >= 0:
                names.add(line[at + len(str(SHM_DIR)) + 1:].removesuffix(" (deleted)"))
    return names


def remove_stale_regions(prefix: str = REGION_PREFIX, min_age_s: float = 30.0) -> list[Path]:
    """Remove regions no live process maps and that are older than `min_age_s` (a starting server
    creates its region a moment before mapping it). Returns what was removed."""
    candidates = [p for p in SHM_DIR.glob(f"{prefix}*") if _age(p) >= min_age_s]
    if not candidates:
        return []
    in_use = mapped_regions()
    return _unlink([p for p in candidates if p.name not in in_use])


def remove_regions(prefix: str) -> list[Path]:
    """Remove every region with this (server-unique) prefix; for a server that has exited."""
    return _unlink(SHM_DIR.glob(f"{prefix}*"))


def _unlink(paths: Iterable[Path]) -> list[Path]:
    """Unlink what can be unlinked (another process may remove a region first); return what went."""
    removed = []
    for path in paths:
        try:
            path.unlink()
            removed.append(path)
        except OSError:
            pass
    return removed


def _age(path: Path) -> float:
    try:
        return time.time() - os.stat(path).st_mtime
    except OSError:
        return 0.0
