"""prepare's per-value loops, compiled from `_kernels.c` at install (the file's header says why and how
a token table is laid out). Arrays are C-contiguous numpy arrays of the dtypes named; every function
checks their sizes and releases the GIL."""

import numpy as np

def split_fields(data: np.ndarray, start: int, end: int, sep: int, ncols: int, bounds: np.ndarray,
                 row0: int) -> int:
    """Field starts of the lines in data[start:end] (uint8) into bounds (int32 [ncols + 1, rows]):
    bounds[k, row] is where field k starts, bounds[ncols, row] one past the newline; rows from `row0` on.
    The lines written, or -1 when a line is not `ncols` fields ending in a newline (blank, ragged, a
    carriage return). Reads 8 bytes a step, visiting only separators, newlines and carriage returns."""

def binary_labels(data: np.ndarray, lo: np.ndarray, hi: np.ndarray, out: np.ndarray) -> bool:
    """Labels data[lo[r] : hi[r] - 1] into out (float32) when every one is exactly "0" or "1"."""

def code_text(data: np.ndarray, lo: np.ndarray, hi: np.ndarray, trim: int, nulls: np.ndarray, first: int,
              slots: np.ndarray, state: np.ndarray, offsets: np.ndarray, arena: np.ndarray, codes: np.ndarray,
              train: np.ndarray, counts: np.ndarray) -> int:
    """Codes (uint32) of the tokens data[lo[r] : hi[r] - trim] (int32 lo, hi) for rows first.. into
    `codes`, adding new tokens to the table. Missing (code 0): rows where nulls[r] (uint8) is set or,
    with an empty `nulls`, empty tokens (raw text). Rows where train[r] (uint8; empty: none) is set are
    counted: in their token's slot, the missing value's in counts[0] (int64, longer than any code).
    Returns the row reached: short of the end when the table is full (the caller grows it and calls
    again from there)."""

def code_ints(values: np.ndarray, nulls: np.ndarray, first: int, slots: np.ndarray, state: np.ndarray,
              keys: np.ndarray, codes: np.ndarray, train: np.ndarray, counts: np.ndarray) -> int:
    """`code_text` for int64 tokens (their own keys; keys[code - 1] is the token)."""

def rehash(old: np.ndarray, new: np.ndarray, text: bool) -> None:
    """Every (key, meta) pair of `old` into the larger, empty table `new` (`text`: a text table, whose
    slots are placed by another hash)."""

def slot_counts(slots: np.ndarray, counts: np.ndarray) -> None:
    """counts[code] += the train count each code's slot holds (int64 counts, longer than any code)."""

def count_codes(codes: np.ndarray, train: np.ndarray, counts: np.ndarray, skip_missing: bool) -> None:
    """counts[code] += 1 (int64) for each row with train[r] (uint8) set; code 0 left out with
    `skip_missing` (a list field's padding)."""

def gather_ids(narrow: np.ndarray, wide: np.ndarray, column_at: np.ndarray, tables: np.ndarray,
               table_at: np.ndarray, split: np.ndarray, want: int, out: np.ndarray) -> int:
    """out[row, c] = tables[table_at[c] + code] (tables int32, table_at int64 [C], split uint8 [n]) for
    the rows r whose split is `want`; column c's code is narrow[k, r] (uint16 [.., n]) where
    column_at[c] = -k - 1, wide[k, r] (uint32 [.., n]) where column_at[c] = k. Returns the rows written."""

def joined(arena: np.ndarray, offsets: np.ndarray, first: int, size: int, out: np.ndarray) -> None:
    """Tokens first..size-1 of an arena into out (uint8), each followed by a newline."""

def plain_integers(arena: np.ndarray, offsets: np.ndarray, first: int, size: int, digits: int,
                   values: np.ndarray, plain: np.ndarray) -> None:
    """Tokens first..size-1 of the form -?[0-9]{1,digits} as float64 into `values` (exact up to 15
    digits), plain[g - first] = 1 (uint8) for those, 0 (value 0.0) for the others."""
