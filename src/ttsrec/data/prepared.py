"""Read side of a prepared dataset folder: the feature map and memory-mapped splits."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ttsrec.data.feature_map import FeatureMap
from ttsrec.data.split import SPLITS
from ttsrec.errors import UserError
from ttsrec.repository.naming import FEATURE_MAP_FILE


class PreparedData:
    """A folder written by `prepare`: `feature_map.json`, `summary.json`, `<split>/ids.npy|labels.npy`.

    Arrays are opened as read-only memmaps, so training reads only the rows it touches.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not (self.path / FEATURE_MAP_FILE).is_file():
            raise UserError(
                f"{self.path} is not a prepared dataset (no {FEATURE_MAP_FILE}; run `tts-data prepare`)"
            )

    @cached_property
    def feature_map(self) -> FeatureMap:
        return FeatureMap.load(self.path)

    @cached_property
    def summary(self) -> dict[str, Any]:
        file = self.path / "summary.json"
        return json.loads(file.read_text()) if file.is_file() else {}

    def _file(self, split: str, name: str) -> Path:
        if split not in SPLITS:
            raise UserError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        file = self.path / split / name
        if not file.is_file():
            raise UserError(f"{file} is missing (incomplete prepared dataset)")
        return file

    def ids(self, split: str) -> np.ndarray:
        """Field-local ids, int32 [N, F] (memmap)."""
        return np.load(self._file(split, "ids.npy"), mmap_mode="r")

    def labels(self, split: str) -> np.ndarray:
        """Click labels, float32 [N] (memmap)."""
        return np.load(self._file(split, "labels.npy"), mmap_mode="r")

    def num_rows(self, split: str) -> int:
        return int(self.labels(split).shape[0])

    def __repr__(self) -> str:
        sizes = ", ".join(f"{s}={self.num_rows(s)}" for s in SPLITS)
        return f"PreparedData({str(self.path)!r}, {sizes})"
