"""The onnxruntime session every stage runs a member, merge or fused graph with (export's parity and
accuracy gates, the bench's in-process rows and roofline, the served-accuracy check)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from ttsrec.repository import naming


def ort_session(path: Path | str | bytes, intra_op_threads: int = 1) -> ort.InferenceSession:
    """A CPU session that does not spin: M sessions share the cores, and spinning threads fight."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3
    source = str(path) if isinstance(path, Path) else path
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def run_session(session: ort.InferenceSession, feat_ids: np.ndarray) -> np.ndarray:
    """Logits [B, 1] float32 of a member (or a fused graph) for int64 ids [B, F]."""
    ids = np.ascontiguousarray(feat_ids, dtype=np.int64)
    return session.run([naming.LOGIT], {naming.FEAT_IDS: ids})[0]


def session_logits(session: ort.InferenceSession, ids: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """First output of a graph with one int64 input over many rows, in chunks: float32 [N] (a member's
    logits on a split, say)."""
    name, output = session.get_inputs()[0].name, session.get_outputs()[0].name
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    parts = [session.run([output], {name: ids[i:i + chunk]})[0] for i in range(0, len(ids), chunk)]
    return np.concatenate(parts).reshape(-1) if parts else np.zeros(0, dtype=np.float32)
