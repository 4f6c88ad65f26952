"""Overload (slow): a closed loop far above capacity on a repository with a small queue. The bounded queue
rejects what it cannot hold, so accepted requests keep a bounded latency, memory stays flat, and the
server stays healthy."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from serve_fixtures import export
from ttsrec.client import Client
from ttsrec.serve import TritonServer

pytestmark = pytest.mark.slow
MODEL, CALLERS, SECONDS, QUEUE = "fused_m2", 24, 8.0, 4


def _rss_mb(server: TritonServer) -> float:
    """Resident memory of the server and its python stubs (the models live in the stubs)."""
    total = 0.0
    for pid in [server.pid, *server.stub_pids()]:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def test_closed_loop_above_capacity_is_shed_and_accepted_latency_stays_bounded(
        member_checkpoints: list[Path], prepared_dir: Path, tmp_path: Path):
    repo = export(member_checkpoints, tmp_path / "repo", prepared_dir, m_list=[2], queue_max=QUEUE)
    ids = np.random.default_rng(0).integers(0, 50, size=(256, 39)).astype(np.int64)
    latencies: list[float] = []
    errors: list[str] = []
    stop = threading.Event()
    with TritonServer(repo) as server, Client(server.grpc_url, model=MODEL, timeout_s=10) as client:
        single = time.perf_counter()
        client.predict(ids)
        single = time.perf_counter() - single

        def caller() -> None:
            while not stop.is_set():
                start = time.perf_counter()
                try:
                    client.predict(ids)
                    latencies.append(time.perf_counter() - start)
                except Exception as err:
                    errors.append(str(err).splitlines()[0][:80])

        threads = [threading.Thread(target=caller) for _ in range(CALLERS)]
        for t in threads:
            t.start()
        time.sleep(SECONDS / 2)
        rss_mid = _rss_mb(server)
        time.sleep(SECONDS / 2)
        rss_end = _rss_mb(server)
        stop.set()
        for t in threads:
            t.join(30)
        assert server.is_ready()
        assert np.isfinite(client.predict(ids)[0]).all()
    p50, p99 = np.percentile(latencies, [50, 99])
    rejected = [e for e in errors if "queue" in e.lower() or "exceeds maximum" in e.lower()]
    print(f"overload: {CALLERS} callers x batch 256 for {SECONDS:.0f}s, queue {QUEUE}: "
          f"{len(latencies)} accepted "
          f"(p50 {p50 * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms; one alone {single * 1e3:.0f} ms), "
          f"{len(rejected)} rejected by the queue, {len(errors) - len(rejected)} other errors "
          f"{sorted(set(errors) - set(rejected))[:2]}; server + stubs RSS {rss_mid:.0f} -> {rss_end:.0f} MB")
    assert rejected, "the bounded queue sheds load above capacity"
    assert len(errors) == len(rejected), sorted(set(errors))[:3]
    assert p99 < 5.0, "accepted requests do not wait behind an unbounded queue"
    assert rss_end < rss_mid * 1.2 + 50
