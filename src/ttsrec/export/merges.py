"""The merge steps, ensembles and fused graphs of a repository: per M, weights fitted on the validation
split (`--merge weighted|selection`), `merge_<kind>_mM` + `ensemble_mM`, and `fused_mM`, each checked
against the shipped members' logits before it is configured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as pb

from ttsrec.ensemble.merge import fit_merge
from ttsrec.ensemble.metrics import binary_metrics
from ttsrec.ensemble.session import ort_session
from ttsrec.export import gate, parity
from ttsrec.export.job import Job, Member, MergeFits, Record
from ttsrec.export.members import graph_logits
from ttsrec.export.records import onnx_record
from ttsrec.repository import naming
from ttsrec.repository.config import (
    Tensor,
    ensemble_config,
    onnx_model_config,
    set_parameters,
    write_config,
)
from ttsrec.repository.graphs import MergeKind, fused_graph, merge_graph, merge_outputs, onnx_file


def fit_merges(root: Path, members: list[Member], ms: list[int], job: Job) -> MergeFits:
    """Per M, member weights fitted on the shipped members' validation logits, with the validation
    AUC and logloss of the plain mean and of the fitted merge."""
    assert job.validation is not None
    ids, labels = job.validation
    logits = np.stack([graph_logits(onnx_file(root / m.name / naming.VERSION), ids).ravel() for m in members])
    fits = {}
    for m in ms:
        weights = fit_merge(job.merge, logits[:m], labels)
        mean = binary_metrics(labels, logits[:m].mean(axis=0))
        fitted = binary_metrics(labels, weights @ logits[:m])
        fits[m] = {"weights": [float(w) for w in weights], "valid_auc_mean": mean["auc"],
                   "valid_auc": fitted["auc"], "valid_logloss_mean": mean["logloss"],
                   "valid_logloss": fitted["logloss"]}
    return fits


def write_ensemble(root: Path, members: list[Member], kind: MergeKind, name: str, merge: str,
                    job: Job, params: dict[str, object], weights: list[float] | None) -> Record:
    """The merge model (checked on the members' logits) and the ensemble that wires members into it."""
    outputs = merge_outputs(kind)
    inputs = [naming.merge_input(k) for k in range(len(members))]
    path = job.write_onnx(root, merge, merge_graph(len(members), kind, weights))
    session = ort_session(path)
    got = {b: session.run(list(outputs), {inputs[k]: m.logits[b] for k, m in enumerate(members)})
           for b in job.sample.batch_sizes}
    figures = check_merge(merge, kind, members, got, parity.FP32, weights)
    fp32 = [Tensor(o, pb.TYPE_FP32, (1,)) for o in outputs]
    write_config(root / merge, onnx_model_config(merge, [Tensor(i, pb.TYPE_FP32, (1,)) for i in inputs], fp32,
                                                 job.serving))
    write_config(root / name, set_parameters(ensemble_config(
        name, num_fields=job.feature_map.width, max_batch_size=job.serving.max_batch_size,
        members=[m.step for m in members], merge_model=merge, merge_inputs=inputs, outputs=outputs), params))
    (root / name / naming.VERSION).mkdir()
    return {"name": name, "m": len(members), "kind": kind, "members": [m.name for m in members],
            "merge": merge, "outputs": list(outputs), "merge_parity": figures,
            **({} if weights is None else {"weights": weights})}


def write_fused(root: Path, members: list[Member], kind: MergeKind, name: str, job: Job,
                 params: dict[str, object], weights: list[float] | None) -> Record:
    """All members and the merge in one graph, gated against the members' mean (or sum); in reduced
    precision also scored against the fp32 members' mean on the gate's rows."""
    graph = fused_graph([m.proto for m in members], kind, weights)
    path = job.write_onnx(root, name, graph)
    outputs = merge_outputs(kind)
    session = ort_session(path)
    got = {b: session.run(list(outputs), {naming.FEAT_IDS: ids}) for b, ids in job.sample.batches().items()}
    tol = job.tolerance
    if kind == "sum":  # a sum of M logits carries M times the members' absolute error
        tol = parity.Tolerance(tol.rtol, tol.atol * len(members))
    figures = check_merge(name, kind, members, got, tol, weights)
    record = {"name": name, "m": len(members), "kind": kind, "members": [m.name for m in members],
              "outputs": list(outputs), "onnx": onnx_record(root, path, graph), "parity": figures,
              **({} if weights is None else {"weights": weights})}
    if job.gate is not None:
        reference = np.average([m.gate_fp32 for m in members], axis=0, weights=weights)
        scale = len(members) if kind == "sum" else 1  # a shard's sum ranks as its mean does
        record["gate"] = gate.score(reference * scale, graph_logits(path, job.gate.ids), job.gate.labels)
        gate.check([(name, record["gate"])], job.gate, job.precision)
    write_config(root / name, set_parameters(onnx_model_config(
        name, [Tensor(naming.FEAT_IDS, pb.TYPE_INT64, (job.feature_map.width,))],
        [Tensor(o, pb.TYPE_FP32, (1,)) for o in outputs], job.serving.fused), params))
    return record


def check_merge(name: str, kind: MergeKind, members: list[Member], got: dict[int, list[np.ndarray]],
                 tol: parity.Tolerance, weights: list[float] | None = None) -> Record:
    """First output = (weighted) mean or sum of the members' logits; `prob` = its sigmoid;
    `member_count` = M on every row, exactly."""
    per_member = [m.logits for m in members]
    if weights is not None:
        expected = {b: np.average([m[b] for m in per_member], axis=0, weights=weights).astype(np.float32)
                    for b in per_member[0]}
    else:
        expected = parity.mean_logits(per_member) if kind == "mean" else parity.sum_logits(per_member)
    first, second = merge_outputs(kind)
    figures = parity.compare(name, expected, {b: r[0] for b, r in got.items()}, tol, first)
    if kind == "mean":
        parity.compare(name, parity.sigmoid(expected), {b: r[1] for b, r in got.items()}, tol, second)
    else:
        counts = {b: np.full_like(x, len(members)) for b, x in expected.items()}
        parity.compare(name, counts, {b: r[1] for b, r in got.items()}, parity.Tolerance(0, 0), second)
    return figures
