"""`--pin-cores`: K shard servers, each pinned to its own cores, as a model of K machines on one box.

Without pinning the shard servers of one machine share every core, so the sharded rows measure
contention, not parallel servers. With it shard i runs on cores [i*c, (i+1)*c) of the usable ones
(c = cores // K), and the "one server" it is compared with (each shard alone) runs on the same c
cores: the comparison the paper's claim is about ("more parallel servers without affecting the
user's latency"). The bench client is not pinned: it runs on every usable core, beside the servers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from ttsrec.bench.row import Row
from ttsrec.ensemble.modes import Mode
from ttsrec.errors import RuntimeFailure, UserError
from ttsrec.serve.server import STUB_NAME, process_cpus

_THREADS = re.compile(r'key:\s*"intra_op_thread(?:s|_count)"\s*value\s*\{\s*string_value:\s*"(\d+)"')


def core_sets(k: int, cpus: Sequence[int] | None = None) -> list[list[int]]:
    """Shard i's cores: [i*c, (i+1)*c) of `cpus` (default: this process's usable cores), c = len // k."""
    available = sorted(set(cpus if cpus is not None else os.sched_getaffinity(0)))
    if k < 1:
        raise UserError(f"--pin-cores needs at least one shard server, got {k}")
    if k > len(available):
        raise UserError(
            f"--pin-cores: {k} shard servers need at least {k} cores, this process may use {len(available)} "
            f"({', '.join(map(str, available))})"
        )
    per = len(available) // k
    return [available[i * per : (i + 1) * per] for i in range(k)]


def intra_op_threads(repository: Path) -> int:
    """The most onnxruntime intra-op threads any model of a repository asks for (1 when none say)."""
    configs = Path(repository).glob("*/config.pbtxt")
    found = [int(n) for config in configs for n in _THREADS.findall(config.read_text())]
    return max(found, default=1)


def plan_notes(sets: list[list[int]], shard_repos: Sequence[Path]) -> dict[str, Any]:
    """What the JSON says about the pinning, before any server runs (affinity checked later)."""
    threads = max((intra_op_threads(r) for r in shard_repos), default=1)
    notes: dict[str, Any] = {
        "shards": len(sets),
        "cores_per_server": len(sets[0]),
        "core_sets": sets,
        "client_cpus": sorted(os.sched_getaffinity(0)),
        "intra_op_threads": threads,
    }
    if threads > len(sets[0]):
        notes["warning"] = (
            f"models ask for {threads} intra-op threads on {len(sets[0])} pinned cores: they time-share"
        )
    return notes


def check_affinity(server_pids: Sequence[int], sets: Sequence[Sequence[int]]) -> list[dict[str, Any]]:
    """Each shard server's and python stub's allowed cores, read back from /proc: a pinned run whose
    processes are not where they were put would measure something else, so that is a failure."""
    out = []
    for i, (pid, cpus) in enumerate(zip(server_pids, sets, strict=True)):
        try:
            stubs = [c.pid for c in psutil.Process(pid).children() if STUB_NAME in " ".join(c.cmdline())]
        except psutil.Error:
            stubs = []
        seen = {p: process_cpus(p) for p in (pid, *stubs)}
        wrong = {p: c for p, c in seen.items() if c is not None and c != list(cpus)}
        if wrong:
            raise RuntimeFailure(
                f"shard {i} server pid {pid} was pinned to cores {list(cpus)} but its processes may run on "
                f"{wrong}"
            )
        out.append({"shard": i, "cpus": list(cpus), "server_pid": pid, "stub_pids": stubs})
    return out


def compare(rows: Sequence[Row], shard_rows: Sequence[Row], cores_per_server: int) -> list[dict[str, Any]]:
    """Per sharded row: K pinned shards against one pinned server holding one member (the slowest
    shard alone, the one the fan-out waits for), and the fan-out overhead between them."""
    out = []
    for r in rows:
        if r.mode != Mode.SHARDED:
            continue
        alone = [s for s in shard_rows if (s.m, s.batch, s.concurrency) == (r.m, r.batch, r.concurrency)]
        if not alone:
            continue
        single = max(alone, key=lambda s: s.p50_us)
        out.append(
            {
                "m": r.m,
                "batch": r.batch,
                "concurrency": r.concurrency,
                "shards": len(alone),
                "cores_per_server": cores_per_server,
                "sharded_p50_us": r.p50_us,
                "sharded_p99_us": r.p99_us,
                "single_p50_us": single.p50_us,
                "single_p99_us": single.p99_us,
                "single_server": single.model,
                "p50_ratio": r.p50_us / single.p50_us if single.p50_us > 0 else None,
                "p99_ratio": r.p99_us / single.p99_us if single.p99_us > 0 else None,
                "fanout_overhead_us": r.p50_us - single.p50_us,
            }
        )
    return out
