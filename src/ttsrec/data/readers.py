"""Stream raw inputs as polars frames of raw columns, a bounded chunk at a time, whatever their format.

Files larger than memory work: text is read in byte chunks cut at line ends (`delimited`), Parquet in
record batches, the MovieLens folder through its join (`movielens`). Every chunk carries `_line` and
`_bad` (see `delimited`).
"""

from __future__ import annotations

import glob
import gzip
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from ttsrec.data.delimited import (
    BAD,
    CHUNK_BYTES,
    LINE,
    UNDECODABLE,
    RawChunk,
    TextBlock,
    iter_text_blocks,
    null_if_empty,
)
from ttsrec.data.movielens import iter_movielens
from ttsrec.data.spec import DatasetSpec
from ttsrec.errors import UserError

__all__ = [
    "BAD",
    "CHUNK_BYTES",
    "LINE",
    "UNDECODABLE",
    "RawChunk",
    "Shard",
    "TextBlock",
    "expand_inputs",
    "input_size",
    "iter_chunks",
    "iter_shard",
    "plan_shards",
    "text_blocks",
]

PARQUET = (".parquet", ".pq")
SAMPLE_LINES, SAMPLE_BYTES = 64, 1 << 20
"""Lines (at most bytes) read from the start of each text input to compare column counts between files."""


@dataclass(frozen=True)
class Shard:
    """A unit of work for one pass: a whole input, or a byte span of an uncompressed text file (whole lines
    starting in it), so one big file still splits across workers."""

    file: Path
    start: int = 0
    end: int | None = None

    @property
    def nbytes(self) -> int:
        size = self.file.stat().st_size if self.file.is_file() else _folder_size(self.file)
        return (size if self.end is None else self.end) - self.start


def expand_inputs(spec: DatasetSpec, inputs: Sequence[Path | str]) -> list[Path]:
    """The files to read, in a defined order: each input as given; a folder's files and a glob's matches
    sorted by name (so the row positions, hence the split, are reproducible)."""
    if not inputs:
        raise UserError("no input given (--input PATH)")
    files: list[Path] = []
    for given in inputs:
        path = Path(given)
        if spec.format == "movielens":
            _movielens_files(path)
            files.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if not found:
                raise UserError(f"input folder holds no files: {path}")
            files += found
        elif glob.has_magic(str(given)) and not path.exists():
            found = sorted(Path(p) for p in glob.glob(str(given)) if Path(p).is_file())
            if not found:
                raise UserError(f"no input file matches {given}")
            files += found
        elif not path.exists():
            raise UserError(f"input file not found: {path}")
        elif not path.is_file():
            raise UserError(f"input is not a file: {path}")
        else:
            files.append(path)
    if spec.format != "movielens":
        _check_same_format(spec, files)
    return files


def _kind(spec: DatasetSpec, path: Path) -> str:
    if spec.format == "parquet" or path.suffix in PARQUET:
        return "parquet"
    suffix = Path(path.name.removesuffix(".gz")).suffix.lower()
    return {".csv": "csv", ".tsv": "tsv"}.get(suffix, "text")


def _check_same_format(spec: DatasetSpec, files: list[Path]) -> None:
    """One format per run (text of one kind, or Parquet) and, for text, one column count."""
    kinds = [_kind(spec, f) for f in files]
    named = [(f, k) for f, k in zip(files, kinds, strict=True) if k != "text"]
    for f, k in named[1:]:
        if k != named[0][1]:
            raise UserError(f"{f}: a {k} file among {named[0][1]} inputs ({named[0][0]}); one format per run")
    if "parquet" in kinds and any(k != "parquet" for k in kinds):
        text = files[kinds.index(next(k for k in kinds if k != "parquet"))]
        raise UserError(f"{text}: a text file among Parquet inputs; one format per run")
    if len(files) > 1 and kinds[0] != "parquet":
        first = _columns_of(spec, files[0])
        for f in files[1:]:
            got = _columns_of(spec, f)
            if got != first and got is not None and first is not None:
                raise UserError(f"{f}: {got} columns where {files[0]} has {first} "
                                "(the column count changes between files)")


def _columns_of(spec: DatasetSpec, path: Path) -> int | None:
    """A text file's column count: its header's, else the most common among its first lines (None: empty)."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(SAMPLE_BYTES)
    except (OSError, EOFError, zlib.error):
        return None  # the reader names a broken file when it gets there
    lines = head.split(b"\n")[: -1 if len(head) == SAMPLE_BYTES else None]  # the last may be cut
    lines = lines[: 1 if spec.header else SAMPLE_LINES]
    sep = spec.separator.encode()
    counts = Counter(line.count(sep) + 1 for line in (x.rstrip(b"\r") for x in lines) if line)
    return counts.most_common(1)[0][0] if counts else None


def plan_shards(spec: DatasetSpec, files: list[Path], shard_bytes: int | None = None) -> list[Shard]:
    """Shards in row order: each file whole, or plain text files over `shard_bytes` cut into byte spans."""
    shards = []
    for f in files:
        size = f.stat().st_size if f.is_file() else 0
        if (shard_bytes is None or size <= shard_bytes or spec.format == "movielens" or f.suffix == ".gz"
                or _kind(spec, f) == "parquet"):
            shards.append(Shard(f))
            continue
        cuts = list(range(0, size, shard_bytes))
        shards += [Shard(f, a, b) for a, b in zip(cuts, [*cuts[1:], size], strict=True)]
    return shards


def input_size(spec: DatasetSpec, files: list[Path]) -> int:
    return sum(_data_files(spec, p)[0].stat().st_size for p in files)


def iter_shard(spec: DatasetSpec, shard: Shard, chunk_bytes: int = CHUNK_BYTES) -> Iterator[RawChunk]:
    """The rows of one shard, in order, as raw frames."""
    if spec.format == "movielens":
        yield from iter_movielens(spec, shard.file, chunk_bytes)
    elif _kind(spec, shard.file) == "parquet":
        yield from _parquet(spec, shard.file)
    else:
        for block in iter_text_blocks(spec, shard.file, chunk_bytes, span=(shard.start, shard.end)):
            yield block.parse(spec)


def text_blocks(spec: DatasetSpec, shard: Shard,
                chunk_bytes: int = CHUNK_BYTES) -> Iterator[TextBlock] | None:
    """The unparsed chunks of a delimited text shard (None for Parquet and MovieLens)."""
    if spec.format == "movielens" or _kind(spec, shard.file) == "parquet":
        return None
    return iter_text_blocks(spec, shard.file, chunk_bytes, span=(shard.start, shard.end))


def iter_chunks(spec: DatasetSpec, inputs: list[Path], chunk_bytes: int = CHUNK_BYTES) -> Iterator[RawChunk]:
    """All rows of all inputs, in order, as raw frames."""
    for path in inputs:
        _data_files(spec, Path(path))
        yield from iter_shard(spec, Shard(Path(path)), chunk_bytes)


def _data_files(spec: DatasetSpec, path: Path) -> list[Path]:
    path = Path(path)
    if spec.format == "movielens":
        return _movielens_files(path)
    if not path.exists():
        raise UserError(f"input file not found: {path}")
    if not path.is_file():
        raise UserError(f"input is not a file: {path}")
    return [path]


def _movielens_files(path: Path) -> list[Path]:
    if not path.is_dir():
        raise UserError(f"movielens input must be the ml-100k folder (with u.data, u.user, u.item): {path}")
    files = [path / n for n in ("u.data", "u.user", "u.item")]
    absent = [f.name for f in files if not f.is_file()]
    if absent:
        raise UserError(f"{path} is not an ml-100k folder: missing {', '.join(absent)}")
    return files


def _folder_size(path: Path) -> int:
    return sum(f.stat().st_size for f in _movielens_files(path))


def _parquet(spec: DatasetSpec, path: Path) -> Iterator[RawChunk]:
    try:
        yield from _parquet_batches(spec, path)
    except (pl.exceptions.PolarsError, pl.exceptions.PanicException, OSError) as err:  # may fail mid-way
        raise UserError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})") from err


def _parquet_batches(spec: DatasetSpec, path: Path) -> Iterator[RawChunk]:
    schema = pl.scan_parquet(path).collect_schema()
    spec.check_columns(list(schema.names()), str(path))
    wanted = list(dict.fromkeys([spec.label, *spec.sources]))
    total = path.stat().st_size
    rows = pl.scan_parquet(path).select(pl.len()).collect().item()  # from the footer
    line = 1
    for batch in pl.scan_parquet(path).select(wanted).collect_batches(chunk_size=1 << 18):
        n = batch.height
        frame = batch.select(null_if_empty(pl.col(c).cast(pl.String)).alias(c) for c in wanted).with_columns(
            pl.int_range(line, line + n, dtype=pl.Int64).alias(LINE), pl.lit(0, pl.Int32).alias(BAD)
        )
        line += n
        yield RawChunk(path, frame, total * n // max(1, rows), 0, n)
    if line - 1 != rows:  # polars may stop early on damaged row groups without raising
        raise UserError(f"{path}: not a readable Parquet file (read {line - 1:,} of its {rows:,} rows)")
