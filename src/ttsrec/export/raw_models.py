"""`tts-export --raw-inputs`: models that take the raw record and encode it inside the served graph.

Next to the id models (`ensemble_mM`, `fused_mM` on `feat_ids`) a repository then holds:

    raw_encode/        the encode graph (`ttsrec.export.encode_graph`): one input per field, named after
                       the field (TYPE_STRING or TYPE_FP32, dims [1]) -> feat_ids INT64 [F]
    raw_ensemble_mM/   ensemble: raw_encode -> the M member steps -> merge (the id ensemble's own
                       member and merge models)
    raw_fused_mM/      one ONNX graph: the encode graph in front of fused_mM's graph

in both flavours (python backend: the generic `model.py`, which decodes string inputs; onnxruntime:
`platform: onnxruntime_onnx`). The configs carry the id models' `ttsrec.*` parameters plus
`ttsrec.inputs = raw`, `ttsrec.raw_inputs` (JSON: input name, raw column, fields, dtype),
`ttsrec.ids_model` and `ttsrec.max_string_bytes`, so a client learns how to send records from the server.

The encode graph and the gate's raw rows are built before any member (`ttsrec.export.raw.plan`).
Gates, each exact: the shipped `raw_encode` graph gives on all these rows the ids `tts-data` gives them
(0 differing ids; for test rows that is `test/ids.npy`); every `raw_fused_mM` gives bit for bit the
outputs of `fused_mM` on those ids at batch 1, 2, 7 and the max batch (test rows first, vocabulary rows
after). `raw_ensemble_mM` runs the same member and merge models as `ensemble_mM` after `raw_encode`, so
its parity is the encode gate's. The tests compare served raw models with served id models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
from onnx import helper
from tritonclient.grpc import model_config_pb2 as pb

from ttsrec.ensemble.session import ort_session
from ttsrec.errors import UserError
from ttsrec.export.encode_graph import EncodeGraph
from ttsrec.export.encode_parity import RawRows, check_encode
from ttsrec.export.job import Draft, Job, Record
from ttsrec.export.parity import ParityError, batch_sizes
from ttsrec.export.raw import RawPlan
from ttsrec.export.records import onnx_record
from ttsrec.repository import naming
from ttsrec.repository.config import (
    Serving,
    Tensor,
    onnx_model_config,
    raw_ensemble_config,
    set_parameters,
    write_config,
)
from ttsrec.repository.graphs import EXTERNAL_DATA_BYTES, onnx_file, weight_bytes
from ttsrec.repository.raw_inputs import RAW_KIND, RawInput, raw_inputs_json


@dataclass
class RawModels:
    """The `--raw-inputs` artefact (`ttsrec.export.job.Artefact`): raw_encode, raw_ensemble_mM and
    raw_fused_mM."""

    plan: RawPlan
    manifest_key: ClassVar[str] = "raw"

    def steps(self, ms: Sequence[int]) -> int:
        return 0  # named on the progress bar, not counted

    def write(self, draft: Draft) -> Record:
        """`raw_encode`, one `raw_ensemble_mM` per id ensemble and one `raw_fused_mM` per fused graph, gated
        (module docstring); returns the manifest's `raw` section."""
        plan, job = self.plan, draft.job
        if plan.graph.feature_map.hash != job.feature_map.hash:
            raise UserError("the raw encode graph was built from another feature map than the members'")
        encode = _write_encode(draft.root, plan, job)
        backend = job.serving.backend
        return {
            "encode": encode,
            "max_string_bytes": plan.max_string_bytes,
            "max_string_bytes_checked_by": "model.py" if backend == "python" else None,
            "rows": plan.notes,
            "ensembles": [_write_raw_ensemble(draft, entry, plan) for entry in draft.ensembles],
            "fused": _write_raw_fused(draft, plan),
        }


def raw_fused_graph(encode: onnx.ModelProto, fused: onnx.ModelProto) -> onnx.ModelProto:
    """The encode graph in front of a fused graph: its `feat_ids` output becomes the fused graph's input.

    The encode graph's internal names get the prefix `encode/` (its inputs and `feat_ids` keep theirs);
    a name both graphs use otherwise is refused."""
    if [i.name for i in fused.graph.input] != [naming.FEAT_IDS]:
        raise UserError(f"a fused graph to put the encode graph in front of takes {naming.FEAT_IDS} only")
    enc = onnx.compose.add_prefix(encode, "encode/", rename_inputs=False, rename_outputs=False)
    names = lambda g: ({o for n in g.node for o in n.output} | {t.name for t in g.initializer}  # noqa: E731
                       | {n.name for n in g.node if n.name})
    clash = (names(enc.graph) & names(fused.graph)) - {naming.FEAT_IDS}
    if clash:
        raise UserError(f"encode and fused graphs both name {sorted(clash)[0]!r}")
    opsets: dict[str, int] = {}
    for op in [*enc.opset_import, *fused.opset_import]:
        if op.domain in opsets and opsets[op.domain] != op.version:
            raise UserError(f"encode and fused graphs import {op.domain or 'ai.onnx'} at versions "
                            f"{opsets[op.domain]} and {op.version}")
        opsets[op.domain] = op.version
    graph = helper.make_graph(
        [*enc.graph.node, *fused.graph.node], f"raw_{fused.graph.name}", list(enc.graph.input),
        list(fused.graph.output), initializer=[*enc.graph.initializer, *fused.graph.initializer],
        value_info=[*enc.graph.value_info, enc.graph.output[0], *fused.graph.value_info])
    model = helper.make_model(graph, functions=list(fused.functions), producer_name="ttsrec",
                              ir_version=max(enc.ir_version, fused.ir_version),
                              opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())])
    props = {p.key: p.value for p in [*fused.metadata_props, *encode.metadata_props]}
    helper.set_model_props(model, props)
    if weight_bytes(model) < EXTERNAL_DATA_BYTES:
        onnx.checker.check_model(model)
    return model


def input_tensors(graph: EncodeGraph) -> list[Tensor]:
    """Config inputs of a raw model: one per encode-graph input, [1] per row."""
    return [Tensor(inp.name, pb.DataType.Value(inp.triton_dtype), (1,)) for inp in graph.inputs]


def input_record(inp: RawInput) -> dict[str, Any]:
    return {**inp.to_dict(), "triton_dtype": inp.triton_dtype}


def raw_parameters(plan: RawPlan, ids_model: str) -> dict[str, object]:
    """The `ttsrec.*` parameters a raw model adds to its id model's: how a client sends records."""
    return {"inputs": RAW_KIND, "ids_model": ids_model, "max_string_bytes": plan.max_string_bytes,
            "raw_inputs": raw_inputs_json(plan.graph.inputs)}


def _onnx_config(name: str, plan: RawPlan, outputs: list[Tensor], serving: Serving) -> pb.ModelConfig:
    cfg = onnx_model_config(name, input_tensors(plan.graph), outputs, serving)
    if serving.backend == "python":  # model.py refuses longer strings, naming the field
        cfg.parameters["max_string_bytes"].string_value = str(plan.max_string_bytes)
    return cfg


def _write_encode(root: Path, plan: RawPlan, job: Job) -> Record:
    """`raw_encode`, gated on every set of raw rows; returns its manifest entry."""
    graph, serving = plan.graph, job.serving
    job.step(naming.RAW_ENCODE)
    path = job.write_onnx(root, naming.RAW_ENCODE, graph.model)
    feat_ids = Tensor(naming.FEAT_IDS, pb.TYPE_INT64, (job.feature_map.width,))
    cfg = _onnx_config(naming.RAW_ENCODE, plan, [feat_ids], serving)
    write_config(root / naming.RAW_ENCODE, set_parameters(cfg, {
        "feature_map_hash": job.feature_map.hash, "export_id": job.export_id,
        **job.layout_parameters(), **raw_parameters(plan, naming.RAW_ENCODE)}))
    session = ort_session(path, intra_op_threads=2)
    parity = [check_encode(graph, session, rows) for rows in plan.rows]
    return {"name": naming.RAW_ENCODE, "num_fields": job.feature_map.num_fields,
            "numeric_type": graph.numeric_type, "inputs": [input_record(i) for i in graph.inputs],
            "onnx": onnx_record(root, path, graph.model),
            "contrib_ops": any(o.domain == "com.microsoft" for o in graph.model.opset_import),
            "parity": parity}


def _write_raw_ensemble(draft: Draft, entry: Record, plan: RawPlan) -> Record:
    """`raw_ensemble_mM`: raw_encode in front of `ensemble_mM`'s own member and merge steps."""
    job, serving = draft.job, draft.job.serving
    name = naming.raw_ensemble_name(entry["m"])
    job.step(name)
    by_name = {m.name: m for m in draft.members}
    group = [by_name[n] for n in entry["members"]]
    outputs = list(entry["outputs"])
    cfg = raw_ensemble_config(name, inputs=input_tensors(plan.graph), encode_model=naming.RAW_ENCODE,
                              max_batch_size=serving.max_batch_size, members=[m.step for m in group],
                              merge_model=entry["merge"],
                              merge_inputs=[naming.merge_input(k) for k in range(len(group))],
                              outputs=outputs)
    write_config(draft.root / name, set_parameters(cfg, {**job.parameters(group),
                                                       **raw_parameters(plan, entry["name"])}))
    (draft.root / name / naming.VERSION).mkdir()
    return {"name": name, "m": entry["m"], "ids_model": entry["name"], "encode": naming.RAW_ENCODE,
            "members": list(entry["members"]), "merge": entry["merge"], "outputs": outputs,
            "parity": "raw_encode's (the same member and merge models after it)"}


def _write_raw_fused(draft: Draft, plan: RawPlan) -> list[Record]:
    """One `raw_fused_mM` per fused graph, each equal to `fused_mM` bit for bit on the gate's rows."""
    job, serving, root = draft.job, draft.job.serving, draft.root
    by_name = {m.name: m for m in draft.members}
    sample = plan.model_rows(serving.max_batch_size)
    records = []
    for entry in draft.fused:
        name = naming.raw_fused_name(entry["m"])
        job.step(name)
        ids_path = onnx_file(root / entry["name"] / naming.VERSION)
        proto = raw_fused_graph(plan.graph.model, onnx.load(ids_path))
        path = job.write_onnx(root, name, proto)
        outputs = list(entry["outputs"])
        figures = check_fused(name, entry["name"], path, ids_path, outputs, sample, serving)
        group = [by_name[n] for n in entry["members"]]
        cfg = _onnx_config(name, plan, [Tensor(o, pb.TYPE_FP32, (1,)) for o in outputs], serving.fused)
        write_config(root / name, set_parameters(cfg, {**job.parameters(group),
                                                     **raw_parameters(plan, entry["name"])}))
        records.append({"name": name, "m": entry["m"], "ids_model": entry["name"],
                        "members": list(entry["members"]), "outputs": outputs,
                        "onnx": onnx_record(root, path, proto), "parity": figures})
    return records


def check_fused(name: str, ids_name: str, raw_path: Path, ids_path: Path, outputs: list[str], rows: RawRows,
                 serving: Serving) -> dict[str, Any]:
    """`raw_fused_mM` on raw rows equals `fused_mM` on their ids bit for bit, at the parity batch sizes."""
    raw, ids = ort_session(raw_path, intra_op_threads=2), ort_session(ids_path, intra_op_threads=2)
    sizes = [b for b in batch_sizes(serving.max_batch_size) if b <= len(rows)]
    for b in sizes:
        got = raw.run(outputs, {k: v[:b] for k, v in rows.feed.items()})
        want = ids.run(outputs, {naming.FEAT_IDS: rows.ids[:b]})
        for out, g, w in zip(outputs, got, want, strict=True):
            if g.shape != w.shape or not np.array_equal(g, w):
                diff = float(np.max(np.abs(g.astype(np.float64) - w))) if g.shape == w.shape else math.inf
                raise ParityError(f"raw parity gate failed for {name}: {out} at batch {b} differs from "
                                  f"{ids_name} on the same rows' ids by up to {diff:.3g} (must be equal)")
    return {"against": ids_name, "rows": rows.name, "batch_sizes": sizes, "max_abs_diff": 0.0, "exact": True}
