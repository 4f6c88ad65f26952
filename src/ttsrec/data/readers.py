"""Stream raw input files as polars frames of string columns, a bounded chunk at a time.

Files larger than memory work: text is read in byte chunks cut at line ends, Parquet in record
batches. Every chunk carries the file line number of each row (for `--on-bad-row fail`) and a
`_bad` reason for rows whose column count is wrong, so the caller can skip or refuse them.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import polars as pl

from ttsrec.data.spec import DatasetSpec
from ttsrec.errors import UserError

CHUNK_BYTES = 32 << 20
BAD = "_bad"
LINE = "_line"


@dataclass
class RawChunk:
    file: Path
    frame: pl.DataFrame
    """String columns `spec.label` and `spec.sources`, plus `_line` (1-based) and `_bad` (reason or null)."""
    nbytes: int
    """Input bytes this chunk consumed (for progress)."""


def input_size(spec: DatasetSpec, inputs: list[Path]) -> int:
    return sum(_data_files(spec, p)[0].stat().st_size for p in inputs)


def iter_chunks(spec: DatasetSpec, inputs: list[Path], chunk_bytes: int = CHUNK_BYTES) -> Iterator[RawChunk]:
    """All rows of all inputs, in order, as string frames."""
    for path in inputs:
        if spec.format == "parquet":
            yield from _parquet(spec, path, chunk_bytes)
        elif spec.format == "movielens":
            from ttsrec.data.movielens import iter_movielens

            yield from iter_movielens(spec, path, chunk_bytes)
        else:
            yield from iter_text(spec, path, chunk_bytes)


def check_inputs(spec: DatasetSpec, inputs: list[Path]) -> None:
    if not inputs:
        raise UserError("no input given (--input PATH)")
    for path in inputs:
        _data_files(spec, path)


def _data_files(spec: DatasetSpec, path: Path) -> list[Path]:
    path = Path(path)
    if spec.format == "movielens":
        if not path.is_dir():
            raise UserError(
                f"movielens input must be the ml-100k folder (with u.data, u.user, u.item): {path}"
            )
        files = [path / n for n in ("u.data", "u.user", "u.item")]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise UserError(f"{path} is not an ml-100k folder: missing {', '.join(absent)}")
        return files
    if not path.exists():
        raise UserError(f"input file not found: {path}")
    if not path.is_file():
        raise UserError(f"input is not a file: {path}")
    return [path]


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def iter_text(
    spec: DatasetSpec,
    path: Path,
    chunk_bytes: int = CHUNK_BYTES,
    columns: list[str] | None = None,
    wanted: list[str] | None = None,
) -> Iterator[RawChunk]:
    """Delimited text without quoting (as the public CTR logs are): split each line on the separator."""
    sep = spec.separator
    line_no = 1
    with _open(path) as fh:
        names = columns if columns is not None else spec.columns
        if spec.header:
            first = fh.readline()
            line_no += 1
            header = first.decode(spec.encoding, errors="replace").rstrip("\r\n").split(sep)
            if columns is None:
                names = [h.strip().strip('"') for h in header]
        assert names is not None
        wanted = wanted if wanted is not None else [spec.label, *spec.sources]
        spec_or_fail = [c for c in wanted if c not in names]
        if spec_or_fail:
            raise UserError(
                f"{path}: spec names column(s) {spec_or_fail} not present (has: {', '.join(names)})"
            )
        index = {n: i for i, n in enumerate(names)}
        rest = b""
        while True:
            block = fh.read(chunk_bytes)
            data = rest + block
            if not block:
                rest = b""
            else:
                cut = data.rfind(b"\n")
                if cut < 0:
                    rest = data
                    continue
                data, rest = data[: cut + 1], data[cut + 1 :]
            if data:
                frame = _split_lines(
                    data.decode(spec.encoding, errors="replace"),
                    sep,
                    len(names),
                    [(c, index[c]) for c in wanted],
                    line_no,
                )
                line_no += data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
                yield RawChunk(path, frame, len(block) if block else len(data))
            if not block:
                return


def _split_lines(
    text: str, sep: str, ncols: int, wanted: list[tuple[str, int]], first_line: int
) -> pl.DataFrame:
    if text.endswith("\n"):
        text = text[:-1]
    lines = pl.DataFrame({"l": [text]}).select(pl.col("l").str.split("\n").explode())
    lines = lines.with_columns(
        pl.col("l").str.strip_suffix("\r"),
        pl.int_range(first_line, first_line + pl.len(), dtype=pl.Int64).alias(LINE),
    ).filter(pl.col("l") != "")
    got = pl.col("l").str.count_matches(sep, literal=True) + 1
    parts = pl.col("l").str.split_exact(sep, ncols - 1)
    return lines.select(
        *[parts.struct.field(f"field_{i}").alias(name) for name, i in wanted],
        pl.col(LINE),
        pl.when(got != ncols)
        .then(pl.format("expected {} columns, got {}", pl.lit(ncols), got))
        .otherwise(None)
        .alias(BAD),
    )


def _parquet(spec: DatasetSpec, path: Path, chunk_bytes: int) -> Iterator[RawChunk]:
    try:
        schema = pl.scan_parquet(path).collect_schema()
    except (pl.exceptions.ComputeError, OSError) as err:
        raise UserError(f"{path}: not a readable Parquet file ({str(err).splitlines()[0]})") from err
    spec.check_columns(list(schema.names()), str(path))
    wanted = [spec.label, *spec.sources]
    total = path.stat().st_size
    rows_per_batch = 1 << 18
    line = 1
    for batch in pl.scan_parquet(path).select(wanted).collect_batches(chunk_size=rows_per_batch):
        n = batch.height
        frame = batch.select(pl.all().cast(pl.String)).with_columns(
            pl.int_range(line, line + n, dtype=pl.Int64).alias(LINE), pl.lit(None, pl.String).alias(BAD)
        )
        line += n
        yield RawChunk(path, frame, min(total, chunk_bytes))
