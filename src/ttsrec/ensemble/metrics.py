"""Binary CTR metrics of a logit vector: what training's early stopping, `tts-eval`, the export's
accuracy gate and the bench's served-accuracy check all report."""

from __future__ import annotations

import numpy as np
from scipy.special import expit
from sklearn.metrics import log_loss, roc_auc_score

from ttsrec.errors import UserError


def binary_metrics(labels: np.ndarray, logits: np.ndarray) -> dict[str, float]:
    """AUC and logloss of sigmoid(logits), in float64 as scikit-learn expects."""
    labels = np.asarray(labels, dtype=np.float64)
    if labels.size == 0 or labels.min() == labels.max():
        raise UserError("AUC needs both clicks and non-clicks in the evaluated split")
    probs = expit(np.asarray(logits, dtype=np.float64))
    return {"auc": float(roc_auc_score(labels, probs)),
            "logloss": float(log_loss(labels, probs, labels=[0, 1]))}
