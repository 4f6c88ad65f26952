"""Which member subsets a curve point averages over, and the mean and spread of their scores."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from ttsrec.ensemble.metrics import binary_metrics


def choose_subsets(n: int, m: int, k: int, seed: int = 0) -> list[tuple[int, ...]]:
    """All size-m subsets of n members if there are at most k of them (always every single member, so
    M=1 is the mean single member), else k distinct random ones."""
    if m == 1 or math.comb(n, m) <= k:
        return list(itertools.combinations(range(n), m))
    rng = np.random.default_rng(seed)
    chosen: set[tuple[int, ...]] = set()
    while len(chosen) < k:
        chosen.add(tuple(sorted(rng.choice(n, size=m, replace=False).tolist())))
    return sorted(chosen)


def merged_metrics(logits: np.ndarray, labels: np.ndarray, subset: Sequence[int]) -> dict[str, float]:
    """Metrics of the paper's merge (equal-weight logit mean) of the members in `subset`."""
    return binary_metrics(labels, logits[list(subset)].mean(0))


def summarise(scores: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean and (population) standard deviation of AUC and logloss over subsets."""
    auc = np.array([s["auc"] for s in scores])
    ll = np.array([s["logloss"] for s in scores])
    return {"auc": float(auc.mean()), "auc_std": float(auc.std()), "logloss": float(ll.mean()),
            "logloss_std": float(ll.std()), "subsets": len(scores)}
