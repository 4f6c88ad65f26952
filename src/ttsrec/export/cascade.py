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

from typing import TYPE_CHECKING, Any

import numpy as np
from tritonclient.grpc import model_config_pb2 as pb

from ttsrec.ensemble.cascade import cascade_inprocess, cascade_onnx, fit_cascade, prefix_merge
from ttsrec.ensemble.metrics import binary_metrics
from ttsrec.ensemble.session import ort_session, session_logits
from ttsrec.errors import UserError
from ttsrec.repository import naming
from ttsrec.repository.config import Tensor, onnx_model_config, set_parameters, write_config
from ttsrec.repository.graphs import onnx_file

if TYPE_CHECKING:
    from pathlib import Path

    from ttsrec.export.assemble import Job, Member

OUTPUTS = (naming.LOGIT, naming.PROB, naming.MEMBERS_USED)


def write_cascades(root: Path, members: list[Member], ms: list[int], job: Job,
                   fits: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """One `cascade_mM` per M >= 2 of `ms`, gated; returns their manifest records."""
    from ttsrec.export.assemble import _write_onnx_model

    if job.validation is None or job.cascade_test is None:
        raise UserError("--cascade needs the prepared data (--data DIR): it is fitted on the validation "
                        "split and gated on the test split")
    valid_ids, valid_labels = job.validation
    test_ids, test_labels = job.cascade_test
    sessions = [ort_session(onnx_file(root / m.name / naming.VERSION)) for m in members]
    valid = np.stack([session_logits(s, valid_ids) for s in sessions])
    test = np.stack([session_logits(s, test_ids) for s in sessions])
    records = []
    for m in [m for m in ms if m >= 2]:
        name = naming.cascade_name(m)
        job.step(name)
        weights = fits[m]["weights"] if fits else None
        fit = fit_cascade(valid[:m], valid_labels, weights=weights)
        cascade = fit.cascade
        path = _write_onnx_model(root, name, cascade_onnx([x.proto for x in members[:m]], cascade, name=name),
                                 job)
        served, used = _run_graph(path, test_ids, job.serving.max_batch_size)
        expected, expected_used = _inprocess(sessions[:m], test_ids, cascade, job.serving.max_batch_size)
        if not (np.array_equal(served, expected) and np.array_equal(used, expected_used)):
            differ = int(np.sum((served != expected) | (used != expected_used)))
            raise UserError(f"{name}: the graph differs from the in-process cascade on {differ} of "
                            f"{len(test_ids)} test rows")
        full = binary_metrics(test_labels, prefix_merge(test[:m], cascade))
        got = binary_metrics(test_labels, served)
        if full["auc"] - got["auc"] > job.max_auc_drop:
            drop = full["auc"] - got["auc"]
            raise UserError(f"{name}: test AUC {got['auc']:.5f} is {drop:.1e} below the full M={m} merge's "
                            f"{full['auc']:.5f} (limit {job.max_auc_drop:g}, --max-auc-drop)")
        summary = {"rule": cascade.rule, "threshold": float(cascade.threshold),
                   "stages": list(cascade.stages),
                   "valid_members_per_row": float(fit.rules[cascade.rule].avg_members),
                   "test_members_per_row": float(used.mean())}
        params = {**job.parameters(members[:m]), "cascade_rule": cascade.rule,
                  "cascade_threshold": repr(float(cascade.threshold)),
                  "cascade_stages": ",".join(map(str, cascade.stages))}
        config = onnx_model_config(name, [Tensor(naming.FEAT_IDS, pb.TYPE_INT64,
                                                 (job.feature_map.num_fields,))],
                                   [Tensor(o, pb.TYPE_FP32, (1,)) for o in OUTPUTS], job.serving.fused)
        write_config(root / name, set_parameters(config, params))
        records.append({"name": name, "m": m, "members": [x.name for x in members[:m]],
                        "outputs": list(OUTPUTS),
                        **summary, "reason": fit.reason, "cascade": cascade.to_dict(),
                        "gate": {"split": "test", "rows": len(test_ids), "equal_to_inprocess": True,
                                 "auc": got["auc"], "logloss": got["logloss"], "auc_full": full["auc"],
                                 "logloss_full": full["logloss"], "auc_change": got["auc"] - full["auc"]}})
        job.done()
    return records


def _run_graph(path: Path, ids: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    session = ort_session(path, intra_op_threads=2)
    logits, used = [], []
    for i in range(0, len(ids), chunk):
        logit, count = session.run([naming.LOGIT, naming.MEMBERS_USED], {naming.FEAT_IDS: ids[i:i + chunk]})
        logits.append(logit.reshape(-1))
        used.append(count.reshape(-1).astype(np.int64))
    return np.concatenate(logits), np.concatenate(used)


def _inprocess(sessions: list[Any], ids: np.ndarray, cascade: Any, chunk: int) -> tuple[np.ndarray,
                                                                                        np.ndarray]:
    parts = [cascade_inprocess(sessions, ids[i:i + chunk], cascade) for i in range(0, len(ids), chunk)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
