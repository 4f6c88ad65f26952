"""Raw values -> field-local ids: the one code path shared by `prepare` and clients of served models.

`prepare` and `RecordEncoder` both call `tokens()` then `lookup()`, so a raw record sent to a served
ensemble is encoded exactly as the training rows were.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import polars as pl

from ttsrec.data import transforms
from ttsrec.data.feature_map import FeatureMap, Field
from ttsrec.data.readers import BAD, UNDECODABLE
from ttsrec.data.spec import DatasetSpec
from ttsrec.errors import UserError

LABEL = "_label"


def token_columns(spec: DatasetSpec | FeatureMap) -> list[str]:
    """The token columns of `tokens()`, in `feat_ids` column order: a one-value field's is named like
    the field, a list field has `max_len` of them (`transforms.list_columns`)."""
    return [n for f in spec.fields
            for n in (transforms.list_columns(f.name, f.max_len) if f.is_list else [f.name])]


def tokens(frame: pl.DataFrame, spec: DatasetSpec, with_label: bool = True) -> pl.DataFrame:
    """One token column per field (named like the field), plus `_label` and `_bad` (0 = fine); a list
    field gives `max_len` token columns (null = padding) and its token count (`token_columns`).

    `_bad` codes: -k wrong column count (k found), `UNDECODABLE` bytes not valid in the spec's encoding,
    1 unreadable or missing label, 2 + j unreadable value of field j.
    """
    exprs, checks = [], []
    if with_label:
        label, bad_label = transforms.label(spec.label, spec.label_transform)
        exprs.append(label.alias(LABEL))
        checks.append((bad_label, 1))
    for j, f in enumerate(spec.fields):
        if f.is_list:
            is_list = isinstance(frame.schema.get(f.source), pl.List)
            cols, count = transforms.list_tokens(pl.col(f.source), f.separator or "", f.max_len, is_list)
            exprs += [c.alias(n) for c, n in zip(cols, transforms.list_columns(f.name, f.max_len),
                                                 strict=True)]
            exprs.append(count.alias(transforms.list_length_column(f.name)))
            continue
        tok, bad = transforms.token(f.source, f.preprocess)
        exprs.append(tok.alias(f.name))
        if bad is not None:
            checks.append((bad, 2 + j))
    code: Any = pl.col(BAD) if BAD in frame.columns else pl.lit(0, pl.Int32)
    if checks:
        chain: Any = pl.when(code != 0).then(code)
        for bad, value in checks:
            chain = chain.when(bad).then(pl.lit(value, pl.Int32))
        code = chain.otherwise(pl.lit(0, pl.Int32))
    return frame.select(*exprs, code.cast(pl.Int32).alias(BAD))


def describe_bad(code: int, spec: DatasetSpec, ncols: int = 0) -> str:
    """The reason behind a `_bad` code, in words."""
    if code == UNDECODABLE:
        return f"invalid {spec.encoding} bytes"
    if code < 0:
        return (
            f"wrong number of columns (expected {ncols}, got {-code})" if ncols else "wrong number of columns"
        )
    if code == 1:
        return f"missing or unreadable label in column {spec.label} ({spec.label_transform})"
    f = spec.fields[code - 2]
    return f"unreadable value in column {f.source} ({f.preprocess})"


class Lookup:
    """Token -> id per field: `vocab[i]` has id i + 1, a missing value the id of `<missing>`, the rest 0."""

    def __init__(self, fmap: FeatureMap) -> None:
        self.exprs = [e for f in fmap.fields for e in (self._list_exprs(f) if f.is_list else [self._expr(f)])]

    @staticmethod
    def _list_exprs(f: Field) -> list[pl.Expr]:
        """A list field's columns: padding (null) -> `pad_id`, tokens as a strings' lookup."""
        out = []
        for name in transforms.list_columns(f.name, f.max_len):
            col = pl.col(name)
            found = ((col.cast(pl.Enum(f.vocab), strict=False).to_physical().cast(pl.Int32) + 1).fill_null(0)
                     if f.vocab else pl.lit(0, pl.Int32))
            out.append(pl.when(col.is_null()).then(pl.lit(f.pad_id, pl.Int32)).otherwise(found).alias(name))
        return out

    @staticmethod
    def _expr(f: Field) -> pl.Expr:
        col = pl.col(f.name)
        ids = [i + 1 for i, tok in enumerate(f.vocab) if tok != transforms.MISSING]
        keys = [tok for tok in f.vocab if tok != transforms.MISSING]
        missing_id = f.vocab.index(transforms.MISSING) + 1 if transforms.MISSING in f.vocab else 0
        if not keys:
            found: pl.Expr = pl.lit(0, pl.Int32)
        elif transforms.dtype_of(f.preprocess) == pl.String:
            # strings: an Enum cast is the fastest hash lookup polars has (unknown -> null -> OOV);
            # the categories are the whole vocab, so the physical code + 1 is the id
            found = (col.cast(pl.Enum(f.vocab), strict=False).to_physical().cast(pl.Int32) + 1).fill_null(0)
        else:
            dtype = transforms.dtype_of(f.preprocess)
            found = col.replace_strict(
                pl.Series(keys).cast(dtype), pl.Series(ids, dtype=pl.Int32), default=0, return_dtype=pl.Int32
            )
        return pl.when(col.is_null()).then(pl.lit(missing_id, pl.Int32)).otherwise(found).alias(f.name)

    def __call__(self, toks: pl.DataFrame, dtype: Any = np.int32) -> np.ndarray:
        return toks.select(self.exprs).to_numpy(order="c").astype(dtype, copy=False)


class RecordEncoder:
    """Encode raw records (dicts keyed by raw column names, values as in the file) into ids [B, F].

    For Criteo the keys are "I1".."I13", "C1".."C26"; a missing key, None or "" is a missing value.
    A value the preset cannot read (text in a numeric column) is a `UserError` naming the record.
    """

    def __init__(self, feature_map: FeatureMap) -> None:
        self.feature_map = feature_map
        self.spec = DatasetSpec.from_dict(feature_map.spec, origin="feature_map.json spec")
        self._lookup = Lookup(feature_map)
        self._separators = {f.source: f.separator for f in self.spec.fields if f.is_list}

    def encode(self, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """ids [B, width]; a list field's value is its raw string or a Python list of tokens."""
        columns = {
            src: pl.Series(src, [raw_text(r.get(src), self._separators.get(src)) for r in records],
                           dtype=pl.String)
            for src in self.spec.sources
        }
        toks = tokens(pl.DataFrame(columns, height=len(records)), self.spec, with_label=False)
        bad = toks.get_column(BAD).to_numpy()
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise UserError(f"record {row}: {describe_bad(int(bad[row]), self.spec)}")
        if not records:
            return np.zeros((0, self.feature_map.width), dtype=np.int64)
        return self._lookup(toks.drop(BAD), np.int64)


def raw_text(value: Any, separator: str | None = None) -> str | None:
    """A record's raw value as `prepare` reads it: None for a missing one (None, "", NaN), integral
    floats as integers (3.0 -> "3"), anything else as `str` gives it; for a list field (`separator`)
    a list or tuple of tokens is joined by the separator (missing tokens left out)."""
    if separator is not None and isinstance(value, (list, tuple)):
        parts = [raw_text(v) for v in value]
        return separator.join(p for p in parts if p is not None) or None
    if value is None or value == "":
        return None
    if isinstance(value, float):
        if math.isnan(value):  # how pandas and numpy spell a missing number
            return None
        if value.is_integer():
            return str(int(value))
    return str(value)
