"""perf_analyzer's measurement loop: warm up, then windows of `-p` ms until the last three agree.

A result is stable when, over the last three windows, both the throughput and the latency metric
(the average, or the `--percentile` one, as perf_analyzer does) vary by at most `-s` percent
(max / min). After `max_trials` windows the last three are reported anyway and flagged unstable.
Reported figures pool the requests of those three windows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil

from ttsrec.bench.flags import flag
from ttsrec.bench.load import Load, Record
from ttsrec.errors import RuntimeFailure, UserError

STABLE_WINDOWS = 3


@dataclass(frozen=True)
class MeasureSettings:
    window_ms: int = field(default=1000, metadata=flag(
        "-p", "--measurement-interval", order=5, help="Measurement window in ms."))
    """`-p/--measurement-interval`: one measurement window."""
    stability_pct: float = field(default=10.0, metadata=flag(
        "-s", "--stability-percentage", order=6, help="Max spread of the last 3 windows, in %."))
    """`-s/--stability-percentage`."""
    max_trials: int = field(default=10, metadata=flag(
        "--max-trials", order=7, help="Windows before a row is reported unstable."))
    """`--max-trials`: windows before giving up on stability."""
    percentile: int | None = field(default=None, metadata=flag(
        "--percentile", order=8,
        help="Latency percentile for stability (50, 90, 95, 99); default the average."))
    """`--percentile`: latency percentile used for stability (None: the average)."""
    warmup_requests: int = field(default=20, metadata=flag(
        "--warmup-request-count", order=9, help="Requests before the first window."))
    """`--warmup-request-count`: requests completed before the first window."""
    warmup_timeout_s: float = 120.0


@dataclass
class Latency:
    """Latency summary in microseconds."""

    avg: float
    p50: float
    p90: float
    p95: float
    p99: float

    @classmethod
    def of(cls, latencies_ns: np.ndarray) -> Latency:
        us = np.asarray(latencies_ns, dtype=np.float64) / 1e3
        # Nearest rank, as perf_analyzer reads its sorted latency list.
        p50, p90, p95, p99 = np.percentile(us, [50, 90, 95, 99], method="inverted_cdf")
        return cls(float(us.mean()), float(p50), float(p90), float(p95), float(p99))

    def metric(self, percentile: int | None) -> float:
        if percentile is None:
            return self.avg
        return float(getattr(self, f"p{percentile}", self.avg))


@dataclass
class Window:
    requests: int
    seconds: float
    throughput: float
    """Rows per second: requests × batch / seconds."""
    latency: Latency | None


@dataclass
class Measurement:
    concurrency: int
    batch: int
    throughput: float
    latency: Latency
    stable: bool
    windows: list[Window]
    requests: int
    client_cpu: float
    """CPU time of this process over the reported windows, in percent of one core."""
    server_before: Any = None
    server_after: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def _window(records: list[Record], batch: int, seconds: float) -> Window:
    if not records:
        return Window(0, seconds, 0.0, None)
    lat = np.fromiter((r[1] for r in records), dtype=np.int64, count=len(records))
    return Window(len(records), seconds, len(records) * batch / seconds, Latency.of(lat))


def is_stable(windows: list[Window], settings: MeasureSettings) -> bool:
    """perf_analyzer's rule on the last three windows: max / min within `stability_pct` for both metrics."""
    if len(windows) < STABLE_WINDOWS:
        return False
    last = windows[-STABLE_WINDOWS:]
    if any(w.latency is None or w.requests == 0 for w in last):
        return False
    limit = 1.0 + settings.stability_pct / 100.0
    tput = [w.throughput for w in last]
    lat = [w.latency.metric(settings.percentile) for w in last]  # type: ignore[union-attr]
    return max(tput) / min(tput) <= limit and max(lat) / max(min(lat), 1e-9) <= limit


def measure(
    load: Load,
    concurrency: int,
    batch: int,
    settings: MeasureSettings,
    snapshot: Callable[[], Any] | None = None,
    label: str = "",
) -> Measurement:
    """Drive `load` at `concurrency` and measure it like perf_analyzer (see module doc).

    `snapshot()` (server statistics) is taken at every window boundary; the measurement keeps the
    ones around the reported windows so the caller can take deltas.
    """
    proc = psutil.Process()
    load.start(concurrency)
    try:
        _warm_up(load, settings, label)
        windows: list[Window] = []
        bounds = [len(load.records)]
        cpu = [_cpu_seconds(proc)]
        clock = [time.perf_counter()]
        snaps = [snapshot() if snapshot else None]
        while True:
            time.sleep(settings.window_ms / 1e3)
            _raise_errors(load, label)
            bounds.append(len(load.records))
            clock.append(time.perf_counter())
            cpu.append(_cpu_seconds(proc))
            snaps.append(snapshot() if snapshot else None)
            windows.append(_window(load.records[bounds[-2] : bounds[-1]], batch, clock[-1] - clock[-2]))
            if is_stable(windows, settings) or len(windows) >= max(settings.max_trials, STABLE_WINDOWS):
                break
    finally:
        load.stop()
    _raise_errors(load, label)
    first = len(windows) - STABLE_WINDOWS
    pooled = load.records[bounds[first] : bounds[-1]]
    if not pooled:
        raise RuntimeFailure(
            f"{label}: no request completed within {STABLE_WINDOWS} windows of "
            f"{settings.window_ms} ms (increase -p/--measurement-interval)"
        )
    seconds = clock[-1] - clock[first]
    lat = np.fromiter((r[1] for r in pooled), dtype=np.int64, count=len(pooled))
    return Measurement(
        concurrency=concurrency,
        batch=batch,
        throughput=len(pooled) * batch / seconds,
        latency=Latency.of(lat),
        stable=is_stable(windows, settings),
        windows=windows,
        requests=len(pooled),
        client_cpu=100.0 * (cpu[-1] - cpu[first]) / seconds,
        server_before=snaps[first],
        server_after=snaps[-1],
    )


def _warm_up(load: Load, settings: MeasureSettings, label: str) -> None:
    deadline = time.perf_counter() + settings.warmup_timeout_s
    while len(load.records) < settings.warmup_requests:
        _raise_errors(load, label)
        if time.perf_counter() > deadline:
            raise RuntimeFailure(
                f"{label}: warm-up did not finish {settings.warmup_requests} requests "
                f"in {settings.warmup_timeout_s:.0f} s"
            )
        time.sleep(0.005)


def _raise_errors(load: Load, label: str) -> None:
    if load.errors:
        err = load.errors[0]
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        # The request's own family: bad input (a wrong model, shape) exits 2, anything else is a runtime
        # failure of the server or the network (exit 1).
        family = UserError if isinstance(err, UserError) else RuntimeFailure
        raise family(f"{label}: request failed: {message}")


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system
