"""Seeded random 8:1:1 train/valid/test split by row position, without holding the file in memory.

Each row's split is a hash (splitmix64) of its position among the input's data rows and the seed,
so it is the same in both passes, whatever the chunking, and needs no shuffle of the whole file.
"""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "valid", "test")


def split_of(index: np.ndarray, seed: int) -> np.ndarray:
    """0 (train, 80%), 1 (valid, 10%) or 2 (test, 10%) for each row position in `index`."""
    with np.errstate(over="ignore"):
        z = index.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    bucket = (z % np.uint64(10)).astype(np.uint8)
    return np.where(bucket < 8, 0, bucket - 7).astype(np.uint8)
