"""Token dictionaries: each token seen in a shard gets a dense code per field, so counting and encoding are
array operations instead of hash lookups.

Pass 1 turns every token into its code once (one hash probe per value, into polars' `Categories`) and
caches the codes; counting is then a `bincount` of the train rows' codes, and pass 2 an array gather
through `code -> id` (built from the shard's distinct tokens, not its rows). Code 0 is the missing value
(null token), code `g + 1` the dictionary's token `g`. Integer tokens share the scheme through their
decimal text (the vocabulary stores them as text anyway), coded per chunk from their distinct values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from ttsrec.data.spec import DatasetSpec
from ttsrec.data.transforms import MISSING

TOKEN, COUNT = "token", "count"


@dataclass(frozen=True)
class Columns:
    """Which field each token column (each `feat_ids` column) belongs to: a list field's `max_len`
    columns share its dictionary and counts, and their code 0 is padding (never counted)."""

    field_of: tuple[int, ...]
    is_list: tuple[bool, ...]
    """Per field."""

    @classmethod
    def of(cls, spec: DatasetSpec) -> Columns:
        return cls(tuple(j for j, f in enumerate(spec.fields) for _ in range(f.max_len if f.is_list else 1)),
                   tuple(f.is_list for f in spec.fields))

    @property
    def num_fields(self) -> int:
        return len(self.is_list)

    @property
    def width(self) -> int:
        return len(self.field_of)


class TokenDictionary:
    """Token -> code for each field of one shard (the codes mean nothing outside the shard's dictionary)."""

    def __init__(self, num_fields: int, field_of: tuple[int, ...] | None = None) -> None:
        self.field_of = tuple(range(num_fields)) if field_of is None else field_of
        self.cats = [pl.Categories.random(namespace="ttsrec") for _ in range(num_fields)]
        # a Categories mapping lives only while a Series uses it
        self._alive = [pl.Series([], dtype=pl.Categorical(c)) for c in self.cats]
        self._tables: dict[int, _IntTable] = {}
        self.sizes = [0] * num_fields
        """Codes used per field (the largest code: codes are dense, 0 being the missing value)."""

    def encode(self, toks: pl.DataFrame, names: list[str]) -> np.ndarray:
        """Codes (uint32 [C, rows]) of the token columns `names` (column j of field `field_of[j]`)."""
        out = np.empty((len(names), toks.height), dtype=np.uint32)
        cats = [self.cats[f] for f in self.field_of]
        text = [j for j, n in enumerate(names) if not toks.schema[n].is_integer()]
        if text:  # one query: polars codes the columns in parallel
            codes = toks.select(
                (pl.col(names[j]).cast(pl.String).cast(pl.Categorical(cats[j])).to_physical() + 1)
                .fill_null(0).alias(names[j])
                for j in text
            )
            for j in text:
                out[j] = codes.get_column(names[j]).to_numpy()
        for j, name in enumerate(names):
            if j not in text:
                field = self.field_of[j]
                out[j] = self._tables.setdefault(field, _IntTable(self, field)).codes(toks.get_column(name))
        if toks.height:
            sizes = np.array(self.sizes)
            np.maximum.at(sizes, list(self.field_of), out.max(axis=1))
            self.sizes = sizes.tolist()
        return out

    def text_codes(self, j: int, col: pl.Series) -> np.ndarray:
        physical = col.cast(pl.String).cast(pl.Categorical(self.cats[j])).to_physical()
        return (physical + 1).fill_null(0).to_numpy()

    def tokens(self) -> list[pl.Series]:
        """Each field's tokens in code order (code g + 1 is entry g)."""
        out = []
        for c, size in zip(self.cats, self.sizes, strict=True):
            physical = pl.DataFrame({TOKEN: np.arange(size, dtype=np.uint32)})
            out.append(physical.select(pl.col(TOKEN).cat.to(pl.Categorical(c)).cast(pl.String)).to_series())
        return out


class _IntTable:
    """Integer token -> code through an array over the values' range (one gather per row, no hashing);
    values spread wider than `MAX_RANGE` fall back to the text codes of their decimal form."""

    MAX_RANGE = 1 << 22

    def __init__(self, coder: TokenDictionary, j: int) -> None:
        self.coder, self.j = coder, j
        self.lo, self.table = 0, np.zeros(0, dtype=np.uint32)

    def codes(self, col: pl.Series) -> np.ndarray:
        nulls = col.null_count()
        if nulls == col.len():
            return np.zeros(col.len(), dtype=np.uint32)
        values = col.fill_null(col.min()).to_numpy() if nulls else col.to_numpy()
        lo, hi = int(values.min()), int(values.max())
        if not self._cover(lo, hi):
            return self.coder.text_codes(self.j, col)
        at = values - self.lo
        out = self.table[at]
        new = out == 0
        if new.any():
            fresh = np.unique(values[new])
            self.table[fresh - self.lo] = self.coder.text_codes(self.j, pl.Series(fresh).cast(pl.String))
            out[new] = self.table[at[new]]
        if nulls:
            out[col.is_null().to_numpy()] = 0
        return out

    def _cover(self, lo: int, hi: int) -> bool:
        """Grow the table to span [lo, hi]; False (and the table unused from then on) when too wide."""
        if self.table is None:
            return False
        if not len(self.table):
            self.lo = lo
        new_lo, new_hi = min(lo, self.lo), max(hi, self.lo + len(self.table) - 1)
        if new_hi - new_lo + 1 > self.MAX_RANGE:
            self.table = None  # type: ignore[assignment]
            return False
        if new_lo < self.lo or new_hi >= self.lo + len(self.table):
            grown = np.zeros(new_hi - new_lo + 1, dtype=np.uint32)
            grown[self.lo - new_lo: self.lo - new_lo + len(self.table)] = self.table
            self.lo, self.table = new_lo, grown
        return True


def add_counts(counts: list[np.ndarray], codes: np.ndarray, columns: Columns | None = None) -> None:
    """Add the code counts of `codes` (uint32 [C, rows]) to `counts` (one growing int64 array per field;
    a list field's columns add to its one array, their padding code 0 left out)."""
    for c, column_codes in enumerate(codes):
        j = c if columns is None else columns.field_of[c]
        found = np.bincount(column_codes)
        if columns is not None and columns.is_list[j] and len(found):
            found[0] = 0
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


def id_table(tokens: pl.Series, vocab: list[str], is_list: bool = False) -> np.ndarray:
    """int32 ids by code (entry 0: the missing value's id, or a list field's padding id `len(vocab) + 1`):
    vocab[i] has id i + 1, the rest 0 (OOV)."""
    table = np.zeros(tokens.len() + 1, dtype=np.int32)
    table[0] = len(vocab) + 1 if is_list else vocab.index(MISSING) + 1 if MISSING in vocab else 0
    first = {tok: i + 1 for i, tok in reversed(list(enumerate(vocab)))}  # a token listed twice: its first id
    if first and tokens.len():
        keys = pl.Series(list(first), dtype=pl.String)
        ids = tokens.replace_strict(keys, pl.Series(list(first.values()), dtype=pl.Int32), default=0,
                                    return_dtype=pl.Int32)
        table[1:] = ids.fill_null(0).to_numpy()
    return table
