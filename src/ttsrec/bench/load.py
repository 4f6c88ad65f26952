"""Closed-loop load generators: concurrency N means N requests outstanding at all times (perf_analyzer).

Each generator records `(end_ns, latency_ns)` per completed request into one list that the measurement
loop slices into windows. Two flavours share that contract:

- `AsyncLoad`: N coroutines on one event loop in a background thread (async gRPC/HTTP clients), so a
  single client thread keeps many requests in flight with little CPU of its own;
- `ThreadLoad`: N threads calling a blocking function (onnxruntime and gRPC release the GIL while
  they wait or compute), for in-process inference and blocking clients.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

Record = tuple[int, int]
"""(completion time, latency), both in ns from `time.perf_counter_ns`."""

AsyncSend = Callable[[int], Awaitable[object]]
"""Sends request number k (pick the pre-built input k % pool); awaits its answer."""


class Load(Protocol):
    records: list[Record]
    errors: list[BaseException]

    def start(self, concurrency: int) -> None: ...

    def stop(self) -> None: ...


class ThreadLoad:
    """N worker threads, each sending its next request as soon as the previous one returned."""

    def __init__(self, send: Callable[[int], object], close: Callable[[], object] | None = None) -> None:
        self.send = send
        self.close = close
        """Called once the workers have stopped (the connection `send` uses)."""
        self.records: list[Record] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, concurrency: int) -> None:
        self.records, self.errors = [], []
        self._stop.clear()
        self._threads = [
            threading.Thread(target=self._worker, args=(i, concurrency), daemon=True)
            for i in range(concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def _worker(self, index: int, stride: int) -> None:
        k = index
        clock, append, send = time.perf_counter_ns, self.records.append, self.send
        try:
            while not self._stop.is_set():
                t0 = clock()
                send(k)
                t1 = clock()
                append((t1, t1 - t0))
                k += stride
        except BaseException as err:  # surfaced by the measurement loop as one line
            self.errors.append(err)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self._threads = []
        if self.close is not None:
            self.close()


class AsyncLoad:
    """N coroutines on a private event loop thread.

    `setup` runs inside that loop (async clients bind to the loop that creates them) and returns the
    send coroutine function and a closer.
    """

    def __init__(
        self, setup: Callable[[], Awaitable[tuple[AsyncSend, Callable[[], Awaitable[None]]]]]
    ) -> None:
        self.setup = setup
        self.records: list[Record] = []
        self.errors: list[BaseException] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()

    def start(self, concurrency: int) -> None:
        self.records, self.errors = [], []
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, args=(concurrency,), daemon=True)
        self._thread.start()
        self._ready.wait()

    def _run(self, concurrency: int) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main(concurrency))
        except BaseException as err:
            self.errors.append(err)
        finally:
            self._ready.set()
            self._loop.close()

    async def _main(self, concurrency: int) -> None:
        self._stopping = asyncio.Event()
        send, close = await self.setup()
        self._ready.set()
        try:
            await asyncio.gather(*(self._worker(send, i, concurrency) for i in range(concurrency)))
        finally:
            await close()

    async def _worker(self, send: AsyncSend, index: int, stride: int) -> None:
        assert self._stopping is not None
        k = index
        clock, append = time.perf_counter_ns, self.records.append
        try:
            while not self._stopping.is_set():
                t0 = clock()
                await send(k)
                t1 = clock()
                append((t1, t1 - t0))
                k += stride
        except BaseException as err:
            self.errors.append(err)
            self._stopping.set()

    def stop(self) -> None:
        if self._loop is not None and self._stopping is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join()
        self._thread = None
