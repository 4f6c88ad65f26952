"""Small pieces every stage needs, in one place: flag-list parsing, usable cores, the sigmoid."""

from __future__ import annotations

import os

import numpy as np

from ttsrec.errors import UserError


def parse_int_list(text: str | None, what: str, *, positive: bool = True) -> list[int] | None:
    """`"1,2,4"` -> [1, 2, 4] (duplicates dropped, order kept); None for an empty or missing text.

    A one-line `UserError` naming `what` (a flag or field) for anything else.
    """
    if text is None or not str(text).strip():
        return None
    try:
        values = [int(v) for v in str(text).replace(" ", "").split(",") if v]
    except ValueError:
        raise UserError(f"{what}: expected comma-separated integers, got {text!r}") from None
    if positive and any(v < 1 for v in values):
        raise UserError(f"{what}: expected positive integers, got {text!r}")
    return list(dict.fromkeys(values))


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def sigmoid(logit: np.ndarray) -> np.ndarray:
    """float32 probabilities, computed in float64 so large logits neither overflow nor round to 1 early."""
    return (1.0 / (1.0 + np.exp(-np.asarray(logit, dtype=np.float64)))).astype(np.float32)
