"""Helpers the prepare tests share: two prepared outputs compared bit for bit."""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "valid", "test")


def same_output(a: Path, b: Path) -> None:
    """Bit for bit: ids, labels and the feature map."""
    assert (a / "feature_map.json").read_bytes() == (b / "feature_map.json").read_bytes()
    for split in SPLITS:
        for name in ("ids.npy", "labels.npy"):
            assert (a / split / name).read_bytes() == (b / split / name).read_bytes(), f"{split}/{name}"
