"""Soak (slow, about a minute): moderate steady load; open fds, threads, RSS and /dev/shm entries of the
client process and of the server (with its stubs) must not grow once warmed up."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from serve_fixtures import export
from ttsrec.client import Client
from ttsrec.serve import TritonServer
from ttsrec.serve.shm import SHM_DIR

pytestmark = pytest.mark.slow
MODEL, WARMUP_S, SOAK_S = "ensemble_m2", 10.0, 50.0


def _usage(pids: list[int]) -> dict[str, float]:
    """fds, threads and RSS (MB) summed over pids."""
    fds = threads = rss = 0.0
    for pid in pids:
        fds += len(os.listdir(f"/proc/{pid}/fd"))
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                threads += int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss += int(line.split()[1]) / 1024
    return {"fds": fds, "threads": threads, "rss_mb": rss}


def test_steady_load_leaks_nothing(member_checkpoints: list[Path], prepared_dir: Path, tmp_path: Path):
    repo = export(member_checkpoints, tmp_path / "repo", prepared_dir, m_list=[2], fused=False)
    ids = np.random.default_rng(0).integers(0, 50, size=(32, 39)).astype(np.int64)
    done = {"ok": 0, "failed": 0}
    stop = threading.Event()
    with TritonServer(repo) as server:
        server_pids = [server.pid, *server.stub_pids()]

        def sample() -> tuple[dict[str, float], dict[str, float], int]:
            regions = list(SHM_DIR.glob(f"{server.shm_prefix}*"))
            return _usage([os.getpid()]), _usage(server_pids), len(regions)

        def caller(protocol: str) -> None:
            url = server.grpc_url if protocol == "grpc" else server.http_url
            while not stop.is_set():
                with Client(url, model=MODEL, protocol=protocol, timeout_s=10) as client:  # new clients too
                    for _ in range(20):
                        try:
                            client.predict(ids)
                            done["ok"] += 1
                        except Exception:
                            done["failed"] += 1
                        time.sleep(0.01)

        threads = [threading.Thread(target=caller, args=(p,)) for p in ("grpc", "http")]
        for t in threads:
            t.start()
        try:
            time.sleep(WARMUP_S)
            before = sample()
            time.sleep(SOAK_S)
            after = sample()
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    print(f"soak {SOAK_S:.0f}s: {done['ok']} ok, {done['failed']} failed; client {before[0]} -> {after[0]}; "
          f"server+stubs {before[1]} -> {after[1]}; its /dev/shm regions {before[2]} -> {after[2]}")
    assert done["failed"] == 0 and done["ok"] > 100
    for was, now in ((before[0], after[0]), (before[1], after[1])):
        assert now["fds"] <= was["fds"] + 4, (was, now)
        assert now["threads"] <= was["threads"] + 4, (was, now)
        assert now["rss_mb"] <= was["rss_mb"] * 1.1 + 30, (was, now)
    assert after[2] <= before[2], "no shared-memory region left behind by the load"
