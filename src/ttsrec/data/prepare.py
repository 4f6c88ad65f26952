"""`tts-data prepare`: raw files -> memory-mappable id matrices per split + `feature_map.json`.

Two streaming passes over bounded chunks, so files larger than memory work and memory grows with
the vocabulary, not the rows: pass 1 counts tokens (train split only, so valid/test values never
leak into the vocabulary) and rows per split; pass 2 encodes into `.npy` files preallocated from
those counts. Everything is written into a temp folder that replaces `out` only when complete.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from ttsrec.data.encode import LABEL, Lookup, tokens
from ttsrec.data.feature_map import FeatureMap, Field
from ttsrec.data.readers import BAD, CHUNK_BYTES, LINE, check_inputs, input_size, iter_chunks
from ttsrec.data.spec import DatasetSpec, resolve_spec
from ttsrec.data.split import SPLITS, split_of
from ttsrec.errors import UserError
from ttsrec.utils.atomic import atomic_dir, atomic_write_text

ON_BAD_ROW = ("skip", "fail")
SPLIT = "_split"


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
    progress: bool = True,
) -> PrepareSummary:
    """Prepare `inputs` with a preset (or a spec file for `csv`) into `out`; see the module docstring."""
    started = time.perf_counter()
    ds = spec if isinstance(spec, DatasetSpec) else resolve_spec(preset, spec)
    if on_bad_row not in ON_BAD_ROW:
        raise UserError(f"--on-bad-row must be one of {', '.join(ON_BAD_ROW)} (got {on_bad_row!r})")
    inputs = [Path(p) for p in inputs]
    check_inputs(ds, inputs)
    total_bytes = input_size(ds, inputs)
    with atomic_dir(Path(out), force=force) as tmp, _progress(progress) as bar:
        # Pass 1: count tokens on train rows, rows per split, bad rows.
        task = bar.add_task("pass 1/2 count", total=total_bytes)
        counts: dict[str, pl.DataFrame] = {}
        reasons: Counter[str] = Counter()
        per_split = np.zeros(len(SPLITS), dtype=np.int64)
        rows_read = 0
        for toks, nbytes in _token_chunks(ds, inputs, seed, chunk_bytes, on_bad_row):
            rows_read += toks.height
            bad = toks.get_column(BAD)
            if bad.null_count() < toks.height:
                reasons.update(dict(bad.drop_nulls().value_counts().iter_rows()))
            kept = toks.filter(pl.col(BAD).is_null())
            per_split += np.bincount(kept.get_column(SPLIT).to_numpy(), minlength=len(SPLITS))
            _count(counts, kept.filter(pl.col(SPLIT) == 0), ds)
            bar.advance(task, nbytes)
        fmap = FeatureMap(
            dataset_id=ds.dataset_id,
            label=ds.label,
            spec=ds.to_dict(),
            fields=[
                Field(
                    name=f.name,
                    kind=f.kind,
                    vocab=_vocab(counts.get(f.name), f.name, f.min_count),
                    source=f.source,
                    preprocess=f.preprocess,
                )
                for f in ds.fields
            ],
        )
        if per_split.sum() == 0:
            raise UserError(
                f"no usable rows in {', '.join(map(str, inputs))} "
                f"({rows_read} read, all skipped: {_top(reasons)})"
            )

        # Pass 2: encode kept rows into the preallocated per-split arrays.
        task = bar.add_task("pass 2/2 encode", total=total_bytes)
        lookup = Lookup(fmap)
        ids, labels = {}, {}
        for s, name in enumerate(SPLITS):
            (tmp / name).mkdir()
            ids[s] = np.lib.format.open_memmap(
                tmp / name / "ids.npy", mode="w+", dtype=np.int32, shape=(int(per_split[s]), fmap.num_fields)
            )
            labels[s] = np.lib.format.open_memmap(
                tmp / name / "labels.npy", mode="w+", dtype=np.float32, shape=(int(per_split[s]),)
            )
        pos = np.zeros(len(SPLITS), dtype=np.int64)
        for toks, nbytes in _token_chunks(ds, inputs, seed, chunk_bytes, "skip"):
            kept = toks.filter(pl.col(BAD).is_null())
            chunk_ids = lookup(kept)
            chunk_labels = kept.get_column(LABEL).to_numpy()
            chunk_split = kept.get_column(SPLIT).to_numpy()
            for s in range(len(SPLITS)):
                mask = chunk_split == s
                n = int(mask.sum())
                ids[s][pos[s] : pos[s] + n] = chunk_ids[mask]
                labels[s][pos[s] : pos[s] + n] = chunk_labels[mask]
                pos[s] += n
            bar.advance(task, nbytes)
        if not np.array_equal(pos, per_split):
            raise UserError("input changed between the two passes (row counts differ); prepare it again")
        for s in range(len(SPLITS)):
            ids[s].flush()
            labels[s].flush()
        del ids, labels

        fmap.save(tmp / "feature_map.json")
        seconds = time.perf_counter() - started
        kept_total = int(per_split.sum())
        summary = PrepareSummary(
            dataset_id=ds.dataset_id,
            inputs=[str(p) for p in inputs],
            rows_read=rows_read,
            rows_kept=kept_total,
            rows_skipped=rows_read - kept_total,
            skipped_by_reason=dict(reasons.most_common()),
            splits={name: int(per_split[s]) for s, name in enumerate(SPLITS)},
            num_fields=fmap.num_fields,
            vocab_sizes=dict(zip(fmap.field_names, fmap.vocab_sizes, strict=True)),
            feature_map_hash=fmap.hash,
            seed=seed,
            on_bad_row=on_bad_row,
            input_bytes=total_bytes,
            seconds=round(seconds, 3),
            rows_per_s=round(rows_read / seconds, 1) if seconds > 0 else 0.0,
            out=str(out),
        )
        atomic_write_text(tmp / "summary.json", json.dumps(summary.to_dict(), indent=1) + "\n")
    return summary


def _token_chunks(
    ds: DatasetSpec, inputs: list[Path], seed: int, chunk_bytes: int, on_bad_row: str
) -> Iterator[tuple[pl.DataFrame, int]]:
    """Tokenised chunks with `_split` from each row's position among all data rows of all inputs."""
    start = 0
    for chunk in iter_chunks(ds, inputs, chunk_bytes):
        toks = tokens(chunk.frame, ds).with_columns(chunk.frame.get_column(LINE))
        n = toks.height
        toks = toks.with_columns(pl.Series(SPLIT, split_of(np.arange(start, start + n), seed)))
        start += n
        if on_bad_row == "fail":
            bad = toks.filter(pl.col(BAD).is_not_null())
            if bad.height:
                line, reason = bad.row(0, named=True)[LINE], bad.row(0, named=True)[BAD]
                raise UserError(f"{chunk.file}:{line}: {reason} (use --on-bad-row skip to skip such rows)")
        yield toks, chunk.nbytes


def _count(counts: dict[str, pl.DataFrame], train: pl.DataFrame, ds: DatasetSpec) -> None:
    """Add this chunk's token counts (per field) to the running totals."""
    names = [f.name for f in ds.fields]
    fresh = pl.collect_all([train.lazy().group_by(n).agg(pl.len().cast(pl.Int64).alias("n")) for n in names])
    merged = pl.collect_all(
        [
            pl.concat([counts[n].lazy(), new.lazy()]).group_by(n).agg(pl.col("n").sum())
            if n in counts
            else new.lazy()
            for n, new in zip(names, fresh, strict=True)
        ]
    )
    counts.update(zip(names, merged, strict=True))


def _vocab(counts: pl.DataFrame | None, name: str, min_count: int) -> list[str]:
    """Tokens seen at least `min_count` times, most frequent first (ties by token, so deterministic)."""
    if counts is None:
        return []
    kept = counts.filter(pl.col("n") >= min_count).sort(["n", name], descending=[True, False])
    return kept.get_column(name).to_list()


def _top(reasons: Counter[str]) -> str:
    return "; ".join(f"{n} x {r}" for r, n in reasons.most_common(3)) or "no rows"


def _progress(enabled: bool) -> Progress:
    from ttsrec.cli.common import console

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not enabled,
    )
