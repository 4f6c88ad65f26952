"""The work of `prepare` on one shard, as plain functions of picklable jobs: the local path calls them in
order, the Ray path runs them as tasks (`ray_prepare`), so both write the same bytes.

- `read_shard` (pass 1): parse, tokenise, code each token once (`dictionary`), cache the kept rows' codes,
  labels and row positions in the run's temp folder; count the train tokens when the shard's first row
  position is known (local: always; Ray: only after every shard's row count is in, see `count_shard`).
- `count_shard`: the same counts from the cache, for shards read before their position was known.
- `encode_shard` (pass 2): codes -> ids through the vocabulary, written with `pwrite` at the shard's own
  rows of each preallocated split file, so shards encode in any order or in parallel.

A job that runs twice (a retried Ray task) rewrites the same bytes.
"""

from __future__ import annotations

import contextlib
import os
import resource
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import polars as pl

from ttsrec.data import _kernels, fast_text
from ttsrec.data.delimited import BAD, CHUNK_BYTES, LINE, RawChunk
from ttsrec.data.dictionary import EMPTY, TOKEN, Columns, TokenDictionary, add_counts, count_frame, id_table
from ttsrec.data.encode import LABEL, describe_bad, token_columns, tokens
from ttsrec.data.fast_text import FastText
from ttsrec.data.prefetch import prefetch
from ttsrec.data.readers import Shard, iter_shard, text_blocks
from ttsrec.data.spec import DatasetSpec
from ttsrec.data.split import SPLITS, split_of
from ttsrec.data.transforms import list_length_column

FAIL_ONCE_ENV = "TTSREC_TEST_DATA_FAIL_ONCE"
"""Tests only: a marker-file path; the first shard task that finds it missing creates it and kills its
worker process (`os._exit`), as a crashed or preempted node would (every task, if it cannot be created)."""


@dataclass
class ProcessStats:
    """Where a job ran and what it cost, for the summary's per-process figures."""

    pid: int = 0
    seconds: float = 0.0
    peak_rss_mb: float = 0.0

    @classmethod
    def since(cls, started: float) -> ProcessStats:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return cls(os.getpid(), time.perf_counter() - started, round(peak, 1))


@dataclass
class ReadJob:
    spec: DatasetSpec
    shard: Shard
    index: int
    cache: Path
    seed: int = 0
    on_bad_row: str = "skip"
    chunk_bytes: int = CHUNK_BYTES
    offset: int | None = None
    """Position of the shard's first row among all rows of all inputs, when known (then counts inline)."""


@dataclass
class ShardCounts:
    per_split: list[int]
    tokens: list[pl.DataFrame]
    """Per field: (token, count) over the shard's train rows."""
    stats: ProcessStats = field(default_factory=ProcessStats)


@dataclass
class ShardRead:
    index: int
    rows: int
    """Data rows read (bad ones included): the row positions the shard takes."""
    lines: int
    """Lines consumed (header and blank ones included), to number the lines of later spans of a file."""
    reasons: dict[str, int]
    first_bad: tuple[int, str] | None
    """`--on-bad-row fail`: (line within the shard, reason) of the first bad row; the shard stops there."""
    chunks: list[CachedChunk]
    """The cached chunks, in order."""
    nbytes: int
    counts: ShardCounts | None
    stats: ProcessStats
    lists: dict[str, list[int]] = field(default_factory=dict)
    """Per list field, over the kept rows: [rows truncated to max_len, rows with an empty list]."""


def _cache_file(cache: Path, index: int, kind: str) -> Path:
    return cache / f"{index:06d}.{kind}"


def _fail_once() -> None:
    marker = os.environ.get(FAIL_ONCE_ENV)
    if marker and not Path(marker).exists():
        with contextlib.suppress(OSError):
            Path(marker).write_text(f"killed pid {os.getpid()}\n")
        os._exit(17)


def read_shard(job: ReadJob, progress: Callable[[int], None] | None = None) -> ShardRead:
    """Pass 1 on one shard; see the module docstring."""
    started = time.perf_counter()
    _fail_once()
    columns = Columns.of(job.spec)
    coder = TokenDictionary(columns)
    counting = job.offset is not None
    lists = {f.name: [0, 0] for f in job.spec.fields if f.is_list}
    per_split = np.zeros(len(SPLITS), dtype=np.int64)
    rows = lines = nbytes = 0
    reasons: Counter[str] = Counter()
    first_bad, chunks = None, []
    writes: list[Future[CachedChunk]] = []
    with ThreadPoolExecutor(coding_threads(), thread_name_prefix="ttsrec-code") as pool, \
            ThreadPoolExecutor(1, thread_name_prefix="ttsrec-cache") as writer, \
            open(_cache_file(job.cache, job.index, "rows"), "wb") as out, \
            closing(_coded(job, coder, pool)) as parts:  # closing stops the reader thread
        for chunk in parts:
            positions = np.arange(rows, rows + chunk.rows, dtype=np.int64)
            rows, lines, nbytes = rows + chunk.rows, lines + chunk.lines, nbytes + chunk.nbytes
            if chunk.bad is not None:
                if job.on_bad_row == "fail":
                    row = int(np.flatnonzero(chunk.bad)[0])
                    first_bad = int(chunk.line_of[row]), describe_bad(int(chunk.bad[row]), job.spec,  # type: ignore[index]
                                                                      chunk.ncols)
                    break
                reasons.update(_reasons(job.spec, chunk.bad, chunk.ncols))
                positions = positions[chunk.bad == 0]
            if chunk.toks is not None:
                _count_lists(job.spec, chunk.toks, lists)
            if writes:  # one chunk written while the next is coded
                chunks.append(writes.pop().result())
            writes.append(writer.submit(_cache_chunk, out, chunk.codes, chunk.labels, positions,
                                        chunk.bad is None, [coder.tables[j].size for j in columns.field_of]))
            if counting:
                split = chunk.split
                if split is None:  # the general path: counted here (the fast path counts as it codes)
                    split = split_of(positions + job.offset, job.seed)  # type: ignore[operator]
                    coder.count(chunk.codes, split == 0, pool)
                per_split += np.bincount(split, minlength=len(SPLITS))
            if progress:
                progress(chunk.nbytes)
        chunks += [w.result() for w in writes]
    dictionary = coder.tokens()
    _save_tokens(_cache_file(job.cache, job.index, "tokens"), dictionary)
    shard_counts = None
    if counting:
        frames = [count_frame(t, c) for t, c in zip(dictionary, coder.counts(), strict=True)]
        shard_counts = ShardCounts(per_split.tolist(), frames)
    return ShardRead(job.index, rows, lines, dict(reasons), first_bad, chunks, nbytes, shard_counts,
                     ProcessStats.since(started), lists)


def coding_threads() -> int:
    """Threads that code one shard's fields: the CPUs this process may use (`OMP_NUM_THREADS` where set,
    as Ray sets it to a task's CPUs)."""
    given = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if given.isdigit() and int(given) > 0:
        return int(given)
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else os.cpu_count() or 1


@dataclass
class _Coded:
    """Pass 1 on one chunk: the codes and labels of its kept rows, and what is known of the others."""

    codes: np.ndarray
    """uint32 [token columns, kept rows]"""
    labels: np.ndarray
    rows: int
    """Data rows (bad ones included)."""
    lines: int
    nbytes: int
    bad: np.ndarray | None = None
    """Per row, its `_bad` code; None when every row is fine."""
    line_of: np.ndarray | None = None
    """Per row, its line (with `bad`)."""
    ncols: int = 0
    toks: pl.DataFrame | None = None
    """The kept rows' tokens (general path: for the list fields' figures)."""
    split: np.ndarray | None = None
    """Per row, its split, when its train rows were counted as it was coded (the fast path)."""


def _coded(job: ReadJob, coder: TokenDictionary, pool: ThreadPoolExecutor) -> Iterator[_Coded]:
    """The shard's chunks, coded: straight from their bytes where `fast_text` applies (their train rows
    counted on the way when the shard's first row position is known), else parsed and tokenised by
    polars (a chunk ahead, in a thread) and coded from the tokens."""
    names = token_columns(job.spec)
    blocks = text_blocks(job.spec, job.shard, job.chunk_bytes) if fast_text.applies(job.spec) else None
    if blocks is None:
        tokenised = ((chunk, tokens(chunk.frame, job.spec)) for chunk in
                     iter_shard(job.spec, job.shard, job.chunk_bytes))
        for chunk, toks in prefetch(tokenised):
            yield _general(chunk, toks, coder, names, pool)
        return
    fast_path, rows = None, 0
    for block in prefetch(blocks):  # reading (and gunzipping) a chunk ahead
        data, newlines = block.data, block.newlines
        if not data.endswith(b"\n"):
            data, newlines = data + b"\n", newlines + 1
        fast_path = fast_path or FastText(job.spec, block.cols, block.ncols, coder, pool)
        split = None if job.offset is None else split_of(np.arange(rows, rows + newlines) + job.offset,
                                                         job.seed)
        fast = fast_path.encode(data, newlines, EMPTY if split is None else (split == 0).view(np.uint8))
        if fast is not None:
            yield _Coded(fast[0], fast[1], newlines, block.lines, block.nbytes, split=split)
            rows += newlines
        else:
            chunk = block.parse(job.spec)
            coded = _general(chunk, tokens(chunk.frame, job.spec), coder, names, pool)
            rows += coded.rows
            yield coded


def _general(chunk: RawChunk, toks: pl.DataFrame, coder: TokenDictionary, names: list[str],
             pool: ThreadPoolExecutor) -> _Coded:
    bad = toks.get_column(BAD).to_numpy()
    kept = toks.filter(pl.Series(bad == 0)) if bad.any() else toks
    codes = coder.encode(kept, names, pool)
    labels = kept.get_column(LABEL).to_numpy().astype(np.float32, copy=False)
    if not bad.any():
        return _Coded(codes, labels, toks.height, chunk.lines, chunk.nbytes, ncols=chunk.ncols, toks=kept)
    return _Coded(codes, labels, toks.height, chunk.lines, chunk.nbytes, bad,
                  chunk.frame.get_column(LINE).to_numpy(), chunk.ncols, kept)


def _count_lists(spec: DatasetSpec, toks: pl.DataFrame, lists: dict[str, list[int]]) -> None:
    """Add each list field's truncated rows (more tokens than max_len) and empty lists of a chunk."""
    for f in spec.fields:
        if f.is_list:
            n = toks.get_column(list_length_column(f.name)).to_numpy()
            lists[f.name][0] += int((n > f.max_len).sum())
            lists[f.name][1] += int((n == 0).sum())


def _reasons(spec: DatasetSpec, bad: np.ndarray, ncols: int) -> dict[str, int]:
    codes, n = np.unique(bad[bad != 0], return_counts=True)
    return {describe_bad(int(c), spec, ncols): int(k) for c, k in zip(codes, n, strict=True)}


def _count(codes: np.ndarray, positions: np.ndarray, seed: int, counts: list[np.ndarray],
           columns: Columns) -> np.ndarray:
    """Count the train rows' codes into `counts` (per field; a shard's cache, no tables at hand); return
    the rows per split."""
    split = split_of(positions, seed)
    add_counts(counts, codes, split == 0, columns)
    return np.bincount(split, minlength=len(SPLITS))


def _save_tokens(path: Path, dictionary: list[pl.Series]) -> None:
    frame = pl.DataFrame({"field": np.repeat(np.arange(len(dictionary), dtype=np.int32),
                                             [len(t) for t in dictionary]),
                          TOKEN: pl.concat(dictionary) if dictionary else pl.Series(TOKEN, [], pl.String)})
    frame.write_ipc(path, compression="uncompressed")


def _load_tokens(path: Path, num_fields: int) -> list[pl.Series]:
    frame = pl.read_ipc(path)
    parts = frame.partition_by("field", as_dict=True, maintain_order=True)
    empty = pl.Series(TOKEN, [], dtype=pl.String)
    return [parts[(j,)].get_column(TOKEN) if (j,) in parts else empty for j in range(num_fields)]


@dataclass(frozen=True)
class CachedChunk:
    """Where a chunk's kept rows sit in its shard's cache: `rows` of them, each token column's codes as
    uint16 or, where bit c of `wide` is set, uint32 (most fields never reach 65,536 codes: the cache,
    written and read once, is ~40% smaller), labels as uint8 (always 0 or 1), and the rows' positions
    in the shard, stored only when they are not `first`, `first` + 1, ... (a chunk with skipped rows)."""

    rows: int
    wide: int
    first: int
    """Position of the first row when the rows follow each other; -1: positions stored."""


@dataclass
class _Cached:
    """A cached chunk read back: codes in two blocks (uint16 `narrow`, uint32 `wide`) and where each
    column's are (`column_at`, as `_kernels.gather_ids` takes it)."""

    narrow: np.ndarray
    wide: np.ndarray
    column_at: np.ndarray
    labels: np.ndarray
    positions: np.ndarray

    def codes(self) -> np.ndarray:
        """uint32 [C, rows], every column."""
        out = np.empty((len(self.column_at), len(self.labels)), dtype=np.uint32)
        for c, k in enumerate(self.column_at.tolist()):
            out[c] = self.wide[k] if k >= 0 else self.narrow[-k - 1]
        return out


def _cache_chunk(out: BinaryIO, codes: np.ndarray, labels: np.ndarray, positions: np.ndarray,
                 consecutive: bool, sizes: list[int]) -> CachedChunk:
    """Append a chunk's kept rows to its shard's cache (`sizes`: each column's table size, its top code)."""
    wide = [size > 0xFFFF for size in sizes]
    narrow = np.empty((wide.count(False), codes.shape[1]), dtype=np.uint16)
    for k, c in enumerate(c for c, w in enumerate(wide) if not w):
        narrow[k] = codes[c]
    out.write(narrow.data)
    for c in (c for c, w in enumerate(wide) if w):
        out.write(np.ascontiguousarray(codes[c]).data)
    out.write(labels.astype(np.uint8).data)
    first = int(positions[0]) if consecutive and len(positions) else -1
    if first < 0:
        out.write(np.ascontiguousarray(positions, dtype=np.int64).data)
    return CachedChunk(len(labels), sum(1 << c for c, w in enumerate(wide) if w), first)


def _cached_chunks(cache: Path, index: int, chunks: list[CachedChunk], width: int) -> Iterator[_Cached]:
    """The cached chunks of a shard (`width` token columns), read back in order."""
    with open(_cache_file(cache, index, "rows"), "rb") as fh:
        for chunk in chunks:
            n = chunk.rows
            wide = [bool(chunk.wide >> c & 1) for c in range(width)]
            column_at = np.empty(width, dtype=np.int64)
            column_at[wide] = np.arange(sum(wide))
            column_at[np.logical_not(wide)] = -1 - np.arange(width - sum(wide))
            n_wide = sum(wide)
            narrow = np.fromfile(fh, dtype=np.uint16, count=(width - n_wide) * n).reshape(width - n_wide, n)
            wide_codes = np.fromfile(fh, dtype=np.uint32, count=n_wide * n).reshape(n_wide, n)
            labels = np.fromfile(fh, dtype=np.uint8, count=n)
            positions = (np.arange(chunk.first, chunk.first + n, dtype=np.int64) if chunk.first >= 0
                         else np.fromfile(fh, dtype=np.int64, count=n))
            yield _Cached(narrow, wide_codes, column_at, labels, positions)


@dataclass
class CountJob:
    cache: Path
    index: int
    chunks: list[CachedChunk]
    columns: Columns
    offset: int
    seed: int


def count_shard(job: CountJob) -> ShardCounts:
    """The train-token counts of a shard read before its first row position was known."""
    started = time.perf_counter()
    _fail_once()
    counts = [np.zeros(0, dtype=np.int64) for _ in range(job.columns.num_fields)]
    per_split = np.zeros(len(SPLITS), dtype=np.int64)
    for cached in _cached_chunks(job.cache, job.index, job.chunks, job.columns.width):
        per_split += _count(cached.codes(), cached.positions + job.offset, job.seed, counts, job.columns)
    dictionary = _load_tokens(_cache_file(job.cache, job.index, "tokens"), job.columns.num_fields)
    frames = [count_frame(t, c) for t, c in zip(dictionary, counts, strict=True)]
    return ShardCounts(per_split.tolist(), frames, ProcessStats.since(started))


@dataclass
class EncodeJob(CountJob):
    """A `CountJob`'s shard, encoded into the output."""

    out: Path
    """The output (temp) folder holding the preallocated `<split>/ids.npy` and `labels.npy`."""
    first_rows: list[int]
    """Per split: the row of the split's files where this shard's rows start."""


def encode_shard(job: EncodeJob, vocab: list[list[str]]) -> ProcessStats:
    """Pass 2 on one shard: write its ids and labels at its rows of the split files."""
    started = time.perf_counter()
    _fail_once()
    columns = job.columns
    dictionary = _load_tokens(_cache_file(job.cache, job.index, "tokens"), columns.num_fields)
    with ThreadPoolExecutor(coding_threads(), thread_name_prefix="ttsrec-ids") as pool:
        tables = list(pool.map(id_table, dictionary, vocab, columns.is_list))
    starts = np.cumsum([0, *map(len, tables)])
    table_at = np.array([starts[j] for j in columns.field_of], dtype=np.int64)
    flat = np.concatenate(tables)
    ids_files = [NpyFile.open(job.out / name / "ids.npy") for name in SPLITS]
    label_files = [NpyFile.open(job.out / name / "labels.npy") for name in SPLITS]

    buffers = threading.local()  # a thread's ids buffer, reused: fresh pages cost a fault and a zeroing

    def write(cached: _Cached, split: np.ndarray, rows: list[int]) -> None:
        for s, row in enumerate(rows):
            size = int((split == s).sum()) * columns.width
            if len(getattr(buffers, "ids", ())) < max(size, 1):
                buffers.ids = np.empty(max(size, 1), dtype=np.int32)
            ids = buffers.ids[:size].reshape(-1, columns.width)
            _kernels.gather_ids(cached.narrow, cached.wide, cached.column_at, flat, table_at, split, s, ids)
            ids_files[s].write_rows(row, ids)
            label_files[s].write_rows(row, cached.labels[split == s].astype(np.float32))

    cursor = np.array(job.first_rows, dtype=np.int64)
    threads = coding_threads()
    try:  # chunks gathered and written by `threads` threads, a bounded number in flight
        with ThreadPoolExecutor(threads, thread_name_prefix="ttsrec-encode") as pool:
            pending: list[Future[None]] = []
            for cached in _cached_chunks(job.cache, job.index, job.chunks, columns.width):
                split = split_of(cached.positions + job.offset, job.seed)
                pending.append(pool.submit(write, cached, split, cursor.tolist()))
                cursor += np.bincount(split, minlength=len(SPLITS))
                while len(pending) > threads:
                    pending.pop(0).result()
            for done in pending:
                done.result()
    finally:
        for f in [*ids_files, *label_files]:
            f.close()
    return ProcessStats.since(started)


class NpyFile:
    """A `.npy` file of known shape written at row offsets with `pwrite` (by one process or many).

    `create` writes the header and sizes the file; rows are then plain writes, never a memmap, so the
    writer's RSS stays flat.
    """

    def __init__(self, fd: int, offset: int, row_bytes: int) -> None:
        self.fd, self.offset, self.row_bytes = fd, offset, row_bytes

    @staticmethod
    def create(path: Path, dtype: type, shape: tuple[int, ...]) -> None:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                  "shape": shape}
        with open(path, "wb") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            fh.truncate(fh.tell() + int(np.prod(shape)) * np.dtype(dtype).itemsize)

    @classmethod
    def open(cls, path: Path) -> NpyFile:
        fd = os.open(path, os.O_WRONLY)
        with open(path, "rb") as fh:
            np.lib.format.read_magic(fh)
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            offset = fh.tell()
        return cls(fd, offset, int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize)

    def write_rows(self, row: int, rows: np.ndarray) -> None:
        if rows.size == 0:
            return
        data = memoryview(np.ascontiguousarray(rows)).cast("B")
        at, done = self.offset + row * self.row_bytes, 0
        while done < data.nbytes:
            done += os.pwrite(self.fd, data[done:], at + done)

    def close(self) -> None:
        os.close(self.fd)
