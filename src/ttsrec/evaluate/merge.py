"""What merging M members buys: AUC/logloss of sigmoid(mean of M logits) over member subsets."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from ttsrec.errors import UserError
from ttsrec.train.metrics import binary_metrics


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


def balanced_order(backbones: Sequence[str]) -> list[int]:
    """Round-robin over backbones (in order of first appearance), so the first M are as mixed as possible."""
    queues: dict[str, list[int]] = {}
    for i, b in enumerate(backbones):
        queues.setdefault(b, []).append(i)
    order: list[int] = []
    while any(queues.values()):
        for q in queues.values():
            if q:
                order.append(q.pop(0))
    return order


def merged_metrics(logits: np.ndarray, labels: np.ndarray, subset: Sequence[int]) -> dict[str, float]:
    """Metrics of the paper's merge (equal-weight logit mean) of the members in `subset`."""
    return binary_metrics(labels, logits[list(subset)].mean(0))


def summarise(scores: Sequence[dict[str, float]]) -> dict[str, float]:
    """Mean and (population) standard deviation of AUC and logloss over subsets."""
    auc = np.array([s["auc"] for s in scores])
    ll = np.array([s["logloss"] for s in scores])
    return {"auc": float(auc.mean()), "auc_std": float(auc.std()), "logloss": float(ll.mean()),
            "logloss_std": float(ll.std()), "subsets": len(scores)}


MERGE_KINDS = ("mean", "weighted", "selection")
SELECTION_ROUNDS = 50


def fit_merge(kind: str, logits: np.ndarray, labels: np.ndarray, *,
              rounds: int = SELECTION_ROUNDS) -> np.ndarray:
    """Member weights (float64 [M], >= 0, sum 1) for a logit-space merge, fitted on the validation split.

    mean: equal weights (the paper). weighted: the logloss-optimal point of the simplex (convex in the
    weights, solved by SLSQP with the exact gradient). selection: greedy ensemble selection with
    replacement (Caruana et al., 2004): start from the best single member, add the member that lowers
    validation logloss most, `rounds` times, keep the best bag seen; weights = pick counts / total.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if kind not in MERGE_KINDS:
        raise UserError(f"unknown merge {kind!r}; choose from {', '.join(MERGE_KINDS)}")
    if labels.ndim != 1 or logits.ndim != 2 or logits.shape[0] < 1 or logits.shape[1] != labels.shape[0]:
        raise UserError(f"fit_merge needs logits [M, N] and labels [N], got {logits.shape}, {labels.shape}")
    m = logits.shape[0]
    if kind == "mean" or m == 1:
        return np.full(m, 1.0 / m)
    if labels.size == 0 or not np.all((labels == 0) | (labels == 1)):
        raise UserError("fitting a merge needs validation labels that are all 0 or 1")
    if kind == "weighted":
        return _fit_weighted(logits, labels)
    return _fit_selection(logits, labels, max(1, rounds))


def merged_logits(weights: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """The merged logit of every row: weights @ logits."""
    return np.asarray(weights, dtype=np.float64) @ np.asarray(logits, dtype=np.float64)


def _logloss(z: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of sigmoid(z), stable for large |z|."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def _fit_weighted(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    from scipy.optimize import minimize
    from scipy.special import expit

    m, n = logits.shape

    def loss_grad(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = w @ logits
        return _logloss(z, labels), logits @ (expit(z) - labels) / n

    start = np.full(m, 1.0 / m)
    best = min((np.eye(m)[i] for i in range(m)), key=lambda w: loss_grad(w)[0])
    res = minimize(loss_grad, start, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * m,
                   constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0, "jac": lambda w: np.ones(m)}],
                   options={"maxiter": 200, "ftol": 1e-10})
    w = np.clip(res.x, 0.0, None)
    w = w / w.sum() if w.sum() > 0 else start
    # The problem is convex, but never return something worse than the best vertex or the plain mean.
    return min((w, best, start), key=lambda c: loss_grad(c)[0])


def _fit_selection(logits: np.ndarray, labels: np.ndarray, rounds: int) -> np.ndarray:
    m = logits.shape[0]
    singles = [_logloss(row, labels) for row in logits]
    counts = np.zeros(m)
    first = int(np.argmin(singles))
    counts[first] = 1
    total = logits[first].copy()
    best_counts, best_loss = counts.copy(), singles[first]
    for k in range(2, rounds + 2):
        losses = [_logloss((total + logits[i]) / k, labels) for i in range(m)]
        pick = int(np.argmin(losses))
        counts[pick] += 1
        total += logits[pick]
        if losses[pick] < best_loss - 1e-12:
            best_counts, best_loss = counts.copy(), losses[pick]
    return best_counts / best_counts.sum()
