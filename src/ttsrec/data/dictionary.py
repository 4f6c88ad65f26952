"""Token dictionaries: each token seen in a shard gets a dense code per field, so counting and encoding are
array operations instead of hash lookups.

Pass 1 turns every token into its code once (one hash probe per value, into polars' `Categories`) and
caches the codes; counting is then a `bincount` of the train rows' codes, and pass 2 an array gather
through `code -> id` (built from the shard's distinct tokens, not its rows). Code 0 is the missing value
(null token), code `g + 1` the dictionary's token `g`. Integer tokens share the scheme through their
decimal text (the vocabulary stores them as text anyway), coded per chunk from their distinct values.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from ttsrec.data.transforms import MISSING

TOKEN, COUNT = "token", "count"
LUT_SLACK = 4096
"""Integer tokens are coded through a lookup table when their range is at most 4x the rows plus this."""


class TokenDictionary:
    """Token -> code for each field of one shard (the codes mean nothing outside the shard's dictionary)."""

    def __init__(self, num_fields: int) -> None:
        self.cats = [pl.Categories.random(namespace="ttsrec") for _ in range(num_fields)]
        # a Categories mapping lives only while a Series uses it
        self._alive = [pl.Series([], dtype=pl.Categorical(c)) for c in self.cats]

    def encode(self, toks: pl.DataFrame, names: list[str]) -> np.ndarray:
        """Codes (uint32 [F, rows]) of the token columns `names`, in field order."""
        out = np.empty((len(names), toks.height), dtype=np.uint32)
        for j, name in enumerate(names):
            out[j] = self._codes(j, toks.get_column(name))
        return out

    def _codes(self, j: int, col: pl.Series) -> np.ndarray:
        if col.dtype.is_integer():
            return self._int_codes(j, col)
        return self._text_codes(j, col.cast(pl.String))

    def _text_codes(self, j: int, col: pl.Series) -> np.ndarray:
        physical = col.cast(pl.Categorical(self.cats[j])).to_physical()
        return (physical + 1).fill_null(0).to_numpy()

    def _int_codes(self, j: int, col: pl.Series) -> np.ndarray:
        distinct = col.drop_nulls().unique()
        if distinct.len() == 0:
            return np.zeros(col.len(), dtype=np.uint32)
        codes = self._text_codes(j, distinct.cast(pl.String))
        lo, hi = int(distinct.min()), int(distinct.max())  # type: ignore[arg-type]
        if hi - lo > 4 * col.len() + LUT_SLACK:  # sparse values: a hash lookup per row
            mapped = col.replace_strict(distinct, pl.Series(codes), default=0, return_dtype=pl.UInt32)
            return mapped.fill_null(0).to_numpy()
        table = np.zeros(hi - lo + 1, dtype=np.uint32)
        table[distinct.to_numpy() - lo] = codes
        out = table[col.fill_null(lo).to_numpy() - lo]
        if col.null_count():
            out[col.is_null().to_numpy()] = 0
        return out

    def tokens(self) -> list[pl.Series]:
        """Each field's tokens in code order (code g + 1 is entry g)."""
        return [c.to_series().rename(TOKEN) for c in self.cats]


def add_counts(counts: list[np.ndarray], codes: np.ndarray) -> None:
    """Add the code counts of `codes` (uint32 [F, rows]) to `counts` (one growing int64 array per field)."""
    for j, field_codes in enumerate(codes):
        found = np.bincount(field_codes)
        if len(found) > len(counts[j]):
            counts[j] = np.concatenate([counts[j], np.zeros(len(found) - len(counts[j]), dtype=np.int64)])
        counts[j][: len(found)] += found


def count_frame(tokens: pl.Series, counts: np.ndarray) -> pl.DataFrame:
    """(token, count) of the tokens counted at least once; token null = the missing value."""
    seen = np.flatnonzero(counts)
    labels = pl.concat([pl.Series(TOKEN, [None], dtype=pl.String), tokens])
    return pl.DataFrame({TOKEN: labels.gather(seen), COUNT: counts[seen]})


def vocabulary(frames: list[pl.DataFrame], min_count: int) -> list[str]:
    """Tokens counted at least `min_count` times over all shards, most frequent first (ties by token)."""
    total = frames[0] if len(frames) == 1 else pl.concat(frames).group_by(TOKEN).agg(pl.col(COUNT).sum())
    kept = total.filter(pl.col(COUNT) >= min_count).select(pl.col(TOKEN).fill_null(MISSING), COUNT)
    return kept.sort([COUNT, TOKEN], descending=[True, False]).get_column(TOKEN).to_list()


def id_table(tokens: pl.Series, vocab: list[str]) -> np.ndarray:
    """int32 ids by code (entry 0: the missing value's id): vocab[i] has id i + 1, the rest 0 (OOV)."""
    table = np.zeros(tokens.len() + 1, dtype=np.int32)
    table[0] = vocab.index(MISSING) + 1 if MISSING in vocab else 0
    first = {tok: i + 1 for i, tok in reversed(list(enumerate(vocab)))}  # a token listed twice: its first id
    if first and tokens.len():
        keys = pl.Series(list(first), dtype=pl.String)
        ids = tokens.replace_strict(keys, pl.Series(list(first.values()), dtype=pl.Int32), default=0,
                                    return_dtype=pl.Int32)
        table[1:] = ids.fill_null(0).to_numpy()
    return table
