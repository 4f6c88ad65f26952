"""The accuracy gate of reduced precision: an int8 or fp16 graph ships only when it ranks the test
rows as its fp32 graph does.

Every member and every fused graph is scored on the test split (or its first `--gate-rows`) next
to its fp32 reference: max and mean |logit drift|, AUC and logloss of both. A |ΔAUC| above the
limit (default 5e-4) anywhere stops the export with one line naming the worst graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ttsrec.data.prepared import PreparedData
from ttsrec.ensemble.metrics import auc, logloss
from ttsrec.errors import UserError
from ttsrec.utils.common import sigmoid

DEFAULT_MAX_AUC_DROP = 5e-4
CALIBRATION_ROWS = 2048


class AccuracyGateError(UserError):
    """A reduced-precision graph ranks the test rows differently from its fp32 graph."""


@dataclass
class GateRows:
    """Labelled test rows the gate scores, and the limit it holds every graph to."""

    ids: np.ndarray
    labels: np.ndarray
    max_auc_drop: float


def load_gate_rows(data_dir: Path | None, rows: int | None, max_auc_drop: float, precision: str) -> GateRows:
    """The test split's first `rows` (all when None); a `UserError` when there is no labelled split."""
    if rows is not None and rows < 2:
        raise UserError(f"--gate-rows must be >= 2, got {rows}")
    if not max_auc_drop >= 0:
        raise UserError(f"--max-auc-drop must be >= 0, got {max_auc_drop}")
    if data_dir is None:
        raise UserError(f"--precision {precision} needs the prepared data (--data DIR): its test split feeds "
                        "the accuracy gate")
    data = PreparedData(data_dir)
    n = data.num_rows("test") if rows is None else min(rows, data.num_rows("test"))
    ids = np.ascontiguousarray(data.ids("test")[:n], dtype=np.int64)
    labels = np.asarray(data.labels("test")[:n], dtype=np.float32)
    if len(np.unique(labels)) < 2:
        raise UserError(f"the accuracy gate needs both labels among the {n} test rows of {data_dir}")
    return GateRows(ids, labels, max_auc_drop)


def calibration_rows(data_dir: Path | None, rows: int = CALIBRATION_ROWS) -> np.ndarray | None:
    """The train split's first rows, which fix int8 activation scales (None without prepared data)."""
    if data_dir is None:
        return None
    return np.ascontiguousarray(PreparedData(data_dir).ids("train")[:rows], dtype=np.int64)


def score(reference: np.ndarray, reduced: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Drift and ranking figures of a reduced graph's logits against its fp32 graph's."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    got = np.asarray(reduced, dtype=np.float64).ravel()
    if not np.all(np.isfinite(got)):
        return {"rows": len(ref), "finite": False, "auc_change": float("inf")}
    drift = np.abs(got - ref)
    auc_ref, auc_got = auc(labels, ref), auc(labels, got)
    loss_ref, loss_got = logloss(labels, sigmoid(ref)), logloss(labels, sigmoid(got))
    return {"rows": len(ref), "max_logit_drift": float(drift.max()), "mean_logit_drift": float(drift.mean()),
            "auc_fp32": auc_ref, "auc": auc_got, "auc_change": auc_got - auc_ref,
            "logloss_fp32": loss_ref, "logloss": loss_got, "logloss_change": loss_got - loss_ref}


def check(figures: Sequence[tuple[str, dict[str, Any]]], gate: GateRows, precision: str) -> None:
    """An `AccuracyGateError` naming the worst graph when any |ΔAUC| passes the limit."""
    if not figures:
        return
    name, worst = max(figures, key=lambda item: abs(item[1]["auc_change"]))
    change = abs(worst["auc_change"])
    if not change <= gate.max_auc_drop:
        misses = sum(abs(f["auc_change"]) > gate.max_auc_drop for _, f in figures)
        raise AccuracyGateError(
            f"accuracy gate failed: {precision} {name} moves test AUC by {worst['auc_change']:+.2g} "
            f"(limit {gate.max_auc_drop:g}, {misses} of {len(figures)} graphs over it, "
            f"{worst['rows']} test rows); raise --max-auc-drop or export in fp32")
