"""The `encode` graph: raw record fields in, the members' `feat_ids` out, exactly as `tts-data prepare`.

`build_encode_graph(feature_map)` turns a prepared dataset's `feature_map.json` (vocabulary and
transform per field; the min count is already applied to the vocabulary) into one ONNX graph:

- inputs, one per field (`inputs="field"`, named after the field) or one per raw column
  (`inputs="source"`), each [batch, 1]: FP32 (or FP64) for numeric fields, NaN = missing; string
  (Triton `TYPE_STRING` / BYTES) for categorical fields, `""` = missing. Names are sanitised to
  `[A-Za-z0-9_]` (leading letter) and kept unique; `EncodeGraph.inputs` and the model's
  `ttsrec.encode.inputs` metadata record which field and raw column each input carries.
- output `feat_ids`, int64 [batch, F]: field-local ids, `vocab[i]` -> i + 1, a missing value the id
  of `<missing>` (0 when it is rare), everything unseen or rare 0 (OOV).

How each transform (`ttsrec.data.transforms`) is expressed:

| preprocess | in the graph |
|---|---|
| `none` | `ai.onnx.ml` `LabelEncoder` (string -> id) |
| `lower` | `StringNormalizer(LOWER, locale C.UTF-8)`, then `LabelEncoder` |
| `prefix:N` | `com.microsoft` `Tokenizer` (regex `(?s).{1,N}`, first match = the first N characters) |
| `year` | `Tokenizer` (regex `\\p{Nd}{4}`, first match = polars' `extract(r"(\\d{4})")`) |
| `hour_of_day`, `weekday`, `is_weekend` | `Tokenizer` (`^[0-9]{8}$`), `Cast` to int64, YYMMDDHH arithmetic |
|  | (00-69 -> 20xx, 70-99 -> 19xx, leap years, ISO weekday), int `LabelEncoder` |
| `log_square` | in float64: `Where(v > 2, Log(v)^2, v)`, `Floor`, int `LabelEncoder` |
| `int` | in float64: `Floor`, int `LabelEncoder` |

`Tokenizer` is an onnxruntime contrib op (domain `com.microsoft`): Triton's onnxruntime backend
and the python backend's onnxruntime run it, other runtimes may not. With `contrib_ops=False` the
graph uses the standard domains only, and `prefix:N`, `year` and the three date parts cannot be
expressed: building it raises a `UserError` naming the field and the transform (those fields need a
python-backend `encode` step; `unsupported_fields` lists them). A transform this module does not
know is refused the same way.

Where the graph and `prepare` can differ, and which of those a client feed refuses:
`ttsrec.export.encode_parity`. The client feed (raw records or columns -> the graph's inputs):
`ttsrec.export.encode_feed`; the nodes of each transform: `ttsrec.export.encode_ops`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import TensorProto, helper

from ttsrec.data import transforms
from ttsrec.data.feature_map import FeatureMap, Field
from ttsrec.ensemble.session import ort_session
from ttsrec.errors import UserError
from ttsrec.export.encode_ops import (
    CONTRIB_DOMAIN,
    ML_DOMAIN,
    ML_OPSET,
    GraphBuilder,
    field_ids,
    supported,
    tensor_name,
)
from ttsrec.repository import naming
from ttsrec.repository.graphs import IR_VERSION, OPSET
from ttsrec.repository.raw_inputs import InputDtype, RawInput
from ttsrec.utils.atomic import atomic_write_bytes

OUTPUT = naming.FEAT_IDS
METADATA_INPUTS = "ttsrec.encode.inputs"

InputMode = Literal["field", "source"]
NumericType = Literal["float32", "float64"]


@dataclass
class EncodeGraph:
    """The built graph plus what a client or an exporter needs to feed it."""

    model: onnx.ModelProto
    inputs: list[RawInput]
    feature_map: FeatureMap = field(repr=False)
    numeric_type: NumericType = "float32"
    output: str = OUTPUT
    _session: Any = field(default=None, repr=False, compare=False)

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.inputs]

    def input_for(self, field_name: str) -> RawInput:
        """The input a field reads."""
        for inp in self.inputs:
            if field_name in inp.fields:
                return inp
        raise KeyError(field_name)

    def save(self, path: Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, self.model.SerializeToString())
        return path

    def session(self, intra_op_threads: int = 1) -> Any:
        """A fresh onnxruntime CPU session (the settings every stage uses)."""
        return ort_session(self.model.SerializeToString(), intra_op_threads)

    def run(self, feed: Mapping[str, np.ndarray], session: Any = None) -> np.ndarray:
        """feat_ids int64 [B, F] for a feed from `raw_feed` (onnxruntime, CPU; one cached session)."""
        if session is None:
            if self._session is None:
                self._session = self.session()
            session = self._session
        return session.run([self.output], dict(feed))[0]


def unsupported_fields(feature_map: FeatureMap, contrib_ops: bool = True) -> list[tuple[str, str]]:
    """(field, preprocess) of every field the graph cannot express: those need a python-backend step."""
    return [(f.name, f.preprocess) for f in feature_map.fields
            if not supported(f.preprocess, contrib_ops, f.is_list)]


def build_encode_graph(
    feature_map: FeatureMap | Path | str,
    *,
    inputs: InputMode = "field",
    numeric_type: NumericType = "float32",
    contrib_ops: bool = True,
) -> EncodeGraph:
    """The encode graph of a prepared dataset (a `FeatureMap`, its `feature_map.json` or its folder)."""
    fmap = feature_map if isinstance(feature_map, FeatureMap) else FeatureMap.load(Path(feature_map))
    if inputs not in ("field", "source"):
        raise UserError(f"inputs must be 'field' or 'source' (got {inputs!r})")
    if numeric_type not in ("float32", "float64"):
        raise UserError(f"numeric_type must be 'float32' or 'float64' (got {numeric_type!r})")
    for f in fmap.fields:
        if not supported(f.preprocess, contrib_ops, f.is_list):
            hint = (" with standard ONNX domains only (contrib_ops=False)"
                    if supported(f.preprocess, True, f.is_list) else "")
            raise UserError(
                f"field {f.name!r}: transform {f.preprocess!r} cannot be expressed in the ONNX encode "
                f"graph{hint}; it needs a python-backend encode step"
            )
    raw_inputs = _plan_inputs(fmap, inputs, numeric_type)
    g = GraphBuilder()
    by_field = {name: inp for inp in raw_inputs for name in inp.fields}
    columns = [field_ids(g, f, by_field[f.name]) for f in fmap.fields]
    g.node("Concat", columns, [OUTPUT], "feat_ids/concat", axis=1)
    graph = helper.make_graph(
        g.nodes,
        "encode",
        [_value_info(inp) for inp in raw_inputs],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.INT64, ["batch", fmap.width])],
        initializer=g.inits,
        value_info=g.infos,
    )
    opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(ML_DOMAIN, ML_OPSET)]
    if g.contrib:
        opsets.append(helper.make_opsetid(CONTRIB_DOMAIN, 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="ttsrec", ir_version=IR_VERSION)
    helper.set_model_props(model, {
        METADATA_INPUTS: json.dumps([i.to_dict() for i in raw_inputs]),
        "ttsrec.feature_map_hash": fmap.hash,
        "ttsrec.dataset_id": fmap.dataset_id,
        "ttsrec.encode.numeric_type": numeric_type,
    })
    onnx.checker.check_model(model, full_check=True)
    return EncodeGraph(model, raw_inputs, fmap, numeric_type)


def _plan_inputs(fmap: FeatureMap, mode: InputMode, numeric_type: NumericType) -> list[RawInput]:
    taken = {OUTPUT}
    if mode == "field":
        return [
            RawInput(tensor_name(f.name, taken), f.source, (f.name,), _dtype(f, numeric_type), f.separator)
            for f in fmap.fields
        ]
    by_source: dict[str, list[Field]] = {}
    for f in fmap.fields:
        by_source.setdefault(f.source, []).append(f)
    planned = []
    for source, fields in by_source.items():
        dtypes = {_dtype(f, numeric_type) for f in fields}
        if len(dtypes) > 1:
            raise UserError(
                f"raw column {source!r} feeds numeric and categorical fields "
                f"({', '.join(f.name for f in fields)}): build the encode graph with inputs='field'"
            )
        names = tuple(f.name for f in fields)
        separator = next((f.separator for f in fields if f.is_list), "")
        planned.append(RawInput(tensor_name(source, taken), source, names, dtypes.pop(), separator))
    return planned


def _dtype(f: Field, numeric_type: NumericType) -> InputDtype:
    return numeric_type if transforms.kind_of(f.preprocess) == "numeric" else "string"


def _value_info(inp: RawInput) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(inp.name, inp.onnx_type, ["batch", 1])


__all__ = [
    "METADATA_INPUTS",
    "OUTPUT",
    "EncodeGraph",
    "InputMode",
    "NumericType",
    "build_encode_graph",
    "unsupported_fields",
]
