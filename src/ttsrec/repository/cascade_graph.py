"""`cascade_mM`: a cascade of members as one ONNX graph that stock Triton (and onnxruntime) runs.

Input `feat_ids` INT64 [batch, F]; outputs `logit`, `prob` and `members_used`, FP32 [batch, 1].

The first stage's members run on every row; the stopping mask (the rule's statistic times the
threshold < 1) picks the rows that go on; an `If` on "any row goes on" holds the rest of the cascade:
`Compress` of those rows (ids and the running sums), the next stage's members on them only, and
`ScatterND` of their results back into this stage's outputs. Stages nest, so a batch where every row
stops early never runs a later member (nor a zero-row one), and batch 1 needs nothing special.

The arithmetic is `ttsrec.ensemble.cascade`'s, op for op on the same float32 constants (its
`stage_plans`): Mul/Add for the running sums, Mul by 1 / the prefix's weight sum, Sub/Mul/Max/Mul/Add/Sqrt
(se, rank), Sub/Abs (delta), Mul/Less for the stop. Every one is a correctly rounded IEEE operation on
its own, so the graph's logits and member counts equal the in-process cascade's bit for bit.

The layering keeps this module below `ttsrec.ensemble`, so it reads the cascade as the plain dict
`Cascade.to_dict()` gives plus the stage constants (`stage_plans`), passed in by the caller
(`ttsrec.export` or a test): `cascade_graph(members, cascade.to_dict(), stage_plans(cascade))`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

from ttsrec.errors import UserError
from ttsrec.repository import naming
from ttsrec.repository.graphs import IR_VERSION, OPSET, reinfer_shapes

METADATA_KEY = "ttsrec.cascade"


def _f32(value: float) -> float:
    """`value` rounded to float32 (above float32's range: inf), as `ttsrec.ensemble.cascade` rounds."""
    with np.errstate(over="ignore"):
        return float(np.array(float(value), dtype=np.float64).astype(np.float32))


class _Builder:
    """Nodes of one graph scope (the main graph or an If branch); constants go to the main graph."""

    def __init__(self, owner: _Cascade, tag: str):
        self.owner, self.tag = owner, tag
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        """The scope's own initializers: the weights of its members (see `_Cascade.member`)."""

    def node(self, op: str, inputs: Sequence[str], name: str, **attrs: Any) -> str:
        out = f"{name}_{self.tag}"
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        return out


class _Cascade:
    def __init__(self, members: Sequence[onnx.ModelProto], cascade: Mapping[str, Any], plans: Sequence[Any]):
        self.members, self.cascade, self.plans = members, cascade, list(plans)
        self.order = [int(i) for i in cascade["order"]]
        self.rule = str(cascade["rule"])
        self.mean = cascade.get("weights") is None
        # as ttsrec.ensemble.cascade.needs_squares: rank on the validation spread alone reads no squares
        self.with_squares = self.rule == "se" or (
            self.rule == "rank" and not math.isinf(float(cascade.get("shrink", 1.0))))
        self.inits: list[onnx.TensorProto] = []
        self.functions: list[onnx.FunctionProto] = []
        self.opsets: dict[str, int] = {"": OPSET}
        self.ir_version = IR_VERSION
        self.constants: dict[tuple[str, float], str] = {}

    def const(self, kind: str, value: float) -> str:
        """A float32 scalar initializer (one per distinct value)."""
        key = (kind, _f32(value))
        if key not in self.constants:
            name = f"cascade_{kind}_{len(self.constants)}"
            self.inits.append(helper.make_tensor(name, TensorProto.FLOAT, [], [key[1]]))
            self.constants[key] = name
        return self.constants[key]

    def member(self, b: _Builder, position: int, ids: str) -> str:
        """Member at `position` of the order on `ids`: its nodes and weights in scope `b`.

        Weights stay in the scope that uses them: onnxruntime pre-packs a Gemm's constant B only where it
        sees it as an initializer, and two If levels down an outer-scope initializer is not one; at batch 1
        unpacked weights take MLAS's M=1 kernel, whose summation order differs (1 ulp from the member's
        own session)."""
        index = self.order[position]
        member = self.members[index]
        if len(member.graph.input) != 1 or len(member.graph.output) != 1:
            raise UserError(f"member {index} graph must have one input and one output to be cascaded")
        prefix = f"m{index:02d}_"
        p = onnx.compose.add_prefix(member, prefix)
        b.nodes.append(helper.make_node("Identity", [ids], [p.graph.input[0].name], name=f"{prefix}in"))
        b.nodes.extend(p.graph.node)
        b.inits.extend(p.graph.initializer)
        self.functions.extend(p.functions)
        for op in p.opset_import:
            self.opsets[op.domain] = max(self.opsets.get(op.domain, 0), op.version)
        self.ir_version = max(self.ir_version, p.ir_version)
        return p.graph.output[0].name

    def stage(self, s: int, ids: str, total: str | None, squares: str | None,
              reference: str | None) -> tuple[_Builder, str, str]:
        """Stage `s` on the rows `ids` with the running sums so far: (scope, logit, members_used) for
        these rows, later stages included."""
        plan = self.plans[s]
        b = _Builder(self, f"s{s}")
        with_sq = self.with_squares
        for offset, weight in enumerate(plan.weights):
            position = plan.start + offset
            logit = self.member(b, position, ids)
            term = logit if self.mean else b.node("Mul", [logit, self.const("w", weight)], f"term{position}")
            total = term if total is None else b.node("Add", [total, term], f"sum{position}")
            if with_sq:
                sq = b.node("Mul", [term, logit], f"sq{position}")
                squares = sq if squares is None else b.node("Add", [squares, sq], f"sumsq{position}")
            if plan.half and position + 1 == plan.half:
                reference = self.scaled(b, total, plan.half_inv_weight_sum, "half")
        merged = self.scaled(b, total, plan.inv_weight_sum, "merged")
        shape = b.node("Shape", [merged], "shape")
        count = helper.make_tensor("count", TensorProto.FLOAT, [1], [float(plan.count)])
        used = b.node("ConstantOfShape", [shape], "used", value=count)
        if plan.final:
            return b, merged, used
        stat = self.statistic(b, plan, merged, squares, reference)
        scaled = b.node("Mul", [stat, self.const("tau", float(self.cascade["threshold"]))], "scaled")
        stop = b.node("Less", [scaled, self.const("one", 1.0)], "stop")
        go = b.node("Reshape", [b.node("Not", [stop], "go2d"), self.shape_flat()], "go")
        where = b.node("NonZero", [go], "where")
        cond = b.node("Greater", [b.node("Size", [where], "going"), self.int_zero()], "any")
        index = b.node("Transpose", [where], "index", perm=[1, 0])

        then = _Builder(self, f"s{s}_then")
        going = [then.node("Compress", [x, go], f"next_{k}", axis=0)
                 for k, x in enumerate([ids, total, *([squares] if with_sq else []), merged])]
        sub, sub_logit, sub_used = self.stage(s + 1, going[0], going[1], going[2] if with_sq else None,
                                              going[-1])
        then.nodes.extend(sub.nodes)
        then.inits.extend(sub.inits)
        out_logit = then.node("ScatterND", [merged, index, sub_logit], "logit")
        out_used = then.node("ScatterND", [used, index, sub_used], "members_used")
        orelse = _Builder(self, f"s{s}_else")
        else_logit = orelse.node("Identity", [merged], "logit")
        else_used = orelse.node("Identity", [used], "members_used")
        then_graph = helper.make_graph(then.nodes, f"stage{s}_then", [], [_info(out_logit), _info(out_used)],
                                       initializer=then.inits)
        else_graph = helper.make_graph(orelse.nodes, f"stage{s}_else", [],
                                       [_info(else_logit), _info(else_used)])
        out = [f"cascade_logit_s{s}", f"cascade_used_s{s}"]
        b.nodes.append(helper.make_node("If", [cond], out, name=f"cascade_if_s{s}",
                                        then_branch=then_graph, else_branch=else_graph))
        return b, out[0], out[1]

    def scaled(self, b: _Builder, total: str, inverse: float, name: str) -> str:
        """total * (1 / W); by 1 (a one-member prefix) it is `total` itself (exact either way, and
        onnxruntime would drop the Mul and warn about the renamed outer-scope value)."""
        if _f32(inverse) == 1.0:
            return total
        return b.node("Mul", [total, self.const("inv_wsum", inverse)], name)

    def statistic(self, b: _Builder, plan: Any, merged: str, squares: str | None,
                  reference: str | None) -> str:
        if self.rule == "delta":
            if reference is None:
                zero = b.node("Mul", [merged, self.const("zero", 0.0)], "zeros")
                return b.node("Add", [zero, self.const("dconst", plan.delta_const)], "stat")
            return b.node("Abs", [b.node("Sub", [merged, reference], "change")], "stat")
        if squares is None:  # rank on the validation spread alone: a constant
            zero = b.node("Mul", [merged, self.const("zero", 0.0)], "zeros")
            var = b.node("Add", [zero, self.const("vconst", plan.var_const)], "err2")
        else:
            mean_sq = b.node("Mul", [squares, self.const("inv_wsum", plan.inv_weight_sum)], "meansq")
            var = b.node("Sub", [mean_sq, b.node("Mul", [merged, merged], "zz")], "var_raw")
            var = b.node("Max", [var, self.const("zero", 0.0)], "var")
            var = b.node("Add", [b.node("Mul", [var, self.const("vcoef", plan.var_coef)], "var_scaled"),
                                 self.const("vconst", plan.var_const)], "err2")
        stat = b.node("Sqrt", [var], "se")
        scale = float(self.cascade.get("scale", math.inf))
        if self.rule == "rank" and math.isfinite(scale):
            u = b.node("Mul", [b.node("Sub", [merged, self.const("center", self.cascade["center"])], "off"),
                               self.const("inv_scale", 1.0 / scale)], "u")
            density = b.node("Add", [b.node("Mul", [u, u], "uu"), self.const("one", 1.0)], "density")
            stat = b.node("Div", [stat, density], "stat")
        return stat

    def shape_flat(self) -> str:
        name = "cascade_shape_flat"
        if all(t.name != name for t in self.inits):
            self.inits.append(helper.make_tensor(name, TensorProto.INT64, [1], [-1]))
        return name

    def int_zero(self) -> str:
        name = "cascade_int_zero"
        if all(t.name != name for t in self.inits):
            self.inits.append(helper.make_tensor(name, TensorProto.INT64, [], [0]))
        return name


def _info(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 1])


def cascade_graph(members: Sequence[onnx.ModelProto], cascade: Mapping[str, Any], plans: Sequence[Any], *,
                  name: str | None = None) -> onnx.ModelProto:
    """The cascade as one graph. `members[i]`: member i's ONNX model, indexed as `cascade["order"]`
    indexes members; `cascade`: `Cascade.to_dict()`; `plans`: `stage_plans(cascade)`. The cascade
    (rule, threshold, stages, order, weights, priors) is recorded in the metadata (`ttsrec.cascade`, JSON,
    and `ttsrec.cascade.rule|threshold|stages`)."""
    order = [int(i) for i in cascade["order"]]
    if not order or max(order) >= len(members):
        raise UserError(f"the cascade orders members {order}, {len(members)} member graphs given")
    if len(plans) != len(cascade["stages"]):
        raise ValueError("one stage plan per cascade stage")
    c = _Cascade(members, cascade, plans)
    main, logit, used = c.stage(0, naming.FEAT_IDS, None, None, None)
    nodes = [*main.nodes,
             helper.make_node("Identity", [logit], [naming.LOGIT], name="cascade_logit"),
             helper.make_node("Identity", [used], [naming.MEMBERS_USED], name="cascade_members_used"),
             helper.make_node("Sigmoid", [naming.LOGIT], [naming.PROB], name="cascade_sigmoid")]
    feat = helper.make_tensor_value_info(naming.FEAT_IDS, TensorProto.INT64, ["batch", None])
    first = members[order[0]]
    feat.type.tensor_type.shape.dim[1].CopyFrom(first.graph.input[0].type.tensor_type.shape.dim[1])
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 1])
               for n in (naming.LOGIT, naming.PROB, naming.MEMBERS_USED)]
    graph = helper.make_graph(nodes, name or naming.cascade_name(len(order)), [feat], outputs,
                              initializer=[*main.inits, *c.inits])
    model = helper.make_model(graph, functions=c.functions, producer_name="ttsrec", ir_version=c.ir_version,
                              opset_imports=[helper.make_opsetid(d, v) for d, v in sorted(c.opsets.items())])
    meta = {METADATA_KEY: json.dumps(dict(cascade), sort_keys=True),
            f"{METADATA_KEY}.rule": str(cascade["rule"]),
            f"{METADATA_KEY}.threshold": str(cascade["threshold"]),
            f"{METADATA_KEY}.stages": ",".join(str(k) for k in cascade["stages"])}
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    return reinfer_shapes(model)


def read_cascade_metadata(model: onnx.ModelProto) -> dict[str, Any]:
    """The cascade dict a `cascade_graph` recorded (`Cascade.from_dict` rebuilds it)."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return json.loads(prop.value)
    raise UserError("this ONNX model records no cascade (ttsrec.cascade metadata)")


def all_weight_bytes(model: onnx.ModelProto) -> int:
    """Initializer bytes of every scope (a cascade keeps later stages' weights inside its If branches,
    which `graphs.weight_bytes` does not see)."""

    def scope(graph: onnx.GraphProto) -> int:
        total = sum(t.ByteSize() for t in graph.initializer)
        for node in graph.node:
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    total += scope(attr.g)
        return total

    return scope(model.graph)
