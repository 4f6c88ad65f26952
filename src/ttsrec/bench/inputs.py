"""Request inputs, built before the clock starts: valid random ids from the feature map or real rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ttsrec.data.feature_map import FeatureMap
from ttsrec.errors import UserError

POOL_ROWS = 8192
"""Distinct rows per pool: enough that requests differ, small enough to stay in cache-sized memory."""


def random_ids(fmap: FeatureMap, rows: int, seed: int = 0) -> np.ndarray:
    """Ids drawn uniformly from each field's vocabulary, OOV (0) included: every one is valid."""
    rng = np.random.default_rng(seed)
    high = np.asarray(fmap.vocab_sizes, dtype=np.int64)
    return (rng.random((rows, len(high))) * high).astype(np.int64)


def any_ids(features: int, rows: int, seed: int = 0, high: int = 1000) -> np.ndarray:
    """Random ids without a feature map (`-u URL` alone): members map out-of-vocabulary ids to OOV."""
    return np.random.default_rng(seed).integers(0, high, size=(rows, features), dtype=np.int64)


def data_ids(data_dir: Path, rows: int, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
    """The first `rows` rows (ids, labels) of a prepared split."""
    from ttsrec.data.prepared import PreparedData

    data = PreparedData(Path(data_dir))
    n = min(rows, data.num_rows(split))
    if n == 0:
        raise UserError(f"{data_dir}: split {split!r} has no rows")
    return np.asarray(data.ids(split)[:n], dtype=np.int64), np.asarray(
        data.labels(split)[:n], dtype=np.float32
    )


def check_matches(fmap: FeatureMap, data_dir: Path, repository_fmap: FeatureMap) -> None:
    if fmap.hash != repository_fmap.hash:
        raise UserError(
            f"--data {data_dir} was prepared with feature map {fmap.hash}, but the repository's "
            f"members use {repository_fmap.hash}"
        )


def batches(pool: np.ndarray, batch: int, count: int = 16) -> list[np.ndarray]:
    """`count` distinct request tensors of `batch` rows cut (cyclically) from the pool."""
    n = len(pool)
    out = []
    for i in range(count):
        idx = (np.arange(batch) + i * batch) % n
        out.append(np.ascontiguousarray(pool[idx]))
    return out
