"""Binary CTR metrics and batched inference, shared by training (early stopping) and `tts-eval`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

EVAL_BATCH_SIZE = 16384


@torch.inference_mode()
def predict_logits(models: Sequence[nn.Module], data, split: str, *,
                   batch_size: int = EVAL_BATCH_SIZE, limit: int | None = None) -> np.ndarray:
    """Raw logits of every model on one split, `float32 [len(models), N]`, in the split's row order.

    One pass over the data serves all models; training mode is restored afterwards.
    """
    from ttsrec.data.loader import iter_batches

    modes = [m.training for m in models]
    for m in models:
        m.eval()
    chunks: list[np.ndarray] = []
    device = next(models[0].parameters()).device if models else torch.device("cpu")
    for feat_ids, _ in iter_batches(data, split, batch_size, shuffle=False, limit=limit):
        feat_ids = feat_ids.to(device)
        chunks.append(torch.cat([m(feat_ids).reshape(1, -1) for m in models]).float().cpu().numpy())
    for m, mode in zip(models, modes, strict=True):
        m.train(mode)
    if not chunks:
        return np.zeros((len(models), 0), dtype=np.float32)
    return np.concatenate(chunks, axis=1)


def split_labels(data, split: str, limit: int | None = None) -> np.ndarray:
    """Labels of a split as float64, truncated like `predict_logits(limit=...)`."""
    labels = np.asarray(data.labels(split), dtype=np.float64)
    return labels[:limit] if limit is not None else labels
