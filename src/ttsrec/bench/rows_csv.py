"""`-f/--latency-report-file`: every row in perf_analyzer's CSV columns, then ours (`Row.csv_record`)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from ttsrec.bench.row import Row
from ttsrec.utils.atomic import atomic_write_bytes


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    frame = pl.DataFrame([r.csv_record() for r in rows])
    buffer = io.BytesIO()
    frame.write_csv(buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def read_csv(path: Path) -> pl.DataFrame:
    return pl.read_csv(path)
