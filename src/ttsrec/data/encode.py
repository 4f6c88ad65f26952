"""Raw values -> field-local ids: the one code path shared by `prepare` and clients of served models.

`prepare` and `RecordEncoder` both call `tokens()` then `lookup()`, so a raw record sent to a served
ensemble is encoded exactly as the training rows were.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from ttsrec.data import transforms
from ttsrec.data.feature_map import FeatureMap
from ttsrec.data.readers import BAD
from ttsrec.data.spec import DatasetSpec
from ttsrec.errors import UserError

LABEL = "_label"


def tokens(frame: pl.DataFrame, spec: DatasetSpec, with_label: bool = True) -> pl.DataFrame:
    """One token column per field (named like the field), plus `_label` and `_bad` (reason or null)."""
    exprs, reasons = [], []
    if BAD in frame.columns:
        reasons.append(pl.col(BAD))
    if with_label:
        label, bad_label = transforms.label(spec.label, spec.label_transform)
        exprs.append(label.alias(LABEL))
        reasons.append(
            pl.when(bad_label).then(pl.lit(f"bad label in column {spec.label} ({spec.label_transform})"))
        )
    for f in spec.fields:
        tok, bad = transforms.token(f.source, f.preprocess)
        exprs.append(tok.alias(f.name))
        reasons.append(pl.when(bad).then(pl.lit(f"unreadable value in column {f.source} ({f.preprocess})")))
    return frame.select(*exprs, pl.coalesce(reasons).alias(BAD))


class Lookup:
    """Token -> id per field (vocab[i] has id i + 1, everything else 0)."""

    def __init__(self, fmap: FeatureMap) -> None:
        self.names = fmap.field_names
        self.vocabs = [
            (pl.Series(f.vocab, dtype=pl.String), pl.Series(np.arange(1, f.vocab_size, dtype=np.int32)))
            for f in fmap.fields
        ]

    def __call__(self, toks: pl.DataFrame, dtype: Any = np.int32) -> np.ndarray:
        ids = toks.select(
            [
                pl.col(name).replace_strict(old, new, default=0, return_dtype=pl.Int32)
                for name, (old, new) in zip(self.names, self.vocabs, strict=True)
            ]
        )
        return ids.to_numpy(order="c").astype(dtype, copy=False)


class RecordEncoder:
    """Encode raw records (dicts keyed by raw column names, values as in the file) into ids [B, F].

    For Criteo the keys are "I1".."I13", "C1".."C26"; a missing key, None or "" is a missing value.
    A value the preset cannot read (text in a numeric column) is a `UserError` naming the record.
    """

    def __init__(self, feature_map: FeatureMap) -> None:
        self.feature_map = feature_map
        self.spec = DatasetSpec.from_dict(feature_map.spec, origin="feature_map.json spec")
        self._lookup = Lookup(feature_map)

    def encode(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        columns = {
            src: pl.Series(src, [_raw(r.get(src)) for r in records], dtype=pl.String)
            for src in self.spec.sources
        }
        toks = tokens(pl.DataFrame(columns, height=len(records)), self.spec, with_label=False)
        bad = toks.get_column(BAD)
        if bad.null_count() != len(bad):
            row = int(bad.is_not_null().arg_max() or 0)
            raise UserError(f"record {row}: {bad[row]}")
        if not records:
            return np.zeros((0, self.feature_map.num_fields), dtype=np.int64)
        return self._lookup(toks.drop(BAD), np.int64)


def _raw(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
