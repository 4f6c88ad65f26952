"""The nodes of the encode graph (`ttsrec.export.encode_graph`): per field, its transform as ONNX ops on
its raw input, exactly as `tts-data prepare` computes it (the table in `encode_graph`'s docstring)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ttsrec.data import transforms
from ttsrec.data.feature_map import Field
from ttsrec.repository.raw_inputs import RawInput

ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 3
"""The `ai.onnx.ml` opset released with ONNX opset 18 (its `LabelEncoder` is version 2)."""
CONTRIB_DOMAIN = "com.microsoft"
STANDARD_TRANSFORMS = ("none", "lower", "log_square", "int")
CONTRIB_TRANSFORMS = ("prefix", "year", *transforms.DATE_PARTS)
PAD = "#"  # Tokenizer's pad: never a token of the transforms that use it (4 digits, 8 digits)
DATE_RE = r"^[0-9]{8}$"
"""The only YYMMDDHH form the graph reads (8 ASCII digits)."""


def supported(preprocess: str, contrib_ops: bool = True, is_list: bool = False) -> bool:
    """Whether the graph can express a transform (standard domains only without `contrib_ops`); a list
    field is split by `Tokenizer`, a contrib op."""
    name = preprocess.partition(":")[0]
    if is_list:
        return contrib_ops and name == "none"
    return name in STANDARD_TRANSFORMS or (contrib_ops and name in CONTRIB_TRANSFORMS)


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


class GraphBuilder:
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


def field_ids(g: GraphBuilder, f: Field, inp: RawInput) -> str:
    """int64 [B, 1] ids of one field from its input ([B, max_len] for a list field)."""
    scope = tensor_name(f.name, set())
    if inp.fields != (f.name,):
        scope = f"{inp.name}/{scope}"
    if f.is_list:
        return _list_ids(g, f, inp, scope)
    name, _, arg = f.preprocess.partition(":")
    if name in transforms.NUMERIC:
        return _numeric_ids(g, f, inp, scope, log_square=name == "log_square")
    if name in transforms.DATE_PARTS:
        return _date_ids(g, f, inp, scope, name)
    return _string_ids(g, f, inp, scope, name, arg)


def _list_ids(g: GraphBuilder, f: Field, inp: RawInput, scope: str) -> str:
    """A list field as `prepare` reads it: the tokens are the runs between separators (so "", "||" and a
    missing value are the empty list), the first `max_len` kept, shorter rows padded with the padding id.

    `Tokenizer` (regex: a run of non-separator characters) gives [rows, most tokens in a row], padded with
    the separator, which no token holds; a sentinel row of `max_len` tokens makes that at least `max_len`
    wide whatever the batch (B = 0, every list empty), so a `Slice` cuts exactly `max_len` columns."""
    sep = f.separator
    pattern = "[^" + ("\\" + sep if sep in "\\]^-[" else sep) + "]+"
    flat = g.op("Reshape", [inp.name, g.const(scope, "flat", np.array([-1], np.int64))], scope, "flat")
    sentinel = g.const(scope, "sentinel", np.array([sep.join(["a"] * f.max_len)], object))
    padded = g.op("Concat", [flat, sentinel], scope, "with_sentinel", axis=0)
    toks = g.op("Tokenizer", [padded], scope, "split", CONTRIB_DOMAIN, mark=0, mincharnum=1, pad_value=sep,
                tokenexp=pattern)
    g.infos.append(helper.make_tensor_value_info(toks, TensorProto.STRING, [None, None]))
    first = g.op("Slice", [toks, g.const(scope, "start", np.array([0, 0], np.int64)),
                           g.op("Concat", [g.op("Shape", [flat], scope, "rows"),
                                           g.const(scope, "max_len", np.array([f.max_len], np.int64))],
                                scope, "end", axis=0),
                           g.const(scope, "axes", np.array([0, 1], np.int64))], scope, "first_tokens")
    keys = [*f.vocab, sep]
    ids = [*range(1, len(f.vocab) + 1), f.pad_id]
    return g.op("LabelEncoder", [first], scope, "ids", ML_DOMAIN, keys_strings=keys, values_int64s=ids,
                default_int64=0)


def _int_lookup(g: GraphBuilder, scope: str, f: Field, tok: str, bad: str | None, missing: str) -> str:
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


def _numeric_ids(g: GraphBuilder, f: Field, inp: RawInput, scope: str, log_square: bool) -> str:
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


def _string_ids(g: GraphBuilder, f: Field, inp: RawInput, scope: str, name: str, arg: str) -> str:
    x = inp.name
    missing = g.is_in(scope, x, [""], "missing")
    if name == "lower":
        tok = g.rows_apply(scope, x, "a", "lower", "StringNormalizer", case_change_action="LOWER",
                           is_case_sensitive=1, locale="C.UTF-8")
    elif name == "prefix":
        tok = g.rows_apply(scope, x, "a", "prefix", "Tokenizer", CONTRIB_DOMAIN, mark=0, mincharnum=1,
                           pad_value=PAD, tokenexp=f"(?s).{{1,{int(arg)}}}")
    elif name == "year":  # no 4 digits -> the pad, which is no token -> 0 (prepare: a bad row)
        tok = g.rows_apply(scope, x, "0000", "year", "Tokenizer", CONTRIB_DOMAIN, mark=0, mincharnum=1,
                           pad_value=PAD, tokenexp=r"\p{Nd}{4}")
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


def _date_ids(g: GraphBuilder, f: Field, inp: RawInput, scope: str, part: str) -> str:
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


def _parse_date(g: GraphBuilder, x: str) -> tuple[str, str, dict[str, str]]:
    scope = f"{x}/date"
    missing = g.is_in(scope, x, [""], "missing")
    digits = g.rows_apply(scope, x, "00000000", "yymmddhh", "Tokenizer", CONTRIB_DOMAIN, mark=0, mincharnum=1,
                          pad_value=PAD, tokenexp=DATE_RE)
    well_formed = g.op("Not", [g.is_in(scope, digits, [PAD], "malformed")], scope, "well_formed")
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


def _iso_weekday(g: GraphBuilder, scope: str, parts: dict[str, str]) -> str:
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
