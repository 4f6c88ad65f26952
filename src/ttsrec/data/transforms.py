"""Named raw-value transforms, as polars expressions (one code path for `prepare` and the client encoder).

Each transform turns a raw column (text, or numbers when parsed typed) into a token column
(integers or strings). A missing value (null or empty string) is the vocabulary token `<missing>`,
counted like any other token: frequent enough, it gets its own id; otherwise it falls to OOV (id 0).
A value the transform cannot read (e.g. text in a numeric column, or a number beyond int64) marks
the row bad. Labels: a missing or unreadable label marks the row bad; string labels map through
`eq:VALUE` (positive when equal) or `in:A,B` (positive when one of the listed values).
"""

from __future__ import annotations

import polars as pl

from ttsrec.errors import UserError

MISSING = "<missing>"

DATE_PARTS = ("hour_of_day", "weekday", "is_weekend")
CATEGORICAL = ("none", "lower", "prefix:N", "year", *DATE_PARTS)
NUMERIC = ("log_square", "int")
LABELS = ("binary", "gt0", "ge:X", "eq:VALUE", "in:A,B,...")
INT64_LIMIT = 2.0**63  # floats at or beyond it do not fit an int64 token


def list_columns(name: str, max_len: int) -> list[str]:
    """The token columns of a list field in a token frame (names no field can take: `_` is reserved)."""
    return [f"_{name}.{k}" for k in range(max_len)]


def list_length_column(name: str) -> str:
    """A list field's token count before truncation (for the summary's truncated and empty rows)."""
    return f"_{name}.n"


def list_tokens(raw: pl.Expr, separator: str, max_len: int, is_list: bool = False) -> tuple[
        list[pl.Expr], pl.Expr]:
    """(the first `max_len` tokens, one column each, null = padding; the token count) of a list value.

    Split by the separator, empty tokens dropped: a missing value, "" and "||" are all the empty list;
    tokens are kept as they are (repeats too). `is_list`: the raw column already holds lists (Parquet).
    """
    parts = raw if is_list else raw.cast(pl.String).str.split(separator)
    toks = parts.list.eval(pl.element().cast(pl.String).filter(pl.element().cast(pl.String) != ""))
    return ([toks.list.get(k, null_on_oob=True) for k in range(max_len)],
            toks.list.len().fill_null(0).cast(pl.Int64))


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
    elif name in ("eq", "in"):
        if not _positives(name, arg):
            raise UserError(f"{where}: label_transform '{name}' needs values, e.g. 'eq:yes', 'in:>50K,>50K.'")
    elif arg or name not in ("binary", "gt0"):
        raise UserError(f"{where}: unknown label_transform {transform!r}; known: {', '.join(LABELS)}")


def kind_of(preprocess: str) -> str:
    return "numeric" if _split(preprocess)[0] in NUMERIC else "categorical"


def dtype_of(preprocess: str) -> pl.DataType:
    """Token dtype: integers stay integers (cheap to count and look up), everything else is a string."""
    return pl.Int64() if _split(preprocess)[0] in (*NUMERIC, *DATE_PARTS) else pl.String()


def token(col: str, preprocess: str) -> tuple[pl.Expr, pl.Expr | None]:
    """(token expression, null = missing; bad-value expression or None) for raw column `col`.

    Raw frames hold null for a missing value (readers turn empty strings into null).
    """
    raw = pl.col(col)
    name, arg = _split(preprocess)
    if name in NUMERIC:
        value = raw.cast(pl.Float64, strict=False)
        bad = raw.is_not_null() & (value.is_null() | ~value.is_finite() | (value.abs() >= INT64_LIMIT))
        if name == "log_square":  # the Criteo bucketing: floor(ln(v)^2) for v > 2, else int(v)
            value = pl.when(value > 2).then(value.log().pow(2)).otherwise(value)
        return value.floor().cast(pl.Int64, strict=False), bad
    if name == "none":
        return raw, None
    if name == "lower":
        return raw.str.to_lowercase(), None
    if name == "prefix":
        return raw.str.slice(0, int(arg)), None
    if name == "year":
        tok = raw.str.extract(r"(\d{4})", 1)
        return tok, raw.is_not_null() & tok.is_null()
    # Avazu's hour column, YYMMDDHH
    date = raw.str.slice(0, 6).str.to_date("%y%m%d", strict=False)
    hour = raw.str.slice(6).cast(pl.Int64, strict=False)
    bad = raw.is_not_null() & (date.is_null() | hour.is_null() | (raw.str.len_bytes() != 8) | (hour > 23))
    if name == "hour_of_day":
        tok = hour
    elif name == "weekday":
        tok = date.dt.weekday().cast(pl.Int64)
    else:
        tok = (date.dt.weekday() >= 6).cast(pl.Int64)
    return pl.when(bad).then(None).otherwise(tok), bad


def _positives(name: str, arg: str) -> list[str]:
    """The label values that mean positive: `eq` takes its argument whole, `in` a comma-separated list."""
    values = [arg] if name == "eq" else arg.split(",")
    return [v.strip() for v in values if v.strip()]


def label(col: str, transform: str) -> tuple[pl.Expr, pl.Expr]:
    """(label as float32 0/1, bad-label expression: missing or unreadable)."""
    name, arg = _split(transform)
    if name in ("eq", "in"):  # string labels, compared without surrounding blanks (" >50K" in Adult)
        text = pl.col(col).cast(pl.String).str.strip_chars()
        text = pl.when(text == "").then(None).otherwise(text)
        return text.is_in(_positives(name, arg)).cast(pl.Float32).fill_null(0.0), text.is_null()
    value = pl.col(col).cast(pl.Float64, strict=False)
    if name == "binary":
        bad = value.is_null() | ~value.is_in([0.0, 1.0])
        out = value == 1.0
    elif name == "gt0":
        bad = value.is_null() | value.is_nan()
        out = value > 0
    else:
        bad = value.is_null() | value.is_nan()
        out = value >= float(arg)
    return out.cast(pl.Float32).fill_null(0.0), bad.fill_null(True)
