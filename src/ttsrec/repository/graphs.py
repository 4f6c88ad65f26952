"""ONNX graphs the exporter builds itself: the merge step and the fused "all members in one graph".

`mean` graphs give `logit` = mean of the member logits and `prob` = sigmoid(logit) (the
paper's merge); `sum` graphs (one shard of a parallel deployment) give `logit_sum` and
`member_count`, so a client can average over shards exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import onnx
from onnx import TensorProto, helper

from ttsrec.errors import UserError
from ttsrec.repository import naming

MergeKind = Literal["mean", "sum"]
OPSET = 18
IR_VERSION = 10
"""onnx 1.23 writes IR 14 by default; onnxruntime 1.31 reads at most 13 (design §4)."""
EXTERNAL_DATA_BYTES = 2_000_000_000
"""Protobuf's 2 GB limit: larger graphs keep their weights in a side file (Triton folder layout)."""


def merge_outputs(kind: MergeKind) -> tuple[str, str]:
    return (naming.LOGIT, naming.PROB) if kind == "mean" else (naming.LOGIT_SUM, naming.MEMBER_COUNT)


def _tail_nodes(logits: Sequence[str], kind: MergeKind,
                weights: Sequence[float] | None = None) -> list[onnx.NodeProto]:
    """The merge: Mean + Sigmoid (with `weights`: Concat + MatMul by the fitted member weights, a
    weighted mean), or Sum + a per-row member count."""
    if kind == "mean" and weights is not None:
        if len(weights) != len(logits):
            raise ValueError("one weight per member logit")
        w = helper.make_tensor("merge_weights", TensorProto.FLOAT, [len(weights), 1], list(weights))
        return [helper.make_node("Concat", list(logits), ["merge_logits"], name="merge_concat", axis=1),
                helper.make_node("Constant", [], ["merge_weights"], name="merge_weights", value=w),
                helper.make_node("MatMul", ["merge_logits", "merge_weights"], [naming.LOGIT],
                                 name="merge_weighted"),
                helper.make_node("Sigmoid", [naming.LOGIT], [naming.PROB], name="merge_sigmoid")]
    if kind == "mean":
        return [helper.make_node("Mean", list(logits), [naming.LOGIT], name="merge_mean"),
                helper.make_node("Sigmoid", [naming.LOGIT], [naming.PROB], name="merge_sigmoid")]
    count = helper.make_tensor("count_value", TensorProto.FLOAT, [1], [float(len(logits))])
    return [helper.make_node("Sum", list(logits), [naming.LOGIT_SUM], name="merge_sum"),
            helper.make_node("Shape", [logits[0]], ["merge_rows_shape"], name="merge_shape"),
            helper.make_node("ConstantOfShape", ["merge_rows_shape"], [naming.MEMBER_COUNT],
                             name="merge_count", value=count)]


def _logit_info(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", 1])


def merge_graph(m: int, kind: MergeKind = "mean", weights: Sequence[float] | None = None) -> onnx.ModelProto:
    """Inputs `logit_0..logit_{m-1}` FP32 [batch, 1] -> the two merge outputs, FP32 [batch, 1];
    `weights` (mean only) makes the mean a weighted one."""
    if m < 1:
        raise ValueError("a merge needs at least one member")
    inputs = [naming.merge_input(k) for k in range(m)]
    graph = helper.make_graph(_tail_nodes(inputs, kind, weights), f"{kind}_m{m}",
                              [_logit_info(n) for n in inputs], [_logit_info(n) for n in merge_outputs(kind)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="ttsrec", ir_version=IR_VERSION)
    onnx.checker.check_model(model)
    return model


def fused_graph(members: Sequence[onnx.ModelProto], kind: MergeKind = "mean",
                weights: Sequence[float] | None = None) -> onnx.ModelProto:
    """All members side by side in one graph on a shared `feat_ids`, plus the merge (weighted with
    `weights`).

    Each member is prefixed `mXX_` (`onnx.compose.add_prefix`) and fed by an `Identity` from the
    shared input, so members keep whatever input names their exporter chose.
    """
    if not members:
        raise ValueError("a fused graph needs at least one member")
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    functions: list[onnx.FunctionProto] = []
    logits: list[str] = []
    opsets: dict[str, int] = {"": OPSET}
    ir_version = IR_VERSION
    for k, member in enumerate(members):
        if len(member.graph.input) != 1 or len(member.graph.output) != 1:
            raise UserError(f"member {k} graph must have one input and one output to be fused")
        p = onnx.compose.add_prefix(member, f"m{k:02d}_")
        feed = helper.make_node("Identity", [naming.FEAT_IDS], [p.graph.input[0].name], name=f"m{k:02d}_in")
        nodes.append(feed)
        nodes.extend(p.graph.node)
        inits.extend(p.graph.initializer)
        functions.extend(p.functions)
        logits.append(p.graph.output[0].name)
        for op in p.opset_import:
            opsets[op.domain] = max(opsets.get(op.domain, 0), op.version)
        ir_version = max(ir_version, p.ir_version)
    nodes.extend(_tail_nodes(logits, kind, weights))
    feat = helper.make_tensor_value_info(naming.FEAT_IDS, TensorProto.INT64, ["batch", None])
    feat.type.tensor_type.shape.dim[1].CopyFrom(members[0].graph.input[0].type.tensor_type.shape.dim[1])
    outputs = [_logit_info(n) for n in merge_outputs(kind)]
    graph = helper.make_graph(nodes, f"fused_{kind}_m{len(members)}", [feat], outputs,
                              initializer=inits)
    model = helper.make_model(graph, functions=functions, producer_name="ttsrec", ir_version=ir_version,
                              opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(opsets.items())])
    return reinfer_shapes(model)


def reinfer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop every `value_info` and infer them again, strictly.

    torch's exporter records shapes for initializers too; tools that rewrite weights (the
    onnxruntime quantizer transposes and replaces them) then meet stale shapes and fail. Shapes
    inferred afresh hold for intermediates only and agree with every node, so strict inference,
    the quantizer and onnxruntime all accept the graph.
    """
    del model.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)


def weight_bytes(model: onnx.ModelProto) -> int:
    return sum(t.ByteSize() for t in model.graph.initializer)


def save_onnx(model: onnx.ModelProto, version_dir: Path) -> Path:
    """Write `version_dir/model.onnx`; above 2 GB use Triton's folder layout
    `model.onnx/model.onnx` + `model.onnx/model.onnx.data`. Returns the file to open."""
    version_dir = Path(version_dir)
    version_dir.mkdir(parents=True, exist_ok=True)
    if weight_bytes(model) < EXTERNAL_DATA_BYTES:
        path = version_dir / "model.onnx"
        onnx.save_model(model, path)
        return path
    folder = version_dir / "model.onnx"
    folder.mkdir()
    path = folder / "model.onnx"
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)
    return path


def onnx_file(version_dir: Path) -> Path:
    """The loadable ONNX file in a version folder (plain file or Triton's folder layout)."""
    path = Path(version_dir) / "model.onnx"
    return path / "model.onnx" if path.is_dir() else path
