"""The parity gate: an exported graph must give its PyTorch checkpoint's logits before it ships.

Checked on valid ids at batch 1, 2, an odd size and the max batch: every member's fp32 graph
against its checkpoint (rtol 1e-4, atol 1e-5); a fused graph or merge step against the mean of
the members' logits (in reduced precision the shipped members' logits, rtol/atol 1e-3; how far
int8/fp16 may move from fp32 is the accuracy gate's business, `ttsrec.export.gate`). Any miss is
a `ParityError` naming the model and the figures, which stops the export.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ttsrec.data.feature_map import FeatureMap
from ttsrec.data.prepared import PreparedData
from ttsrec.ensemble.session import ort_session
from ttsrec.errors import UserError
from ttsrec.utils import common


class ParityError(UserError):
    """An exported graph disagrees with its checkpoint beyond the tolerance."""


@dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float


FP32 = Tolerance(rtol=1e-4, atol=1e-5)
REDUCED = Tolerance(rtol=1e-3, atol=1e-3)


@dataclass
class ParitySample:
    """Rows for the gate: `ids[:b]` is the batch of size `b` for each `b` in `batch_sizes`."""

    ids: np.ndarray
    batch_sizes: list[int]
    source: str

    def batches(self) -> dict[int, np.ndarray]:
        return {b: self.ids[:b] for b in self.batch_sizes}

    def describe(self) -> dict[str, Any]:
        return {"batch_sizes": self.batch_sizes, "rows": self.source}


def batch_sizes(max_batch_size: int) -> list[int]:
    """1, 2, an odd size and the max batch, as far as the max allows."""
    return sorted({b for b in (1, 2, 7, max_batch_size) if b <= max_batch_size})


def build_sample(feature_map: FeatureMap, max_batch_size: int, data_dir: Path | None = None, *,
                 seed: int = 0) -> ParitySample:
    """Test-split rows when the prepared data is known (padded with random valid ids up to the
    max batch), else random valid ids."""
    sizes = batch_sizes(max_batch_size)
    rows = sizes[-1]
    rng = np.random.default_rng(seed)
    vocab = np.asarray(feature_map.column_vocab_sizes, dtype=np.int64)
    real = np.empty((0, len(vocab)), dtype=np.int64)
    if data_dir is not None:
        data = PreparedData(data_dir)
        real = np.asarray(data.ids("test")[:rows], dtype=np.int64)
    pad = (rng.random((rows - len(real), len(vocab))) * vocab).astype(np.int64)
    ids = np.ascontiguousarray(np.concatenate([real, pad]))
    source = f"{len(real)} test rows + {len(pad)} random valid ids" if len(real) else "random valid ids"
    return ParitySample(ids, sizes, source)


def torch_logits(model: nn.Module, sample: ParitySample) -> dict[int, np.ndarray]:
    model.eval()
    with torch.no_grad():
        return {b: model(torch.from_numpy(ids)).numpy() for b, ids in sample.batches().items()}


def onnx_outputs(path: Path, sample: ParitySample, output: str) -> dict[int, np.ndarray]:
    session = ort_session(Path(path))
    name = session.get_inputs()[0].name
    return {b: session.run([output], {name: ids})[0] for b, ids in sample.batches().items()}


def compare(name: str, expected: dict[int, np.ndarray], got: dict[int, np.ndarray], tol: Tolerance,
            what: str = "logit") -> dict[str, Any]:
    """Figures of one check; a `ParityError` with them when any batch is off."""
    worst_abs = worst_rel = 0.0
    for b, exp in expected.items():
        out = got[b]
        if out.shape != exp.shape or not np.all(np.isfinite(out)):
            raise ParityError(f"parity gate failed for {name}: {what} at batch {b} has shape {out.shape} "
                              f"(expected {exp.shape}) or non-finite values")
        diff = np.abs(out.astype(np.float64) - exp.astype(np.float64))
        worst_abs = max(worst_abs, float(diff.max()))
        worst_rel = max(worst_rel, float((diff / np.maximum(np.abs(exp), 1e-12)).max()))
        if np.any(diff > tol.atol + tol.rtol * np.abs(exp)):
            raise ParityError(f"parity gate failed for {name}: {what} at batch {b} is off by up to "
                              f"{float(diff.max()):.3g} (allowed {tol.atol:g} + {tol.rtol:g}*|torch|, "
                              f"max relative {worst_rel:.3g})")
    return {"max_abs_diff": worst_abs, "max_rel_diff": worst_rel, "rtol": tol.rtol, "atol": tol.atol,
            "batch_sizes": sorted(expected), "passed": True}


def mean_logits(per_member: Sequence[dict[int, np.ndarray]]) -> dict[int, np.ndarray]:
    return {b: np.mean([m[b] for m in per_member], axis=0, dtype=np.float64).astype(np.float32)
            for b in per_member[0]}


def sum_logits(per_member: Sequence[dict[int, np.ndarray]]) -> dict[int, np.ndarray]:
    return {b: np.sum([m[b] for m in per_member], axis=0, dtype=np.float64).astype(np.float32)
            for b in per_member[0]}


def sigmoid(logits: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
    return {b: common.sigmoid(x) for b, x in logits.items()}
