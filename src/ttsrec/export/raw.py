"""`tts-export --raw-inputs`, before anything is written: the encode graph and the raw rows its gates use.

**Parity gate.** The prepared folder keeps ids only, so the raw rows come from two places:

1. *the test split's raw rows*: `summary.json` names the raw input files and the split seed; while those
   files exist the first test rows (up to the max batch) are read again with `tts-data`'s own reader,
   tokeniser and split hash. Where `tts-data`'s lookup of them no longer gives `test/ids.npy` (the file
   changed since `prepare`), they are not used and the manifest says why;
2. *vocabulary rows*, always: per field every vocabulary token as a raw value (plus its upper-cased or
   extended form where the transform folds those onto it), unseen values, missing values, numbers on
   both sides of every bucket edge (FP32 values), dates over two weeks at every hour.

`plan` builds both first, so an unsupported transform or unreadable data stops the export before any
member; `ttsrec.export.raw_models` writes and gates the raw models with them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ttsrec.data import transforms
from ttsrec.data.encode import BAD, tokens
from ttsrec.data.feature_map import FeatureMap, Field
from ttsrec.data.prepared import PreparedData
from ttsrec.data.readers import iter_chunks
from ttsrec.data.split import split_of
from ttsrec.errors import UserError
from ttsrec.export.encode_feed import raw_feed
from ttsrec.export.encode_graph import EncodeGraph, build_encode_graph
from ttsrec.export.encode_parity import Feed, RawRows, dataset_spec, prepare_ids

MAX_STRING_BYTES = 1024
"""Longest string value a raw request may carry (python flavour: checked by model.py, error naming the
field; the onnxruntime flavour has no such check: a longer value encodes like any other)."""
MAX_VOCAB_ROWS = 262_144
"""Vocabulary rows per source at most (a larger vocabulary is sampled evenly)."""
TEST_SPLIT = 2
_UNSEEN = ["never-seen-value", "ÜNSEEN ß 日本", "\t", "z" * 64]


@dataclass
class RawPlan:
    """What `--raw-inputs` needs before the repository is written: the encode graph and the gate's rows
    (built first, so an unsupported transform or unreadable data stops the export before any member)."""

    graph: EncodeGraph
    rows: list[RawRows]
    """Test rows (when recoverable) first, then the vocabulary rows."""
    notes: dict[str, Any] = field(default_factory=dict)
    max_string_bytes: int = MAX_STRING_BYTES

    def model_rows(self, count: int) -> RawRows:
        """The first `count` rows over all sets (test rows first): the batches raw_fused is gated on."""
        parts, left = [], count
        for rows in self.rows:
            if left <= 0:
                break
            parts.append(rows.head(left))
            left -= len(parts[-1])
        names = parts[0].feed
        return RawRows("+".join(p.name for p in parts),
                       {k: np.concatenate([p.feed[k] for p in parts]) for k in names},
                       np.concatenate([p.ids for p in parts]))


def plan(feature_map: FeatureMap, data_dir: Path | None, max_batch_size: int) -> RawPlan:
    """The encode graph of `feature_map` and the gate's raw rows (see the module docstring)."""
    graph = build_encode_graph(feature_map)
    rows, notes = [], {}
    test, note = raw_test_rows(feature_map, data_dir, max_batch_size)
    notes["test_rows"] = note
    if test is not None:
        frame, ids = test
        rows.append(RawRows("test", _feed(graph, frame), ids))
    frame = vocabulary_rows(feature_map)
    ids, bad = prepare_ids(feature_map, frame)
    keep = ~bad
    rows.append(RawRows("vocabulary", _feed(graph, frame.filter(pl.Series(keep))), ids[keep]))
    notes["vocabulary_rows"] = int(keep.sum())
    return RawPlan(graph, rows, notes)


def _feed(graph: EncodeGraph, frame: pl.DataFrame) -> Feed:
    """What a client sends for these rows (unchecked: the gate compares ids, and names what differs)."""
    return raw_feed(graph, columns={c: frame.get_column(c) for c in frame.columns}, check=False)


def raw_test_rows(fmap: FeatureMap, data_dir: Path | None, limit: int
                  ) -> tuple[tuple[pl.DataFrame, np.ndarray] | None, str]:
    """The first `limit` test rows of the prepared data as raw columns, with their ids from `test/ids.npy`;
    (None, why) when the raw input files are unknown, gone or changed since `prepare`."""
    if data_dir is None:
        return None, "no prepared data folder (--data) to take test rows from"
    data = PreparedData(data_dir)
    inputs = [Path(p) for p in data.summary.get("inputs", [])]
    if not inputs:
        return None, f"{data_dir}/summary.json names no raw input files"
    gone = [p for p in inputs if not p.exists()]
    if gone:
        return None, f"raw input {gone[0]} (named in summary.json) is gone"
    expected = np.asarray(data.ids("test"), dtype=np.int64)
    want = min(limit, len(expected))
    if want == 0:
        return None, "the test split is empty"
    spec = dataset_spec(fmap)
    seed = int(data.summary.get("seed", 0))
    frames, start, found = [], 0, 0
    try:
        for chunk in iter_chunks(spec, inputs):
            toks = tokens(chunk.frame, spec)
            n = toks.height
            split = split_of(np.arange(start, start + n), seed)
            keep = (split == TEST_SPLIT) & (toks.get_column(BAD).to_numpy() == 0)
            start += n
            if keep.any():
                frames.append(chunk.frame.filter(pl.Series(keep)).select(spec.sources))
                found += int(keep.sum())
            if found >= want:
                break
    except UserError as err:
        return None, f"raw inputs unreadable now ({err})"
    if found < want:
        return None, f"raw inputs hold {found} test rows, test/ids.npy {len(expected)}: changed since prepare"
    frame = pl.concat(frames, how="vertical_relaxed").head(want)
    ids, _ = prepare_ids(fmap, frame)
    if not np.array_equal(ids, expected[:want]):
        return None, "the raw inputs no longer give test/ids.npy (changed since prepare)"
    where = ", ".join(map(str, inputs))
    return (frame, expected[:want]), f"the first {want} test rows, read again from {where}"


def vocabulary_rows(fmap: FeatureMap, max_rows: int = MAX_VOCAB_ROWS) -> pl.DataFrame:
    """Raw rows (String columns per raw source, null = missing) that cover every field's vocabulary: per
    source the candidates of every field reading it, cycled to the longest source."""
    per_source: dict[str, list[str | None]] = {}
    for f in fmap.fields:
        per_source.setdefault(f.source, []).extend(_candidates(f))
    columns = {}
    for source, values in per_source.items():
        values = list(dict.fromkeys(values))
        if len(values) > max_rows:
            values = [values[i] for i in np.linspace(0, len(values) - 1, max_rows).astype(int)]
        columns[source] = values
    rows = max(len(v) for v in columns.values())
    return pl.DataFrame({s: pl.Series(s, [v[i % len(v)] for i in range(rows)], dtype=pl.String)
                         for s, v in columns.items()})


def _candidates(f: Field) -> list[str | None]:
    name = f.preprocess.partition(":")[0]
    vocab = [t for t in f.vocab if t != transforms.MISSING]
    missing: list[str | None] = [None]
    if f.is_list:
        return missing + _lists(f)
    if name in transforms.NUMERIC:
        return missing + _numbers(vocab, log_square=name == "log_square")
    if name in transforms.DATE_PARTS:
        return missing + _dates()
    if name == "lower":
        return missing + _UNSEEN + vocab + [v.upper() for v in vocab]
    if name == "prefix":
        return missing + _UNSEEN + vocab + [v + "~tail" for v in vocab]
    if name == "year":
        return missing + ["1899", "x 2001 1999"] + vocab + [f"x{v}y" for v in vocab]
    return missing + _UNSEEN + vocab


def _lists(f: Field) -> list[str | None]:
    """A list field's raw strings: each token alone, runs of tokens longer than `max_len`, repeats, unseen
    tokens among seen ones, and the empty lists (`""`, separators only, separators around tokens)."""
    sep, vocab = f.separator, list(f.vocab)
    out: list[str | None] = ["", sep, sep * 3, *_UNSEEN, *vocab]
    for start in range(0, len(vocab), f.max_len + 2):
        chunk = vocab[start:start + f.max_len + 2]
        out += [sep.join(chunk), sep + sep.join(chunk[::-1]) + sep + sep, sep.join([*chunk[:2], *_UNSEEN])]
    if vocab:
        out += [sep.join([vocab[0]] * (f.max_len + 1)), f"{vocab[0]}{sep}{sep}{vocab[-1]}",
                f" {vocab[0]}{sep}{vocab[-1]} "]
    return out


def _fp32_text(values: Sequence[float]) -> list[str]:
    """Numbers as the decimal text of an FP32 value (a client's FP32 input is then exactly that value)."""
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[np.isfinite(arr) & (np.abs(arr) < 2.0**62)].astype(np.float32)
    return [repr(float(v)) for v in dict.fromkeys(arr.tolist())]


def _numbers(vocab: Sequence[str], log_square: bool) -> list[str | None]:
    """Each integer token, its neighbours, and for log_square both sides of its bucket edge exp(sqrt(k))."""
    ks = []
    for tok in vocab:
        try:
            ks.append(int(tok))
        except ValueError:
            continue
    ks += [-3, 0, 1, 2, 3, 1000]
    values: list[float] = []
    for k in ks:
        values += [k, k + 0.5, k - 0.25]
        if log_square and 0 < k < 3000:
            edge = np.float32(math.exp(math.sqrt(k)))
            values += [float(np.nextafter(edge, np.float32(-np.inf))), float(edge),
                       float(np.nextafter(edge, np.float32(np.inf))), math.exp(math.sqrt(k + 0.5))]
    values += [2.0, float(np.nextafter(np.float32(2), np.float32(3))), 1e18, -1e6, 123456789.0]
    return list(_fp32_text(values))


def _dates() -> list[str | None]:
    """YYMMDDHH over two weeks at every hour, a leap day and both centuries (text that is no date: prepare
    skips the row, the graph gives OOV; tests/test_encode_graph.py covers those)."""
    start = date(2014, 10, 20)
    days = [start + timedelta(d) for d in range(14)]
    days += [date(2016, 2, 29), date(1999, 12, 31), date(2000, 1, 1)]
    return [d.strftime("%y%m%d") + f"{h:02d}" for d in days for h in range(24)]


__all__ = ["MAX_STRING_BYTES", "RawPlan", "RawRows", "plan", "prepare_ids", "raw_test_rows",
           "vocabulary_rows"]
"""`RawRows` and `prepare_ids` live in `encode_parity` (the bench reads them from here)."""
