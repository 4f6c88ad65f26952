"""The client side of the encode graph: raw records or raw columns -> the graph's feed (one [B, 1] array per
input), read exactly as `tts-data`'s `RecordEncoder` reads records; with `check`, values the graph would
not encode as `prepare` does are refused first (`ttsrec.export.encode_parity.check_feed`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from ttsrec.data.encode import raw_text
from ttsrec.errors import UserError
from ttsrec.export.encode_graph import EncodeGraph
from ttsrec.export.encode_parity import check_feed


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
        separators = {inp.source: inp.separator or None for inp in graph.inputs}
        frame = pl.DataFrame(
            {src: pl.Series(src, [raw_text(r.get(src), separators[src]) for r in records], dtype=pl.String)
             for src in sources},
            height=len(records),
        )
    else:
        assert columns is not None
        frame = _columns_frame(graph, columns, sources)
    if check:
        check_feed(graph, frame)
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
            sep = inp.separator or None  # a list field's Python list of tokens is joined by its separator
            col = np.array([v if v.__class__ is str else (raw_text(v, sep) or "") for v in values],
                           dtype=object)
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
            s = pl.Series(src, [raw_text(v) for v in s.to_list()], dtype=pl.String)
        series.append(s.alias(src))
    heights = {s.len() for s in series}
    if len(heights) > 1:
        raise UserError(f"raw columns differ in length: {sorted(heights)}")
    return pl.DataFrame(series)


def encode_with_graph(graph: EncodeGraph, records: Sequence[Mapping[str, Any]],
                      check: bool = True) -> np.ndarray:
    """Raw records -> ids [B, F] through the graph (onnxruntime): the graph's `RecordEncoder.encode`."""
    return graph.run(raw_feed(graph, records, check=check))
