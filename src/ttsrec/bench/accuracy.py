"""`--eval-data`: what each M buys, measured through the same served models the sweep timed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ttsrec.ensemble.metrics import auc, check_both_classes, logloss

EVAL_BATCH = 1024


def scores(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    probs = np.clip(np.asarray(probs, dtype=np.float64).reshape(-1), 1e-7, 1 - 1e-7)
    labels = np.asarray(labels).reshape(-1)
    check_both_classes(labels, "--eval-data: the evaluated rows hold a single class; AUC is undefined "
                       "(use more rows)")
    return {"auc": auc(labels, probs), "logloss": logloss(labels, probs)}


def evaluate_served(
    url: str, protocol: str, model: str, ids: np.ndarray, labels: np.ndarray
) -> dict[str, Any]:
    from ttsrec.client import Client

    client = Client(url, protocol=protocol, model=model)
    probs = [client.predict(ids[i : i + EVAL_BATCH])[0] for i in range(0, len(ids), EVAL_BATCH)]
    return {
        "model": model,
        "via": f"{protocol}://{url}",
        "rows": len(ids),
        **scores(labels, np.concatenate(probs)),
    }


def evaluate_served_records(
    url: str, protocol: str, model: str, records: list[dict[str, Any]], labels: np.ndarray
) -> dict[str, Any]:
    """`evaluate_served` for a raw model (`--raw`): the same rows as raw records, encoded by the server."""
    from ttsrec.client import Client

    with Client(url, protocol=protocol, model=model) as client:
        probs = [client.predict_records(records[i : i + EVAL_BATCH])[0]
                 for i in range(0, len(records), EVAL_BATCH)]
    return {
        "model": model,
        "via": f"{protocol}://{url} (raw records)",
        "rows": len(records),
        **scores(labels, np.concatenate(probs)),
    }


def evaluate_session(path: Path, ids: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    from ttsrec.ensemble.session import ort_session

    session = ort_session(path, intra_op_threads=1)
    probs = [
        session.run(["prob"], {"feat_ids": ids[i : i + EVAL_BATCH]})[0]
        for i in range(0, len(ids), EVAL_BATCH)
    ]
    return {
        "model": Path(path).parent.parent.name,
        "via": "onnxruntime in-process",
        "rows": len(ids),
        **scores(labels, np.concatenate(probs)),
    }
