"""Request inputs, built before the clock starts: valid random ids from the feature map or real rows; with
`--raw` also raw records (the test split's raw rows, else rows covering the vocabulary) and their ids.

Raw records are the export gate's (`ttsrec.export.raw`): the test split's first rows read again from the
raw files `summary.json` names (their ids checked against `test/ids.npy`), or rows that cover every
vocabulary entry, unseen and missing values and bucket edges. Their requests are laid out and serialized
with the client's raw layout (`ttsrec.client.raw`), from the served model's own config.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ttsrec.data.feature_map import FeatureMap
from ttsrec.errors import UserError

POOL_ROWS = 8192
"""Distinct rows per pool: enough that requests differ, small enough to stay in cache-sized memory."""


def random_ids(fmap: FeatureMap, rows: int, seed: int = 0) -> np.ndarray:
    """Ids drawn uniformly from each field's vocabulary, OOV (0) included: every one is valid."""
    rng = np.random.default_rng(seed)
    high = np.asarray(fmap.column_vocab_sizes, dtype=np.int64)  # a list field's over its columns
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


def batches(pool: Any, batch: int, count: int = 16) -> list[Any]:
    """`count` distinct request tensors of `batch` rows cut (cyclically) from the pool (ids, or a list of
    raw records: then lists of records)."""
    n = len(pool)
    out = []
    for i in range(count):
        idx = (np.arange(batch) + i * batch) % n
        is_ids = isinstance(pool, np.ndarray)
        out.append(np.ascontiguousarray(pool[idx]) if is_ids else [pool[j] for j in idx])
    return out


@dataclass
class RawPool:
    """Raw records (dicts keyed by raw column) and the ids `tts-data` gives them, row for row."""

    records: list[dict[str, Any]]
    ids: np.ndarray
    labels: np.ndarray | None
    """The test split's labels of these rows (None for vocabulary rows)."""
    source: str
    """What the records are, for the report."""

    def __len__(self) -> int:
        return len(self.records)


def raw_test_records(fmap: FeatureMap, data_dir: Path, rows: int) -> RawPool:
    """The first `rows` test rows of a prepared folder as raw records, read again from its raw files; a
    `UserError` saying why when they cannot be (gone, or changed since `prepare`)."""
    from ttsrec.data.prepared import PreparedData
    from ttsrec.export.raw import raw_test_rows

    found, why = raw_test_rows(fmap, Path(data_dir), rows)
    if found is None:
        raise UserError(f"--raw: the test rows of {data_dir} cannot be read again as raw records: {why}")
    frame, ids = found
    labels = np.asarray(PreparedData(Path(data_dir)).labels("test")[: len(ids)], dtype=np.float32)
    return RawPool(frame.to_dicts(), np.asarray(ids, dtype=np.int64), labels, why)


def vocabulary_records(fmap: FeatureMap, rows: int = POOL_ROWS, seed: int = 0) -> RawPool:
    """Up to `rows` raw records covering every field's vocabulary (as the export gate's vocabulary rows:
    unseen and missing values and bucket edges too), shuffled; rows `tts-data` would skip left out."""
    from ttsrec.export.raw import prepare_ids, vocabulary_rows

    frame = vocabulary_rows(fmap, max_rows=rows)
    ids, bad = prepare_ids(fmap, frame)
    keep = np.flatnonzero(~bad)
    keep = keep[np.random.default_rng(seed).permutation(len(keep))]
    if len(keep) == 0:
        raise UserError("--raw: the feature map's vocabulary gives no raw rows tts-data would keep")
    records = frame.to_dicts()
    return RawPool([records[i] for i in keep], np.ascontiguousarray(ids[keep], dtype=np.int64), None,
                   f"{len(keep)} rows covering every vocabulary entry (the export gate's vocabulary rows)")


def raw_tensors(fields: Sequence[Any], records: Sequence[dict[str, Any]],
                max_string_bytes: int = 0) -> list[tuple[str, str, bytes]]:
    """One request's (input name, datatype, payload) per raw input of a served raw model (its
    `ModelInfo.raw_inputs`), laid out and checked as `Client.infer_records` does."""
    from ttsrec.client.raw import raw_columns

    columns = raw_columns(fields, records, max_string_bytes)
    return [(f.name, f.datatype, payload) for f, payload in zip(fields, columns.payloads(), strict=True)]
