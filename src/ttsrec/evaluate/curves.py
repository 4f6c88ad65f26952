"""AUC/logloss against M for one group of members, from their cached validation and test logits.

Every (kind, M) is scored with each requested merge: `mean` (the paper), and the fitted `weighted` and
`selection` merges (weights fitted on the validation split of the same subset, scored on test).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ttsrec.ensemble.merge import fit_merge, merged_logits
from ttsrec.ensemble.metrics import binary_metrics
from ttsrec.ensemble.order import balanced_order
from ttsrec.evaluate.diversity import mean_pairwise
from ttsrec.evaluate.sources import MemberGroup
from ttsrec.evaluate.subsets import choose_subsets, summarise


def reference(group: MemberGroup, singles: list[dict[str, float]]) -> dict[str, Any]:
    """What a gain is measured against: the mean single member (homogeneous) or the best backbone."""
    by_backbone: dict[str, list[int]] = {}
    for i, b in enumerate(group.backbones):
        by_backbone.setdefault(b, []).append(i)
    means = {b: summarise([singles[i] for i in idx]) for b, idx in by_backbone.items()}
    best = max(means, key=lambda b: means[b]["auc"])
    kind = "mean_single" if group.homogeneous else "best_backbone"
    return {"kind": kind, "backbone": best, "members": by_backbone[best], **means[best]}


class Scorer:
    """Scores member subsets under one merge; holds the logits of both splits."""

    def __init__(self, test: np.ndarray, test_labels: np.ndarray, valid: np.ndarray | None,
                 valid_labels: np.ndarray | None) -> None:
        self.test, self.test_labels, self.valid, self.valid_labels = test, test_labels, valid, valid_labels

    def weights(self, merge: str, subset: Sequence[int]) -> np.ndarray:
        if merge == "mean" or self.valid is None:
            return np.full(len(subset), 1.0 / len(subset))
        return fit_merge(merge, self.valid[list(subset)], self.valid_labels)

    def picked_member_auc(self, subset: Sequence[int]) -> float:
        """Test AUC of the member one would deploy alone from `subset`: best validation AUC (else test)."""
        chooser = (self.valid, self.valid_labels) if self.valid is not None else (self.test, self.test_labels)
        pick = max(subset, key=lambda i: binary_metrics(chooser[1], chooser[0][i])["auc"])
        return binary_metrics(self.test_labels, self.test[pick])["auc"]

    def score(self, merge: str, subset: Sequence[int]) -> tuple[dict[str, float], np.ndarray]:
        w = self.weights(merge, subset)
        return binary_metrics(self.test_labels, merged_logits(w, self.test[list(subset)])), w


def curve_rows(group: MemberGroup, scorer: Scorer, m_list: list[int], *, subsets: int, seed: int,
               js: np.ndarray, macs: list[int], ref: dict[str, Any],
               merges: Sequence[str] = ("mean",)) -> list[dict[str, Any]]:
    """One row per (kind, M, merge): homogeneous groups average over random subsets; heterogeneous ones
    take the first M in backbone-balanced order and also get the best backbone's own curve where it has M
    members; a jointly trained group (`tts-train --group`) is one row at its own M, never subsets."""
    rows = []

    def add(kind: str, m: int, chosen: list[tuple[int, ...]], backbone: str) -> None:
        picked = float(np.mean([scorer.picked_member_auc(s) for s in chosen]))
        for merge in (merges if m > 1 else ("mean",)):  # one member: every merge is that member
            scored = [scorer.score(merge, s) for s in chosen]
            stats = summarise([s for s, _ in scored])
            row = {
                "group": group.name, "kind": kind, "merge": merge, "backbone": backbone, "M": m, **stats,
                "auc_gain": stats["auc"] - ref["auc"], "logloss_gain": stats["logloss"] - ref["logloss"],
                "macs_per_sample": float(np.mean([sum(macs[i] for i in s) for s in chosen])),
                "js_mean": float(np.mean([mean_pairwise(js, s) for s in chosen])),
                "best_member_auc": picked,
            }
            if group.joint:
                row["series"] = group.series
            if len(chosen) == 1 and merge != "mean":
                row["weights"] = {group.members[i].name: round(float(w), 6)
                                  for i, w in zip(chosen[0], scored[0][1], strict=True)}
            rows.append(row)

    mix = "+".join(sorted(set(group.backbones)))
    if group.joint:
        add("group", len(group.members), [tuple(range(len(group.members)))], mix)
        return rows
    if group.homogeneous:
        for m in m_list:
            add("tts", m, choose_subsets(len(group.members), m, subsets, seed + m), group.backbones[0])
        return rows
    order = balanced_order(group.backbones)
    for m in m_list:
        add("tts_balanced", m, [tuple(order[:m])], "+".join(sorted({group.backbones[i] for i in order[:m]})))
    own = ref["members"]
    for m in m_list:
        if m <= len(own):
            picks = [tuple(own[i] for i in s) for s in choose_subsets(len(own), m, subsets, seed + m)]
            add("best_backbone", m, picks, ref["backbone"])
    return rows


def single_metrics(logits: np.ndarray, labels: np.ndarray) -> list[dict[str, float]]:
    return [binary_metrics(labels, row) for row in logits]
