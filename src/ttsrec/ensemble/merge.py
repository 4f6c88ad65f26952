"""Merge kinds and member weights: the merged logit of a row is `weights @ logits` (logit space, as in
the paper). `mean` is the paper's equal weights; `weighted` and `selection` are fitted on the
validation split only. `tts-eval` scores them and `tts-export --merge` writes the same weights into
the served merge steps and fused graphs."""

from __future__ import annotations

import numpy as np

from ttsrec.ensemble.calibration import logit_logloss, platt_fit
from ttsrec.errors import UserError

MERGE_KINDS = ("mean", "weighted", "selection")
SELECTION_ROUNDS = 25


def fit_merge(kind: str, logits: np.ndarray, labels: np.ndarray, *,
              rounds: int = SELECTION_ROUNDS) -> np.ndarray:
    """Member weights (float64 [M], >= 0, sum 1) for a logit-space merge, fitted on the validation split.

    mean: equal weights (the paper). weighted: non-negative weights fitted by logloss. selection: greedy
    ensemble selection with replacement (Caruana et al., 2004) by validation logloss: start from the best
    single member, add the member that lowers the bag's loss most, `rounds` times, keep the best bag seen;
    weights = pick counts / total.

    Both fits score a merge by its *calibrated* logloss, min over a, b of logloss(a * merged + b): briefly
    trained members are often under-confident by different amounts, and a raw logloss would then pick the
    member with the widest logits rather than the mix that ranks best (averaging narrows logits). The
    scale and offset are fitting aids only; the merge stays the weighted mean of logits (AUC is unchanged
    by them). `weighted` is then a convex problem: non-negative logistic regression on the member logits
    (u >= 0, intercept b), solved by L-BFGS-B; the weights are u / sum(u).
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


def calibrated_logloss(z: np.ndarray, y: np.ndarray, iterations: int = 10) -> float:
    """min over (a, b) of logloss(a * z + b): Platt scaling's loss (`ensemble.calibration`)."""
    return platt_fit(z, y, iterations=iterations, min_step=1e-4)[2]


def _fit_weighted(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    from scipy.optimize import minimize
    from scipy.special import expit

    m, n = logits.shape

    def loss_grad(x: np.ndarray) -> tuple[float, np.ndarray]:
        z = x[:m] @ logits + x[m]
        r = expit(z) - labels
        return logit_logloss(z, labels), np.append(logits @ r / n, r.mean())

    start = np.append(np.full(m, 1.0 / m), 0.0)
    res = minimize(loss_grad, start, jac=True, method="L-BFGS-B", bounds=[(0.0, None)] * m + [(None, None)],
                   options={"maxiter": 500, "ftol": 1e-13, "gtol": 1e-10})
    u = np.clip(res.x[:m], 0.0, None)
    candidates = [np.full(m, 1.0 / m), *np.eye(m)]
    if u.sum() > 0:
        candidates.insert(0, u / u.sum())
    # Convex, but never hand back something worse than a single member or the plain mean.
    return min(candidates, key=lambda w: calibrated_logloss(w @ logits, labels))


def _fit_selection(logits: np.ndarray, labels: np.ndarray, rounds: int) -> np.ndarray:
    m = logits.shape[0]
    singles = [calibrated_logloss(row, labels) for row in logits]
    counts = np.zeros(m)
    first = int(np.argmin(singles))
    counts[first] = 1
    total = logits[first].copy()
    best_counts, best_loss = counts.copy(), singles[first]
    for k in range(2, rounds + 2):
        losses = [calibrated_logloss((total + logits[i]) / k, labels) for i in range(m)]
        pick = int(np.argmin(losses))
        counts[pick] += 1
        total += logits[pick]
        if losses[pick] < best_loss - 1e-12:
            best_counts, best_loss = counts.copy(), losses[pick]
    return best_counts / best_counts.sum()
