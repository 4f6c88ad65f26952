"""`cascade_mM` in a repository (`tts-export --cascade`): the first M members in stages as one ONNX graph
that only runs a stage's members on the rows the earlier stages did not settle.

Per M >= 2 the cascade is fitted on the shipped members' onnxruntime logits of the validation split
(`ttsrec.ensemble.cascade.fit_cascade`: the rule and threshold with the fewest members per row within
1e-4 validation AUC of the full merge), with the repository's merge weights. Two gates on the test
split before anything is written: the graph equals the in-process cascade
(`cascade_inprocess`: member sessions on the surviving rows) bit for bit, logits and members used, in
the chunks the gate sends; and its test AUC is within `max_auc_drop` of the full M-member merge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnxruntime as ort
from tritonclient.grpc import model_config_pb2 as pb

from ttsrec.ensemble.cascade import (
    Cascade,
    CascadeFit,
    cascade_inprocess,
    cascade_onnx,
    fit_cascade,
    prefix_merge,
)
from ttsrec.ensemble.metrics import binary_metrics
from ttsrec.ensemble.session import ort_session, session_logits
from ttsrec.errors import UserError
from ttsrec.export.job import Draft, Labelled, Member, Record
from ttsrec.repository import naming
from ttsrec.repository.config import Tensor, onnx_model_config, set_parameters, write_config
from ttsrec.repository.graphs import onnx_file

OUTPUTS = (naming.LOGIT, naming.PROB, naming.MEMBERS_USED)


@dataclass
class Cascades:
    """The `--cascade` artefact (`ttsrec.export.job.Artefact`): one gated `cascade_mM` per M >= 2."""

    test: Labelled
    """Labelled test rows the gates score."""
    manifest_key: ClassVar[str] = "cascades"

    def steps(self, ms: Sequence[int]) -> int:
        return sum(m >= 2 for m in ms)

    def write(self, draft: Draft) -> list[Record]:
        """One `cascade_mM` per M >= 2 of the draft's M list, gated; returns their manifest records."""
        job = draft.job
        if job.validation is None:
            raise UserError("--cascade needs the prepared data (--data DIR): it is fitted on the validation "
                            "split and gated on the test split")
        valid_ids, valid_labels = job.validation
        test_ids, _ = self.test
        sessions = [ort_session(onnx_file(draft.root / m.name / naming.VERSION)) for m in draft.members]
        valid = np.stack([session_logits(s, valid_ids) for s in sessions])
        test = np.stack([session_logits(s, test_ids) for s in sessions])
        records = []
        for m in [m for m in draft.ms if m >= 2]:
            job.step(naming.cascade_name(m))
            fit = fit_cascade(valid[:m], valid_labels, weights=draft.weights(m))
            records.append(self._write_one(draft, draft.members[:m], fit, sessions[:m], test[:m]))
            job.done()
        return records

    def _write_one(self, draft: Draft, members: list[Member], fit: CascadeFit,
                   sessions: list[ort.InferenceSession], test: np.ndarray) -> Record:
        """`cascade_mM` for the first M members: written, gated (equal to in-process, AUC near the full
        merge) and configured."""
        job, m = draft.job, len(members)
        name = naming.cascade_name(m)
        test_ids, test_labels = self.test
        cascade = fit.cascade
        path = job.write_onnx(draft.root, name, cascade_onnx([x.proto for x in members], cascade, name=name))
        served, used = _run_graph(path, test_ids, job.serving.max_batch_size)
        expected, expected_used = _inprocess(sessions, test_ids, cascade, job.serving.max_batch_size)
        if not (np.array_equal(served, expected) and np.array_equal(used, expected_used)):
            differ = int(np.sum((served != expected) | (used != expected_used)))
            raise UserError(f"{name}: the graph differs from the in-process cascade on {differ} of "
                            f"{len(test_ids)} test rows")
        full = binary_metrics(test_labels, prefix_merge(test, cascade))
        got = binary_metrics(test_labels, served)
        if full["auc"] - got["auc"] > job.max_auc_drop:
            drop = full["auc"] - got["auc"]
            raise UserError(f"{name}: test AUC {got['auc']:.5f} is {drop:.1e} below the full M={m} merge's "
                            f"{full['auc']:.5f} (limit {job.max_auc_drop:g}, --max-auc-drop)")
        params = {**job.parameters(members), "cascade_rule": cascade.rule,
                  "cascade_threshold": repr(float(cascade.threshold)),
                  "cascade_stages": ",".join(map(str, cascade.stages))}
        feat_ids = Tensor(naming.FEAT_IDS, pb.TYPE_INT64, (job.feature_map.width,))
        config = onnx_model_config(name, [feat_ids], [Tensor(o, pb.TYPE_FP32, (1,)) for o in OUTPUTS],
                                   job.serving.fused)
        write_config(draft.root / name, set_parameters(config, params))
        return {"name": name, "m": m, "members": [x.name for x in members], "outputs": list(OUTPUTS),
                "rule": cascade.rule, "threshold": float(cascade.threshold), "stages": list(cascade.stages),
                "valid_members_per_row": float(fit.rules[cascade.rule].avg_members),
                "test_members_per_row": float(used.mean()),
                "reason": fit.reason, "cascade": cascade.to_dict(),
                "gate": {"split": "test", "rows": len(test_ids), "equal_to_inprocess": True,
                         "auc": got["auc"], "logloss": got["logloss"], "auc_full": full["auc"],
                         "logloss_full": full["logloss"], "auc_change": got["auc"] - full["auc"]}}


def _run_graph(path: Path, ids: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    session = ort_session(path, intra_op_threads=2)
    logits, used = [], []
    for i in range(0, len(ids), chunk):
        logit, count = session.run([naming.LOGIT, naming.MEMBERS_USED], {naming.FEAT_IDS: ids[i:i + chunk]})
        logits.append(logit.reshape(-1))
        used.append(count.reshape(-1).astype(np.int64))
    return np.concatenate(logits), np.concatenate(used)


def _inprocess(sessions: list[ort.InferenceSession], ids: np.ndarray, cascade: Cascade,
               chunk: int) -> tuple[np.ndarray, np.ndarray]:
    parts = [cascade_inprocess(sessions, ids[i:i + chunk], cascade) for i in range(0, len(ids), chunk)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
