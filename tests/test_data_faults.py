"""Raw-data faults (issue 10.4) and string labels / empty values (issue 14.7), through `prepare`."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from test_data import criteo_line, criteo_spec
from test_data_presets import write_ml100k
from ttsrec.data.encode import RecordEncoder
from ttsrec.data.feature_map import FeatureMap
from ttsrec.data.prepare import prepare
from ttsrec.data.prepared import PreparedData
from ttsrec.data.spec import DatasetSpec
from ttsrec.data.synth import write_synthetic_criteo
from ttsrec.errors import UserError
from ttsrec.repository.naming import FEATURE_MAP_FILE

INVALID_UTF8 = b"\xff\xfe\xc3"


def run(inputs: list[Path], out: Path, **kw: object) -> dict:
    prepare(kw.pop("preset", "criteo"), inputs, out, **kw)  # type: ignore[arg-type]
    return json.loads((out / "summary.json").read_text())


def lines(n: int) -> list[bytes]:
    cats = [[f"{(i + j) % 3:08x}" for j in range(26)] for i in range(n)]
    return [criteo_line(str(i % 2), cats=cats[i]).encode() for i in range(n)]


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "not gzip"])
def test_broken_gzip_is_one_user_error(tmp_path: Path, damage: str) -> None:
    whole = gzip.compress(b"\n".join(lines(3000)) + b"\n")
    data = {
        "truncated": whole[: len(whole) // 2],
        "corrupt": whole[:40] + bytes(b ^ 0x5A for b in whole[40:200]) + whole[200:],
        "not gzip": b"label\tI1\n1\t2\n",
    }[damage]
    path = tmp_path / "day_0.gz"
    path.write_bytes(data)
    with pytest.raises(UserError, match=r"day_0\.gz: truncated or corrupt gzip file") as err:
        run([path], tmp_path / "out")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["day_0.gz"]


@pytest.mark.parametrize(
    ("encoding", "message"),
    [("klingon-8", "unknown encoding 'klingon-8'"), ("utf-16", "encoding 'utf-16' is not supported")],
)
def test_unknown_or_unsupported_encoding(encoding: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        DatasetSpec.from_dict({"label": "y", "fields": ["a"], "encoding": encoding})


@pytest.mark.parametrize("quoted", [False, True])
def test_invalid_utf8_rows_are_counted_not_replaced(tmp_path: Path, quoted: bool) -> None:
    rows = lines(30)
    rows[4] = rows[4].replace(b"00000001", INVALID_UTF8, 1)
    rows[9] = rows[9] + INVALID_UTF8  # the last column
    if quoted:
        rows[0] = rows[0].replace(b"00000000", b'"00000000"', 1)  # the quoted-CSV parser
    path = tmp_path / "raw.tsv"
    path.write_bytes(b"\n".join(rows) + b"\n")
    summary = run([path], tmp_path / "out", spec=criteo_spec(1))
    assert summary["rows_read"] == 30 and summary["rows_kept"] == 28
    assert summary["skipped_by_reason"] == {"invalid utf-8 bytes": 2}
    vocab = [t for f in FeatureMap.load(tmp_path / "out").fields for t in f.vocab]
    assert not any("\ufffd" in t for t in vocab), "invalid bytes never reach the vocabulary"
    with pytest.raises(UserError, match=r"raw\.tsv:5: invalid utf-8 bytes"):
        run([path], tmp_path / "out2", on_bad_row="fail")


def test_declared_encoding_reads_and_still_counts_its_invalid_bytes(tmp_path: Path) -> None:
    spec = {"label": "y", "fields": ["city"], "encoding": "cp1252", "quote_char": None}
    path = tmp_path / "cities.csv"
    body = "y,city\n" + "".join(f"{i % 2},Zürich\n{i % 2},Genève\n" for i in range(10))
    path.write_bytes(body.encode("cp1252") + b"1,\x81\n")  # 0x81 is undefined in cp1252
    summary = run([path], tmp_path / "out", preset="csv", spec=DatasetSpec.from_dict(spec))
    assert summary["rows_kept"] == 20 and summary["skipped_by_reason"] == {"invalid cp1252 bytes": 1}
    assert sorted(FeatureMap.load(tmp_path / "out").fields[0].vocab) == ["Genève", "Zürich"]
    bad_header = tmp_path / "bad_header.csv"
    bad_header.write_bytes(b"y,c\xffity\n1,a\n")
    with pytest.raises(UserError, match=r"bad_header\.csv:1: header is not valid utf-8"):
        utf8 = DatasetSpec.from_dict({**spec, "encoding": "utf-8"})
        run([bad_header], tmp_path / "out3", preset="csv", spec=utf8)


def test_numeric_overflow_is_a_counted_bad_row(tmp_path: Path) -> None:
    ints = [str(i) for i in range(13)]
    rows = [criteo_line(str(i % 2), ints=ints) for i in range(20)]
    rows[3] = criteo_line("1", ints=["1e400", *ints[1:]])  # inf as float64
    rows[5] = criteo_line("1", ints=[ints[0], "99999999999999999999999", *ints[2:]])  # beyond int64 (I2: int)
    rows[7] = criteo_line("1", ints=["nan", *ints[1:]])
    path = tmp_path / "raw.tsv"
    path.write_text("\n".join(rows) + "\n")
    summary = run([path], tmp_path / "out")
    assert summary["rows_kept"] == 17
    assert summary["skipped_by_reason"] == {
        "unreadable value in column I1 (log_square)": 2,
        "unreadable value in column I2 (log_square)": 1,
    }


ADULT_SPEC = {
    "dataset_id": "adult",
    "label": "income",
    "label_transform": "in:>50K,>50K.",
    "quote_char": None,
    "fields": ["workclass", {"name": "age", "preprocess": "int"}],
}


def test_string_labels_and_empty_values(tmp_path: Path) -> None:
    path = tmp_path / "adult.csv"
    rows = ["age,workclass,income"]
    rows += [f"{30 + i % 7},Private, {'>50K' if i % 3 == 0 else '<=50K'}" for i in range(30)]
    rows += ["41,,>50K.", ",State-gov,<=50K", "52,Private,", "38,Private,  "]  # empty values; 2 without label
    path.write_text("\n".join(rows) + "\n")
    summary = run([path], tmp_path / "out", preset="csv", spec=DatasetSpec.from_dict(ADULT_SPEC))
    assert summary["rows_read"] == 34 and summary["rows_kept"] == 32
    assert summary["skipped_by_reason"] == {"missing or unreadable label in column income (in:>50K,>50K.)": 2}
    data = PreparedData(tmp_path / "out")
    labels = np.concatenate([data.labels(s) for s in ("train", "valid", "test")])
    assert labels.sum() == 10 + 1, "'>50K' and '>50K.' are positive, '<=50K' is not"
    fmap = FeatureMap.load(tmp_path / "out")
    assert "Private" in fmap.fields[0].vocab and "<missing>" in fmap.fields[0].vocab
    ids = RecordEncoder(fmap).encode([{"workclass": "", "age": None}, {"workclass": "Private", "age": "31"}])
    assert ids[0, 0] == fmap.fields[0].vocab.index("<missing>") + 1 and ids[1, 0] != ids[0, 0]


@pytest.mark.parametrize(
    ("transform", "message"),
    [("eq:", "needs values"), ("in:,", "needs values"), ("lt:3", "unknown label_transform 'lt:3'")],
)
def test_label_transform_errors(transform: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        DatasetSpec.from_dict({**ADULT_SPEC, "label_transform": transform})


def test_eq_label_on_a_numeric_looking_column(tmp_path: Path) -> None:
    path = tmp_path / "votes.csv"
    path.write_text("vote,user\n" + "".join(f"{i % 3},u{i % 4}\n" for i in range(30)))
    spec = DatasetSpec.from_dict({"label": "vote", "label_transform": "eq:2", "fields": ["user"]})
    run([path], tmp_path / "out", preset="csv", spec=spec)
    data = PreparedData(tmp_path / "out")
    assert sum(data.labels(s).sum() for s in ("train", "valid", "test")) == 10


def test_movie_without_release_date_keeps_its_ratings(tmp_path: Path) -> None:
    folder = tmp_path / "ml-100k"
    write_ml100k(folder)
    flags = "|".join(["1"] + ["0"] * 18)
    with open(folder / "u.item", "ab") as fh:
        fh.write(f"3|unknown||||{flags}\n".encode("latin-1"))  # like ml-100k's item 267
    with open(folder / "u.data", "a") as fh:
        fh.write("".join(f"{1 + i % 3}\t3\t{1 + i % 5}\t89000{i:04d}\n" for i in range(15)))
    summary = run([folder], tmp_path / "out", preset="movielens")
    assert summary["rows_read"] == 66 and summary["rows_kept"] == 65, "only the short line is bad"
    fmap = FeatureMap.load(tmp_path / "out" / FEATURE_MAP_FILE)
    assert "<missing>" in fmap.fields[fmap.field_names.index("release_year")].vocab


def test_synth_never_overwrites_a_file_it_did_not_write(tmp_path: Path) -> None:
    out = tmp_path / "raw.tsv"
    out.write_text("my real log\n")
    with pytest.raises(UserError, match="tts-data synth did not write it"):
        write_synthetic_criteo(out, rows=100)
    assert out.read_text() == "my real log\n"
    write_synthetic_criteo(out, rows=100, force=True)
    first = out.read_bytes()
    write_synthetic_criteo(out, rows=200)  # its own file: replaced without --force
    assert len(out.read_bytes().splitlines()) == 200 and len(first.splitlines()) == 100
    out.write_text("edited by hand\n")
    with pytest.raises(UserError, match="did not write it"):
        write_synthetic_criteo(out, rows=100)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".raw.tsv.tts-synth.json", "raw.tsv"]


def test_found_by_fuzzing_short_rows_in_latin1_and_a_field_named_n(tmp_path: Path) -> None:
    path = tmp_path / "shop.csv"
    path.write_bytes("y,n,city\n1,3,Genève\n0,4\n1,5,Zürich,extra\n".encode("latin-1"))
    spec = {"label": "y", "fields": ["n", "city"], "encoding": "latin-1"}
    summary = run([path], tmp_path / "out", preset="csv", spec=DatasetSpec.from_dict(spec))
    assert summary["rows_kept"] == 1 and summary["skipped_by_reason"] == {
        "wrong number of columns (expected 3, got 2)": 1,
        "wrong number of columns (expected 3, got 4)": 1,
    }
    with pytest.raises(UserError, match="starts with '_' \\(reserved\\)"):
        DatasetSpec.from_dict({"label": "y", "fields": ["_label"]})


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_damaged_parquet_is_one_user_error(tmp_path: Path, cut: float) -> None:
    import polars as pl

    whole = tmp_path / "whole.parquet"
    frame = pl.DataFrame({"y": [i % 2 for i in range(50_000)], "a": [f"v{i}" for i in range(50_000)]})
    frame.write_parquet(whole, row_group_size=5000)
    data = whole.read_bytes()
    footer = data[-(int.from_bytes(data[-8:-4], "little") + 8) :]
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(data[: int((len(data) - len(footer)) * cut)] + footer)  # row groups cut, footer kept
    spec = DatasetSpec.from_dict({"label": "y", "fields": ["a"]})
    with pytest.raises(UserError, match=r"broken\.parquet: not a readable Parquet file"):
        run([broken], tmp_path / "out", preset="csv", spec=spec)
