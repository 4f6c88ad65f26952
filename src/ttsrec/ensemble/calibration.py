"""Platt scaling, the one home: (a, b) minimising the logloss of sigmoid(a * logit + b). The merge fits
score candidate merges by this calibrated loss, and distillation calibrates its teacher with it."""

from __future__ import annotations

import numpy as np
from scipy.special import expit


def logit_logloss(z: np.ndarray, y: np.ndarray) -> float:
    """Mean binary cross-entropy of sigmoid(z), stable for large |z|."""
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def platt_fit(logits: np.ndarray, labels: np.ndarray, *, iterations: int = 50,
              min_step: float = 1e-6) -> tuple[float, float, float]:
    """(a, b, loss) by Newton steps with step halving, so the loss never rises; a least-squares solve
    keeps a singular Hessian (constant logits) from failing. Stops when no halved step lowers the loss
    (down to `min_step`) or the step is negligible."""
    z, y = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    a, b = 1.0, 0.0
    loss = logit_logloss(z, y)
    for _ in range(iterations):
        p = expit(a * z + b)
        r, h = p - y, np.maximum(p * (1 - p), 1e-12)
        grad = np.array([np.mean(r * z), np.mean(r)])
        hess = np.array([[np.mean(h * z * z), np.mean(h * z)], [np.mean(h * z), np.mean(h)]])
        step = np.linalg.lstsq(hess + 1e-9 * np.eye(2), grad, rcond=None)[0]
        t = 1.0
        while t > min_step:
            trial = logit_logloss((a - t * step[0]) * z + (b - t * step[1]), y)
            if trial <= loss:
                break
            t /= 2
        if t <= min_step:
            break
        a, b, gain, loss = a - t * step[0], b - t * step[1], loss - trial, trial
        if np.abs(t * step).max() < 1e-9 or gain < 1e-12:
            break
    return float(a), float(b), loss
