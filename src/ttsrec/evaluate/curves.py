"""AUC/logloss against M for one group of members, from their cached test-split logits."""

from __future__ import annotations

from typing import Any

import numpy as np

from ttsrec.evaluate.diversity import mean_pairwise
from ttsrec.evaluate.merge import balanced_order, choose_subsets, merged_metrics, summarise
from ttsrec.evaluate.sources import MemberGroup
from ttsrec.train.metrics import binary_metrics


def reference(group: MemberGroup, singles: list[dict[str, float]]) -> dict[str, Any]:
    """What a gain is measured against: the mean single member (homogeneous) or the best backbone."""
    by_backbone: dict[str, list[int]] = {}
    for i, b in enumerate(group.backbones):
        by_backbone.setdefault(b, []).append(i)
    means = {b: summarise([singles[i] for i in idx]) for b, idx in by_backbone.items()}
    best = max(means, key=lambda b: means[b]["auc"])
    kind = "mean_single" if group.homogeneous else "best_backbone"
    return {"kind": kind, "backbone": best, "members": by_backbone[best], **means[best]}


def curve_rows(group: MemberGroup, logits: np.ndarray, labels: np.ndarray, m_list: list[int], *, subsets: int,
               seed: int, js: np.ndarray, macs: list[int], ref: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (kind, M): homogeneous groups average over random subsets; heterogeneous ones take the
    first M in backbone-balanced order and also get the best backbone's own curve where it has M members."""
    rows = []

    def add(kind: str, m: int, chosen: list[tuple[int, ...]], backbone: str) -> None:
        stats = summarise([merged_metrics(logits, labels, s) for s in chosen])
        rows.append({
            "group": group.name, "kind": kind, "backbone": backbone, "M": m, **stats,
            "auc_gain": stats["auc"] - ref["auc"], "logloss_gain": stats["logloss"] - ref["logloss"],
            "macs_per_sample": float(np.mean([sum(macs[i] for i in s) for s in chosen])),
            "js_mean": float(np.mean([mean_pairwise(js, s) for s in chosen])),
        })

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
