"""Raw records to a `raw_*` model (`tts-export --raw-inputs`): the encoding happens in the served graph.

A raw model's config says what it takes: one input per field (`TYPE_STRING` or `TYPE_FP32`, dims [1]),
and the `ttsrec.raw_inputs` parameter which raw column each input reads. The client only lays the
records out as those columns, checks them, and serializes them:

- every record must carry every raw column (a missing value is `None`, `""` or NaN; an absent key is a
  `ClientError` naming the column: a renamed or dropped column would otherwise become "missing" silently);
- values of a string column: `str`, or a number (written as `RecordEncoder` writes it: 3.0 -> "3");
  a list field's column also takes a Python list of tokens (joined by the field's separator, recorded in
  `ttsrec.raw_inputs`); numeric columns: numbers, or text Python's `float()` reads; anything else (a
  bool, bytes, a list...) is a `ClientError` naming the column and the record, as is a string longer
  than the model's `ttsrec.max_string_bytes`;
- strings go on the wire in Triton's BYTES layout (4-byte little-endian length + UTF-8 per element),
  built for all string columns at once with numpy (`serialize_strings`), not element by element.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ttsrec.client.errors import ClientError
from ttsrec.repository.raw_inputs import DTYPES, RAW_KIND, RawInput, dtype_of_triton


class _Absent:
    """A record's missing key (a class of its own, so `set(map(type, values))` sees it)."""


ABSENT = _Absent()


def raw_fields(config: Mapping[str, Any], parameters: Mapping[str, str]) -> tuple[RawInput, ...]:
    """The raw inputs of a model config, in config order; () for an id model (one INT64 input). What the
    export recorded in `ttsrec.raw_inputs` wins; an input it does not name is read from the config."""
    inputs = config.get("input", [])
    is_ids = len(inputs) == 1 and inputs[0].get("data_type", "TYPE_INT64") in ("TYPE_INT64", "TYPE_INT32")
    if parameters.get("inputs") != RAW_KIND and is_ids:
        return ()
    recorded = {}
    if parameters.get("raw_inputs"):
        recorded = {r["name"]: r for r in json.loads(parameters["raw_inputs"])}
    out = []
    for inp in inputs:
        name = inp["name"]
        rec = recorded.get(name, {})
        dtype = rec["dtype"] if rec.get("dtype") in DTYPES else dtype_of_triton(inp.get("data_type", ""))
        if dtype is None:
            raise ValueError(f"raw input {name!r} has data type {inp.get('data_type')}")
        out.append(RawInput.from_dict({**rec, "name": name, "dtype": dtype}))
    return tuple(out)


@dataclass
class RawColumns:
    """Checked raw columns of a batch: per input a list of `str` (BYTES) or a float array [B]."""

    fields: tuple[RawInput, ...]
    values: list[Any]
    rows: int

    def slice(self, start: int, stop: int) -> RawColumns:
        return RawColumns(self.fields, [v[start:stop] for v in self.values], min(stop, self.rows) - start)

    def payloads(self) -> list[bytes]:
        """Per input the raw tensor bytes (Triton's BYTES layout for strings, little-endian floats)."""
        strings = [v for f, v in zip(self.fields, self.values, strict=True) if f.is_string]
        serialized = iter(serialize_strings(strings))
        return [next(serialized) if f.is_string else np.ascontiguousarray(v, _little_endian(f)).tobytes()
                for f, v in zip(self.fields, self.values, strict=True)]


def _little_endian(f: RawInput) -> np.dtype:
    return np.dtype(f.numpy_dtype).newbyteorder("<")


def raw_columns(fields: Sequence[RawInput], rows: Sequence[Mapping[str, Any]],
                max_string_bytes: int = 0) -> RawColumns:
    """Lay records out as the model's raw columns, checking each (module docstring)."""
    try:  # row by row in C (itemgetter, then a transpose): a record's values are read while it is in cache
        if len(fields) == 1 or not rows:
            columns = [[r[f.source] for r in rows] for f in fields]
        else:
            getter = operator.itemgetter(*[f.source for f in fields])
            columns = [list(c) for c in zip(*map(getter, rows), strict=True)]
    except (KeyError, TypeError, IndexError):  # an absent key (named below), or not a mapping
        try:
            columns = [[r.get(f.source, ABSENT) for r in rows] for f in fields]
        except AttributeError:
            raise ClientError("records must be mappings keyed by raw column names (e.g. Criteo's "
                              "I1..C26)") from None
    values = []
    for f, col in zip(fields, columns, strict=True):
        values.append(_strings(f, col, max_string_bytes) if f.is_string else _numbers(f, col))
    return RawColumns(tuple(fields), values, len(rows))


def _refuse(f: RawInput, col: list[Any], k: int, why: str) -> ClientError:
    if col[k] is ABSENT:
        return ClientError(f"record {k}: raw column {f.source!r} (input {f.name}) is missing: every record "
                           "must carry every column of the model (None or \"\" for a missing value)")
    shown = repr(col[k])
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return ClientError(f"record {k}: raw column {f.source!r} (input {f.name}) has {type(col[k]).__name__} "
                       f"value {shown}: {why}")


def _strings(f: RawInput, col: list[Any], limit: int) -> list[str]:
    kinds = set(map(type, col))
    if not kinds <= {str}:
        col = [_text(f, col, k, v) for k, v in enumerate(col)]
    joined = "".join(col)
    if not joined.isascii():
        try:
            joined.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate
            k = next(k for k, v in enumerate(col) if not _encodes(v))
            raise _refuse(f, col, k, "cannot be UTF-8 encoded") from None
    if limit and col and max(map(len, col)) > limit // 4:  # a UTF-8 character is at most 4 bytes
        for k, v in enumerate(col):
            size = len(v.encode("utf-8"))
            if size > limit:
                raise _refuse(f, col, k, f"{size} bytes, longer than the model's limit of {limit} bytes")
    return col


def _encodes(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(f: RawInput, col: list[Any], k: int, v: Any) -> str:
    """A non-str value of a string column, as `RecordEncoder` writes it (3.0 -> "3", NaN/None -> ""); a
    list field's Python list (or tuple) of tokens joined by its separator, as `RecordEncoder` joins it."""
    t = type(v)
    if t is str:
        return v
    if v is None:
        return ""
    if (t is list or t is tuple) and f.separator:
        return f.separator.join(_text(f, col, k, token) for token in v if token is not None and token != "")
    if t is bool or t is np.bool_:
        raise _refuse(f, col, k, "expected str, a number or None")
    if isinstance(v, np.generic) and isinstance(v, np.number):
        v = v.item()
    if isinstance(v, float):
        return "" if math.isnan(v) else str(int(v)) if v.is_integer() else str(v)
    if isinstance(v, int):
        return str(v)
    raise _refuse(f, col, k, "expected str, a number or None")


_PLAIN_NUMBERS = {float, int}


def _numbers(f: RawInput, col: list[Any]) -> np.ndarray:
    kinds = set(map(type, col))
    if kinds <= _PLAIN_NUMBERS:
        return np.array(col, dtype=np.float64)
    if kinds <= {str, float, int, type(None)}:
        try:
            return np.array([math.nan if v is None or v == "" else float(v) for v in col], dtype=np.float64)
        except ValueError:
            pass
    return np.array([_number(f, col, k, v) for k, v in enumerate(col)], dtype=np.float64)


def _number(f: RawInput, col: list[Any], k: int, v: Any) -> float:
    t = type(v)
    if v is None or (t is str and v == ""):
        return math.nan
    if t is bool or t is np.bool_ or t is _Absent:
        raise _refuse(f, col, k, "expected a number, numeric text or None")
    if t is str:
        try:
            return float(v)
        except ValueError:
            raise _refuse(f, col, k, "not a number (numeric column)") from None
    if isinstance(v, int | float | np.integer | np.floating):
        return float(v)
    raise _refuse(f, col, k, "expected a number, numeric text or None")


def serialize_strings(columns: Sequence[Sequence[str]]) -> list[bytes]:
    """Triton's BYTES tensor layout (per element: uint32 little-endian byte length, then UTF-8 bytes) of each
    column, built for all columns at once: equal to `tritonclient.utils.serialize_byte_tensor` of each.

    The strings are joined with NUL separators and encoded in one call; numpy finds the separators (UTF-8
    has no 0 byte but NUL's own), so no Python work is done per element. Strings that hold NUL take the
    per-element path."""
    counts = [len(c) for c in columns]
    n = sum(counts)
    if n == 0:
        return [b"" for _ in columns]
    raw = np.frombuffer("\x00".join(itertools.chain.from_iterable(columns)).encode("utf-8"), dtype=np.uint8)
    separators = np.flatnonzero(raw == 0)
    if len(separators) == n - 1:
        begins = np.concatenate(([0], separators + 1))
        lengths = (np.append(separators, raw.size) - begins).astype("<u4")
        data = raw[raw != 0] if n > 1 else raw
    else:  # a string holds NUL
        encoded = [s.encode("utf-8") for s in itertools.chain.from_iterable(columns)]
        lengths = np.fromiter(map(len, encoded), dtype="<u4", count=n)
        data = np.frombuffer(b"".join(encoded), dtype=np.uint8)
    heads = np.cumsum(lengths, dtype=np.int64)
    heads -= lengths
    heads += np.arange(0, 4 * n, 4)  # each element's start in `out`
    out = np.empty(4 * n + data.size, dtype=np.uint8)
    header = (heads[:, None] + np.arange(4)).ravel()
    body = np.ones(out.size, dtype=bool)
    body[header] = False
    out[header] = lengths.view(np.uint8)
    out[body] = data
    first = np.cumsum([0, *counts])  # each column's first element
    offsets = np.append(heads, out.size)[first].tolist()
    buffer = out.tobytes()
    return [buffer[a:b] for a, b in itertools.pairwise(offsets)]
