"""Mini-batches for training from memory-mapped splits, shuffled without loading the split.

Shuffling reads contiguous blocks in a random order, pools a few blocks, permutes the pooled rows and
cuts batches: sequential disk reads, bounded memory (`pool_blocks * block_rows` rows), and batches
that mix rows from distant parts of the file. Deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ttsrec.data.prepared import PreparedData
from ttsrec.errors import UserError

BLOCK_ROWS = 8192
POOL_BLOCKS = 16


def iter_batches(
    data: PreparedData,
    split: str,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    limit: int | None = None,
    drop_last: bool = False,
    block_rows: int = BLOCK_ROWS,
    pool_blocks: int = POOL_BLOCKS,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield `(feat_ids int64 [B, F], labels float32 [B])`; `limit` keeps only the first rows of the split."""
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1 (got {batch_size})")
    ids, labels = data.ids(split), data.labels(split)
    n = len(labels) if limit is None else min(len(labels), max(0, limit))
    if not shuffle:
        for start in range(0, n, batch_size):
            stop = min(n, start + batch_size)
            if drop_last and stop - start < batch_size:
                return
            yield _tensors(ids[start:stop], labels[start:stop])
        return
    rng = np.random.default_rng(seed)
    starts = rng.permutation(np.arange(0, n, block_rows))
    carry_ids = np.empty((0, ids.shape[1]), dtype=np.int32)
    carry_labels = np.empty(0, dtype=np.float32)
    for group in range(0, len(starts), pool_blocks):
        blocks = sorted(starts[group : group + pool_blocks])
        pool_ids = np.concatenate([carry_ids, *(ids[s : min(n, s + block_rows)] for s in blocks)])
        pool_labels = np.concatenate([carry_labels, *(labels[s : min(n, s + block_rows)] for s in blocks)])
        order = rng.permutation(len(pool_labels))
        pool_ids, pool_labels = pool_ids[order], pool_labels[order]
        full = len(pool_labels) // batch_size * batch_size
        for start in range(0, full, batch_size):
            yield _tensors(pool_ids[start : start + batch_size], pool_labels[start : start + batch_size])
        carry_ids, carry_labels = pool_ids[full:], pool_labels[full:]
    if len(carry_labels) and not drop_last:
        yield _tensors(carry_ids, carry_labels)


def _tensors(ids: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.asarray(ids, dtype=np.int64)), torch.from_numpy(
        np.array(labels, dtype=np.float32)
    )
