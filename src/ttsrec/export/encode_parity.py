"""Where the encode graph and `tts-data prepare` agree, and how that is checked.

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

`check_feed` refuses such values in a client feed before they are sent (`raw_feed(..., check=True)`);
`check_encode` is the export's gate: the shipped graph gives `prepare`'s ids on known raw rows
(`RawRows`: a feed and the ids `tts-data` gives the same rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from ttsrec.data import transforms
from ttsrec.data.encode import BAD, Lookup, describe_bad, tokens
from ttsrec.data.feature_map import FeatureMap, Field
from ttsrec.data.spec import DatasetSpec, FieldSpec
from ttsrec.errors import UserError
from ttsrec.export.encode_graph import EncodeGraph
from ttsrec.export.encode_ops import DATE_RE
from ttsrec.export.parity import ParityError
from ttsrec.repository import naming

Feed = dict[str, np.ndarray]


@dataclass
class RawRows:
    """Raw rows for the gate: the encode graph's feed and the ids `tts-data` gives the same rows."""

    name: str
    feed: Feed
    ids: np.ndarray
    """int64 [N, F]."""

    def __len__(self) -> int:
        return len(self.ids)

    def head(self, n: int) -> RawRows:
        return RawRows(self.name, {k: v[:n] for k, v in self.feed.items()}, self.ids[:n])


def dataset_spec(fmap: FeatureMap) -> DatasetSpec:
    """The dataset spec `prepare` encoded with (the feature map's own, else one rebuilt from its fields)."""
    if fmap.spec:
        return DatasetSpec.from_dict(fmap.spec, origin="feature_map.json spec")
    return DatasetSpec(dataset_id=fmap.dataset_id, label=fmap.label,
                       fields=[FieldSpec(f.name, f.source, f.preprocess, 1, f.separator or None, f.max_len,
                                         f.pooling) for f in fmap.fields])


def prepare_ids(fmap: FeatureMap, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """`tts-data`'s ids for a raw frame (source columns, null = missing) and which rows it would skip."""
    toks = tokens(frame, dataset_spec(fmap), with_label=False)
    return Lookup(fmap)(toks.drop(BAD), np.int64), toks.get_column(BAD).to_numpy() != 0


def check_feed(graph: EncodeGraph, frame: pl.DataFrame) -> None:
    """Refuse what `prepare` refuses (its own checks), then what the graph would encode differently."""
    spec = dataset_spec(graph.feature_map)
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
            checks[f"_odd{j}"] = (f, col.is_not_null() & ~col.cast(pl.String).str.contains(DATE_RE))
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


def check_encode(graph: EncodeGraph, session: Any, rows: RawRows) -> dict[str, Any]:
    """The shipped encode graph gives exactly `tts-data`'s ids on these rows, else a `ParityError` naming
    the first differing field, row and value."""
    step = 65_536
    parts = [session.run([naming.FEAT_IDS], {k: v[i:i + step] for k, v in rows.feed.items()})[0]
             for i in range(0, len(rows), step)]
    got = np.concatenate(parts) if parts else rows.ids
    differ = got != rows.ids
    count = int(differ.sum())
    if count:
        row, col = (int(x) for x in np.argwhere(differ)[0])
        fmap = graph.feature_map
        f = fmap.fields[int(np.searchsorted(np.cumsum(fmap.widths), col, side="right"))]
        value = rows.feed[graph.input_for(f.name).name][row, 0]
        raise ParityError(f"raw parity gate failed for {naming.RAW_ENCODE}: {count} ids differ from "
                          f"tts-data's on the {rows.name} rows, first field {f.name} ({f.preprocess}) at "
                          f"row {row}: value {value!r} -> id {got[row, col]}, tts-data {rows.ids[row, col]}")
    return {"rows": rows.name, "count": len(rows), "differing_ids": 0}
