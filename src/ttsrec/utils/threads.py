"""torch's intra-op thread count for a block, restored after: training runs in-process beside other
work (on a busy 2-core machine 1 thread can be several times faster than 2, the threads spin on each
other), and the bench's roofline measures with its own count."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """`threads` intra-op threads inside the block (None or 0: leave torch's count as it is)."""
    import torch

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
