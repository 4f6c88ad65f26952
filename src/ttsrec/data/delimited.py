"""Delimited text (plain or .gz) as polars frames of raw columns, a bounded chunk of whole lines at a time.

Every chunk carries the file line number of each row (for `--on-bad-row fail`) and a `_bad` code
(0 = fine, -k = the line has k columns instead of `ncols`, `UNDECODABLE` = bytes that are not valid in
the spec's encoding), so the caller can skip or refuse such rows. A truncated or corrupt `.gz` is a
one-line `UserError`, never a traceback. The lowest reading layer: `readers` (dispatch by format) and
`movielens` build on it.
"""

from __future__ import annotations

import gzip
import threading
import zlib
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import polars as pl

from ttsrec.data.spec import DatasetSpec
from ttsrec.errors import UserError

CHUNK_BYTES = 8 << 20  # bounded memory; small enough for allocations to be reused
BAD = "_bad"
LINE = "_line"
UNDECODABLE = -(1 << 30)
"""`_bad` code of a line whose bytes are not valid in the spec's encoding (never silently replaced)."""


@dataclass
class RawChunk:
    file: Path
    frame: pl.DataFrame
    """Columns `spec.label` + `spec.sources` (text; Float64 where only numbers are expected; null = missing),
    `_line` (1-based line in `file`, or in the byte span read) and `_bad` (see the module docstring)."""
    nbytes: int
    """Input bytes this chunk consumed (for progress)."""
    ncols: int = 0
    """Columns a well-formed line has (0: not a delimited text file)."""
    lines: int = 0
    """Lines this chunk consumed (blank ones and a header included): numbers lines across spans."""


@dataclass
class TextBlock:
    """A chunk of whole lines of a delimited file, read but not parsed (`parse` makes its `RawChunk`)."""

    file: Path
    data: bytes
    """Whole lines; the last ends in a newline unless the file does not."""
    first_line: int
    newlines: int
    nbytes: int
    """Input bytes this chunk consumed (compressed ones for .gz)."""
    lines: int
    ncols: int
    cols: list[tuple[str, int]]
    """(name, index) of the columns wanted."""

    def parse(self, spec: DatasetSpec) -> RawChunk:
        frame = _parse_fast(self.data, spec, self.ncols, self.cols, self.first_line, self.newlines)
        if frame is None:
            text = self.data.decode(spec.encoding, errors="replace")
            frame = _split_lines(text, spec.separator, self.ncols, self.cols, self.first_line)
        frame = _mark_undecodable(frame, self.data, spec.encoding, self.first_line)
        return RawChunk(self.file, frame, self.nbytes, self.ncols, self.lines)


def iter_text_blocks(
    spec: DatasetSpec,
    path: Path,
    chunk_bytes: int = CHUNK_BYTES,
    columns: list[str] | None = None,
    wanted: list[str] | None = None,
    span: tuple[int, int | None] = (0, None),
) -> Iterator[TextBlock]:
    """Delimited text (plain or .gz) in chunks of whole lines, read but not parsed (`TextBlock.parse`);
    `columns` overrides the spec's names.

    `span` = (start, end) reads only the lines that start in those bytes of an uncompressed file (a
    shard); `_line` then counts from the span's first line.
    """
    path = Path(path)
    try:
        yield from _iter_text(spec, path, chunk_bytes, columns, wanted, span)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:
        raise UserError(f"{path}: truncated or corrupt gzip file ({err})") from err


def _iter_text(
    spec: DatasetSpec,
    path: Path,
    chunk_bytes: int,
    columns: list[str] | None,
    wanted: list[str] | None,
    span: tuple[int, int | None],
) -> Iterator[TextBlock]:
    with (
        open(path, "rb") as raw,
        gzip.GzipFile(fileobj=raw) if path.suffix == ".gz" else nullcontext(raw) as fh,
    ):
        names = columns if columns is not None else spec.columns
        if spec.header:
            first = fh.readline()
            try:
                header = first.decode(spec.encoding).rstrip("\r\n").split(spec.separator)
            except UnicodeDecodeError as err:
                raise UserError(f"{path}:1: header is not valid {spec.encoding} ({err.reason})") from None
            if columns is None:
                names = [h.strip().strip('"') for h in header]
        assert names is not None
        wanted = wanted if wanted is not None else list(dict.fromkeys([spec.label, *spec.sources]))
        absent = [c for c in wanted if c not in names]
        if absent:
            raise UserError(f"{path}: spec names column(s) {absent} not present (has: {', '.join(names)})")
        cols = [(c, names.index(c)) for c in wanted]
        header_lines = int(spec.header and span[0] == 0)
        yield from _blocks(path, (raw, fh), span, chunk_bytes, (len(names), cols), header_lines)


def _blocks(
    path: Path,
    files: tuple[BinaryIO, BinaryIO],
    span: tuple[int, int | None],
    chunk_bytes: int,
    layout: tuple[int, list[tuple[str, int]]],
    header_lines: int,
) -> Iterator[TextBlock]:
    """Chunks of whole lines starting in `span`; `files` = (the file on disk, the text stream over it)."""
    (raw, fh), (start, end), (ncols, cols) = files, span, layout
    if start > 0:
        fh.seek(start - 1)
        fh.readline()  # the line running into `start` belongs to the span before
    pos, done, line_no, lines = fh.tell(), raw.tell(), 1 + header_lines, header_lines
    while end is None or pos < end:
        block = fh.read(chunk_bytes if end is None else min(chunk_bytes, end - pos))
        if not block:
            break
        if not block.endswith(b"\n"):
            block += fh.readline()  # finish the last line
        pos += len(block)
        newlines = _count(block, 10)
        unended = not block.endswith(b"\n")
        yield TextBlock(path, block, line_no, newlines, raw.tell() - done, lines + newlines + unended, ncols,
                        cols)
        line_no += newlines + unended
        done, lines = raw.tell(), 0


def _mark_undecodable(frame: pl.DataFrame, block: bytes, encoding: str, first_line: int) -> pl.DataFrame:
    """Mark the rows whose line is not valid `encoding` as `UNDECODABLE` (the parsers replaced its bytes)."""
    if block.isascii() and _ascii_compatible(encoding):
        return frame  # the common case, checked at memory speed
    try:
        block.decode(encoding)
        return frame
    except UnicodeDecodeError:
        pass
    bad_lines = []
    for i, line in enumerate(block.split(b"\n")):
        try:
            line.decode(encoding)
        except UnicodeDecodeError:
            bad_lines.append(first_line + i)
    return frame.with_columns(
        pl.when(pl.col(LINE).is_in(bad_lines))
        .then(pl.lit(UNDECODABLE, pl.Int32))
        .otherwise(pl.col(BAD))
        .alias(BAD)
    )


def _ascii_compatible(encoding: str) -> bool:
    return "".join(c for c in encoding.lower() if c.isalnum()) in {
        "utf8", "latin1", "iso88591", "cp1252", "windows1252", "ascii", "usascii", "iso885915", "l1",
    }


def _parse_fast(
    data: bytes, spec: DatasetSpec, ncols: int, wanted: list[tuple[str, int]], first_line: int, newlines: int
) -> pl.DataFrame | None:
    """Polars' multi-threaded CSV parser on the chunk, column counts checked per line with numpy.

    None when the fast path does not apply (non-UTF-8 encoding, multi-byte separator, or the parser
    disagreeing with the line count); the caller then splits lines itself.
    """
    if spec.encoding.lower().replace("-", "") != "utf8" or len(spec.separator.encode()) != 1:
        return None
    if not data.endswith(b"\n"):
        data += b"\n"
        newlines += 1
    if spec.quote_char and spec.quote_char.encode() in data:
        return _parse_quoted(data, spec, ncols, wanted, first_line)
    typed = {i: pl.Float64 for name, i in wanted if name in _numeric_sources(spec)}
    clean = _parse_clean(data, spec.separator, ncols, wanted, typed, newlines)
    if clean is not None:
        return clean.with_columns(
            pl.int_range(first_line, first_line + newlines, dtype=pl.Int64).alias(LINE),
            pl.lit(0, pl.Int32).alias(BAD),
        )
    raw = np.frombuffer(data, dtype=np.uint8)
    hits = _scratch(len(raw))  # reused: fresh 32 MB temporaries cost more in page faults than in compares
    ends = np.flatnonzero(np.equal(raw, 10, out=hits))
    starts = np.concatenate([[0], ends[:-1] + 1])
    # separators per line (each segment ends with its newline, so none is empty for reduceat)
    got = (
        np.add.reduceat(np.equal(raw, ord(spec.separator), out=hits).view(np.int8), starts, dtype=np.int32)
        + 1
    )
    length = ends - starts - (raw[np.maximum(ends - 1, 0)] == 13)
    frame = None
    for schema in ([typed] if typed else []) + [{}]:  # typed numerics first; text if one is not a number
        try:
            frame = pl.read_csv(
                data,
                separator=spec.separator,
                has_header=False,
                quote_char=None,
                encoding="utf8-lossy",
                schema={f"c{i}": schema.get(i, pl.String) for i in range(ncols)},
                truncate_ragged_lines=True,
                missing_columns="insert",
                extra_columns="ignore",
            ).select(pl.col(f"c{i}").alias(name) for name, i in wanted)
            break
        except pl.exceptions.PolarsError:
            continue
    if frame is None:
        return None
    if frame.height != len(ends):
        return None
    lines = np.arange(first_line, first_line + len(ends), dtype=np.int64)
    frame = frame.with_columns(
        pl.Series(LINE, lines), pl.Series(BAD, np.where(got != ncols, -got, 0), dtype=pl.Int32)
    )
    return frame.filter(pl.Series(length > 0)) if (length == 0).any() else frame


def _parse_clean(
    data: bytes, sep: str, ncols: int, wanted: list[tuple[str, int]], typed: dict[int, Any], lines: int
) -> pl.DataFrame | None:
    """The common chunk, parsed once without per-line checks; None unless every line is well-formed.

    Exact without looking at lines one by one: the strict parser refuses a line with too many fields, so
    when the separators add up to `ncols - 1` per line, no line has too few (nor is blank). A `\r` (CRLF,
    or one inside a value) takes the checked path, as the parser might read it as a line end.
    """
    if b"\r" in data or _count(data, ord(sep)) != lines * (ncols - 1):
        return None
    try:
        frame = pl.read_csv(
            data,
            separator=sep,
            has_header=False,
            quote_char=None,
            encoding="utf8-lossy",
            schema={f"c{i}": typed.get(i, pl.String) for i in range(ncols)},
            truncate_ragged_lines=False,
        )
    except pl.exceptions.PolarsError:
        return None  # a non-number in a typed column, or a long line: the checked path names the rows
    if frame.height != lines:
        return None
    return frame.select(pl.col(f"c{i}").alias(name) for name, i in wanted)


def _count(data: bytes, byte: int) -> int:
    """Occurrences of one byte, at memory speed (numpy compare into a reused buffer)."""
    raw = np.frombuffer(data, dtype=np.uint8)
    return int(np.count_nonzero(np.equal(raw, byte, out=_scratch(len(raw)))))


_SCRATCH = threading.local()
"""One scratch buffer per thread: the reader thread counts a chunk's lines while another parses."""


def _scratch(n: int) -> np.ndarray:
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or len(buffer) < n:
        buffer = _SCRATCH.buffer = np.empty(n, dtype=bool)
    return buffer[:n]


def _numeric_sources(spec: DatasetSpec) -> set[str]:
    """Raw columns read only as numbers (parsed typed, which is faster than text + cast)."""
    label_kind = "text" if spec.label_transform.split(":")[0] in ("eq", "in") else "numeric"
    uses: dict[str, set[str]] = {spec.label: {label_kind}}
    for f in spec.fields:
        uses.setdefault(f.source, set()).add(f.kind)
    return {col for col, kinds in uses.items() if kinds == {"numeric"}}


def _parse_quoted(
    data: bytes, spec: DatasetSpec, ncols: int, wanted: list[tuple[str, int]], first_line: int
) -> pl.DataFrame:
    """Quoted CSV: polars parses the quoting; a spare column catches lines with too many fields.

    Lines with too few fields read as missing trailing values here (quoting hides the true count).
    """
    try:
        frame = pl.read_csv(
            data,
            separator=spec.separator,
            has_header=False,
            quote_char=spec.quote_char,
            encoding="utf8-lossy",
            schema={f"c{i}": pl.String for i in range(ncols + 1)},
            truncate_ragged_lines=True,
            missing_columns="insert",
            extra_columns="ignore",
        )
    except pl.exceptions.PolarsError as err:
        raise UserError(
            f"CSV parse error in the chunk from line {first_line}: {str(err).splitlines()[0]}"
        ) from err
    if frame.height != data.count(b"\n"):
        raise UserError(f"a quoted field spans lines near line {first_line} (not supported)")
    return frame.select(
        *[null_if_empty(pl.col(f"c{i}")).alias(name) for name, i in wanted],
        pl.int_range(first_line, first_line + pl.len(), dtype=pl.Int64).alias(LINE),
        pl.when(pl.col(f"c{ncols}").is_not_null()).then(-(ncols + 1)).otherwise(0).cast(pl.Int32).alias(BAD),
    )


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
    got = pl.col("l").str.count_matches(sep, literal=True).cast(pl.Int32) + 1
    parts = pl.col("l").str.split_exact(sep, ncols - 1)
    return lines.select(
        *[null_if_empty(parts.struct.field(f"field_{i}")).alias(name) for name, i in wanted],
        pl.col(LINE),
        pl.when(got != ncols).then(-got).otherwise(0).cast(pl.Int32).alias(BAD),
    )


def null_if_empty(col: pl.Expr) -> pl.Expr:
    return pl.when(col == "").then(None).otherwise(col)
