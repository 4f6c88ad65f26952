"""One repository folder: members (exported, gated, configured), merge steps, ensembles, fused
graphs, feature map and manifest. `writer.export_repository` calls it once, or once per shard."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from tritonclient.grpc import model_config_pb2 as pb

from ttsrec.data.feature_map import FeatureMap
from ttsrec.ensemble.session import ort_session, session_logits
from ttsrec.export import gate, parity
from ttsrec.export.onnx_member import export_member_onnx
from ttsrec.export.precision import Int8Mode, Precision, reduce_precision
from ttsrec.export.records import cost_record, file_hashes, onnx_record
from ttsrec.models.checkpoint import LoadedMember
from ttsrec.repository import naming
from ttsrec.repository.config import (
    Serving,
    Step,
    Tensor,
    ensemble_config,
    onnx_model_config,
    set_parameters,
    write_config,
)
from ttsrec.repository.graphs import MergeKind, fused_graph, merge_graph, merge_outputs, save_onnx
from ttsrec.repository.manifest import FORMAT, library_versions
from ttsrec.utils.atomic import write_json
from ttsrec.utils.report import Task

Logits = dict[int, np.ndarray]
REPOSITORY_README = resources.files("ttsrec.repository") / "repository_readme.md"
"""Every repository explains its own layout (and the source tree's model_repository/README.md is it)."""


@dataclass
class Member:
    """One member on its way into a repository; `proto` and `logits` feed the merges and fused graphs."""

    position: int
    loaded: LoadedMember
    name: str
    proto: onnx.ModelProto = field(default_factory=onnx.ModelProto)
    logits: Logits = field(default_factory=dict)
    """What the shipped graph gives on the parity batches (PyTorch's logits in fp32)."""
    gate_fp32: np.ndarray | None = None
    """The fp32 graph's logits on the accuracy gate's rows (reduced precision only)."""
    record: dict[str, Any] = field(default_factory=dict)

    @property
    def step(self) -> Step:
        return Step(self.name, self.proto.graph.input[0].name, self.proto.graph.output[0].name)


@dataclass
class Job:
    """What every repository of one export shares."""

    feature_map: FeatureMap
    serving: Serving
    sample: parity.ParitySample
    precision: Precision
    int8_mode: Int8Mode
    gate: gate.GateRows | None
    calibration: np.ndarray | None
    export_id: str
    merge: str
    """mean (the paper), or weighted / selection: member weights fitted on the validation split."""
    validation: tuple[np.ndarray, np.ndarray] | None
    """Validation ids and labels the fitted merges learn from (None for mean)."""
    fused: bool
    opset: int
    workdir: Path
    task: Task
    """The export's progress bar (a silent one without a reporter)."""
    raw: Any = None
    """`ttsrec.export.raw.RawPlan` with --raw-inputs: also write raw_encode, raw_ensemble_mM, raw_fused_mM."""
    cascade_test: tuple[np.ndarray, np.ndarray] | None = None
    """With --cascade: labelled test rows the `cascade_mM` gates score (then also write them)."""
    max_auc_drop: float = 5e-4

    @property
    def tolerance(self) -> parity.Tolerance:
        """Fused graphs and merges against the shipped members' logits (fp32: PyTorch's)."""
        return parity.FP32 if self.precision == "fp32" else parity.REDUCED

    def parameters(self, members: list[Member]) -> dict[str, object]:
        """The `ttsrec.*` config parameters of an ensemble, fused graph or shard (the contract)."""
        return {"export_id": self.export_id, "feature_map_hash": self.feature_map.hash,
                "precision": self.precision, "merge": self.merge,
                "members": ",".join(m.name for m in members),
                "weight_bytes": sum(m.record["onnx"]["bytes"] for m in members)}

    def step(self, description: str) -> None:
        self.task.update(description=description)

    def done(self) -> None:
        self.task.update(advance=1)


def write_repository(root: Path, members: list[Member], ms: list[int], job: Job,
                     common: dict[str, Any]) -> None:
    """Members, then per M a merge + ensemble (+ fused graph); a shard gets one `shard_sum` instead."""
    root.mkdir(parents=True, exist_ok=True)
    job.feature_map.save(root / naming.FEATURE_MAP_FILE)
    (root / "README.md").write_text(REPOSITORY_README.read_text())
    for member in members:
        _write_member(root, member, job)
    if job.gate is not None:
        gate.check([(m.name, m.record["gate"]) for m in members], job.gate, job.precision)
    shard = common.get("shard")
    fits = _fit_merges(root, members, ms, job) if job.merge != "mean" else {}
    if shard is not None:
        k = len(members)
        plans = [(members, "sum", naming.SHARD_ENSEMBLE, naming.merge_sum_name(k), naming.FUSED_SUM, None)]
    else:
        plans = [(members[:m], "mean", naming.ensemble_name(m), naming.merge_name(m, job.merge),
                  naming.fused_name(m), fits[m]["weights"] if fits else None) for m in ms]
    ensembles, fused = [], []
    for group, kind, ensemble, merge, fused_name, weights in plans:
        job.step(ensemble)
        params = job.parameters(group)
        if shard is not None:
            params.update(shard_index=shard["index"], shard_count=shard["count"])
        ensembles.append(_write_ensemble(root, group, kind, ensemble, merge, job, params, weights))
        job.done()
        if job.fused:
            job.step(fused_name)
            fused.append(_write_fused(root, group, kind, fused_name, job, params, weights))
            job.done()
    cascades = []
    if job.cascade_test is not None and shard is None:
        from ttsrec.export.cascade import write_cascades

        cascades = write_cascades(root, members, ms, job, fits)
    raw = None
    if job.raw is not None and shard is None:
        from ttsrec.export.raw import write_raw_models

        raw = write_raw_models(root, members, ensembles, fused, job)
    write_json(root / naming.MANIFEST_FILE, {
        "format": FORMAT, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "export_id": job.export_id, "precision": job.precision, "merge": job.merge, **common,
        "num_fields": job.feature_map.num_fields, "feature_map_hash": job.feature_map.hash,
        "dataset_id": job.feature_map.dataset_id, "m_list": ms, "members": [m.record for m in members],
        "ensembles": ensembles, "fused": fused, "versions": library_versions(),
        **({"merge_fit": {"kind": job.merge, "split": "valid", "rows": len(job.validation[1]),
                          "per_m": {str(m): f for m, f in fits.items()}}} if fits and job.validation else {}),
        **({"raw": raw} if raw is not None else {}),
        **({"cascades": cascades} if cascades else {}),
        "files": file_hashes(root, skip=(naming.MANIFEST_FILE, "README.md")),
    })


def _write_member(root: Path, member: Member, job: Job) -> None:
    """Export one member in fp32 and gate it against its checkpoint; reduce its precision (scored
    against the fp32 graph on the gate's rows); write and configure it."""
    job.step(member.name)
    model = member.loaded.model
    exported = export_member_onnx(model, job.workdir / f"{member.name}.onnx", opset=job.opset)
    fp32 = onnx.load(exported)
    member.logits = parity.torch_logits(model, job.sample)
    output = fp32.graph.output[0].name
    figures = parity.compare(member.name, member.logits, parity.onnx_outputs(exported, job.sample, output),
                             parity.FP32)
    member.proto = reduce_precision(fp32, job.precision, int8_mode=job.int8_mode, calibration=job.calibration)
    path = _write_onnx_model(root, member.name, member.proto, job)
    step = member.step
    gate_figures = None
    if job.gate is not None:  # merges and fused graphs are checked against what ships
        member.logits = parity.onnx_outputs(path, job.sample, step.output)
        member.gate_fp32 = _run(exported, job.gate.ids)
        gate_figures = gate.score(member.gate_fp32, _run(path, job.gate.ids), job.gate.labels)
    num_fields = job.feature_map.num_fields
    inputs = [Tensor(step.input, pb.TYPE_INT64, (num_fields,))]
    outputs = [Tensor(step.output, pb.TYPE_FP32, (1,))]
    write_config(root / member.name, onnx_model_config(member.name, inputs, outputs, job.serving))
    lm = member.loaded
    member.record = {
        "name": member.name, "position": member.position, "backbone": lm.backbone, "seed": lm.seed,
        "checkpoint": str(lm.path.resolve()), "checkpoint_sha256": lm.sha256,
        "feature_map_hash": lm.feature_map_hash, "hparams": lm.hparams, "metrics": lm.metrics,
        "cost": cost_record(model), "onnx": onnx_record(root, path, member.proto), "parity": figures,
        **({} if gate_figures is None else {"gate": gate_figures}),
    }
    job.done()


def _run(path: Path, ids: np.ndarray) -> np.ndarray:
    """Logits [N, 1] of a graph with one int64 input on `ids`, first output, in chunks."""
    return session_logits(ort_session(path, intra_op_threads=2), ids).reshape(-1, 1)


def _fit_merges(root: Path, members: list[Member], ms: list[int], job: Job) -> dict[int, dict[str, Any]]:
    """Per M, member weights fitted on the shipped members' validation logits, with the validation
    AUC and logloss of the plain mean and of the fitted merge."""
    from ttsrec.ensemble.merge import fit_merge
    from ttsrec.ensemble.metrics import binary_metrics
    from ttsrec.repository.graphs import onnx_file

    assert job.validation is not None
    ids, labels = job.validation
    logits = np.stack([_run(onnx_file(root / m.name / naming.VERSION), ids).ravel() for m in members])
    fits = {}
    for m in ms:
        weights = fit_merge(job.merge, logits[:m], labels)
        mean = binary_metrics(labels, logits[:m].mean(axis=0))
        fitted = binary_metrics(labels, weights @ logits[:m])
        fits[m] = {"weights": [float(w) for w in weights], "valid_auc_mean": mean["auc"],
                   "valid_auc": fitted["auc"], "valid_logloss_mean": mean["logloss"],
                   "valid_logloss": fitted["logloss"]}
    return fits


def _write_ensemble(root: Path, members: list[Member], kind: MergeKind, name: str, merge: str,
                    job: Job, params: dict[str, object], weights: list[float] | None) -> dict[str, Any]:
    """The merge model (checked on the members' logits) and the ensemble that wires members into it."""
    outputs = merge_outputs(kind)
    inputs = [naming.merge_input(k) for k in range(len(members))]
    path = _write_onnx_model(root, merge, merge_graph(len(members), kind, weights), job)
    session = ort_session(path)
    got = {b: session.run(list(outputs), {inputs[k]: m.logits[b] for k, m in enumerate(members)})
           for b in job.sample.batch_sizes}
    figures = _check_merge(merge, kind, members, got, parity.FP32, weights)
    fp32 = [Tensor(o, pb.TYPE_FP32, (1,)) for o in outputs]
    write_config(root / merge, onnx_model_config(merge, [Tensor(i, pb.TYPE_FP32, (1,)) for i in inputs], fp32,
                                                 job.serving))
    write_config(root / name, set_parameters(ensemble_config(
        name, num_fields=job.feature_map.num_fields, max_batch_size=job.serving.max_batch_size,
        members=[m.step for m in members], merge_model=merge, merge_inputs=inputs, outputs=outputs), params))
    (root / name / naming.VERSION).mkdir()
    return {"name": name, "m": len(members), "kind": kind, "members": [m.name for m in members],
            "merge": merge, "outputs": list(outputs), "merge_parity": figures,
            **({} if weights is None else {"weights": weights})}


def _write_fused(root: Path, members: list[Member], kind: MergeKind, name: str, job: Job,
                 params: dict[str, object], weights: list[float] | None) -> dict[str, Any]:
    """All members and the merge in one graph, gated against the members' mean (or sum); in reduced
    precision also scored against the fp32 members' mean on the gate's rows."""
    graph = fused_graph([m.proto for m in members], kind, weights)
    path = _write_onnx_model(root, name, graph, job)
    outputs = merge_outputs(kind)
    session = ort_session(path)
    got = {b: session.run(list(outputs), {naming.FEAT_IDS: ids}) for b, ids in job.sample.batches().items()}
    tol = job.tolerance
    if kind == "sum":  # a sum of M logits carries M times the members' absolute error
        tol = parity.Tolerance(tol.rtol, tol.atol * len(members))
    figures = _check_merge(name, kind, members, got, tol, weights)
    record = {"name": name, "m": len(members), "kind": kind, "members": [m.name for m in members],
              "outputs": list(outputs), "onnx": onnx_record(root, path, graph), "parity": figures,
              **({} if weights is None else {"weights": weights})}
    if job.gate is not None:
        reference = np.average([m.gate_fp32 for m in members], axis=0, weights=weights)
        scale = len(members) if kind == "sum" else 1  # a shard's sum ranks as its mean does
        record["gate"] = gate.score(reference * scale, _run(path, job.gate.ids), job.gate.labels)
        gate.check([(name, record["gate"])], job.gate, job.precision)
    write_config(root / name, set_parameters(onnx_model_config(
        name, [Tensor(naming.FEAT_IDS, pb.TYPE_INT64, (job.feature_map.num_fields,))],
        [Tensor(o, pb.TYPE_FP32, (1,)) for o in outputs], job.serving.fused), params))
    return record


def _check_merge(name: str, kind: MergeKind, members: list[Member], got: dict[int, list[np.ndarray]],
                 tol: parity.Tolerance, weights: list[float] | None = None) -> dict[str, Any]:
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


def _write_onnx_model(root: Path, name: str, proto: onnx.ModelProto, job: Job) -> Path:
    """`name/1/model.onnx`, plus the generic python-backend `model.py` in the python flavour."""
    version_dir = root / name / naming.VERSION
    path = save_onnx(proto, version_dir)
    if job.serving.backend == "python":
        source = resources.files("ttsrec.repository").joinpath("triton_model.py").read_bytes()
        (version_dir / "model.py").write_bytes(source)
    return path
