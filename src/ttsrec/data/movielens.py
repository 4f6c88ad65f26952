"""The GroupLens ml-100k folder: ratings (`u.data`) streamed and joined with users and items.

`u.user` and `u.item` are small lookup tables (943 users, 1682 items), read whole; `u.item` is
Latin-1. The item's 19 genre flags become one `genres` column ("Action|Comedy"), so the preset can
treat the genre combination as one categorical field.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import polars as pl

from ttsrec.data.delimited import BAD, LINE, RawChunk, iter_text_blocks
from ttsrec.data.spec import DatasetSpec
from ttsrec.errors import UserError

GENRES = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
RATING_COLUMNS = ["user_id", "item_id", "rating", "timestamp"]
USER_COLUMNS = ["user_id", "age", "gender", "occupation", "zip_code"]
ITEM_COLUMNS = ["item_id", "title", "release_date", "video_release_date", "imdb_url", *GENRES]
JOINED = [*RATING_COLUMNS, *USER_COLUMNS[1:], "title", "release_date", "genres"]


def _table(path: Path, columns: list[str]) -> pl.DataFrame:
    text = path.read_bytes().decode("latin-1").encode()
    return pl.read_csv(
        text,
        separator="|",
        has_header=False,
        quote_char=None,
        schema={c: pl.String for c in columns},
        truncate_ragged_lines=True,
        missing_columns="insert",
        extra_columns="ignore",
    ).unique(subset=columns[0], keep="first", maintain_order=True)


def iter_movielens(spec: DatasetSpec, folder: Path, chunk_bytes: int) -> Iterator[RawChunk]:
    wanted = [spec.label, *spec.sources]
    absent = [c for c in wanted if c not in JOINED]
    if absent:
        raise UserError(f"movielens spec names column(s) {absent} not present (has: {', '.join(JOINED)})")
    users = _table(folder / "u.user", USER_COLUMNS)
    items = (
        _table(folder / "u.item", ITEM_COLUMNS)
        .select(
            "item_id",
            "title",
            "release_date",
            pl.concat_str(
                [pl.when(pl.col(g) == "1").then(pl.lit(g)) for g in GENRES], separator="|", ignore_nulls=True
            ).alias("genres"),
        )
        .with_columns(pl.when(pl.col("genres") == "").then(None).otherwise(pl.col("genres")).alias("genres"))
    )
    ratings = replace(spec, separator="\t", header=False, encoding="utf-8")
    for block in iter_text_blocks(ratings, folder / "u.data", chunk_bytes, RATING_COLUMNS, RATING_COLUMNS):
        chunk = block.parse(ratings)
        frame = (
            chunk.frame.join(users, on="user_id", how="left", maintain_order="left")
            .join(items, on="item_id", how="left", maintain_order="left")
            .select(*dict.fromkeys(wanted), LINE, BAD)
        )
        yield RawChunk(chunk.file, frame, chunk.nbytes, chunk.ncols, chunk.lines)
