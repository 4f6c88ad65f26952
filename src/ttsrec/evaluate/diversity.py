"""Diversity between members: Jensen-Shannon divergence of their predicted click distributions."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import expit

_EPS = 1e-12


def _entropy_bits(p: np.ndarray) -> np.ndarray:
    """Binary entropy in bits of Bernoulli(p), elementwise."""
    p = np.clip(p, _EPS, 1 - _EPS)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def js_matrix(logits: np.ndarray) -> np.ndarray:
    """`[n, n]` mean over rows of JS(Bernoulli(p_i) || Bernoulli(p_j)) in bits (0 = identical, 1 = max).

    JS = H((p + q) / 2) - (H(p) + H(q)) / 2 per row, then averaged over the rows of the split.
    """
    probs = expit(np.asarray(logits, dtype=np.float64))
    own = _entropy_bits(probs).mean(1)
    n = len(probs)
    out = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            mix = _entropy_bits((probs[i] + probs[j]) / 2).mean()
            out[i, j] = out[j, i] = max(0.0, mix - (own[i] + own[j]) / 2)
    return out


def mean_pairwise(matrix: np.ndarray, subset: Sequence[int] | None = None) -> float:
    """Mean off-diagonal entry (over the members of `subset`, all by default); 0 for a single member."""
    idx = list(range(len(matrix))) if subset is None else list(subset)
    if len(idx) < 2:
        return 0.0
    sub = matrix[np.ix_(idx, idx)]
    return float(sub.sum() / (len(idx) * (len(idx) - 1)))
