"""Cascaded merging in evaluation: per member order, merge and rule, test AUC and logloss against the
average number of members evaluated per row, next to the full merges and the plain first-k merges.

Everything that is fitted (merge weights, the rule's priors, each rule's threshold, the kept rule, the
"best" member order) reads the validation split only; the test split is only scored.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ttsrec.ensemble.cascade import (
    DEFAULT_TOLERANCE,
    RULES,
    SWEEP_POINTS,
    cascade_frontier,
    fit_cascade,
    prefix_merge,
)
from ttsrec.ensemble.merge import fit_merge
from ttsrec.ensemble.metrics import binary_metrics
from ttsrec.ensemble.order import balanced_order
from ttsrec.errors import UserError

ORDERS = ("export", "best")
"""export: the exporter's balanced order (`ensemble_mM` holds its first M); best: best validation AUC
first."""
MERGES = ("mean", "weighted")


def member_order(kind: str, valid_logits: np.ndarray, valid_labels: np.ndarray,
                 backbones: Sequence[str] | None = None) -> list[int]:
    """Member indices in evaluation order."""
    m = np.asarray(valid_logits).shape[0]
    if kind == "export":
        return balanced_order(backbones) if backbones is not None else list(range(m))
    if kind == "best":
        auc = [binary_metrics(valid_labels, valid_logits[i])["auc"] for i in range(m)]
        return sorted(range(m), key=lambda i: (-auc[i], i))
    raise UserError(f"unknown member order {kind!r}; choose from {', '.join(ORDERS)}")


def evaluate_cascades(valid_logits: np.ndarray, valid_labels: np.ndarray, test_logits: np.ndarray,
                      test_labels: np.ndarray, *, group: str = "", backbones: Sequence[str] | None = None,
                      orders: Sequence[str] = ORDERS, merges: Sequence[str] = MERGES,
                      stages: Sequence[int] | None = None, rules: Sequence[str] = RULES,
                      tolerance: float = DEFAULT_TOLERANCE, selection: str = "stable",
                      points: int = SWEEP_POINTS, member_macs: Sequence[float] | None = None,
                      crossfit: bool = True) -> list[dict[str, Any]]:
    """Result rows (plain dicts) for one group of members: logits float32 [M, N] per split.

    kind `cascade`: one row per (order, merge, rule, threshold) on the validation sweep's thresholds,
    scored on test; `fitted` marks each rule's fitted threshold, `kept` the rule `fit_cascade` keeps
    (its row carries the `reason`). kind `prefix`: the first k members merged for every stage k (no
    cascade). kind `full`: every member (weighted: every member of weight > 0) merged. `selection` and
    `tolerance`, `points` (thresholds swept): as `fit_cascade`.

    `crossfit` (default): where something is fitted before the cascade (the `best` order, `weighted`
    weights), it is fitted on the even validation rows and the cascade's threshold on the odd ones.
    Fitted on the same rows, the threshold trusts a lucky order: 16 DCNv2 seeds, `best` order, mean
    merge kept 3.2 members/row at validation AUC >= the full mean's, and lost 1.5e-3 test AUC.

    Columns:
    group, kind, order, merge, rule, threshold, avg_members, auc, logloss, valid_auc (fitted rows),
    fitted, kept, reason, crossfit, avg_macs (with `member_macs`, one per member index).
    """
    valid_logits = np.asarray(valid_logits, dtype=np.float32)
    test_logits = np.asarray(test_logits, dtype=np.float32)
    if valid_logits.ndim != 2 or test_logits.shape[:1] != valid_logits.shape[:1]:
        raise UserError(f"cascade logits must be [M, N] with the same M per split, got {valid_logits.shape} "
                        f"and {test_logits.shape}")
    if valid_logits.shape[0] == 0:
        raise UserError("no members to cascade")
    macs = None if member_macs is None else np.asarray(member_macs, dtype=np.float64)
    rows: list[dict[str, Any]] = []
    base = {"group": group, "threshold": None, "valid_auc": None, "fitted": False, "kept": False,
            "reason": ""}
    halves = (slice(0, None, 2), slice(1, None, 2))
    for merge in merges:
        rows_a = halves[0] if crossfit else slice(None)
        weights = None if merge == "mean" else fit_merge(merge, valid_logits[:, rows_a], valid_labels[rows_a])
        for order_kind in orders:
            split = crossfit and (merge != "mean" or order_kind == "best")
            first, second = halves if split else (slice(None), slice(None))
            order = member_order(order_kind, valid_logits[:, first], valid_labels[first], backbones)
            fit = fit_cascade(valid_logits[:, second], valid_labels[second], order=order, stages=stages,
                              weights=weights, rules=rules, tolerance=tolerance, selection=selection,
                              points=points)
            used_order = list(fit.cascade.order)
            for k in fit.cascade.stages:
                merged = prefix_merge(test_logits, fit.cascade, k)
                rows.append({**base, "kind": "prefix" if k < len(used_order) else "full", "order": order_kind,
                             "merge": merge, "rule": None, "avg_members": float(k), "crossfit": split,
                             **_macs(macs, used_order[:k]), **binary_metrics(test_labels, merged)})
            for rule in rules:
                rule_fit = fit.rules[rule]
                cascade = rule_fit.cascade
                thresholds = [r["threshold"] for r in rule_fit.sweep]
                costs = None if macs is None else list(macs)
                for r in cascade_frontier(test_logits, test_labels, cascade, thresholds, member_costs=costs):
                    fitted = r["threshold"] == rule_fit.threshold
                    kept = fitted and rule == fit.cascade.rule
                    row = {**base, "kind": "cascade", "order": order_kind, "merge": merge, "rule": rule,
                           "crossfit": split,
                           "threshold": r["threshold"], "avg_members": r["avg_members"], "auc": r["auc"],
                           "logloss": r["logloss"], "fitted": fitted, "kept": kept,
                           "valid_auc": rule_fit.valid_auc if fitted else None,
                           "reason": fit.reason if kept else ""}
                    if "avg_cost" in r:
                        row["avg_macs"] = r["avg_cost"]
                    rows.append(row)
    return rows


def _macs(macs: np.ndarray | None, members: Sequence[int]) -> dict[str, float]:
    return {} if macs is None else {"avg_macs": float(macs[list(members)].sum())}


def fitted_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The kept rule's fitted row per (group, order, merge)."""
    return [r for r in rows if r["kind"] == "cascade" and r["kept"]]


def plot_cascade_frontier(rows: Sequence[dict[str, Any]], path: Path, *, title: str | None = None) -> Path:
    """Test AUC against average members evaluated per row (log2 axis): a line per (order, merge, rule),
    each rule's fitted threshold marked (a star for the kept rule), the first-k merges dashed, and the
    full merge's AUC with the tolerance band."""
    fig, ax = plt.subplots(figsize=(7.0, 4.6), dpi=110)
    keys = sorted({(r["group"], r["order"], r["merge"]) for r in rows})
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = {"se": "-", "delta": "--", "rank": "-."}
    for n, (group, order, merge) in enumerate(keys):
        colour = colours[n % len(colours)]
        label = "/".join(x for x in (group, order, merge) if x)
        mine = [r for r in rows if (r["group"], r["order"], r["merge"]) == (group, order, merge)]
        prefix = sorted((r for r in mine if r["kind"] in ("prefix", "full")), key=lambda r: r["avg_members"])
        ax.plot([r["avg_members"] for r in prefix], [r["auc"] for r in prefix], ":", marker="o",
                markersize=3, color=colour, alpha=0.7, label=f"{label}: first k")
        for rule in sorted({r["rule"] for r in mine if r["kind"] == "cascade"}):
            line = sorted((r for r in mine if r["kind"] == "cascade" and r["rule"] == rule),
                          key=lambda r: r["avg_members"])
            ax.plot([r["avg_members"] for r in line], [r["auc"] for r in line], styles.get(rule, "-"),
                    color=colour, linewidth=1, label=f"{label}: cascade {rule}")
            for r in line:
                if r["fitted"]:
                    ax.plot(r["avg_members"], r["auc"], "*" if r["kept"] else "x", color=colour,
                            markersize=11 if r["kept"] else 7)
        full = [r for r in prefix if r["kind"] == "full"]
        if full:
            ax.axhline(full[0]["auc"], color=colour, linewidth=0.6, alpha=0.5)
    ax.set_xscale("log", base=2)
    ticks = sorted({int(r["avg_members"]) for r in rows if r["kind"] in ("prefix", "full")})
    if ticks:
        ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    finite = [r["auc"] for r in rows if math.isfinite(r["auc"])]
    if finite:
        top = max(r["auc"] for r in rows if r["kind"] == "full") if any(r["kind"] == "full" for r in rows) \
            else max(finite)
        ax.set_ylim(max(min(finite), top - 0.01), top + 0.0015)
    ax.set_xlabel("members evaluated per row (average)")
    ax.set_ylabel("test AUC")
    ax.set_title(title or "Cascaded merging: test AUC vs members per row (* fitted, kept rule)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
