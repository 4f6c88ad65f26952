"""`tts-data prepare`: raw files -> memory-mappable id matrices per split + `feature_map.json`.

Two streaming passes over bounded chunks, so files larger than memory work and memory grows with
the vocabulary, not the rows: pass 1 parses and tokenises each chunk once, counts tokens (train split
only, so valid/test values never leak into the vocabulary) and rows per split, and caches the
tokens as Arrow IPC in the temp folder; pass 2 looks them up and writes `.npy` files preallocated
from the counts. Everything is written into a temp folder that replaces `out` only when complete.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ttsrec.data.encode import LABEL, Lookup, describe_bad, tokens
from ttsrec.data.feature_map import FeatureMap, Field
from ttsrec.data.prefetch import prefetch
from ttsrec.data.readers import BAD, CHUNK_BYTES, LINE, RawChunk, check_inputs, input_size, iter_chunks
from ttsrec.data.spec import DatasetSpec, resolve_spec
from ttsrec.data.split import SPLITS, split_of
from ttsrec.data.transforms import MISSING
from ttsrec.errors import UserError
from ttsrec.repository.naming import FEATURE_MAP_FILE
from ttsrec.utils.atomic import atomic_dir, atomic_write_text
from ttsrec.utils.report import SILENT, Board, Reporter

ON_BAD_ROW = ("skip", "fail")
SPLIT = "_split"
COUNT = "_count"  # field names never start with "_" (spec rule), so no column clashes


@dataclass
class PrepareSummary:
    dataset_id: str
    inputs: list[str]
    rows_read: int
    rows_kept: int
    rows_skipped: int
    skipped_by_reason: dict[str, int]
    splits: dict[str, int]
    num_fields: int
    vocab_sizes: dict[str, int]
    feature_map_hash: str
    seed: int
    on_bad_row: str
    input_bytes: int
    seconds: float
    rows_per_s: float
    out: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prepare(
    preset: str,
    inputs: list[Path],
    out: Path,
    *,
    force: bool = False,
    seed: int = 0,
    spec: Path | DatasetSpec | None = None,
    on_bad_row: str = "skip",
    chunk_bytes: int = CHUNK_BYTES,
    reporter: Reporter = SILENT,
) -> PrepareSummary:
    """Prepare `inputs` with a preset (or a spec file for `csv`) into `out`; see the module docstring."""
    started = time.perf_counter()
    ds = spec if isinstance(spec, DatasetSpec) else resolve_spec(preset, spec)
    if on_bad_row not in ON_BAD_ROW:
        raise UserError(f"--on-bad-row must be one of {', '.join(ON_BAD_ROW)} (got {on_bad_row!r})")
    inputs = [Path(p) for p in inputs]
    check_inputs(ds, inputs)
    total_bytes = input_size(ds, inputs)
    with atomic_dir(Path(out), force=force, marker="summary.json", tool="tts-data prepare",
                    inputs=inputs) as tmp, reporter.progress("bytes", transient=True) as bar:
        seen = _read_and_count(ds, inputs, seed, chunk_bytes, on_bad_row, tmp / ".tokens", bar, total_bytes)
        if seen.per_split.sum() == 0:
            raise UserError(
                f"no usable rows in {', '.join(map(str, inputs))} "
                f"({seen.rows_read} read, all skipped: {_top(seen.reasons)})"
            )
        fmap = FeatureMap(
            dataset_id=ds.dataset_id,
            label=ds.label,
            spec=ds.to_dict(),
            fields=[
                Field(
                    name=f.name,
                    kind=f.kind,
                    vocab=_vocab(seen.counts.pop(f.name), f.name, f.min_count),
                    source=f.source,
                    preprocess=f.preprocess,
                )
                for f in ds.fields
            ],
        )
        _encode(fmap, seen, tmp, bar)
        fmap_dict = fmap.to_dict()  # the same bytes as FeatureMap.save, hashed once
        atomic_write_text(tmp / FEATURE_MAP_FILE, json.dumps(fmap_dict, indent=1) + "\n")
        seconds = time.perf_counter() - started
        kept = int(seen.per_split.sum())
        summary = PrepareSummary(
            dataset_id=ds.dataset_id,
            inputs=[str(p) for p in inputs],
            rows_read=seen.rows_read,
            rows_kept=kept,
            rows_skipped=seen.rows_read - kept,
            skipped_by_reason=dict(seen.reasons.most_common()),
            splits={name: int(seen.per_split[s]) for s, name in enumerate(SPLITS)},
            num_fields=fmap.num_fields,
            vocab_sizes=dict(zip(fmap.field_names, fmap.vocab_sizes, strict=True)),
            feature_map_hash=fmap_dict["hash"],
            seed=seed,
            on_bad_row=on_bad_row,
            input_bytes=total_bytes,
            seconds=round(seconds, 3),
            rows_per_s=round(seen.rows_read / seconds, 1) if seconds > 0 else 0.0,
            out=str(out),
        )
        atomic_write_text(tmp / "summary.json", json.dumps(summary.to_dict(), indent=1) + "\n")
    return summary


@dataclass
class _Seen:
    """What pass 1 learned: token counts, bad-row reasons, kept rows per split, cached token chunks."""

    counts: _TokenCounts
    reasons: Counter[str]
    per_split: np.ndarray
    rows_read: int
    parts: list[Path]


def _read_and_count(
    ds: DatasetSpec,
    inputs: list[Path],
    seed: int,
    chunk_bytes: int,
    on_bad_row: str,
    cache: Path,
    bar: Board,
    total_bytes: int,
) -> _Seen:
    """Pass 1: parse + tokenise once, count train tokens, cache the kept rows' tokens as Arrow IPC."""
    task = bar.task("pass 1/2 read + count", total=total_bytes)
    cache.mkdir()
    seen = _Seen(_TokenCounts([f.name for f in ds.fields]), Counter(), np.zeros(len(SPLITS), np.int64), 0, [])
    with closing(_token_chunks(ds, inputs, seed, chunk_bytes)) as chunks:  # closing stops the reader thread
        for toks, chunk in chunks:
            kept = _see(seen, toks, chunk, ds, on_bad_row)
            part = cache / f"{len(seen.parts):06d}.arrow"
            kept.write_ipc(part, compression="uncompressed")
            seen.parts.append(part)
            task.update(advance=chunk.nbytes)
    return seen


def _see(seen: _Seen, toks: pl.DataFrame, chunk: RawChunk, ds: DatasetSpec, on_bad_row: str) -> pl.DataFrame:
    """Count one tokenised chunk (rows, bad rows by reason, splits, train tokens); return its kept rows."""
    seen.rows_read += toks.height
    bad = toks.get_column(BAD).to_numpy()
    if bad.any():
        if on_bad_row == "fail":
            row = int(np.flatnonzero(bad)[0])
            where = f"{chunk.file}:{toks.get_column(LINE)[row]}"
            reason = describe_bad(int(bad[row]), ds, chunk.ncols)
            raise UserError(f"{where}: {reason} (pass --on-bad-row skip to skip such rows)")
        codes, n = np.unique(bad[bad != 0], return_counts=True)
        seen.reasons.update(
            {describe_bad(int(c), ds, chunk.ncols): int(k) for c, k in zip(codes, n, strict=True)}
        )
        toks = toks.filter(pl.Series(bad == 0))
    seen.per_split += np.bincount(toks.get_column(SPLIT).to_numpy(), minlength=len(SPLITS))
    seen.counts.add(toks)
    return toks.drop(BAD, LINE)


def _encode(fmap: FeatureMap, seen: _Seen, tmp: Path, bar: Board) -> None:
    """Pass 2: look the cached tokens up in the vocabulary, append them to the per-split `.npy` files."""
    task = bar.task("pass 2/2 encode", total=sum(p.stat().st_size for p in seen.parts))
    lookup = Lookup(fmap)
    ids, labels = [], []
    for s, name in enumerate(SPLITS):
        (tmp / name).mkdir()
        rows = int(seen.per_split[s])
        ids.append(_NpyWriter(tmp / name / "ids.npy", np.int32, (rows, fmap.num_fields)))
        labels.append(_NpyWriter(tmp / name / "labels.npy", np.float32, (rows,)))
    for part, toks in prefetch((p, pl.read_ipc(p)) for p in seen.parts):
        chunk_ids = lookup(toks)
        chunk_labels = toks.get_column(LABEL).to_numpy()
        chunk_split = toks.get_column(SPLIT).to_numpy()
        for s in range(len(SPLITS)):
            mask = chunk_split == s
            ids[s].write(chunk_ids[mask])
            labels[s].write(chunk_labels[mask])
        task.update(advance=part.stat().st_size)
        part.unlink()
    (tmp / ".tokens").rmdir()
    for writer in [*ids, *labels]:
        writer.close()


def _token_chunks(
    ds: DatasetSpec, inputs: list[Path], seed: int, chunk_bytes: int
) -> Iterator[tuple[pl.DataFrame, RawChunk]]:
    """Tokenised chunks with `_split` from each row's position among all data rows of all inputs."""
    start = 0
    for chunk in prefetch(iter_chunks(ds, inputs, chunk_bytes)):
        toks = tokens(chunk.frame, ds)
        n = toks.height
        toks = toks.with_columns(
            chunk.frame.get_column(LINE), pl.Series(SPLIT, split_of(np.arange(start, start + n), seed))
        )
        start += n
        yield toks, chunk


class _NpyWriter:
    """Append rows to a `.npy` file of known shape with plain writes (no memmap: RSS stays flat)."""

    def __init__(self, path: Path, dtype: type, shape: tuple[int, ...]) -> None:
        self.dtype, self.shape, self.rows = np.dtype(dtype), shape, 0
        self.fh = open(path, "wb")  # noqa: SIM115 (closed in close())
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self.fh, header)

    def write(self, rows: np.ndarray) -> None:
        self.fh.write(np.ascontiguousarray(rows, dtype=self.dtype).tobytes())
        self.rows += len(rows)

    def close(self) -> None:
        self.fh.close()
        if self.rows != self.shape[0]:
            raise RuntimeError(f"wrote {self.rows} rows, expected {self.shape[0]}")


class _TokenCounts:
    """Running token counts per field (train rows).

    Chunk counts wait in a list and are merged once they outweigh the running totals (merging is
    O(vocab), so geometric batches keep the total cost near-linear), memory staying O(vocab).
    """

    def __init__(self, names: list[str], min_pending: int = 1_000_000) -> None:
        self.names, self.min_pending = names, min_pending
        self.total: dict[str, pl.DataFrame] = {}
        self.pending: dict[str, list[pl.DataFrame]] = {n: [] for n in names}

    def add(self, toks: pl.DataFrame) -> None:
        train = pl.Series(toks.get_column(SPLIT).to_numpy() == 0)
        for name in self.names:  # eager value_counts beat a lazy group_by per column on small chunks
            counts = toks.get_column(name).filter(train).value_counts(name=COUNT)
            self.pending[name].append(counts.with_columns(pl.col(COUNT).cast(pl.Int64)))
        waiting = sum(f.height for frames in self.pending.values() for f in frames)
        if waiting >= max(self.min_pending, sum(f.height for f in self.total.values())):
            self._merge()

    def _merge(self) -> None:
        parts = {n: ([self.total[n]] if n in self.total else []) + self.pending[n] for n in self.names}
        merged = pl.collect_all(
            [pl.concat(parts[n]).lazy().group_by(n).agg(pl.col(COUNT).sum()) for n in self.names if parts[n]]
        )
        self.total.update(zip([n for n in self.names if parts[n]], merged, strict=True))
        self.pending = {n: [] for n in self.names}

    def pop(self, name: str) -> pl.DataFrame | None:
        if self.pending[self.names[0]]:
            self._merge()
        return self.total.pop(name, None)


def _vocab(counts: pl.DataFrame | None, name: str, min_count: int) -> list[str]:
    """Tokens seen at least `min_count` times, most frequent first (ties by token, so deterministic)."""
    if counts is None:
        return []
    kept = counts.filter(pl.col(COUNT) >= min_count).select(
        pl.col(name).cast(pl.String).fill_null(MISSING), COUNT
    )
    return kept.sort([COUNT, name], descending=[True, False]).get_column(name).to_list()


def _top(reasons: Counter[str]) -> str:
    return "; ".join(f"{n} x {r}" for r, n in reasons.most_common(3)) or "no rows"
