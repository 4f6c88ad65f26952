"""prepare's compiled fast path (`fast_text`, `dictionary`, `_kernels`) against the general polars path.

The promise: every output file of `prepare` (ids, labels, feature_map.json, summary.json less its timing
and path fields) is the same bytes whether a chunk is coded straight from its bytes or parsed by polars.
Each equivalence test prepares one input twice, the second time with `fast_text.applies` switched off
(as `shard._coded` asks it), and spies on `FastText.encode` to show which path each chunk took.
"""

from __future__ import annotations

import gzip
import json
import random
import string
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from ttsrec.data import _kernels, fast_text, shard
from ttsrec.data.dictionary import EMPTY, IntTable, TextTable
from ttsrec.data.fast_text import FastText
from ttsrec.data.prepare import prepare
from ttsrec.data.spec import DatasetSpec, preset_dict
from ttsrec.data.synth import write_synthetic_criteo
from ttsrec.errors import UserError

VOLATILE = ("seconds", "rows_per_s", "pass_seconds", "peak_rss_mb", "out", "inputs", "input_bytes", "extra")
"""summary.json fields that differ between two runs on the same input (time, memory, paths)."""
INTS, CATS = 13, 26


def criteo_spec(min_count: int) -> DatasetSpec:
    """The Criteo preset with a low min_count, so that rare tokens (the odd ones) reach the vocabulary."""
    return DatasetSpec.from_dict({**preset_dict("criteo"), "min_count": min_count})


def output_files(out: Path) -> dict[str, bytes]:
    """Every file under a prepared folder (summary.json without its run-dependent fields)."""
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    summary = json.loads(files.pop("summary.json"))
    files["summary.json"] = json.dumps({k: v for k, v in summary.items() if k not in VOLATILE},
                                       sort_keys=True).encode()
    return files


class Spy:
    """Counts the chunks `FastText.encode` coded (`fast`) and handed to the general path (`fallback`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.fast = self.fallback = 0
        original = FastText.encode

        def encode(this: FastText, *args: Any, **kwargs: Any) -> Any:
            result = original(this, *args, **kwargs)
            if result is None:
                self.fallback += 1
            else:
                self.fast += 1
            return result

        monkeypatch.setattr(FastText, "encode", encode)


def both_ways(monkeypatch: pytest.MonkeyPatch, run: Callable[[Path], Any], tmp: Path) -> tuple[Spy, Any]:
    """Run `run(out)` with the fast path, then without it; assert the outputs are the same bytes.
    Returns the fast run's spy and result (an exception's message when both runs raise the same one)."""
    results: list[Any] = []
    files: list[dict[str, bytes]] = []
    spy = Spy(monkeypatch)
    calls = 0
    for name in ("fast", "general"):
        if name == "general":
            monkeypatch.setattr(fast_text, "applies", lambda spec: False)
            calls = spy.fast + spy.fallback
        try:
            results.append(run(tmp / name))
            files.append(output_files(tmp / name))
        except UserError as err:
            results.append(f"UserError: {err}")
            files.append({})
    assert spy.fast + spy.fallback == calls, "the switched-off fast path must not be called"
    if any(isinstance(r, str) for r in results):
        assert results[0] == results[1], "the same error both ways"
    assert files[0].keys() == files[1].keys()
    for name in files[0]:
        assert files[0][name] == files[1][name], f"{name} differs between the fast and the general path"
    return spy, results[0]


def test_shard_asks_fast_text_through_the_module() -> None:
    """The equivalence tests switch the fast path off by patching `fast_text.applies`: that only works
    while `shard` looks it up on the module at call time rather than importing the function."""
    assert shard.fast_text is fast_text
    assert not hasattr(shard, "applies")


# ---- 1a: synthetic Criteo, many chunks ----


def test_synthetic_criteo_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A well-formed log: every chunk takes the fast path, and gives the general path's bytes."""
    raw = write_synthetic_criteo(tmp_path / "criteo.tsv", rows=20_000, seed=3)
    spec = criteo_spec(2)
    spy, summary = both_ways(
        monkeypatch, lambda out: prepare("criteo", [raw], out, spec=spec, chunk_bytes=64_000), tmp_path)
    assert spy.fast > 20 and spy.fallback == 0
    assert summary.rows_kept == 20_000


# ---- 1b: a hand-made Criteo TSV, clean chunks among dirty ones ----

SHORT = ["", "a", "ab", "abc", "abcd", "abcde", "abcdef", "abcdefg", "abcdefgh", "7", "x y", "\"q\"", "0"]
NUL = ["ab\0", "\0", "a\0b", "abcdefg\0"]
"""NUL bytes: a key of packed bytes alone would not tell "ab" from "ab\\0"."""
LONG = ["abcdefgh1", "abcdefgh2", "abcdefghi", "0123456789abcdef", "0123456789abcdeg", "0123456789abcdef0",
        "abcdefgh" * 5, "abcdefgh" * 4 + "abcdefgX", "Xbcdefgh" + "abcdefgh" * 4, "abcdefgh" + "z" * 9]
PLAIN_INTS = ["", "0", "1", "2", "3", "5", "-1", "-12", "007", "-0", "42", "123456789012345",
              "-999999999999999", "00000000000000"]
ODD_INTS = ["1.5", "+5", "1e3", " 3", "3 ", "1234567890123456", "9223372036854775807", "12345678901234567890",
            "-1234567890123456", "0x1F", "-"]


def criteo_line(rng: random.Random, label: str = "", ints: list[str] | None = None,
                cats: list[str] | None = None, pool: list[str] = SHORT + LONG) -> str:
    """One Criteo line (no newline) of tokens drawn from the pools above."""
    ints = ints if ints is not None else [rng.choice(PLAIN_INTS) for _ in range(INTS)]
    cats = cats if cats is not None else [rng.choice(pool) for _ in range(CATS)]
    return "\t".join([label or rng.choice("01"), *ints, *cats])


def mixed_lines(seed: int = 0, rows: int = 600, odd_ints: bool = False, nul: bool = False) -> list[str]:
    """Lines of a Criteo file (each ending in "\\n", the last one not), clean but for one dirty line
    every 20: each kind of oddity the fast path must hand to the general path; with `odd_ints`, also
    the numbers it finds not plain only after coding the chunk's text; with `nul`, tokens holding NUL
    bytes in the clean lines."""
    rng = random.Random(seed)
    pool = SHORT + LONG + (NUL if nul else [])

    def line(**kwargs: Any) -> str:
        return criteo_line(rng, pool=pool, **kwargs)

    dirty: list[Callable[[], str]] = [
        lambda: line()[: -4],  # the last token cut short (or gone, with its tab: 39 columns)
        lambda: "\t".join(line().split("\t")[:30]),  # too few columns
        lambda: line() + "\textra",  # too many columns
        lambda: line() + "\r",  # CRLF
        lambda: "",  # a blank line
        lambda: "\r",  # a blank CRLF line
        lambda: line(label="2"),
        lambda: line(label="1.0"),
        lambda: line(label=" 1"),
        lambda: line(cats=["héllo", "日本語のトークン", *["abcdefgh1"] * 24]),  # UTF-8
        lambda: line(cats=["x\ry", *["b"] * 25]),  # a carriage return inside a token
    ]
    if odd_ints:
        dirty += [
            lambda: line(ints=["1.5", *["3"] * 12]),
            lambda: line(ints=["+5", "1e3", *["7"] * 11]),
            lambda: line(ints=[*["4"] * 12, "1234567890123456"]),  # 16 digits
            lambda: line(ints=[*["4"] * 12, "9223372036854775807"]),  # 19 digits
            lambda: line(ints=[" 3", *["8"] * 12]),
            lambda: line(ints=[rng.choice(ODD_INTS) for _ in range(INTS)]),
        ]

    def clean(i: int) -> str:
        cats = [rng.choice(pool) for _ in range(CATS)]
        if i % 3 == 0:  # a token seen once: min_count 2 drops it, if it is counted once
            cats[i % CATS] = f"once{i}"
        return line(cats=cats)

    lines = [dirty[(i // 20) % len(dirty)]() if i % 20 == 19 else clean(i) for i in range(rows)]
    return [line + "\n" for line in lines[:-1]] + [lines[-1]]  # the last line without its newline


def test_file_of_skipped_rows_among_inputs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An input whose every row is skipped, before a good one: a cached chunk with no kept rows reads
    back (it once stopped prepare with a ValueError from reshape)."""
    good = criteo_line(random.Random(3), label="1")
    bad, fine = tmp_path / "bad.tsv", tmp_path / "good.tsv"
    bad.write_text(good.replace("1", "2", 1) + "\n")
    fine.write_text("\n".join([good] * 5) + "\n")
    _, summary = both_ways(
        monkeypatch, lambda out: prepare("criteo", [bad, fine], out, spec=criteo_spec(1)), tmp_path)
    assert (summary.rows_kept, summary.rows_skipped) == (5, 1)


MIXES = [
    pytest.param({}, id="lines-labels-utf8"),
    pytest.param({"odd_ints": True}, id="odd-integers"),
    pytest.param({"nul": True}, id="nul-bytes"),
]


@pytest.mark.parametrize("mix", MIXES)
def test_mixed_criteo_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                 mix: dict[str, bool]) -> None:
    """Clean chunks take the fast path, dirty ones the general path, in one shard sharing its tables:
    the output is the general path's, bad rows skipped and counted alike."""
    raw = tmp_path / "mixed.tsv"
    raw.write_text("".join(mixed_lines(**mix)))
    spec = criteo_spec(1)
    spy, summary = both_ways(
        monkeypatch, lambda out: prepare("criteo", [raw], out, spec=spec, chunk_bytes=4_000), tmp_path)
    assert spy.fast > 5 and spy.fallback > 5, (spy.fast, spy.fallback)
    assert summary.rows_skipped > 0 and summary.skipped_by_reason


@pytest.mark.parametrize("mix", MIXES[:2])
def test_mixed_criteo_rare_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  mix: dict[str, bool]) -> None:
    """min_count 2 over a file where each odd value is rare: which tokens make the cut is the same."""
    raw = tmp_path / "mixed.tsv"
    raw.write_text("".join(mixed_lines(seed=1, rows=400, **mix)))
    spec = criteo_spec(2)
    spy, _ = both_ways(
        monkeypatch, lambda out: prepare("criteo", [raw], out, spec=spec, chunk_bytes=2_500), tmp_path)
    assert spy.fast and spy.fallback


def test_gzip_and_multi_file_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A .gz input among plain ones (one shard each, its own tables): the same bytes both ways."""
    lines = mixed_lines(seed=2, rows=480)
    first, second, third = tmp_path / "a.tsv.gz", tmp_path / "b.tsv", tmp_path / "c.tsv"
    first.write_bytes(gzip.compress("".join(lines[:200]).encode()))
    second.write_text("".join(lines[200:400]))
    third.write_text("".join(lines[400:]))  # ends without a newline
    spec = criteo_spec(1)
    spy, summary = both_ways(
        monkeypatch, lambda out: prepare("criteo", [first, second, third], out, spec=spec, chunk_bytes=3_000),
        tmp_path)
    assert spy.fast and spy.fallback
    assert summary.shards == 3


def test_clean_file_without_final_newline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A clean file whose last line has no newline: its last chunk still takes the fast path."""
    rng = random.Random(5)
    raw = tmp_path / "clean.tsv"
    raw.write_text("\n".join(criteo_line(rng) for _ in range(120)))
    spy, summary = both_ways(
        monkeypatch, lambda out: prepare("criteo", [raw], out, spec=criteo_spec(1), chunk_bytes=1_000),
        tmp_path)
    assert spy.fast > 5 and spy.fallback == 0
    assert summary.rows_read == 120


def test_fallback_after_coding_counts_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A chunk found not clean only at its integers ('+5'): its rows are counted by the general path
    alone (they were once counted by the fast path's text fields too), so a token seen once stays
    under min_count 2."""
    raw = tmp_path / "raw.tsv"
    rows = ["\t".join(["1", "+5", *["1"] * 12, *[f"c{i}_{r}" for i in range(CATS)]]) for r in range(3)]
    raw.write_text("\n".join(rows) + "\n")
    spy, summary = both_ways(
        monkeypatch, lambda out: prepare("criteo", [raw], out, spec=criteo_spec(2)), tmp_path)
    assert (spy.fast, spy.fallback) == (0, 1)
    assert summary.vocab_sizes["C1"] == 1  # OOV only: every C1 token was seen once


# ---- 1c: a CSV spec with a header and quoted values ----

CSV_SPEC = """\
dataset_id: tiny_csv
label: y
separator: ","
label_transform: binary
min_count: 1
fields:
  - {name: a}
  - {name: b, preprocess: none}
  - {name: n, preprocess: int}
  - {name: m, preprocess: log_square}
  - {name: n_text, source: n}
"""


@pytest.mark.parametrize("odd_ints", [
    pytest.param(False, id="quotes"),
    pytest.param(True, id="quotes-odd-integers"),
])
def test_csv_spec_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, odd_ints: bool) -> None:
    """A header, a column the spec does not read, a column read both as text and as an integer, and
    quoted values in a few chunks (which take the general path); with `odd_ints`, numbers that are not
    plain integers in a few others."""
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(CSV_SPEC)
    rng = random.Random(7)
    lines = ["y,a,b,n,m,unused"]
    for i in range(400):
        a, b = rng.choice(SHORT[:9] + LONG), rng.choice(["u", "v", "w" * 12, ""])
        n, m = rng.choice(PLAIN_INTS), rng.choice(PLAIN_INTS)
        if i % 100 == 17:
            a, b = rng.choice(['"x,y"', '"quoted"', '""', '"he said ""hi"""']), '"5"'
        if i % 100 == 63 and odd_ints:
            n = rng.choice(["2.5", "+1", "1234567890123456"])
        lines.append(",".join([rng.choice("01"), a, b, n, m, "zzz"]))
    raw = tmp_path / "data.csv"
    raw.write_text("\n".join(lines) + "\n")
    assert fast_text.applies(DatasetSpec.from_dict(yaml.safe_load(CSV_SPEC)))
    spy, summary = both_ways(
        monkeypatch, lambda out: prepare("csv", [raw], out, spec=spec_file, chunk_bytes=500), tmp_path)
    assert spy.fast > 5 and spy.fallback >= 4, (spy.fast, spy.fallback)
    assert summary.rows_read == 400


# ---- 2: property test ----

ASCII = list(string.ascii_letters + string.digits + " \"'.,-+")
PLAIN_NUMBERS = st.one_of(st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1).map(str),
                          st.sampled_from(["", "007", "-0", "00"]))
ODD_NUMBERS = st.one_of(st.integers(min_value=-(1 << 70), max_value=1 << 70).map(str),
                        st.sampled_from(["+5", "1.5", "1e3", " 3", "3 ", "0.0", "-", "9" * 16, "9" * 19]))


@st.composite
def criteo_files(draw: st.DrawFn, nul_and_odd_numbers: bool) -> str:
    """A small Criteo file: tokens drawn from a few small pools, so values repeat across rows, and an
    oddity (a UTF-8 token, an odd label; with `nul_and_odd_numbers` a number that is not a plain
    integer, NUL bytes in tokens) in about half the rows, so chunks of a few lines take either path."""
    nul = "\0" if nul_and_odd_numbers else ""
    ascii_tokens = st.text(st.sampled_from(ASCII + list(nul)), max_size=20)
    any_tokens = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n\r" + nul),
                         max_size=20)
    cat_pool = draw(st.lists(ascii_tokens, min_size=1, max_size=6))
    int_pool = draw(st.lists(PLAIN_NUMBERS, min_size=1, max_size=6))
    lines = []
    for r in range(draw(st.integers(min_value=1, max_value=40))):
        label = draw(st.sampled_from("01"))
        ints = draw(st.lists(st.sampled_from(int_pool), min_size=INTS, max_size=INTS))
        cats = draw(st.lists(st.sampled_from(cat_pool), min_size=CATS, max_size=CATS))
        if draw(st.booleans()):  # a token seen once: min_count 2 drops it, if it is counted once
            cats[r % CATS] = f"once{r}"
        odd = draw(st.integers(min_value=0, max_value=5))
        if odd == 0 and nul_and_odd_numbers:
            ints[draw(st.integers(min_value=0, max_value=INTS - 1))] = draw(ODD_NUMBERS)
        elif odd == 1:
            cats[draw(st.integers(min_value=0, max_value=CATS - 1))] = draw(any_tokens)
        elif odd == 2:
            label = draw(st.sampled_from(["2", "", "1.0", "-1"]))
        lines.append("\t".join([label, *ints, *cats]))
    return "\n".join(lines) + draw(st.sampled_from(["\n", ""]))


RANDOM = settings(
    max_examples=12, deadline=10_000, derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # no shrinking (minutes of prepare pairs): the file is printed
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)


def same_bytes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str, chunk_bytes: int,
                  min_count: int) -> None:
    """`both_ways` on one generated file, in a folder of its own (tmp_path is shared by the examples)."""
    with monkeypatch.context() as patch:
        case = tmp_path / f"case{len(list(tmp_path.iterdir()))}"
        case.mkdir()
        raw = case / "raw.tsv"
        raw.write_bytes(text.encode())
        spec = criteo_spec(min_count)
        both_ways(patch, lambda out: prepare("criteo", [raw], out, spec=spec, chunk_bytes=chunk_bytes), case)


@RANDOM
@given(criteo_files(nul_and_odd_numbers=False), st.sampled_from([300, 1_000, 8_000]), st.sampled_from([1, 2]))
def test_random_criteo_files_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                        chunk_bytes: int, min_count: int) -> None:
    """Random small files (ASCII and UTF-8 tokens of 0-20 characters, plain, signed and blank numbers,
    odd labels): fast and general paths give the same bytes, or the same one-line error."""
    same_bytes_on(tmp_path, monkeypatch, text, chunk_bytes, min_count)


@RANDOM
@given(criteo_files(nul_and_odd_numbers=True), st.sampled_from([300, 1_000, 8_000]), st.sampled_from([1, 2]))
def test_random_criteo_files_with_nul_and_odd_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      text: str, chunk_bytes: int, min_count: int) -> None:
    """As above, with NUL bytes in tokens and numbers that are not plain integers (huge, decimal,
    signed, spaced): the two kinds of input that found the first two bugs of the fast path."""
    same_bytes_on(tmp_path, monkeypatch, text, chunk_bytes, min_count)


# ---- 3: the token tables ----


def distinct_tokens(n: int) -> list[bytes]:
    """`n` distinct tokens of 1-40 bytes: short ones (their own keys), 8-byte prefixes shared by many
    longer ones, tokens differing only near their end, short ones holding NUL bytes."""
    rng = random.Random(11)
    out: dict[bytes, None] = {}
    for short in (b"a", b"ab", b"ab\x00", b"ab\x00\x00", b"\x00", b"\x00\x00", b"abcdefgh", b"abcdefg\x00"):
        out[short] = None
    i = 0
    while len(out) < n:
        kind = i % 5
        if kind == 0:
            tok = f"{i:x}".encode()  # 1-5 bytes
        elif kind == 1:
            tok = b"abcdefgh" + str(i).encode()  # > 8 bytes, one shared 8-byte prefix
        elif kind == 2:
            tok = bytes(rng.choice(b"abc") for _ in range(rng.randint(1, 40)))
        elif kind == 3:
            tok = b"0123456789abcdef0123456789abcdef" + f"{i:07d}".encode()  # differ near the end
        else:
            tok = str(i).encode().rjust(8, b"0")  # exactly 8 bytes
        out[tok] = None
        i += 1
    return list(out)


def code_text(table: TextTable, tokens: list[bytes]) -> np.ndarray:
    """Codes of `tokens` through `table`, as the fast path calls it (empty token = missing)."""
    data = np.frombuffer(b"".join(tokens) or b"\0", dtype=np.uint8)
    hi = np.cumsum([len(t) for t in tokens], dtype=np.int64).astype(np.int32)
    lo = hi - np.array([len(t) for t in tokens], dtype=np.int32)
    codes = np.empty(len(tokens), dtype=np.uint32)
    table.code(data, lo, hi, 0, EMPTY, codes)
    return codes


def test_text_table_grows_and_keeps_codes() -> None:
    """100k distinct tokens in four calls (the table grows many times): codes 1..n dense in
    first-appearance order, the same on re-coding, and `tokens()` in code order."""
    tokens = distinct_tokens(100_000)
    rng = random.Random(1)
    stream = [*tokens]
    for k in range(0, len(stream), 7):  # repeats of tokens already seen, mixed in
        stream.insert(k + 3, tokens[rng.randrange(k // 2 + 1)])
    stream[5:5] = [b"", b""]
    reference: dict[bytes, int] = {}
    for tok in stream:
        if tok:
            reference.setdefault(tok, len(reference) + 1)
    table = TextTable()
    parts = np.array_split(np.arange(len(stream)), 4)
    codes = np.concatenate([code_text(table, [stream[i] for i in part]) for part in parts])
    expected = np.array([reference.get(tok, 0) for tok in stream], dtype=np.uint32)
    np.testing.assert_array_equal(codes, expected)
    assert table.size == len(reference) == len(tokens)
    np.testing.assert_array_equal(code_text(table, stream[::-1]), expected[::-1])
    assert table.size == len(tokens)
    decoded = [t.decode() for t in reference]
    assert table.tokens().to_list() == decoded
    assert table.tokens(first=99_990).to_list() == decoded[99_990:]
    assert table.tokens(first=len(decoded)).to_list() == []


def test_text_table_nul_bytes() -> None:
    """Short tokens with NUL bytes ("a" and "a\\0" pack to the same 8-byte key) keep their own codes."""
    stream = [b"a", b"a\0", b"\0", b"", b"\0\0", b"a", b"a\0", b"\0", b"x", b"\0\0", b"\0a", b"\0"]
    expected = [1, 2, 3, 0, 4, 1, 2, 3, 5, 4, 6, 3]
    table = TextTable()
    np.testing.assert_array_equal(code_text(table, stream), expected)
    np.testing.assert_array_equal(code_text(table, stream), expected)
    assert table.tokens().to_list() == ["a", "a\0", "\0", "\0\0", "x", "\0a"]


def test_text_table_tokens_with_newlines() -> None:
    """Tokens holding a newline (possible from Parquet, through the general path) come back whole."""
    table = TextTable()
    tokens = [b"plain", b"a\nb", b"\n", b"x\n", b"\ny", b"last one longer than eight", b"\n\n"]
    np.testing.assert_array_equal(code_text(table, tokens), np.arange(1, len(tokens) + 1))
    assert table.tokens().to_list() == [t.decode() for t in tokens]
    assert table.tokens(first=2).to_list() == [t.decode() for t in tokens[2:]]


def test_int_table_grows_and_keeps_codes() -> None:
    """100k distinct int64 tokens (0, negatives, the int64 extremes) in four calls, nulls as code 0."""
    rng = np.random.default_rng(4)
    values = np.unique(rng.integers(-(1 << 62), 1 << 62, 100_100))
    values = np.concatenate([[0, -1, 1, np.iinfo(np.int64).min, np.iinfo(np.int64).max], values])[:100_000]
    rng.shuffle(values)
    values = values.astype(np.int64)
    stream = np.concatenate([values, values[:5000]])
    nulls = np.zeros(len(stream), dtype=np.uint8)
    nulls[::97] = 1
    reference: dict[int, int] = {}
    for v, null in zip(stream.tolist(), nulls.tolist(), strict=True):
        if not null:
            reference.setdefault(v, len(reference) + 1)
    table = IntTable()
    codes = np.empty(len(stream), dtype=np.uint32)
    for part in np.array_split(np.arange(len(stream)), 4):
        table.code(stream[part], nulls[part], codes[part[0]: part[-1] + 1])
    expected = np.array([0 if null else reference[v] for v, null in zip(stream.tolist(), nulls.tolist(),
                                                                      strict=True)], dtype=np.uint32)
    np.testing.assert_array_equal(codes, expected)
    again = np.empty(len(stream), dtype=np.uint32)
    table.code(stream, nulls, again)
    np.testing.assert_array_equal(again, expected)
    assert table.size == len(reference)
    assert table.tokens().to_list() == [str(v) for v in reference]


# ---- 4: the C functions check their arguments ----

U8, I32, I64, U32, U64 = np.uint8, np.int32, np.int64, np.uint32, np.uint64


def code_text_call(data: int = 8, lo: np.ndarray | None = None, hi: np.ndarray | None = None,
                   nulls: np.ndarray = EMPTY) -> Callable[[], object]:
    """`_kernels.code_text` through its owner `TextTable.code`, three rows by default."""
    lo = np.zeros(3, I32) if lo is None else lo
    hi = np.ones(3, I32) if hi is None else hi
    return lambda: TextTable().code(np.zeros(data, U8), lo, hi, 0, nulls, np.zeros(3, U32))


@pytest.mark.parametrize("call", [
    pytest.param(lambda: _kernels.split_fields(np.zeros(4, U8), 0, 8, 9, 2, np.zeros(9, I32), 0),
                 id="split_fields data shorter than end"),
    pytest.param(lambda: _kernels.split_fields(np.zeros(8, U8), 0, 8, 9, 2, np.zeros(9, I64), 0),
                 id="split_fields bounds of int64"),
    pytest.param(lambda: _kernels.binary_labels(np.zeros(8, U8), np.zeros(2, I32), np.zeros(3, I32),
                                                np.zeros(3, np.float32)), id="binary_labels lo short"),
    pytest.param(code_text_call(lo=np.zeros(2, I32)), id="code_text lo short"),
    pytest.param(code_text_call(nulls=np.zeros(2, U8)), id="code_text nulls short"),
    pytest.param(code_text_call(hi=np.full(3, 9, I32)), id="code_text token beyond data"),
    pytest.param(code_text_call(lo=np.array([0, 2, 0], I32)), id="code_text token ending before it starts"),
    pytest.param(code_text_call(lo=np.zeros(3, I64), hi=np.ones(3, I64)), id="code_text lo of int64"),
    pytest.param(lambda: IntTable().code(np.zeros(2, I64), EMPTY, np.zeros(3, U32)),
                 id="code_ints values short"),
    pytest.param(lambda: IntTable().code(np.zeros(3, I32), EMPTY, np.zeros(3, U32)),
                 id="code_ints values int32"),
    pytest.param(lambda: IntTable().code(np.zeros(3, I64), np.zeros(2, U8), np.zeros(3, U32)),
                 id="code_ints nulls short"),
    pytest.param(lambda: _kernels.count_codes(np.array([0, 5], U32), np.ones(2, U8), np.zeros(5, I64), False),
                 id="count_codes code beyond counts"),
    pytest.param(lambda: _kernels.count_codes(np.zeros(3, U32), np.ones(2, U8), np.zeros(5, I64), False),
                 id="count_codes train short"),
    pytest.param(lambda: _kernels.gather_ids(np.zeros((2, 3), U32), np.zeros(4, I32), np.zeros(2, I64),
                                             np.zeros(3, U8), 0, np.zeros((2, 2), I32)),
                 id="gather_ids too few output rows"),
    pytest.param(lambda: _kernels.gather_ids(np.full((2, 3), 9, U32), np.zeros(4, I32), np.zeros(2, I64),
                                             np.zeros(3, U8), 0, np.zeros((3, 2), I32)),
                 id="gather_ids code beyond table"),
    pytest.param(lambda: _kernels.gather_ids(np.zeros((2, 2), U32), np.zeros(4, I32), np.zeros(2, I64),
                                             np.zeros(3, U8), 0, np.zeros((3, 2), I32)),
                 id="gather_ids codes short"),
    pytest.param(lambda: _kernels.joined(np.zeros(4, U8), np.array([0, 2, 4], I64), 0, 2, np.zeros(5, U8)),
                 id="joined out short"),
    pytest.param(lambda: _kernels.joined(np.zeros(4, U8), np.array([0, 2, 4], I64), 0, 3, np.zeros(9, U8)),
                 id="joined offsets short"),
    pytest.param(lambda: _kernels.plain_integers(np.zeros(4, U8), np.array([0, 2, 4], I64), 0, 2, 15,
                                                 np.zeros(1), np.zeros(2, U8)),
                 id="plain_integers values short"),
    pytest.param(lambda: _kernels.plain_integers(np.zeros(4, U8), np.array([0, 2, 4], I64), 0, 2, 19,
                                                 np.zeros(2), np.zeros(2, U8)),
                 id="plain_integers 19 digits"),
])
def test_kernels_refuse_wrong_sizes(call: Callable[[], object]) -> None:
    """A size or dtype mistake is an exception, never a read or write outside an array."""
    with pytest.raises((ValueError, TypeError)):
        call()


def test_split_fields_refuses_ragged_lines_when_bounds_are_short() -> None:
    """Bounds with room for fewer rows than the data has: -1 (not clean), never a write past them."""
    data = np.frombuffer(b"a\tb\nc\td\ne\tf\n", dtype=U8)
    guard = np.full(3 * 4, -7, dtype=I32)
    bounds = guard[: 3 * 2]  # room for 2 rows of 3 bounds, in a larger array
    assert _kernels.split_fields(data, 0, len(data), 9, 2, bounds, 0) == -1
    assert (guard[6:] == -7).all()
    assert _kernels.split_fields(data, 0, len(data), 9, 2, np.empty(9, I32), 0) == 3


def outcome(code: str, timeout: float = 5.0) -> str:
    """How `code` ends in a fresh interpreter (a crash there leaves pytest running): "refused" (a
    ValueError or TypeError), "returned", "hung", or the exit status and the end of stderr."""
    script = (f"import numpy as np\nfrom ttsrec.data import _kernels\ntry:\n    {code}\n"
              "except (ValueError, TypeError):\n    raise SystemExit(0)\nraise SystemExit(3)\n")
    try:
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return "hung"
    return {0: "refused", 3: "returned"}.get(proc.returncode,
                                             f"exit {proc.returncode}: {proc.stderr.decode()[-300:]}")


@pytest.mark.parametrize("code", [
    pytest.param("_kernels.split_fields(np.frombuffer(b'a\\tb\\n', np.uint8), 0, 4, 9, -1, "
                 "np.zeros(8, np.int32), 0)", id="ncols -1"),  # once: SIGFPE (divides by ncols + 1)
    pytest.param("_kernels.split_fields(np.frombuffer(b'a\\tb\\n', np.uint8), 0, 4, 9, 2, "
                 "np.zeros(3, np.int32), -10**8)", id="row0 negative"),  # once: a write before bounds
    pytest.param("_kernels.split_fields(np.frombuffer(b'a\\tb\\n', np.uint8), -10**8, 4, 9, 2, "
                 "np.zeros(3, np.int32), 0)", id="start negative"),  # once: a read before data
    pytest.param("old = np.zeros(8, np.uint64); old[0::2] = [1, 2, 3, 4]; old[1::2] = [1, 2, 3, 4]; "
                 "_kernels.rehash(old, np.zeros(2, np.uint64), False)", id="rehash into a smaller table"),
    pytest.param("from ttsrec.data.dictionary import EMPTY, IntTable; t = IntTable(); "
                 "t.slots = np.zeros(18, np.uint64); t.code(np.arange(3), EMPTY, np.zeros(3, np.uint32))",
                 id="code_ints slots not a power of two"),  # once: an endless probe
])
def test_kernels_refuse_out_of_range_arguments(code: str) -> None:
    """Arguments no caller in prepare passes, refused rather than a crash or an endless probe (each
    once did one of those): run in a subprocess, with a time limit."""
    assert outcome(code, timeout=3.0) == "refused"


# ---- 5: which specs the fast path takes ----


@pytest.mark.parametrize(("preset", "applies"), [("criteo", True), ("avazu", False), ("kdd12", False),
                                                 ("movielens", False)])
def test_applies_to_presets(preset: str, applies: bool) -> None:
    """Criteo's spec (text and integer fields, binary label, tab) takes the fast path; avazu (hour
    transforms), kdd12 and movielens do not."""
    spec = DatasetSpec.from_dict(preset_dict(preset), origin=f"preset {preset}")
    assert fast_text.applies(spec) is applies


def test_applies_not_to_a_list_field() -> None:
    """A list field (tokens split within a value) is the general path's alone."""
    spec = DatasetSpec.from_dict({"label": "y", "fields": [
        "a", {"name": "tags", "type": "list", "separator": "|", "max_len": 3}]})
    assert not fast_text.applies(spec)
    assert fast_text.applies(DatasetSpec.from_dict({"label": "y", "fields": ["a"]}))


# ---- threads ----


def test_scratch_buffer_is_per_thread() -> None:
    """The reader thread counts a chunk's lines while the main thread parses a fallback chunk: each needs
    its own scratch buffer (one shared buffer corrupted the column counts of a mixed file)."""
    from concurrent.futures import ThreadPoolExecutor

    from ttsrec.data.delimited import _scratch

    with ThreadPoolExecutor(1) as other:
        theirs = other.submit(lambda: _scratch(1 << 16)).result()
    assert not np.shares_memory(_scratch(1 << 16), theirs)


@pytest.mark.parametrize("threads", ["1", "3"])
def test_thread_count_does_not_change_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             threads: str) -> None:
    """One coding thread or more than the cores (`OMP_NUM_THREADS`, as Ray sets it): fields shared among
    threads differently, the same bytes as the general path."""
    monkeypatch.setenv("OMP_NUM_THREADS", threads)
    assert shard.coding_threads() == int(threads)
    raw = tmp_path / "mixed.tsv"
    raw.write_text("".join(mixed_lines(seed=5)))
    spy, _ = both_ways(monkeypatch, lambda out: prepare("criteo", [raw], out, spec=criteo_spec(1),
                                                        chunk_bytes=4_000), tmp_path)
    assert spy.fast and spy.fallback
