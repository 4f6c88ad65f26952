"""Token dictionaries: each token seen in a shard gets a dense code per field, so counting and encoding are
array operations instead of hash lookups.

Pass 1 turns every token into its code once (one probe per value into its field's table, compiled in
`_kernels.c`) and caches the codes; counting adds the train rows' codes, and pass 2 is an array gather
through `code -> id` (built from the shard's distinct tokens, not its rows). Code 0 is the missing value
(null token), code `g + 1` the table's token `g`. Integer tokens have tables of their own (keyed by the
integer); the vocabulary stores their decimal text.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl

from ttsrec.data import _kernels, transforms
from ttsrec.data.spec import DatasetSpec
from ttsrec.data.transforms import MISSING
from ttsrec.errors import UserError

TOKEN, COUNT = "token", "count"
NEWLINE = 10
EMPTY = np.empty(0, dtype=np.uint8)
"""No null mask: in raw text an empty token is the missing value."""


def capacity(slots: np.ndarray) -> int:
    """Tokens a table takes before it grows (as `_kernels.c` reckons: load factor 0.7)."""
    return (len(slots) // 2) * 7 // 10


@dataclass(frozen=True)
class Columns:
    """Which field each token column (each `feat_ids` column) belongs to: a list field's `max_len`
    columns share its dictionary and counts, and their code 0 is padding (never counted)."""

    field_of: tuple[int, ...]
    is_list: tuple[bool, ...]
    """Per field."""
    is_int: tuple[bool, ...] = ()
    """Per field: its tokens are integers (`transforms.dtype_of`), else text."""

    @classmethod
    def of(cls, spec: DatasetSpec) -> Columns:
        return cls(tuple(j for j, f in enumerate(spec.fields) for _ in range(f.max_len if f.is_list else 1)),
                   tuple(f.is_list for f in spec.fields),
                   tuple(not f.is_list and transforms.dtype_of(f.preprocess).is_integer()
                         for f in spec.fields))

    def columns_of(self, field: int) -> list[int]:
        return [c for c, j in enumerate(self.field_of) if j == field]

    @property
    def num_fields(self) -> int:
        return len(self.is_list)

    @property
    def width(self) -> int:
        return len(self.field_of)


class _Table:
    """What both tables share: the slots, the token count (`state[0]`) and the train counts."""

    text = False

    def __init__(self, state_words: int) -> None:
        self.slots = np.zeros(2 * 1024, dtype=np.uint64)
        self.state = np.zeros(state_words, dtype=np.int64)
        self.counts = np.zeros(capacity(self.slots) + 1, dtype=np.int64)
        """Train rows per code the slots do not hold (the missing value's, the general path's); longer
        than any code the table holds."""

    @property
    def size(self) -> int:
        return int(self.state[0])

    def count(self, codes: np.ndarray, train: np.ndarray, skip_missing: bool = False) -> None:
        """Count the codes (of this table) of the rows where `train` is set."""
        _kernels.count_codes(codes, train.view(np.uint8), self.counts, skip_missing)

    def train_counts(self) -> np.ndarray:
        """Train rows per code (index: code; 0 is the missing value), all counted so far."""
        counts = self.counts[: self.size + 1].copy()
        _kernels.slot_counts(self.slots, counts)
        return counts

    def _grow_slots(self) -> None:
        if self.size + 1 > capacity(self.slots):
            self.slots = _rehashed(self.slots, self.text)
        if self.size + 2 > len(self.counts):
            self.counts = _grown(self.counts, capacity(self.slots) + 1)


class TextTable(_Table):
    """One field's text token -> dense code (1, 2, ...; 0 is the missing value), grown as tokens come."""

    text = True

    def __init__(self) -> None:
        super().__init__(2)  # [tokens, arena bytes used]
        self.offsets = np.zeros(1024, dtype=np.int64)
        self.arena = np.empty(1 << 16, dtype=np.uint8)

    def code(self, data: np.ndarray, lo: np.ndarray, hi: np.ndarray, trim: int, nulls: np.ndarray,
             codes: np.ndarray, train: np.ndarray = EMPTY) -> None:
        """Codes of the tokens data[lo[r] : hi[r] - trim] into `codes`, the rows where `train` is set
        counted on the way (see `_kernels.code_text`)."""
        r = 0
        while (r := _kernels.code_text(data, lo, hi, trim, nulls, r, self.slots, self.state, self.offsets,
                                      self.arena, codes, train, self.counts)) < len(codes):
            self._grow_slots()
            need, used = int(hi[r]) - trim - int(lo[r]), int(self.state[1])
            if self.size + 2 > len(self.offsets):
                self.offsets = _grown(self.offsets, 2 * len(self.offsets))
            if used + need > len(self.arena):
                self.arena = _grown(self.arena, max(2 * len(self.arena), used + need), used)

    def code_strings(self, col: pl.Series, codes: np.ndarray, nulls: np.ndarray | None = None) -> None:
        """`code` for a polars string column (null: missing; "" a token like any other)."""
        nulls = col.is_null().to_numpy().view(np.uint8) if nulls is None else nulls
        lens = col.str.len_bytes().fill_null(0).to_numpy()
        hi = np.cumsum(lens, dtype=np.int64)
        data = np.frombuffer(col.str.join("", ignore_nulls=True).item().encode(), dtype=np.uint8)
        if len(data) >= 1 << 31:
            raise UserError(f"column {col.name}: over 2 GB of text in one chunk of rows")
        self.code(data, (hi - lens).astype(np.int32), hi.astype(np.int32), 0, nulls, codes)

    def tokens(self, first: int = 0) -> pl.Series:
        """The tokens in code order (code g + 1 is entry g), from entry `first` on."""
        size = self.size
        if first >= size:
            return pl.Series(TOKEN, [], dtype=pl.String)
        arena = self.arena[self.offsets[first]: self.offsets[size]]
        if (arena == NEWLINE).any():  # one token split per newline, unless a token holds one (Parquet)
            return pl.Series(TOKEN, [bytes(self.arena[a:b]).decode() for a, b in
                                     zip(self.offsets[first:size], self.offsets[first + 1: size + 1],
                                         strict=True)], dtype=pl.String)
        joined = np.empty(len(arena) + size - first, dtype=np.uint8)
        _kernels.joined(self.arena, self.offsets, first, size, joined)
        text = joined.tobytes().decode()
        return pl.Series(TOKEN, [text]).str.split("\n").explode().head(size - first)


class IntTable(_Table):
    """`TextTable` for integer tokens (their own keys; the vocabulary holds their decimal text)."""

    def __init__(self) -> None:
        super().__init__(1)
        self.keys = np.zeros(512, dtype=np.int64)

    def code(self, values: np.ndarray, nulls: np.ndarray, codes: np.ndarray,
             train: np.ndarray = EMPTY) -> None:
        r = 0
        while (r := _kernels.code_ints(values, nulls, r, self.slots, self.state, self.keys, codes, train,
                                       self.counts)) < len(codes):
            self._grow_slots()
            if self.size + 1 > len(self.keys):
                self.keys = _grown(self.keys, 2 * len(self.keys))

    def tokens(self) -> pl.Series:
        return pl.Series(TOKEN, self.keys[: self.size]).cast(pl.String)


def _rehashed(slots: np.ndarray, text: bool) -> np.ndarray:
    bigger = np.zeros(2 * len(slots), dtype=np.uint64)
    _kernels.rehash(slots, bigger, text)
    return bigger


def _grown(array: np.ndarray, n: int, keep: int | None = None) -> np.ndarray:
    out = np.zeros(n, dtype=array.dtype)
    out[: len(array) if keep is None else keep] = array[:keep]
    return out


class TokenDictionary:
    """Token -> code for each field of one shard (the codes mean nothing outside the shard's dictionary):
    one table per field, so threads may code different fields at once (`code_columns`)."""

    def __init__(self, columns: Columns) -> None:
        self.columns = columns
        self.tables: list[TextTable | IntTable] = [IntTable() if is_int else TextTable()
                                                   for is_int in columns.is_int]

    @property
    def sizes(self) -> list[int]:
        """Codes used per field (codes are dense, 0 being the missing value)."""
        return [t.size for t in self.tables]

    def encode(self, toks: pl.DataFrame, names: list[str],
               pool: ThreadPoolExecutor | None = None) -> np.ndarray:
        """Codes (uint32 [C, rows]) of the token columns `names` (column j of field `field_of[j]`)."""
        out = np.empty((len(names), toks.height), dtype=np.uint32)

        def field(j: int) -> None:
            table = self.tables[j]
            for c in self.columns.columns_of(j):
                col = toks.get_column(names[c])
                nulls = col.is_null().to_numpy().view(np.uint8)
                if isinstance(table, IntTable):
                    table.code(col.fill_null(0).to_numpy().astype(np.int64, copy=False), nulls, out[c])
                    continue
                table.code_strings(col, out[c], nulls)

        fields = range(self.columns.num_fields)
        list(pool.map(field, fields)) if pool else [field(j) for j in fields]
        return out

    def tokens(self) -> list[pl.Series]:
        """Each field's tokens in code order (code g + 1 is entry g)."""
        return [t.tokens() for t in self.tables]

    def count(self, codes: np.ndarray, train: np.ndarray, pool: ThreadPoolExecutor) -> None:
        """Count the train rows' codes (uint32 [C, rows]) into the tables (a list field's padding left
        out), a field per thread at a time."""
        def field(j: int) -> None:
            for c in self.columns.columns_of(j):
                self.tables[j].count(codes[c], train, self.columns.is_list[j])

        list(pool.map(field, range(self.columns.num_fields)))

    def counts(self) -> list[np.ndarray]:
        """Per field, the train rows per code counted so far (index: code)."""
        return [t.train_counts() for t in self.tables]


def add_counts(counts: list[np.ndarray], codes: np.ndarray, train: np.ndarray, columns: Columns) -> None:
    """Add the train rows' (`train[r]` set) code counts of `codes` (uint32 [C, rows]) to `counts` (one
    growing int64 array per field; a list field's columns add to its one array, their padding code 0
    left out): a shard's cache counted with no tables at hand (Ray's count step)."""
    for c, column_codes in enumerate(codes):
        j = columns.field_of[c]
        top = int(column_codes.max(initial=0)) + 1
        if top > len(counts[j]):
            grown = np.zeros(max(top, 2 * len(counts[j])), dtype=np.int64)
            grown[: len(counts[j])] = counts[j]
            counts[j] = grown
        _kernels.count_codes(column_codes, train.view(np.uint8), counts[j], columns.is_list[j])


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
    vocab[i] has id i + 1 (a token listed twice: its first), the rest 0 (OOV)."""
    table = np.zeros(tokens.len() + 1, dtype=np.int32)
    table[0] = len(vocab) + 1 if is_list else vocab.index(MISSING) + 1 if MISSING in vocab else 0
    if vocab and tokens.len():
        known = (pl.DataFrame({TOKEN: pl.Series(vocab, dtype=pl.String)}).with_row_index("id", offset=1)
                 .unique(TOKEN, keep="first", maintain_order=True))
        ids = tokens.replace_strict(known.get_column(TOKEN), known.get_column("id").cast(pl.Int32), default=0,
                                    return_dtype=pl.Int32)
        table[1:] = ids.fill_null(0).to_numpy()
    return table
