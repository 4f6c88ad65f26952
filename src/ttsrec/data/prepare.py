"""`tts-data prepare`: raw files -> memory-mappable id matrices per split + `feature_map.json`.

Two streaming passes over bounded chunks of each shard (an input file, or a byte span of a big one), so
inputs larger than memory work and memory grows with the vocabulary, not the rows:

1. **read + count** (`shard.read_shard`): parse and tokenise each chunk once, give every token a dense
   code, cache the kept rows' codes in the temp folder, and count the train split's codes (valid/test
   values never reach the vocabulary). The split of a row is a hash of its position among all rows of
   all inputs, so a shard read before the rows ahead of it are known (Ray) is counted from its cache
   once they are (`count_shard`).
2. **encode** (`shard.encode_shard`): the merged counts give the vocabulary; each shard's codes map to
   ids through a table built from its distinct tokens and are written at its rows of the split files.

`executor="local"` runs the shards in order in this process; `"ray"` runs the same functions as Ray
tasks (`ray_prepare`), and the output is the same bytes. Everything is written into a temp folder that
replaces `out` only when complete.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ttsrec.data.delimited import CHUNK_BYTES
from ttsrec.data.dictionary import Columns, vocabulary
from ttsrec.data.feature_map import FeatureMap, Field, dumps_indented
from ttsrec.data.readers import Shard, expand_inputs, input_size, plan_shards
from ttsrec.data.shard import (
    CountJob,
    EncodeJob,
    NpyFile,
    ProcessStats,
    ReadJob,
    ShardCounts,
    ShardRead,
    encode_shard,
    read_shard,
)
from ttsrec.data.spec import DatasetSpec, resolve_spec
from ttsrec.data.split import SPLITS
from ttsrec.errors import UserError
from ttsrec.repository.naming import FEATURE_MAP_FILE
from ttsrec.utils.atomic import atomic_dir, atomic_write_text
from ttsrec.utils.report import SILENT, Board, Reporter

ON_BAD_ROW = ("skip", "fail")
EXECUTORS = ("local", "ray")
SHARD_BYTES = 128 << 20
"""Ray: plain text files larger than this are cut into byte spans of this size (one task each)."""


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
    executor: str = "local"
    workers: int = 1
    shards: int = 1
    pass_seconds: dict[str, float] = field(default_factory=dict)
    """Wall seconds per stage: read + count, (Ray: count), vocabulary (+ feature map), encode."""
    peak_rss_mb: dict[str, float] = field(default_factory=dict)
    """Peak resident memory per process: this one (`driver`) and, with Ray, each worker that ran a task."""
    extra: dict[str, Any] = field(default_factory=dict)
    list_fields: dict[str, dict[str, int]] = field(default_factory=dict)
    """Per list field, over the kept rows: `truncated_rows` (more tokens than max_len), `empty_rows`."""

    def to_dict(self) -> dict[str, Any]:
        """The summary; `list_fields` only when the data has one (other datasets' summaries unchanged)."""
        data = asdict(self)
        if not self.list_fields:
            del data["list_fields"]
        return data


class Runner(Protocol):
    """Runs the shard jobs of each pass: here in order (`LocalRunner`) or as Ray tasks (`RayRunner`)."""

    workers: int

    def read(self, jobs: list[ReadJob], board: Board) -> list[ShardRead]: ...

    def count(self, jobs: list[CountJob]) -> list[ShardCounts]: ...

    def encode(self, jobs: list[EncodeJob], vocab: list[list[str]], board: Board) -> list[ProcessStats]: ...


class LocalRunner:
    """Shards in order in this process: each shard's first row position is known when it is read, so
    pass 1 counts as it goes, and `--on-bad-row fail` stops at the first bad shard."""

    workers = 1

    def __enter__(self) -> LocalRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read(self, jobs: list[ReadJob], board: Board) -> list[ShardRead]:
        task = board.task("pass 1/2 read + count", total=sum(j.shard.nbytes for j in jobs))
        reads, offset = [], 0
        for job in jobs:
            job.offset = offset
            reads.append(read_shard(job, progress=lambda n: task.update(advance=n)))
            offset += reads[-1].rows
            if reads[-1].first_bad:
                break
        return reads

    def count(self, jobs: list[CountJob]) -> list[ShardCounts]:
        raise AssertionError("the local runner counts while reading")

    def encode(self, jobs: list[EncodeJob], vocab: list[list[str]], board: Board) -> list[ProcessStats]:
        task = board.task("pass 2/2 encode", total=len(jobs))
        stats = []
        for job in jobs:
            stats.append(encode_shard(job, vocab))
            task.update(advance=1)
        return stats


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
    executor: str = "local",
    address: str | None = None,
    workers: int | None = None,
    shard_bytes: int = SHARD_BYTES,
    max_retries: int = 3,
) -> PrepareSummary:
    """Prepare `inputs` (files, folders or globs) with a preset (or a spec file for `csv`) into `out`."""
    started = time.perf_counter()
    ds = spec if isinstance(spec, DatasetSpec) else resolve_spec(preset, spec)
    if on_bad_row not in ON_BAD_ROW:
        raise UserError(f"--on-bad-row must be one of {', '.join(ON_BAD_ROW)} (got {on_bad_row!r})")
    if executor not in EXECUTORS:
        raise UserError(f"--executor must be one of {', '.join(EXECUTORS)} (got {executor!r})")
    runner: Any = LocalRunner()
    if executor == "ray":
        from ttsrec.data.ray_prepare import RayRunner
        from ttsrec.utils.ray_cluster import require_ray

        require_ray()
        runner = RayRunner(address=address, workers=workers, max_retries=max_retries)
    files = expand_inputs(ds, inputs)
    shards = plan_shards(ds, files, shard_bytes if executor == "ray" else None)
    with atomic_dir(Path(out), force=force, marker="summary.json", tool="tts-data prepare",
                    inputs=[*map(Path, inputs), *files]) as tmp, \
            reporter.progress("bytes", transient=True) as board, runner:
        summary = _prepare_in(ds, shards, tmp, board, runner, seed, on_bad_row, chunk_bytes)
        if executor == "ray":
            summary["pass_seconds"] = {"ray start": round(runner.start_seconds, 3), **summary["pass_seconds"]}
        seconds = time.perf_counter() - started
        summary.update(
            inputs=[str(p) for p in files], input_bytes=input_size(ds, files), seconds=round(seconds, 3),
            rows_per_s=round(summary["rows_read"] / seconds, 1) if seconds > 0 else 0.0, out=str(out),
            executor=executor, workers=runner.workers, shards=len(shards),
        )
        result = PrepareSummary(**summary)
        atomic_write_text(tmp / "summary.json", json.dumps(result.to_dict(), indent=1) + "\n")
    return result


def _prepare_in(ds: DatasetSpec, shards: list[Shard], tmp: Path, board: Board, runner: Runner, seed: int,
                on_bad_row: str, chunk_bytes: int) -> dict[str, Any]:
    """The two passes into the temp folder `tmp`; returns the summary's counts and per-pass figures."""
    cache = tmp / ".cache"
    cache.mkdir()
    columns = Columns.of(ds)
    clock = time.perf_counter()
    jobs = [ReadJob(ds, s, i, cache, seed, on_bad_row, chunk_bytes) for i, s in enumerate(shards)]
    reads = runner.read(jobs, board)
    _refuse_first_bad(shards, reads)
    offsets = np.concatenate([[0], np.cumsum([r.rows for r in reads])]).tolist()
    passes = {"read": time.perf_counter() - clock}
    counted = [r.counts for r in reads]
    if any(c is None for c in counted):
        clock = time.perf_counter()
        counted = runner.count([CountJob(cache, r.index, r.chunks, columns, offsets[r.index], seed)
                                for r in reads])
        passes["count"] = time.perf_counter() - clock
    counts: list[ShardCounts] = counted  # type: ignore[assignment]
    rows_read = sum(r.rows for r in reads)
    reasons: Counter[str] = Counter()
    for r in reads:
        reasons.update(r.reasons)
    per_split = np.array([c.per_split for c in counts], dtype=np.int64).reshape(len(counts), len(SPLITS))
    if per_split.sum() == 0:
        raise UserError(f"no usable rows in {', '.join(str(s.file) for s in shards)} "
                        f"({rows_read} read, all skipped: {_top(reasons)})")
    clock = time.perf_counter()
    fmap = _feature_map(ds, counts)
    fmap_dict = fmap.to_dict()  # the same bytes as FeatureMap.save, hashed once
    atomic_write_text(tmp / FEATURE_MAP_FILE, dumps_indented(fmap_dict) + "\n")
    passes["vocabulary"] = time.perf_counter() - clock
    clock = time.perf_counter()
    encoded = runner.encode(_encode_jobs(reads, per_split, offsets, tmp, columns, seed),
                            [f.vocab for f in fmap.fields], board)
    shutil.rmtree(cache)
    passes["encode"] = time.perf_counter() - clock
    kept = int(per_split.sum())
    return {
        "dataset_id": ds.dataset_id, "rows_read": rows_read, "rows_kept": kept,
        "rows_skipped": rows_read - kept,
        "skipped_by_reason": dict(reasons.most_common()),
        "splits": {name: int(n) for name, n in zip(SPLITS, per_split.sum(axis=0), strict=True)},
        "num_fields": fmap.num_fields,
        "vocab_sizes": dict(zip(fmap.field_names, fmap.vocab_sizes, strict=True)),
        "feature_map_hash": fmap_dict["hash"], "seed": seed, "on_bad_row": on_bad_row,
        "pass_seconds": {k: round(v, 3) for k, v in passes.items()},  # (Ray's start added by the caller)
        "peak_rss_mb": _peak_rss([*(r.stats for r in reads), *(c.stats for c in counts), *encoded]),
        "list_fields": _list_stats(reads),
    }


def _list_stats(reads: list[ShardRead]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for r in reads:
        for name, (truncated, empty) in r.lists.items():
            entry = out.setdefault(name, {"truncated_rows": 0, "empty_rows": 0})
            entry["truncated_rows"] += truncated
            entry["empty_rows"] += empty
    return out


def _feature_map(ds: DatasetSpec, counts: list[ShardCounts]) -> FeatureMap:
    fields = [
        Field(name=f.name, kind=f.kind, vocab=vocabulary([c.tokens[j] for c in counts], f.min_count),
              source=f.source, preprocess=f.preprocess,
              **({"separator": f.separator, "max_len": f.max_len, "pooling": f.pooling} if f.is_list else {}))
        for j, f in enumerate(ds.fields)
    ]
    return FeatureMap(dataset_id=ds.dataset_id, label=ds.label, spec=ds.to_dict(), fields=fields)


def _encode_jobs(reads: list[ShardRead], per_split: np.ndarray, offsets: list[int], tmp: Path,
                 columns: Columns, seed: int) -> list[EncodeJob]:
    """Preallocate the split files and give each shard its first row in each of them."""
    totals = per_split.sum(axis=0)
    for s, name in enumerate(SPLITS):
        (tmp / name).mkdir()
        NpyFile.create(tmp / name / "ids.npy", np.int32, (int(totals[s]), columns.width))
        NpyFile.create(tmp / name / "labels.npy", np.float32, (int(totals[s]),))
    first = np.cumsum(per_split, axis=0) - per_split
    return [EncodeJob(tmp / ".cache", r.index, r.chunks, columns, offsets[r.index], seed, tmp,
                      first[r.index].tolist()) for r in reads]


def _refuse_first_bad(shards: list[Shard], reads: list[ShardRead]) -> None:
    """`--on-bad-row fail`: name the first bad row of all inputs (line numbers run across a file's spans)."""
    for r in reads:
        if r.first_bad:
            line, reason = r.first_bad
            shard = shards[r.index]
            line += sum(p.lines for p in reads[: r.index]
                        if shards[p.index].file == shard.file and shards[p.index].start < shard.start)
            raise UserError(f"{shard.file}:{line}: {reason} (pass --on-bad-row skip to skip such rows)")


def _peak_rss(stats: list[ProcessStats]) -> dict[str, float]:
    """This process's peak RSS, and each other process's (a Ray worker) by pid."""
    here = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peaks: dict[str, float] = {"driver": round(here, 1)}
    for s in stats:
        if s.pid and s.pid != os.getpid():
            key = f"worker {s.pid}"
            peaks[key] = max(peaks.get(key, 0.0), s.peak_rss_mb)
    return peaks


def _top(reasons: Counter[str]) -> str:
    return "; ".join(f"{n} x {r}" for r, n in reasons.most_common(3)) or "no rows"
