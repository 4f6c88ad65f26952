"""Run a chunk producer one step ahead in a thread, so parsing overlaps counting and writing.

Polars and numpy release the GIL in their heavy work, so the reader thread's CSV parsing runs on
one core while the main thread counts, caches or encodes the previous chunk on another.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import TypeVar

T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterator[T], depth: int = 1) -> Iterator[T]:
    """Yield `items` in order while the next `depth` are produced in a background thread.

    Exceptions in the producer are re-raised here; closing the generator early stops the producer.
    """
    slots: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        slots.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            slots.put(_DONE)
        except BaseException as err:  # handed to the consumer, raised there
            slots.put(err)

    thread = threading.Thread(target=produce, name="ttsrec-prefetch", daemon=True)
    thread.start()
    try:
        while (item := slots.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=5)
