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

Where the graph and `prepare` can differ (all refused by `raw_feed(..., check=True)` unless noted):

- **Unreadable values** (`prepare` drops the row): an infinite or |v| >= 2^63 numeric, a date that is
  not a valid YYMMDDHH, a `year` field without 4 digits -> OOV id 0 in the graph, never an error.
- **FP32 inputs**: the client rounds the raw number to FP32; the graph then computes in float64 as
  polars does, so an FP32 value gets its exact bucket (`floor(ln(v)^2)` checked for every FP32 value
  within 40 ulps of a bucket edge, and every integer up to 2^24). A raw value whose FP32 rounding
  changes its token (`int` of 16777217, `log_square` of 7.389056 just below e^2) gets another id:
  build with `numeric_type="float64"` to send FP64 instead.
- **Non-canonical dates**: polars' parser also accepts a sign or blank inside the YYMMDDHH string
  (`141021+1`, `141021-1` = hour -1, `1411 100`); the graph reads only 8 ASCII digits.
- **`lower` outside ASCII** (not checked): glibc's `towlower` lowercases `İ` (U+0130) to `i` (polars:
  `i̇`), a word-final `Σ` to `σ` (polars: `ς`), and leaves the 54 letters added in Unicode 16 as they
  are; every other code point lowercases as in polars (all of them compared). `\\p{Nd}` and `.` use
  RE2's Unicode tables, polars' regex its own: digits of the newest Unicode versions may differ.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
import polars as pl
from onnx import TensorProto, helper, numpy_helper

from ttsrec.data import transforms
from ttsrec.data.encode import BAD, _raw, describe_bad, tokens
from ttsrec.data.feature_map import FeatureMap, Field
from ttsrec.data.spec import DatasetSpec, FieldSpec
from ttsrec.errors import UserError
from ttsrec.repository import naming
from ttsrec.repository.graphs import IR_VERSION, OPSET
from ttsrec.utils.atomic import atomic_write_bytes

ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 3
"""The `ai.onnx.ml` opset released with ONNX opset 18 (its `LabelEncoder` is version 2)."""
CONTRIB_DOMAIN = "com.microsoft"
OUTPUT = naming.FEAT_IDS
METADATA_INPUTS = "ttsrec.encode.inputs"

InputMode = Literal["field", "source"]
NumericType = Literal["float32", "float64"]
InputDtype = Literal["float32", "float64", "string"]

STANDARD_TRANSFORMS = ("none", "lower", "log_square", "int")
CONTRIB_TRANSFORMS = ("prefix", "year", *transforms.DATE_PARTS)
_PAD = "#"  # Tokenizer's pad: never a token of the transforms that use it (4 digits, 8 digits)
_DATE_RE = r"^[0-9]{8}$"
_TRITON = {"float32": "TYPE_FP32", "float64": "TYPE_FP64", "string": "TYPE_STRING"}
_NUMPY: dict[str, Any] = {"float32": np.float32, "float64": np.float64, "string": np.object_}


@dataclass(frozen=True)
class RawInput:
    """One input of the encode graph: tensor `name`, [batch, 1], carrying raw column `source`."""

    name: str
    source: str
    fields: tuple[str, ...]
    """The fields computed from it (one in `inputs="field"` mode)."""
    dtype: InputDtype

    @property
    def triton_dtype(self) -> str:
        return _TRITON[self.dtype]

    @property
    def numpy_dtype(self) -> Any:
        return _NUMPY[self.dtype]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "fields": list(self.fields), "dtype": self.dtype}


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
        from ttsrec.ensemble.session import ort_session

        return ort_session(self.model.SerializeToString(), intra_op_threads)

    def run(self, feed: Mapping[str, np.ndarray], session: Any = None) -> np.ndarray:
        """feat_ids int64 [B, F] for a feed from `raw_feed` (onnxruntime, CPU; one cached session)."""
        if session is None:
            if self._session is None:
                self._session = self.session()
            session = self._session
        return session.run([self.output], dict(feed))[0]


def supported(preprocess: str, contrib_ops: bool = True) -> bool:
    """Whether the graph can express a transform (standard domains only without `contrib_ops`)."""
    name = preprocess.partition(":")[0]
    return name in STANDARD_TRANSFORMS or (contrib_ops and name in CONTRIB_TRANSFORMS)


def unsupported_fields(feature_map: FeatureMap, contrib_ops: bool = True) -> list[tuple[str, str]]:
    """(field, preprocess) of every field the graph cannot express: those need a python-backend step."""
    return [(f.name, f.preprocess) for f in feature_map.fields if not supported(f.preprocess, contrib_ops)]


def tensor_name(name: str, taken: set[str]) -> str:
    """`name` made a safe Triton/ONNX tensor name (`[A-Za-z0-9_]`, leading letter), unique in `taken`."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", name)
    if not base or not base[0].isalpha():
        base = f"f_{base}"
    out, k = base, 2
    while out in taken:
        out, k = f"{base}_{k}", k + 1
    taken.add(out)
    return out


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
        if not supported(f.preprocess, contrib_ops):
            hint = (" with standard ONNX domains only (contrib_ops=False)"
                    if supported(f.preprocess) else "")
            raise UserError(
                f"field {f.name!r}: transform {f.preprocess!r} cannot be expressed in the ONNX encode "
                f"graph{hint}; it needs a python-backend encode step"
            )
    raw_inputs = _plan_inputs(fmap, inputs, numeric_type)
    g = _Builder()
    by_field = {name: inp for inp in raw_inputs for name in inp.fields}
    columns = [_field_ids(g, f, by_field[f.name]) for f in fmap.fields]
    g.node("Concat", columns, [OUTPUT], "feat_ids/concat", axis=1)
    graph = helper.make_graph(
        g.nodes,
        "encode",
        [_value_info(inp.name, inp.dtype) for inp in raw_inputs],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.INT64, ["batch", fmap.num_fields])],
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
            RawInput(tensor_name(f.name, taken), f.source, (f.name,), _dtype(f, numeric_type))
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
        planned.append(RawInput(tensor_name(source, taken), source, names, dtypes.pop()))
    return planned


def _dtype(f: Field, numeric_type: NumericType) -> InputDtype:
    return numeric_type if transforms.kind_of(f.preprocess) == "numeric" else "string"


def _value_info(name: str, dtype: InputDtype) -> onnx.ValueInfoProto:
    elem = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE, "string": TensorProto.STRING}[dtype]
    return helper.make_tensor_value_info(name, elem, ["batch", 1])


class _Builder:
    """Nodes and initializers with unique, field-scoped names (onnxruntime errors name the node)."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.names: set[str] = set()
        self.infos: list[onnx.ValueInfoProto] = []
        self.contrib = False
        self.memo: dict[tuple[str, str], Any] = {}

    def _unique(self, name: str) -> str:
        out, k = name, 2
        while out in self.names:
            out, k = f"{name}_{k}", k + 1
        self.names.add(out)
        return out

    def const(self, scope: str, hint: str, value: Any) -> str:
        name = self._unique(f"{scope}/{hint}")
        arr = np.asarray(value)
        if arr.dtype.kind in "OUS":
            tensor = helper.make_tensor(name, TensorProto.STRING, arr.shape,
                                        [str(v).encode() for v in arr.ravel()])
        else:
            tensor = numpy_helper.from_array(arr, name)
        self.inits.append(tensor)
        return name

    def node(self, op: str, inputs: Sequence[str], outputs: Sequence[str], name: str, domain: str = "",
             **attrs: Any) -> None:
        self.nodes.append(helper.make_node(op, list(inputs), list(outputs), name=name, domain=domain,
                                           **attrs))
        if domain == CONTRIB_DOMAIN:
            self.contrib = True

    def op(self, op: str, inputs: Sequence[str], scope: str, hint: str = "", domain: str = "",
           **attrs: Any) -> str:
        out = self._unique(f"{scope}/{hint or op.lower()}")
        self.node(op, inputs, [out], out, domain, **attrs)
        return out

    # small helpers on [B, 1] tensors
    def where(self, scope: str, cond: str, a: str, b: str, hint: str = "where") -> str:
        return self.op("Where", [cond, a, b], scope, hint)

    def i64(self, scope: str, value: int) -> str:
        return self.const(scope, f"c{value}".replace("-", "m"), np.array(value, dtype=np.int64))

    def f64(self, scope: str, value: float) -> str:
        return self.const(scope, "c", np.array(value, dtype=np.float64))

    def is_in(self, scope: str, x: str, keys: Sequence[str], hint: str) -> str:
        """bool [B, 1]: the string is one of `keys` (Equal takes no strings before opset 19)."""
        hit = self.op("LabelEncoder", [x], scope, f"{hint}_code", ML_DOMAIN, keys_strings=list(keys),
                      values_int64s=[1] * len(keys), default_int64=0)
        return self.op("Cast", [hit], scope, hint, to=TensorProto.BOOL)

    def zeros(self, scope: str, like: str) -> str:
        shape = self.op("Shape", [like], scope, "shape")
        return self.op("ConstantOfShape", [shape], scope, "zeros",
                       value=helper.make_tensor("zero", TensorProto.INT64, [1], [0]))

    def rows_apply(self, scope: str, x: str, sentinel: str, hint: str, op: str, domain: str = "",
                   **attrs: Any) -> str:
        """`op` on the flattened [B] strings plus one sentinel row, so that no batch (B = 0, or no match
        anywhere) changes its output's shape; returns the first output column of the B real rows [B, 1]."""
        flat = self.op("Reshape", [x, self.const(scope, "flat", np.array([-1], np.int64))], scope, "flat")
        padded = self.op("Concat", [flat, self.const(scope, "sentinel", np.array([sentinel], object))],
                         scope, "with_sentinel", axis=0)
        out = self.op(op, [padded], scope, hint, domain, **attrs)
        if domain == CONTRIB_DOMAIN:  # onnx cannot infer a contrib op's output; its LabelEncoder would crash
            self.infos.append(helper.make_tensor_value_info(out, TensorProto.STRING, [None, None]))
        rows = self.op("Slice", [out, self.const(scope, "row0", np.array([0], np.int64)),
                                 self.op("Shape", [flat], scope, "rows"),
                                 self.const(scope, "axis0", np.array([0], np.int64))], scope, f"{hint}_rows")
        if op == "StringNormalizer":  # [B] -> [B, 1]
            return self.op("Reshape", [rows, self.const(scope, "col", np.array([-1, 1], np.int64))],
                           scope, f"{hint}_col")
        return self.op("Slice", [rows, self.const(scope, "first0", np.array([0], np.int64)),
                                 self.const(scope, "first1", np.array([1], np.int64)),
                                 self.const(scope, "axis1", np.array([1], np.int64))], scope, f"{hint}_first")


def _vocab_ids(f: Field) -> tuple[list[str], list[int], int]:
    """(tokens except `<missing>`, their ids, the id of a missing value) of a field."""
    keys = [tok for tok in f.vocab if tok != transforms.MISSING]
    ids = [i + 1 for i, tok in enumerate(f.vocab) if tok != transforms.MISSING]
    missing_id = f.vocab.index(transforms.MISSING) + 1 if transforms.MISSING in f.vocab else 0
    return keys, ids, missing_id


def _field_ids(g: _Builder, f: Field, inp: RawInput) -> str:
    """int64 [B, 1] ids of one field from its input."""
    scope = tensor_name(f.name, set())
    if inp.fields != (f.name,):
        scope = f"{inp.name}/{scope}"
    name, _, arg = f.preprocess.partition(":")
    if name in transforms.NUMERIC:
        return _numeric_ids(g, f, inp, scope, log_square=name == "log_square")
    if name in transforms.DATE_PARTS:
        return _date_ids(g, f, inp, scope, name)
    return _string_ids(g, f, inp, scope, name, arg)


def _int_lookup(g: _Builder, scope: str, f: Field, tok: str, bad: str | None, missing: str) -> str:
    """Integer tokens -> ids: `LabelEncoder` over the vocabulary, then bad -> 0 and missing -> its id."""
    keys, ids, missing_id = _vocab_ids(f)
    pairs = {int(k): v for k, v in zip(keys, ids, strict=True)}
    if pairs:
        found = g.op("LabelEncoder", [tok], scope, "lookup", ML_DOMAIN, keys_int64s=list(pairs),
                     values_int64s=list(pairs.values()), default_int64=0)
    else:
        found = g.zeros(scope, tok)
    if bad is not None:
        found = g.where(scope, bad, g.i64(scope, 0), found, "unreadable_to_oov")
    return g.where(scope, missing, g.i64(scope, missing_id), found, "ids")


def _numeric_ids(g: _Builder, f: Field, inp: RawInput, scope: str, log_square: bool) -> str:
    x = inp.name if inp.dtype == "float64" else g.op("Cast", [inp.name], scope, "f64", to=TensorProto.DOUBLE)
    missing = g.op("IsNaN", [x], scope, "missing")
    too_big = g.op("GreaterOrEqual", [g.op("Abs", [x], scope), g.f64(scope, transforms.INT64_LIMIT)], scope)
    bad = g.op("Or", [g.op("IsInf", [x], scope), too_big], scope, "unreadable")
    value = x
    if log_square:  # floor(ln(v)^2) for v > 2, else floor(v)
        ln = g.op("Log", [x], scope, "ln")
        value = g.where(scope, g.op("Greater", [x, g.f64(scope, 2.0)], scope, "gt2"),
                        g.op("Mul", [ln, ln], scope, "ln2"), x, "log_square")
    tok = g.op("Floor", [value], scope, "floor")
    skip = g.op("Or", [missing, bad], scope, "skip")
    safe = g.where(scope, skip, g.f64(scope, 0.0), tok, "in_range")  # casting inf/NaN to int64 is undefined
    token = g.op("Cast", [safe], scope, "token", to=TensorProto.INT64)
    return _int_lookup(g, scope, f, token, bad, missing)


def _string_ids(g: _Builder, f: Field, inp: RawInput, scope: str, name: str, arg: str) -> str:
    x = inp.name
    missing = g.is_in(scope, x, [""], "missing")
    if name == "lower":
        tok = g.rows_apply(scope, x, "a", "lower", "StringNormalizer", case_change_action="LOWER",
                           is_case_sensitive=1, locale="C.UTF-8")
    elif name == "prefix":
        tok = g.rows_apply(scope, x, "a", "prefix", "Tokenizer", CONTRIB_DOMAIN, mark=0, mincharnum=1,
                           pad_value=_PAD, tokenexp=f"(?s).{{1,{int(arg)}}}")
    elif name == "year":  # no 4 digits -> the pad, which is no token -> 0 (prepare: a bad row)
        tok = g.rows_apply(scope, x, "0000", "year", "Tokenizer", CONTRIB_DOMAIN, mark=0, mincharnum=1,
                           pad_value=_PAD, tokenexp=r"\p{Nd}{4}")
    else:
        tok = x
    keys, ids, missing_id = _vocab_ids(f)
    if transforms.MISSING in f.vocab:  # a raw "<missing>" string is the missing token in prepare too
        keys, ids = [*keys, transforms.MISSING], [*ids, missing_id]
    if keys:
        found = g.op("LabelEncoder", [tok], scope, "lookup", ML_DOMAIN, keys_strings=keys, values_int64s=ids,
                     default_int64=0)
    else:
        found = g.zeros(scope, x)
    return g.where(scope, missing, g.i64(scope, missing_id), found, "ids")


_MONTH_DAYS = np.zeros(100, np.int64)
_MONTH_DAYS[1:13] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
_SAKAMOTO = np.zeros(100, np.int64)
_SAKAMOTO[1:13] = [0, 3, 2, 5, 0, 3, 5, 1, 4, 6, 2, 4]


def _date_ids(g: _Builder, f: Field, inp: RawInput, scope: str, part: str) -> str:
    """YYMMDDHH -> hour of day, ISO weekday (1 = Monday) or weekend flag, as polars' `%y%m%d` + hour."""
    if (inp.name, "date") not in g.memo:  # one parse per input, shared by the fields it feeds
        g.memo[(inp.name, "date")] = _parse_date(g, inp.name)
    missing, ok, parts = g.memo[(inp.name, "date")]
    if part == "hour_of_day":
        tok = parts["hour"]
    else:
        dscope = f"{inp.name}/date"
        weekday = parts.get("weekday")
        if weekday is None:
            weekday = parts["weekday"] = _iso_weekday(g, dscope, parts)
        tok = weekday if part == "weekday" else g.op(
            "Cast", [g.op("GreaterOrEqual", [weekday, g.i64(dscope, 6)], scope, "weekend")], scope,
            "is_weekend", to=TensorProto.INT64)
    bad = g.op("And", [g.op("Not", [ok], scope, "not_ok"), g.op("Not", [missing], scope, "present")], scope,
               "unreadable")
    return _int_lookup(g, scope, f, tok, bad, missing)


def _parse_date(g: _Builder, x: str) -> tuple[str, str, dict[str, str]]:
    scope = f"{x}/date"
    missing = g.is_in(scope, x, [""], "missing")
    digits = g.rows_apply(scope, x, "00000000", "yymmddhh", "Tokenizer", CONTRIB_DOMAIN, mark=0, mincharnum=1,
                          pad_value=_PAD, tokenexp=_DATE_RE)
    well_formed = g.op("Not", [g.is_in(scope, digits, [_PAD], "malformed")], scope, "well_formed")
    v = g.op("Cast", [g.where(scope, well_formed, digits, g.const(scope, "zero_text", np.array("0", object)),
                              "digits")], scope, "value", to=TensorProto.INT64)

    def div_mod(div: int, mod: int | None, hint: str) -> str:
        q = g.op("Div", [v, g.i64(scope, div)], scope, f"{hint}_div") if div > 1 else v
        return g.op("Mod", [q, g.i64(scope, mod)], scope, hint) if mod else q

    yy, mm, dd, hh = div_mod(1_000_000, None, "yy"), div_mod(10_000, 100, "mm"), div_mod(100, 100, "dd"), \
        div_mod(1, 100, "hh")
    century = g.where(scope, g.op("Less", [yy, g.i64(scope, 70)], scope, "y2k"), g.i64(scope, 2000),
                      g.i64(scope, 1900), "century")
    year = g.op("Add", [yy, century], scope, "year")

    def divisible(n: int) -> str:
        rem = g.op("Mod", [year, g.i64(scope, n)], scope, f"year_mod{n}")
        return g.op("Equal", [rem, g.i64(scope, 0)], scope, f"div{n}")

    centuries = g.op("Or", [g.op("Not", [divisible(100)], scope), divisible(400)], scope)
    leap = g.op("And", [divisible(4), centuries], scope, "leap")
    feb29 = g.op("Cast", [g.op("And", [leap, g.op("Equal", [mm, g.i64(scope, 2)], scope, "feb")], scope)],
                 scope, "leap_day", to=TensorProto.INT64)
    month_days = g.op("Add", [g.op("Gather", [g.const(scope, "month_days", _MONTH_DAYS), mm], scope), feb29],
                      scope, "month_days")
    checks = [
        well_formed,
        g.op("GreaterOrEqual", [mm, g.i64(scope, 1)], scope, "mm_ge1"),
        g.op("LessOrEqual", [mm, g.i64(scope, 12)], scope, "mm_le12"),
        g.op("GreaterOrEqual", [dd, g.i64(scope, 1)], scope, "dd_ge1"),
        g.op("LessOrEqual", [dd, month_days], scope, "dd_le_month"),
        g.op("LessOrEqual", [hh, g.i64(scope, 23)], scope, "hh_le23"),
    ]
    ok = checks[0]
    for c in checks[1:]:
        ok = g.op("And", [ok, c], scope, "valid")
    return missing, ok, {"hour": hh, "year": year, "month": mm, "day": dd}


def _iso_weekday(g: _Builder, scope: str, parts: dict[str, str]) -> str:
    """Sakamoto's day of week (0 = Sunday), as ISO 1..7 (7 = Sunday)."""
    year, mm, dd = parts["year"], parts["month"], parts["day"]
    jan_feb = g.op("Cast", [g.op("Less", [mm, g.i64(scope, 3)], scope, "jan_feb")], scope, "jan_feb_1",
                   to=TensorProto.INT64)
    y = g.op("Sub", [year, jan_feb], scope, "y")
    terms = [y, g.op("Div", [y, g.i64(scope, 4)], scope, "y4"), g.op("Gather", [g.const(scope, "sakamoto",
             _SAKAMOTO), mm], scope, "month_offset"), dd, g.op("Div", [y, g.i64(scope, 400)], scope, "y400")]
    total = terms[0]
    for t in terms[1:]:
        total = g.op("Add", [total, t], scope, "sum")
    total = g.op("Sub", [total, g.op("Div", [y, g.i64(scope, 100)], scope, "y100")], scope, "sum")
    dow = g.op("Mod", [total, g.i64(scope, 7)], scope, "dow")
    return g.where(scope, g.op("Equal", [dow, g.i64(scope, 0)], scope, "sunday"), g.i64(scope, 7), dow,
                   "weekday")


# --- the client side: raw records or columns -> the graph's feed -----------------------------------


def raw_feed(
    graph: EncodeGraph,
    records: Sequence[Mapping[str, Any]] | None = None,
    *,
    columns: Mapping[str, Any] | None = None,
    check: bool = True,
) -> dict[str, np.ndarray]:
    """The encode graph's inputs (name -> [B, 1] array) for raw records or raw columns.

    `records` are dicts keyed by raw column names, values as in the file (a missing key, None, "" or
    NaN is a missing value), read exactly as `RecordEncoder` reads them. `columns` maps raw column
    names to sequences, numpy arrays or polars Series (a numeric array for a numeric column: NaN is
    missing). With `check`, a value `prepare` would refuse (the row would be skipped) or that the graph
    cannot encode as `prepare` does (see the module docstring) is a `UserError` naming the record and
    the column; without it such values go through (to OOV, or a rounded FP32).
    """
    if (records is None) == (columns is None):
        raise UserError("raw_feed takes records or columns (one of them)")
    if records is not None and not check:
        return _records_feed(graph, records)
    sources = list(dict.fromkeys(inp.source for inp in graph.inputs))
    if records is not None:
        frame = pl.DataFrame(
            {src: pl.Series(src, [_raw(r.get(src)) for r in records], dtype=pl.String) for src in sources},
            height=len(records),
        )
    else:
        assert columns is not None
        frame = _columns_frame(graph, columns, sources)
    if check:
        _check(graph, frame)
    feed = {}
    for inp in graph.inputs:
        col = frame.get_column(inp.source)
        if inp.dtype == "string":
            values = col.cast(pl.String).fill_null("").to_numpy().astype(object)
        else:
            values = col.cast(pl.Float64, strict=False).fill_nan(None).to_numpy().astype(inp.numpy_dtype)
        feed[inp.name] = values.reshape(-1, 1)
    return feed


def _records_feed(graph: EncodeGraph, records: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The unchecked feed, in plain Python (about twice as fast as polars on small batches of dicts).

    Strings as `RecordEncoder` reads them (`_raw`); numbers through `float()`, which reads every number
    `prepare` accepts the same way (the nearest double) and anything else as NaN (missing) or as
    Python reads it (e.g. " 5", "1_000")."""
    feed = {}
    for inp in graph.inputs:
        values = [r.get(inp.source) for r in records]
        if inp.dtype == "string":
            col = np.array([v if v.__class__ is str else (_raw(v) or "") for v in values], dtype=object)
        else:
            try:
                col = np.array([math.nan if v is None or v == "" else float(v) for v in values], np.float64)
            except (TypeError, ValueError):
                col = np.array([_float(v) for v in values], np.float64)
        feed[inp.name] = col.astype(inp.numpy_dtype, copy=False).reshape(-1, 1)
    return feed


def _float(value: Any) -> float:
    try:
        return math.nan if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return math.nan


def _columns_frame(graph: EncodeGraph, columns: Mapping[str, Any], sources: list[str]) -> pl.DataFrame:
    absent = [s for s in sources if s not in columns]
    if absent:
        raise UserError(
            f"raw columns missing: {', '.join(absent)} (the encode graph reads {', '.join(sources)})")
    numeric_only = {inp.source for inp in graph.inputs if inp.dtype != "string"} - {
        inp.source for inp in graph.inputs if inp.dtype == "string"}
    series = []
    for src in sources:
        values = columns[src]
        s = values if isinstance(values, pl.Series) else pl.Series(src, np.asarray(values) if isinstance(
            values, np.ndarray) else list(values), strict=False)
        if s.dtype.is_numeric() and src in numeric_only:
            s = s.cast(pl.Float64).fill_nan(None)
        elif s.dtype == pl.String:
            s = pl.Series(src, s).replace("", None)
        else:  # numbers (or objects) read as text, as RecordEncoder reads them
            s = pl.Series(src, [_raw(v) for v in s.to_list()], dtype=pl.String)
        series.append(s.alias(src))
    heights = {s.len() for s in series}
    if len(heights) > 1:
        raise UserError(f"raw columns differ in length: {sorted(heights)}")
    return pl.DataFrame(series)


def _spec_of(fmap: FeatureMap) -> DatasetSpec:
    if fmap.spec:
        return DatasetSpec.from_dict(fmap.spec, origin="feature_map.json spec")
    return DatasetSpec(dataset_id=fmap.dataset_id, label=fmap.label,
                       fields=[FieldSpec(f.name, f.source, f.preprocess) for f in fmap.fields])


def _check(graph: EncodeGraph, frame: pl.DataFrame) -> None:
    """Refuse what `prepare` refuses (its own checks), then what the graph would encode differently."""
    spec = _spec_of(graph.feature_map)
    toks = tokens(frame.with_columns(pl.lit(0, pl.Int32).alias(BAD)), spec, with_label=False)
    bad = toks.get_column(BAD).to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise UserError(f"record {row}: {describe_bad(int(bad[row]), spec)}")
    checks: dict[str, tuple[Field, pl.Expr]] = {}  # one polars pass for every field's graph checks
    rounded: dict[str, pl.Expr] = {}
    for j, f in enumerate(graph.feature_map.fields):
        name = f.preprocess.partition(":")[0]
        if name in transforms.DATE_PARTS:
            col = pl.col(f.source)
            checks[f"_odd{j}"] = (f, col.is_not_null() & ~col.cast(pl.String).str.contains(_DATE_RE))
        elif name in transforms.NUMERIC and graph.numeric_type == "float32":
            fp32 = f"_fp32_{len(rounded)}"
            rounded.setdefault(f.source, pl.col(f.source).cast(pl.Float64, strict=False).cast(pl.Float32)
                               .cast(pl.Float64).alias(fp32))
            fp32 = rounded[f.source].meta.output_name()
            exact, narrow = (transforms.token(c, f.preprocess)[0] for c in (f.source, fp32))
            checks[f"_moved{j}"] = (f, (exact != narrow).fill_null(False))
    if not checks:
        return
    found = frame.with_columns(rounded.values()).select(e.alias(k) for k, (_, e) in checks.items())
    for key, (f, _) in checks.items():
        hits = found.get_column(key).to_numpy()
        if not hits.any():
            continue
        row = int(np.flatnonzero(hits)[0])
        value = frame.get_column(f.source)[row]
        if key.startswith("_odd"):
            raise UserError(f"record {row}: column {f.source} value {value!r} is not 8 digits YYMMDDHH "
                            f"(field {f.name}: the encode graph reads only that form)")
        pair = pl.DataFrame({"a": [value]}).select(pl.col("a").cast(pl.Float64, strict=False))
        pair = pair.with_columns(pl.col("a").cast(pl.Float32).cast(pl.Float64).alias("b"))
        a, b = (pair.select(transforms.token(c, f.preprocess)[0]).item() for c in ("a", "b"))
        raise UserError(f"record {row}: column {f.source} value {value!r} changes its {f.preprocess} token "
                        f"in FP32 ({a} -> {b}, field {f.name}): build the encode graph with "
                        "numeric_type='float64'")


def encode_with_graph(graph: EncodeGraph, records: Sequence[Mapping[str, Any]],
                      check: bool = True) -> np.ndarray:
    """Raw records -> ids [B, F] through the graph (onnxruntime): the graph's `RecordEncoder.encode`."""
    return graph.run(raw_feed(graph, records, check=check))


__all__ = [
    "CONTRIB_DOMAIN",
    "METADATA_INPUTS",
    "ML_OPSET",
    "OUTPUT",
    "EncodeGraph",
    "RawInput",
    "build_encode_graph",
    "encode_with_graph",
    "raw_feed",
    "supported",
    "tensor_name",
    "unsupported_fields",
]
