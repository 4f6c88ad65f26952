"""One planned row's coordinates: mode × M × batch × concurrency, and what its requests carry."""

from __future__ import annotations

from dataclasses import dataclass

from ttsrec.bench.row import IDS, RAW


@dataclass(frozen=True)
class Point:
    mode: str
    m: int
    batch: int
    concurrency: int
    inputs: str = IDS
    """`raw`: raw records to the mode's `raw_*` model (`--raw`), else ids."""

    def __str__(self) -> str:
        raw = " (raw)" if self.inputs == RAW else ""
        return f"{self.mode}{raw} M={self.m} batch={self.batch} c={self.concurrency}"
