"""Pass 1's fast path for delimited text: a clean chunk coded straight from its bytes (`_kernels`).

It applies to a spec of one-value fields read as they are (`none`) or as integers (`log_square`, `int`)
with a `binary` label, in UTF-8 with a one-byte separator: Criteo, and CSV specs like it. A chunk takes
it when it is ASCII, holds no quote character, every line has the file's column count, every label is
0 or 1 and every number a plain integer (`PLAIN_DIGITS`): the chunks of a well-formed log. Any other
chunk (`encode` returns None) takes the general path (polars' parser and `encode.tokens`), which reads
and names whatever is odd in it. A text token is the field's bytes, and an integer field's token is
made from its raw text by the general path's own expression (`transforms.token`), once per distinct raw
text, so both paths give the same tokens, hence the same codes, counts and ids.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import polars as pl

from ttsrec.data import _kernels, transforms
from ttsrec.data.dictionary import EMPTY, NEWLINE, IntTable, TextTable, TokenDictionary
from ttsrec.data.spec import DatasetSpec

PREPROCESS = ("none", "log_square", "int")
PLAIN_DIGITS = 15
"""Raw numbers the fast path takes: -?[0-9]{1,15}, exact in float64, so every parser reads the same value."""
WINDOW_BYTES = 1 << 20
"""Rows coded field after field a window at a time, of about this many bytes (within a core's L2)."""


def balanced(seconds: dict[int, float], threads: int) -> list[list[int]]:
    """Fields shared among threads so each has about the same seconds (longest first, to the least busy)."""
    shares: list[list[int]] = [[] for _ in range(threads)]
    load = [0.0] * threads
    for j in sorted(seconds, key=seconds.__getitem__, reverse=True):
        t = load.index(min(load))
        shares[t].append(j)
        load[t] += seconds[j]
    return shares


def applies(spec: DatasetSpec) -> bool:
    """Whether chunks of this spec's delimited files may take the fast path."""
    return (spec.format != "movielens" and spec.encoding.lower().replace("-", "") == "utf8"
            and len(spec.separator.encode()) == 1 and spec.label_transform == "binary"
            and all(not f.is_list and f.preprocess in PREPROCESS for f in spec.fields))


class FastText:
    """Codes the clean chunks of one shard into its `TokenDictionary`, two or more fields at a time."""

    def __init__(self, spec: DatasetSpec, cols: list[tuple[str, int]], ncols: int, coder: TokenDictionary,
                 pool: ThreadPoolExecutor) -> None:
        """`cols`: (name, index) of the file's columns that the spec reads, of `ncols` in all."""
        self.spec, self.ncols, self.coder, self.pool = spec, ncols, coder, pool
        self.sep = spec.separator.encode()[0]
        self.quote = spec.quote_char.encode() if spec.quote_char else b""
        index = dict(cols)
        self.label = index[spec.label]
        self.sources = [index[f.source] for f in spec.fields]
        integer = [isinstance(t, IntTable) for t in coder.tables]
        self.raw = {j: TextTable() for j, yes in enumerate(integer) if yes}
        """Integer fields: raw text -> raw code (the memo's index)."""
        self.memo = {j: np.zeros(1, dtype=np.uint32) for j in self.raw}
        """Integer fields: raw code -> the token's code in the field's table (0: missing)."""
        self.plain = {j: np.ones(1, dtype=bool) for j in self.raw}
        """Integer fields: raw code -> its raw text is a plain integer (else its chunks are not clean)."""
        self.bounds = np.empty(0, dtype=np.int32)
        self.threads = pool._max_workers  # type: ignore[attr-defined]
        self.shares = self._balanced(dict.fromkeys(range(len(self.sources)), 1.0))
        """(integer fields, text fields): the fields each thread codes in each of the two steps (a
        field's table is one thread's alone), balanced after each chunk by the seconds each field took."""

    def encode(self, block: bytes, newlines: int,
               train: np.ndarray = EMPTY) -> tuple[np.ndarray, np.ndarray] | None:
        """(codes uint32 [fields, rows], labels float32 [rows]) of `block` (whole lines, each ending in
        a newline), or None when the chunk is not clean. The rows where `train` (uint8) is set are
        counted into the tables as they are coded."""
        if not block.isascii() or (self.quote and self.quote in block):
            return None
        data = np.frombuffer(block, dtype=np.uint8)
        if self.bounds.size < (self.ncols + 1) * newlines:  # reused: fresh pages cost a fault and a zeroing
            self.bounds = np.empty((self.ncols + 1) * newlines, dtype=np.int32)
        bounds = self.bounds[: (self.ncols + 1) * newlines].reshape(self.ncols + 1, newlines)
        mid = block.find(b"\n", len(block) // 2) + 1 or len(block)
        halves = [(0, mid, 0), (mid, len(block), int(np.count_nonzero(data[:mid] == NEWLINE)))]
        found = self.pool.map(lambda h: _kernels.split_fields(data, h[0], h[1], self.sep, self.ncols, bounds,
                                                             h[2]), halves)
        if any(n < 0 for n in found):
            return None
        labels = np.empty(newlines, dtype=np.float32)
        if not _kernels.binary_labels(data, bounds[self.label], bounds[self.label + 1], labels):
            return None
        codes = np.empty((len(self.sources), newlines), dtype=np.uint32)
        step = max(1, newlines * WINDOW_BYTES // len(block))
        windows = [(r, min(r + step, newlines)) for r in range(0, newlines, step)]

        spent = dict.fromkeys(range(len(self.sources)), 0.0)

        def code(mine: list[int]) -> None:
            for r0, r1 in windows:  # a window of rows at a time: its bytes stay in this core's cache
                for j in mine:
                    started, col, lo, hi = time.perf_counter(), self.sources[j], r0, r1
                    table = self.raw.get(j) or self.coder.tables[j]  # an integer field: raw codes first
                    table.code(data, bounds[col, lo:hi], bounds[col + 1, lo:hi], 1, EMPTY, codes[j, lo:hi],  # type: ignore[call-arg]
                               EMPTY if j in self.raw else train[lo:hi])
                    spent[j] += time.perf_counter() - started

        # The integer fields first: one that is not plain sends the chunk to the general path before any
        # of its rows is counted (text fields count as they code).
        before = {j: raw.size for j, raw in self.raw.items()}
        list(self.pool.map(code, self.shares[0]))
        new = {j: self._plain(raw, before[j]) for j, raw in self.raw.items() if raw.size > before[j]}
        for j, (_, plain) in new.items():
            self.plain[j] = np.concatenate([self.plain[j], plain])
        if not all(self.plain[j][codes[j]].all() for j in self.raw):
            self._integer_codes(new)  # (the memo follows its raw table, whatever becomes of the chunk)
            return None
        texts = self.pool.map(code, self.shares[1])  # the text fields, while this thread ...
        self._integer_codes(new, codes)  # ... gives the integer fields their tokens' codes
        list(texts)
        if len(train) and self.raw:  # the integer fields' tokens' codes are known only now
            list(self.pool.map(lambda j: self.coder.tables[j].count(codes[j], train), self.raw))
        self.shares = self._balanced(spent)
        return codes, labels

    def _balanced(self, seconds: dict[int, float]) -> tuple[list[list[int]], list[list[int]]]:
        ints = balanced({j: t for j, t in seconds.items() if j in self.raw}, self.threads)
        return ints, balanced({j: t for j, t in seconds.items() if j not in self.raw}, self.threads)

    def _integer_codes(self, new: dict[int, tuple[np.ndarray, np.ndarray]],
                       codes: np.ndarray | None = None) -> None:
        """Extend the integer fields' memos by the raw texts new in this chunk (`new`: per field, their
        values and which are plain integers): a plain one's token comes from the general path's
        expression, one polars query per preprocess. Then, with `codes`, turn the fields' raw codes in
        it into their tokens' codes."""
        for preprocess in {self.spec.fields[j].preprocess for j in new}:
            fields = [j for j in new if self.spec.fields[j].preprocess == preprocess]
            values = pl.Series("v", np.concatenate([new[j][0][new[j][1]] for j in fields]))
            toks = pl.DataFrame([values]).select(transforms.token("v", preprocess)[0]).to_series().to_numpy()
            at = 0
            for j in fields:
                plain = new[j][1]
                found = np.empty(int(plain.sum()), dtype=np.uint32)
                self.coder.tables[j].code(toks[at:at + len(found)], EMPTY, found)  # type: ignore[call-arg]
                mapped = np.zeros(len(plain), dtype=np.uint32)  # (a raw text not plain: never looked up)
                mapped[plain] = found
                self.memo[j] = np.concatenate([self.memo[j], mapped])
                at += len(found)
        if codes is not None:
            for j in self.raw:
                np.take(self.memo[j], codes[j], out=codes[j])

    @staticmethod
    def _plain(raw: TextTable, first: int) -> tuple[np.ndarray, np.ndarray]:
        """(values, plain mask) of a raw table's texts from entry `first` on."""
        values = np.empty(raw.size - first, dtype=np.float64)
        plain = np.empty(raw.size - first, dtype=np.uint8)
        _kernels.plain_integers(raw.arena, raw.offsets, first, raw.size, PLAIN_DIGITS, values, plain)
        return values, plain.view(bool)
