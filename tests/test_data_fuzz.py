"""Property-based fuzzing (issue 13) of the record encoder, the raw readers and the transforms.

Random bytes, encodings, huge, infinite and NaN numbers: the only exception allowed is a one-line
`UserError`; ids stay inside each field's vocabulary. Bounded: few examples, a deadline each.
"""

from __future__ import annotations

import gzip
import math
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttsrec.data import transforms
from ttsrec.data.encode import BAD, RecordEncoder, tokens
from ttsrec.data.feature_map import FeatureMap
from ttsrec.data.prepare import prepare
from ttsrec.data.readers import iter_chunks
from ttsrec.data.spec import DatasetSpec, preset_dict
from ttsrec.errors import UserError

FUZZ = settings(
    max_examples=50,
    deadline=3000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],  # noqa: E501
    derandomize=True,
)
CRITEO = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]
ENCODINGS = ["utf-8", "latin-1", "cp1252", "ascii", "utf-16", "no-such-codec", "shift_jis"]

numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(1 << 80), max_value=1 << 80),
    st.sampled_from(["1e400", "-1e400", "nan", "inf", "9" * 30, "-0", "0x1F", " 3 ", "1_000"]),
)
values = st.one_of(st.none(), st.text(max_size=12), st.binary(max_size=6), st.booleans(), numbers)


@pytest.fixture(scope="module")
def encoder() -> RecordEncoder:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(200):
        ints = [str(int(v)) if v >= 0 else "" for v in rng.integers(-3, 50, 13)]
        cats = [f"{int(v):08x}" if v else "" for v in rng.integers(0, 6, 26)]
        rows.append("\t".join([str(i % 2), *ints, *cats]))
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw.tsv"
        raw.write_text("\n".join(rows) + "\n")
        spec = DatasetSpec.from_dict({**preset_dict("criteo"), "min_count": 1})
        prepare("criteo", [raw], Path(tmp) / "out", spec=spec)
        return RecordEncoder(FeatureMap.load(Path(tmp) / "out"))


@FUZZ
@given(st.lists(st.dictionaries(st.sampled_from([*CRITEO, "extra", ""]), values, max_size=12), max_size=4))
def test_record_encoder_ids_or_user_error(encoder: RecordEncoder, records: list[dict]) -> None:
    try:
        ids = encoder.encode(records)
    except UserError as err:
        assert "\n" not in str(err) and str(err).startswith("record ")
        return
    fmap = encoder.feature_map
    assert ids.shape == (len(records), fmap.num_fields) and ids.dtype == np.int64
    assert (ids >= 0).all() and (ids <= np.array(fmap.vocab_sizes) - 1).all()


def _is_number(value: object) -> bool:
    """A finite int64-sized decimal as the parser reads it (no blanks or underscores, unlike Python)."""
    if isinstance(value, str) and (value != value.strip() or "_" in value):
        return False
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    return math.isfinite(number) and abs(number) < 2**63


@FUZZ
@given(st.lists(numbers, min_size=1, max_size=20))
def test_numeric_transforms_flag_what_they_cannot_read(raw: list) -> None:
    text = [None if isinstance(v, float) and math.isnan(v) else str(v) for v in raw]
    for preprocess in transforms.NUMERIC:
        tok, bad = transforms.token("x", preprocess)
        assert bad is not None
        out = pl.DataFrame({"x": pl.Series(text, dtype=pl.String)}).select(tok.alias("t"), bad.alias("b"))
        for value, t, b in zip(text, out["t"], out["b"], strict=True):
            if value is None:
                assert t is None and not b, "a missing value is a missing token, not a bad row"
            elif b:
                assert not _is_number(value) or abs(float(value)) >= 2**62
            else:
                assert t is not None, f"{value!r} read as a number must give a token"
    floats = pl.DataFrame({"x": pl.Series([float(v) if _is_number(v) else math.inf for v in raw])})
    tok, bad = transforms.token("x", "log_square")
    floats.select(tok.alias("t"), bad.alias("b"))  # typed Float64 columns (the fast parser's) never raise


@FUZZ
@given(
    st.lists(st.one_of(st.none(), st.text(max_size=8), numbers.map(str)), min_size=1, max_size=20),
    st.sampled_from(["binary", "gt0", "ge:4", "eq:yes", "in:>50K,>50K.", "eq:1"]),
)
def test_label_transforms_never_raise(raw: list, transform: str) -> None:
    label, bad = transforms.label("y", transform)
    out = pl.DataFrame({"y": pl.Series(raw, dtype=pl.String)}).select(label.alias("l"), bad.alias("b"))
    assert set(out["l"].to_list()) <= {0.0, 1.0} and out["b"].null_count() == 0
    assert all(b for v, b in zip(raw, out["b"], strict=True) if v is None or not v.strip())


@FUZZ
@given(
    st.lists(st.text(max_size=10), min_size=1, max_size=10),
    st.sampled_from(["none", "lower", "prefix:2", "year", "hour_of_day", "weekday", "is_weekend"]),
)
def test_categorical_transforms_never_raise(raw: list[str], preprocess: str) -> None:
    field = {"name": "f", "source": "x", "preprocess": preprocess}
    spec = DatasetSpec.from_dict({"label": "y", "fields": [field]})
    frame = pl.DataFrame({"y": ["1"] * len(raw), "x": [v or None for v in raw]})
    out = tokens(frame, spec)
    assert out.height == len(raw) and out[BAD].null_count() == 0


@FUZZ
@given(
    st.binary(max_size=400),
    st.sampled_from(ENCODINGS),
    st.sampled_from([".tsv", ".gz", ".csv"]),
    st.booleans(),
    st.integers(min_value=1, max_value=64),
)
def test_readers_on_random_bytes(data: bytes, encoding: str, suffix: str, header: bool, chunk: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"raw{suffix}"
        if suffix == ".gz" and data[:1] != b"\x1f":
            data = gzip.compress(data)[: max(10, len(data))]  # valid, truncated or whole
        path.write_bytes(data)
        spec_dict = {"label": "y", "fields": ["a", {"name": "n", "preprocess": "int"}], "encoding": encoding}
        if not header:
            spec_dict |= {"header": False, "columns": ["y", "a", "n"]}
        if suffix == ".tsv":
            spec_dict["separator"] = "\t"
        try:
            spec = DatasetSpec.from_dict(spec_dict)
            for part in iter_chunks(spec, [path], chunk_bytes=chunk):
                out = tokens(part.frame, spec)
                assert out.height == part.frame.height
        except UserError as err:
            assert "\n" not in str(err)


@settings(max_examples=15, deadline=10_000, derandomize=True)
@given(st.lists(st.binary(max_size=60), min_size=1, max_size=30))
def test_prepare_on_random_lines(lines: list[bytes]) -> None:
    """Random lines after a valid header: prepared (bad rows counted) or one UserError, never a crash."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "raw.csv"
        path.write_bytes(b"y,a,n\n" + b"\n".join(lines) + b"\n")
        spec = DatasetSpec.from_dict({"label": "y", "fields": ["a", {"name": "n", "preprocess": "int"}]})
        try:
            summary = prepare("csv", [path], Path(tmp) / "out", spec=spec)
        except UserError as err:
            assert "\n" not in str(err)
            return
        assert summary.rows_kept + summary.rows_skipped == summary.rows_read
        assert sum(summary.skipped_by_reason.values()) == summary.rows_skipped
