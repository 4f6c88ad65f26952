"""One member into a repository: exported in fp32, gated against its checkpoint, reduced to the export's
precision (scored against the fp32 graph on the accuracy gate's rows), written and configured."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from tritonclient.grpc import model_config_pb2 as pb

from ttsrec.ensemble.session import ort_session, session_logits
from ttsrec.export import gate, parity
from ttsrec.export.job import Job, Member
from ttsrec.export.onnx_member import export_member_onnx
from ttsrec.export.precision import reduce_precision
from ttsrec.export.records import cost_record, onnx_record
from ttsrec.repository.config import Tensor, onnx_model_config, write_config


def write_member(root: Path, member: Member, job: Job) -> None:
    """Export, gate, write and configure one member; fills its `proto`, `logits`, gate figures and record."""
    job.step(member.name)
    model = member.loaded.model
    exported = export_member_onnx(model, job.workdir / f"{member.name}.onnx", opset=job.opset)
    fp32 = onnx.load(exported)
    member.logits = parity.torch_logits(model, job.sample)
    output = fp32.graph.output[0].name
    figures = parity.compare(member.name, member.logits, parity.onnx_outputs(exported, job.sample, output),
                             parity.FP32)
    member.proto = reduce_precision(fp32, job.precision, int8_mode=job.int8_mode, calibration=job.calibration)
    path = job.write_onnx(root, member.name, member.proto)
    step = member.step
    if job.gate is not None:  # merges and fused graphs are checked against what ships
        member.logits = parity.onnx_outputs(path, job.sample, step.output)
        member.gate_fp32 = graph_logits(exported, job.gate.ids)
        member.gate_figures = gate.score(member.gate_fp32, graph_logits(path, job.gate.ids), job.gate.labels)
    inputs = [Tensor(step.input, pb.TYPE_INT64, (job.feature_map.width,))]  # list fields: max_len columns
    outputs = [Tensor(step.output, pb.TYPE_FP32, (1,))]
    write_config(root / member.name, onnx_model_config(member.name, inputs, outputs, job.serving))
    onnx_entry = onnx_record(root, path, member.proto)
    member.weight_bytes = onnx_entry["bytes"]
    lm = member.loaded
    member.record = {
        "name": member.name, "position": member.position, "backbone": lm.backbone, "seed": lm.seed,
        "checkpoint": str(lm.path.resolve()), "checkpoint_sha256": lm.sha256,
        "feature_map_hash": lm.feature_map_hash, "hparams": lm.hparams, "metrics": lm.metrics,
        "cost": cost_record(model), "onnx": onnx_entry, "parity": figures,
        **({} if member.gate_figures is None else {"gate": member.gate_figures}),
    }
    job.done()


def graph_logits(path: Path, ids: np.ndarray) -> np.ndarray:
    """Logits [N, 1] of a graph with one int64 input on `ids`, first output, in chunks."""
    return session_logits(ort_session(path, intra_op_threads=2), ids).reshape(-1, 1)
