"""Named raw-value transforms, as polars expressions (one code path for `prepare` and the client encoder).

Each transform turns a raw string column into a token column. Missing values (null or empty string)
become the token `<missing>`, which is counted like any other token: frequent enough, it gets its
own id; otherwise it falls to OOV (id 0). A value the transform cannot read (e.g. text in a numeric
column) marks the row bad.
"""

from __future__ import annotations

import polars as pl

from ttsrec.errors import UserError

MISSING = "<missing>"

CATEGORICAL = ("none", "lower", "prefix:N", "year", "hour_of_day", "weekday", "is_weekend")
NUMERIC = ("log_square", "int")
LABELS = ("binary", "gt0", "ge:X")


def _split(preprocess: str) -> tuple[str, str]:
    name, _, arg = preprocess.partition(":")
    return name, arg


def check(preprocess: str, where: str) -> None:
    name, arg = _split(preprocess)
    if name == "prefix":
        if not arg.isdigit() or int(arg) < 1:
            raise UserError(f"{where}: prefix needs a length, e.g. 'prefix:3' (got {preprocess!r})")
        return
    if arg or name not in (*CATEGORICAL, *NUMERIC):
        raise UserError(
            f"{where}: unknown preprocess {preprocess!r}; known: {', '.join(CATEGORICAL + NUMERIC)}"
        )


def check_label_transform(transform: str, where: str) -> None:
    name, arg = _split(transform)
    if name == "ge":
        try:
            float(arg)
        except ValueError:
            raise UserError(f"{where}: label_transform 'ge' needs a threshold, e.g. 'ge:4'") from None
    elif arg or name not in ("binary", "gt0"):
        raise UserError(f"{where}: unknown label_transform {transform!r}; known: {', '.join(LABELS)}")


def kind_of(preprocess: str) -> str:
    return "numeric" if _split(preprocess)[0] in NUMERIC else "categorical"


def token(col: str, preprocess: str) -> tuple[pl.Expr, pl.Expr]:
    """(token expression, never null; bad-value expression) for raw string column `col`."""
    raw = pl.col(col)
    missing = raw.is_null() | (raw == "")
    name, arg = _split(preprocess)
    bad: pl.Expr = pl.lit(False)
    if name in NUMERIC:
        value = raw.cast(pl.Float64, strict=False)
        bad = ~missing & (value.is_null() | ~value.is_finite())
        if name == "log_square":  # the Criteo bucketing: floor(ln(v)^2) for v > 2, else int(v)
            value = pl.when(value > 2).then(value.log().pow(2).floor()).otherwise(value.floor())
        tok = value.floor().cast(pl.Int64, strict=False).cast(pl.String)
    elif name == "none":
        tok = raw
    elif name == "lower":
        tok = raw.str.to_lowercase()
    elif name == "prefix":
        tok = raw.str.slice(0, int(arg))
    elif name == "year":
        tok = raw.str.extract(r"(\d{4})", 1)
        bad = ~missing & tok.is_null()
    else:  # Avazu's hour column, YYMMDDHH
        valid = raw.str.contains(r"^\d{8}$")
        bad = ~missing & ~valid.fill_null(False)
        date = raw.str.slice(0, 6).str.to_date("%y%m%d", strict=False)
        bad = bad | (~missing & date.is_null())
        if name == "hour_of_day":
            tok = raw.str.slice(6, 2)
        elif name == "weekday":
            tok = date.dt.weekday().cast(pl.String)
        else:
            tok = (date.dt.weekday() >= 6).cast(pl.Int8).cast(pl.String)
    tok = pl.when(missing | bad).then(pl.lit(MISSING)).otherwise(tok).fill_null(MISSING)
    return tok, bad


def label(col: str, transform: str) -> tuple[pl.Expr, pl.Expr]:
    """(label as float32 0/1, bad-label expression)."""
    name, arg = _split(transform)
    value = pl.col(col).cast(pl.Float64, strict=False)
    if name == "binary":
        bad = value.is_null() | ~value.is_in([0.0, 1.0])
        out = value
    elif name == "gt0":
        bad = value.is_null() | value.is_nan()
        out = value > 0
    else:
        bad = value.is_null() | value.is_nan()
        out = value >= float(arg)
    return out.cast(pl.Float32).fill_null(0.0), bad.fill_null(True)
