"""The ONNX encode graph against `tts-data prepare`: every preset's raw rows, fed through onnxruntime,
give exactly the ids `prepare` wrote (0 differing ids, train/valid/test), plus each transform's
edge cases checked value by value."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import polars as pl
import pytest

from test_data import CRITEO_COLUMNS
from test_data_presets import AVAZU_HEADER
from ttsrec.data.encode import BAD, Lookup, RecordEncoder, tokens
from ttsrec.data.feature_map import FeatureMap, Field
from ttsrec.data.movielens import GENRES
from ttsrec.data.prepare import prepare
from ttsrec.data.prepared import PreparedData
from ttsrec.data.spec import DatasetSpec, FieldSpec
from ttsrec.data.split import SPLITS, split_of
from ttsrec.data.transforms import MISSING
from ttsrec.errors import UserError
from ttsrec.export.encode_feed import encode_with_graph, raw_feed
from ttsrec.export.encode_graph import (
    METADATA_INPUTS,
    EncodeGraph,
    build_encode_graph,
    unsupported_fields,
)
from ttsrec.export.encode_ops import CONTRIB_DOMAIN, ML_OPSET
from ttsrec.repository.graphs import IR_VERSION, OPSET

Record = dict[str, Any]


# --- the parity check shared by every preset ----------------------------------------------------------


def assert_parity(graph: EncodeGraph, out: Path, records: Sequence[Record], bad: Sequence[bool],
                  seed: int = 0) -> dict[str, np.ndarray]:
    """`records`: every data row in file order, bad ones included (they count in the split hash, which
    is taken over row positions); `bad`: the rows `prepare` skips. Returns the graph's ids per split."""
    assert len(records) == len(bad)
    split = split_of(np.arange(len(records)), seed)
    data = PreparedData(out)
    session = graph.session()
    encoder = RecordEncoder(data.feature_map)
    got = {}
    for s, name in enumerate(SPLITS):
        rows = [r for r, sp, b in zip(records, split, bad, strict=True) if sp == s and not b]
        expected = data.ids(name)
        assert len(rows) == len(expected) > 0, name
        ids = graph.run(raw_feed(graph, rows), session)
        assert ids.dtype == np.int64 and ids.shape == expected.shape
        differ = ids != expected
        owner = [e["name"] for e in data.feature_map.layout() for _ in range(e["width"])]
        fields = sorted({owner[j] for j in np.flatnonzero(differ.any(axis=0))})
        assert int(differ.sum()) == 0, f"{name}: {int(differ.sum())} ids differ in fields {fields}"
        np.testing.assert_array_equal(graph.run(raw_feed(graph, rows, check=False), session), ids)
        np.testing.assert_array_equal(encoder.encode(rows), ids)  # the python client encoder agrees too
        got[name] = ids
    return got


def assert_covers(graph: EncodeGraph, got: dict[str, np.ndarray], oov: Sequence[str] = (),
                  missing: Sequence[str] = ()) -> None:
    """The rows exercise OOV (unseen or rare values) and missing values in the named fields."""
    fmap = graph.feature_map
    all_ids = np.concatenate(list(got.values()))
    column = {e["name"]: e["start"] for e in fmap.layout()}  # a list field fills several columns
    for name in oov:
        assert (all_ids[:, column[name]] == 0).any(), f"{name}: no OOV id in the rows"
    for name in missing:
        j, f = column[name], fmap.fields[fmap.field_names.index(name)]
        if f.is_list:  # a missing list is the empty list: padding from its first column on
            assert (all_ids[:, j] == f.pad_id).any(), f"{name}: no empty list"
            continue
        assert MISSING in f.vocab, f"{name}: missing values are not frequent enough"
        assert (all_ids[:, j] == f.vocab.index(MISSING) + 1).any(), f"{name}: no missing value"


def pick(rng: np.random.Generator, pool: Sequence[str], weights: Sequence[float] | None = None) -> str:
    p = None if weights is None else np.asarray(weights, float) / np.sum(weights)
    return str(pool[int(rng.choice(len(pool), p=p))])


LONG = "z" * 5000  # over-long strings: OOV (or their prefix), never an error


# --- criteo --------------------------------------------------------------------------------------------

CRITEO_INTS = ["", "0", "1", "2", "3", "5", "-1", "-3", "17", "250", "1e3", "+4", "007", "16777217",
               "123456789", "7", "8", "9"]
CRITEO_INT_WEIGHTS = [12, 8, 8, 6, 6, 6, 5, 3, 6, 5, 3, 3, 3, 3, 2, 1, 1, 1]


def criteo_line(rng: np.random.Generator, i: int) -> list[str]:
    ints = [pick(rng, CRITEO_INTS, CRITEO_INT_WEIGHTS) for _ in range(13)]
    cats = []
    for c in range(26):
        u = rng.random()
        if u < 0.55:
            cats.append(f"{c:02x}{int(rng.integers(0, 5)):06x}")  # frequent: in the vocabulary
        elif u < 0.7:
            cats.append(f"{int(rng.integers(0, 1 << 32)):08x}")  # the long tail: rare -> OOV
        elif u < 0.8:
            cats.append("")
        elif u < 0.85:
            cats.append(["café", "naïve", "日本"][i % 3])
        elif u < 0.87:
            cats.append(LONG)
        else:
            cats.append(f"{c:02x}cafe{int(rng.integers(0, 3)):02x}")
    return [str(int(rng.random() < 0.25)), *ints, *cats]


def test_criteo(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    lines = [criteo_line(rng, i) for i in range(420)]
    bad = [False] * len(lines)
    for k, edit in [(13, lambda ln: ln.__setitem__(1, "abc")),    # non-numeric numeric
                    (57, lambda ln: ln.__setitem__(2, "inf")),    # infinite
                    (101, lambda ln: ln.__setitem__(0, "")),      # missing label
                    (150, lambda ln: ln.pop())]:                  # 39 columns
        edit(lines[k])
        bad[k] = True
    # two inputs, read as one dataset: the first has bad numerics (parsed as text), the second none
    # (numerics parsed typed); row positions run on across the files
    text = ["\t".join(ln) for ln in lines]
    (tmp_path / "day_0").write_text("\n".join(text[:200]) + "\n")
    (tmp_path / "day_1").write_text("\n".join(text[200:]) + "\n")
    summary = prepare("criteo", [tmp_path / "day_0", tmp_path / "day_1"], tmp_path / "out")
    assert summary.rows_kept == len(lines) - sum(bad)
    graph = build_encode_graph(tmp_path / "out")
    assert graph.input_names == CRITEO_COLUMNS[1:]
    assert {i.dtype for i in graph.inputs[:13]} == {"float32"} and {i.dtype for i in graph.inputs[13:]} == {
        "string"}
    assert (graph.inputs[0].triton_dtype, graph.inputs[13].triton_dtype) == ("TYPE_FP32", "TYPE_STRING")
    records = [dict(zip(CRITEO_COLUMNS, ln, strict=False)) for ln in lines]
    got = assert_parity(graph, tmp_path / "out", records, bad)
    assert_covers(graph, got, oov=["I1", "I2", "C1", "C2"], missing=["I1", "C1", "C2"])
    fmap = graph.feature_map
    assert {"-1", "-3", "0", "1", "2"} <= set(fmap.fields[1].vocab), "negatives stay int(v), v <= 2"
    # the same rows as columns (what a CSV reader or a pandas frame gives), text or numbers
    test_rows = [r for r, s, b in zip(records, split_of(np.arange(len(records)), 0), bad, strict=True)
                 if s == 2 and not b]
    text_cols = {c: [r[c] for r in test_rows] for c in CRITEO_COLUMNS[1:]}
    num_cols = {**text_cols, **{f"I{i}": np.array([float(v) if v else np.nan for v in text_cols[f"I{i}"]])
                                for i in range(1, 14)}}
    for cols in (text_cols, num_cols):
        np.testing.assert_array_equal(graph.run(raw_feed(graph, columns=cols)), got["test"])


# --- avazu ---------------------------------------------------------------------------------------------

AVAZU_POOLS = {
    "C1": ["1005", "1002", "1010"], "banner_pos": ["0", "1", "7"],
    "site_id": ["1fbe01fe", "85f751fd", "d6137915", ""], "site_domain": ["f3845767", "c4e18dd6", "7e091613"],
    "site_category": ["28905ebd", "50e219e0", "f028772b"], "app_id": ["ecad2386", "92f5800b", LONG],
    "app_domain": ["7801e8d9", "ae637522"], "app_category": ["07d7df22", "0f2161f8", "cef3e649"],
    "device_id": ["a99f214a", "0f7c61dc"], "device_model": ["44956a24", "711ee120", "8a4875bd", "1f0bc64f"],
    "device_type": ["1", "0", "4"], "device_conn_type": ["0", "2", "3"],
    "C14": ["15706", "15704", "20366"], "C15": ["320", "300"], "C16": ["50", "250"],
    "C17": ["1722", "2333"], "C18": ["0", "3", "1"], "C19": ["35", "39", "-1"], "C20": ["-1", "100084"],
    "C21": ["79", "157", "23"],
}


def avazu_lines(rng: np.random.Generator, n: int) -> tuple[list[str], list[bool]]:
    names = AVAZU_HEADER.split(",")
    lines, bad = [], []
    for i in range(n):
        day, hour = 21 + int(rng.integers(0, 10)), int(rng.integers(0, 24))  # Tue 21 .. Thu 30 Oct 2014
        row = {"id": str(10**18 + i), "click": str(int(rng.random() < 0.2)),
               "hour": f"1410{day:02d}{hour:02d}"}
        if i % 37 == 5:
            row["hour"] = ""  # missing: the three date fields get their <missing> id
        row.update({c: pick(rng, pool) for c, pool in AVAZU_POOLS.items()})
        row["device_ip"] = f"{int(rng.integers(0, 1 << 32)):08x}" if i % 3 else "6b9769f2"
        if i % 61 == 7:
            row["site_id"] = f"rare{i}"
        broken = {40: "14132100", 90: "1410210", 140: "14102124", 190: "abcdefgh"}.get(i)  # unreadable hours
        if broken:
            row["hour"] = broken
        lines.append(",".join(row[c] for c in names))
        bad.append(broken is not None)
    lines[222] = lines[222].rsplit(",", 1)[0]  # 23 columns
    bad[222] = True
    return lines, bad


@pytest.mark.parametrize("mode", ["field", "source"])
def test_avazu(tmp_path: Path, mode: str) -> None:
    lines, bad = avazu_lines(np.random.default_rng(2), 400)
    (tmp_path / "train.csv").write_text("\n".join([AVAZU_HEADER, *lines]) + "\n")
    summary = prepare("avazu", [tmp_path / "train.csv"], tmp_path / "out")
    assert summary.rows_kept == len(lines) - sum(bad)
    graph = build_encode_graph(tmp_path / "out", inputs=mode)  # type: ignore[arg-type]
    if mode == "source":
        assert graph.input_names[0] == "hour" and graph.inputs[0].fields == ("hour_of_day", "weekday",
                                                                             "is_weekend")
        assert len(graph.inputs) == 22
    else:
        assert graph.input_names[:3] == ["hour_of_day", "weekday", "is_weekend"]
        assert {graph.input_for(f).source for f in ("hour_of_day", "weekday", "is_weekend")} == {"hour"}
    names = AVAZU_HEADER.split(",")
    records = [dict(zip(names, ln.split(","), strict=False)) for ln in lines]
    got = assert_parity(graph, tmp_path / "out", records, bad)
    assert_covers(graph, got, oov=["device_ip", "site_id"], missing=["hour_of_day", "weekday", "site_id"])
    fmap = graph.feature_map
    assert sorted(fmap.fields[1].vocab) == [*"1234567", MISSING], "every weekday, and missing, seen"
    assert sorted(fmap.fields[2].vocab) == ["0", "1", MISSING]


# --- kdd12 ---------------------------------------------------------------------------------------------


def test_kdd12(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    lines, bad = [], []
    for _ in range(400):
        imp = pick(rng, ["1", "1", "2", "3", "4", "9", "27", "", "1000000", "-2", "5e1"])
        ids = [pick(rng, [str(4298118681424644510 + k) for k in range(4)] + [str(rng.integers(0, 1 << 62))]),
               pick(rng, ["7686695", "21560664", "21065162", "20990006", str(rng.integers(0, 10**8))]),
               pick(rng, ["385", "37484", "23808", ""]), pick(rng, ["1", "2", "3"]),
               pick(rng, ["1", "2", "3"]),
               pick(rng, ["1601", "2", str(rng.integers(0, 10**6))]), pick(rng, ["5521", "12", "77"]),
               pick(rng, ["7709", "0", str(rng.integers(0, 10**6))]), pick(rng, ["576", "1", "2"]),
               pick(rng, ["490234", "0", str(rng.integers(0, 10**7))])]
        lines.append("\t".join([pick(rng, ["0", "0", "0", "1", "2"]), imp, *ids]))
        bad.append(False)
    ones = "\t".join(["1"] * 10)
    for k, line in [(30, "1\t1\t2"), (130, f"0\tx1\t{ones}"), (230, f"\t1\t{ones}")]:  # short, x1, no label
        lines[k], bad[k] = line, True
    (tmp_path / "training.txt").write_text("\n".join(lines) + "\n")
    summary = prepare("kdd12", [tmp_path / "training.txt"], tmp_path / "out")
    assert summary.rows_kept == len(lines) - sum(bad)
    graph = build_encode_graph(tmp_path / "out")
    columns = ["Click", "Impression", "DisplayURL", "AdID", "AdvertiserID", "Depth", "Position", "QueryID",
               "KeywordID", "TitleID", "DescriptionID", "UserID"]
    records = [dict(zip(columns, ln.split("\t"), strict=False)) for ln in lines]
    got = assert_parity(graph, tmp_path / "out", records, bad)
    assert_covers(graph, got, oov=["DisplayURL", "AdID", "UserID"], missing=["Impression", "AdvertiserID"])


# --- movielens -----------------------------------------------------------------------------------------

ML_USERS = 30
ML_ITEMS = 40


def ml100k(folder: Path, rng: np.random.Generator) -> tuple[list[Record], list[bool]]:
    """An ml-100k folder (users 31, 32 and items 41, 42 are rated but unknown) and its joined raw rows."""
    folder.mkdir()
    users, items = {}, {}
    zips = ["85711", "94043", "32067", "T8H1N", "V3N4P", "0", "9", "", "E2A4H", "55106"]
    for u in range(1, ML_USERS + 1):
        users[str(u)] = {"age": str(int(rng.integers(18, 70))), "gender": "MF"[u % 2],
                         "occupation": pick(rng, ["technician", "other", "writer", "student", "executive"]),
                         "zip_code": zips[u % len(zips)]}
    (folder / "u.user").write_text("".join(
        f"{u}|{r['age']}|{r['gender']}|{r['occupation']}|{r['zip_code']}\n" for u, r in users.items()))
    dates = ["01-Jan-1995", "01-Jan-1996", "10-Mar-1997", "", "1994", "05-Oct-1996", "Jan-95"]
    item_lines = []
    for i in range(1, ML_ITEMS + 1):
        flags = ["1" if rng.random() < 0.15 else "0" for _ in GENRES]
        if i % 9 == 0:
            flags = ["0"] * len(GENRES)
        release = dates[i % len(dates)]
        genres = "|".join(g for g, f in zip(GENRES, flags, strict=True) if f == "1") or None
        items[str(i)] = {"release_date": release or None, "genres": genres}
        title = "Misérables, Les (1995)" if i == 2 else f"Film {i} (1995)"
        item_lines.append(f"{i}|{title}|{release}||http://us.imdb.com/M/title-exact?{i}|{'|'.join(flags)}\n")
    (folder / "u.item").write_bytes("".join(item_lines).encode("latin-1"))
    ratings, records, bad = [], [], []
    for k in range(420):
        u, i = str(int(rng.integers(1, ML_USERS + 3))), str(int(rng.integers(1, ML_ITEMS + 3)))
        rating = str(int(rng.integers(1, 6)))
        ratings.append(f"{u}\t{i}\t{rating}\t{881250949 + k}")
        user, item = users.get(u, {}), items.get(i, {})
        records.append({"user_id": u, "item_id": i, "rating": rating, **user,
                        "release_date": item.get("release_date"), "genres": item.get("genres")})
        bad.append(item.get("release_date") == "Jan-95")  # a release date without a year: a bad row
    ratings[77], records[77], bad[77] = "1\t2\t5", {"user_id": "1"}, True  # a short line
    for k in [k for k in np.flatnonzero(split_of(np.arange(len(ratings)), 0) == 2) if not bad[k]][:3]:
        ratings[k] = "999\t999\t4\t881250949"  # a user and an item never seen (in training or the tables)
        records[k] = {"user_id": "999", "item_id": "999", "rating": "4"}
    (folder / "u.data").write_text("\n".join(ratings) + "\n")
    return records, bad


def test_movielens(tmp_path: Path) -> None:
    records, bad = ml100k(tmp_path / "ml-100k", np.random.default_rng(4))
    summary = prepare("movielens", [tmp_path / "ml-100k"], tmp_path / "out")
    assert summary.rows_kept == len(records) - sum(bad) and sum(bad) > 5
    graph = build_encode_graph(tmp_path / "out")
    assert graph.input_names == ["user", "item", "age", "gender", "occupation", "zip_prefix", "genres",
                                 "release_year"]
    assert [i.source for i in graph.inputs][5:] == ["zip_code", "genres", "release_date"]
    assert CONTRIB_DOMAIN in {o.domain for o in graph.model.opset_import}, "prefix and year use Tokenizer"
    got = assert_parity(graph, tmp_path / "out", records, bad)
    assert_covers(graph, got, oov=["user", "item"], missing=["age", "zip_prefix", "release_year", "genres"])
    fmap = graph.feature_map
    assert {"T8", "0", "9"} <= set(fmap.fields[5].vocab) and "1994" in fmap.fields[7].vocab
    assert fmap.fields[6].is_list and "|" not in "".join(fmap.fields[6].vocab), "genres: one id per genre"


# --- csv with a spec: every transform ------------------------------------------------------------------

SHOP_SPEC = """
dataset_id: shop
label: clicked
label_transform: gt0
min_count: 2
fields:
  - user
  - {name: item, min_count: 3}
  - {name: price_bucket, source: price, preprocess: log_square}
  - {name: qty_int, source: qty, preprocess: int}
  - {name: qty_text, source: qty}
  - {name: country, preprocess: lower}
  - {name: zip3, source: zip, preprocess: "prefix:3"}
  - {name: year, source: released, preprocess: year}
  - {name: hour, source: ts, preprocess: hour_of_day}
  - {name: dow, source: ts, preprocess: weekday}
  - {name: weekend, source: ts, preprocess: is_weekend}
  - {name: city, min_count: 1}
"""
SHOP_POOLS = {
    "user": [f"u{k}" for k in range(12)],
    "item": [f"i{k}" for k in range(8)] + ["", "rare"],
    "price": ["", "0", "1.5", "2", "2.5", "3", "10", "99.99", "-4.5", "1e3", "1000", "0.1", "7.3", "55.5"],
    "qty": ["-1.5", "-0", "0", "3", "3.999", "12", "", "-7", "2.0"],
    "country": ["FR", "fr", "Fr", "DE", "de", "ÉIRE", "éire", "Éire", "", "ÖSTERREICH", "österreich"],
    "zip": ["75001", "75002", "750", "75", "日本語123", "日本語456", "", LONG, "7", "ab"],
    "released": ["released 1999-05", "1999", "c. 2001", "", "2001/02/03", "١٩٩٥ edition", "12345"],
    "city": ["Paris, FR", "Berlin", "Köln", "", 'say "hi"'],
}


def shop_rows(rng: np.random.Generator, n: int) -> tuple[list[Record], list[bool]]:
    rows, bad = [], []
    for i in range(n):
        day, hour = 18 + int(rng.integers(0, 9)), int(rng.integers(0, 24))
        row = {"clicked": str(int(rng.integers(0, 3))), "ts": f"1410{day:02d}{hour:02d}" if i % 29 else "",
               **{c: pick(rng, pool) for c, pool in SHOP_POOLS.items()}, "unused": "x"}
        if i % 17 == 3:
            row["item"] = f"once{i}"  # below the field's min count of 3
        if i % 23 == 4:
            row["price"] = f"{math.exp(math.sqrt(300 + i) + 0.01):.1f}"  # a bucket of its own: OOV
        if i % 19 == 6:  # values of their own (OOV)
            row.update(zip=f"{chr(0x4E00 + i)}{i}", released=f"year {2100 + i}", city=f"town {i}")
        broken = {10: ("price", "abc"), 60: ("price", "inf"), 110: ("ts", "14102124"),
                  160: ("released", "n/a"), 210: ("clicked", ""), 260: ("qty", "1e400")}.get(i)
        if broken:
            row[broken[0]] = broken[1]
        rows.append(row)
        bad.append(broken is not None)
    return rows, bad


def write_shop(tmp_path: Path, n: int = 400) -> tuple[Path, list[Record], list[bool]]:
    rows, bad = shop_rows(np.random.default_rng(5), n)
    (tmp_path / "shop.yaml").write_text(SHOP_SPEC)
    frame = pl.DataFrame({c: [r[c] or None for r in rows] for c in rows[0]}, schema=dict.fromkeys(rows[0],
                                                                                                  pl.String))
    frame.write_csv(tmp_path / "log.csv")  # quotes "Paris, FR" and 'say "hi"'; empty = missing
    return tmp_path / "log.csv", rows, bad


def test_csv_spec_every_transform(tmp_path: Path) -> None:
    path, rows, bad = write_shop(tmp_path)
    summary = prepare("csv", [path], tmp_path / "out", spec=tmp_path / "shop.yaml")
    assert summary.rows_kept == len(rows) - sum(bad)
    graph = build_encode_graph(tmp_path / "out")
    assert {i.name: i.dtype for i in graph.inputs}["qty_int"] == "float32"
    assert {i.name: i.dtype for i in graph.inputs}["qty_text"] == "string"
    got = assert_parity(graph, tmp_path / "out", rows, bad)
    assert_covers(graph, got, oov=["item", "price_bucket", "zip3", "year", "city"],
                  missing=["price_bucket", "qty_int", "country", "zip3", "year", "hour", "dow", "weekend"])
    fmap = graph.feature_map
    vocab = {f.name: f.vocab for f in fmap.fields}
    assert "fr" in vocab["country"] and "FR" not in vocab["country"] and "éire" in vocab["country"]
    assert "日本語" in vocab["zip3"] and "١٩٩٥" in vocab["year"] and "-2" in vocab["qty_int"]
    with pytest.raises(UserError, match="raw column 'qty' feeds numeric and categorical fields"):
        build_encode_graph(tmp_path / "out", inputs="source")
    # FP64 inputs: the same ids
    wide = build_encode_graph(tmp_path / "out", numeric_type="float64")
    assert {i.dtype for i in wide.inputs if i.source == "price"} == {"float64"}
    assert_parity(wide, tmp_path / "out", rows, bad)


# --- each transform, value by value --------------------------------------------------------------------


def feature_map(fields: list[tuple[str, str, str, list[str]]]) -> FeatureMap:
    """(name, source, preprocess, vocab) per field, with the spec `prepare` would record."""
    spec = DatasetSpec(dataset_id="t", label="y", fields=[FieldSpec(n, s, p) for n, s, p, _ in fields])
    kind = {"log_square": "numeric", "int": "numeric"}
    return FeatureMap(dataset_id="t", label="y", spec=spec.to_dict(), fields=[
        Field(n, kind.get(p, "categorical"), v, s, p) for n, s, p, v in fields])


def prepare_ids(fmap: FeatureMap, frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """What `prepare` gives the rows of a raw frame: its ids, and whether it would skip the row."""
    spec = DatasetSpec.from_dict(fmap.spec)
    toks = tokens(frame, spec, with_label=False)
    return Lookup(fmap)(toks.drop(BAD), np.int64), toks.get_column(BAD).to_numpy() != 0


def test_dates_every_day_of_the_century() -> None:
    """Every YYMMDD (valid or not: months 0-13, days 0-32) at hours 0, 23, 24, 99, against polars."""
    fmap = feature_map([("hour", "ts", "hour_of_day", [str(h) for h in range(24)] + [MISSING]),
                        ("dow", "ts", "weekday", [*"1234567"]),
                        ("weekend", "ts", "is_weekend", ["1", "0"])])
    values = [f"{y:02d}{m:02d}{d:02d}{h:02d}" for y in range(100) for m in range(14) for d in range(33)
              for h in (0, 23, 24, 99)]
    values += ["", "141021+1", "141021-1", "1411 100", " 4102100", "14102100x", "1410210", "x", LONG,
               "١٤١٠٢١٠٠", "14102100\n"]
    frame = pl.DataFrame({"ts": values}).with_columns(pl.col("ts").replace("", None))
    expected, skipped = prepare_ids(fmap, frame)
    graph = build_encode_graph(fmap)
    feed = raw_feed(graph, columns={"ts": values}, check=False)
    got = graph.run(feed)
    canonical = np.array([v.isascii() and v.isdigit() and len(v) == 8 for v in values])
    missing = frame["ts"].is_null().to_numpy()
    same = ~skipped & (canonical | missing)
    np.testing.assert_array_equal(got[same], expected[same])
    assert (got[skipped] == 0).all(), "a date prepare cannot read is OOV in the graph"
    assert int((~skipped & canonical).sum()) == 2 * 36525, "every day of 1970-2069, at hours 0 and 23"
    assert (got[missing] == [25, 0, 0]).all(), "missing: the <missing> id (OOV where it is not in the vocab)"
    # the documented difference: polars also reads a sign or a blank inside; the graph does not
    odd = ~skipped & ~canonical & ~missing
    assert [v for v, o in zip(values, odd, strict=True) if o] == ["141021+1", "141021-1", "1411 100",
                                                                 " 4102100"]
    assert (got[odd] == 0).all()
    for value in ("141021+1", " 4102100"):
        with pytest.raises(UserError, match="is not 8 digits YYMMDDHH"):
            raw_feed(graph, [{"ts": value}])
    # python's calendar agrees on a few: 2000-02-29 (leap), 2069-12-31, 1970-01-01
    for day in (date(2000, 2, 29), date(2069, 12, 31), date(1970, 1, 1), date(2014, 10, 25)):
        ids = encode_with_graph(graph, [{"ts": day.strftime("%y%m%d") + "07"}])[0]
        assert ids[1] == fmap.fields[1].vocab.index(str(day.isoweekday())) + 1
        assert ids[2] == fmap.fields[2].vocab.index(str(int(day.isoweekday() >= 6))) + 1
    assert date(1970, 1, 1) + timedelta(days=36524) == date(2069, 12, 31), "36,525 days"


def test_log_square_and_int_at_every_bucket_edge() -> None:
    """FP32 values around every bucket edge exp(sqrt(k)), k = 1..1907, plus the special values."""
    vocab = [str(k) for k in range(-40, 1910)] + [MISSING]
    fmap = feature_map([("v", "v", "log_square", vocab), ("w", "w", "int", vocab)])
    edges = np.exp(np.sqrt(np.arange(1, 1908, dtype=np.float64))).astype(np.float32)
    ulps = np.arange(-40, 41, dtype=np.int32)[None, :]
    near = (edges.view(np.int32)[:, None] + ulps).view(np.float32).ravel()
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 2.0, np.nextafter(np.float32(2), np.float32(3)),
                         -0.5, -1.0, -3.5, -39.9, 1.0, 9.2e18, 9.3e18, -9.3e18, 1e30, 3.4e38, 16777216.0,
                         16777218.0], dtype=np.float32)
    x = np.concatenate([near, specials, np.arange(-30, 30, 0.25, dtype=np.float32)])
    x64 = x.astype(np.float64)
    frame = pl.DataFrame({"v": x64, "w": x64}).with_columns(pl.all().fill_nan(None))
    expected, skipped = prepare_ids(fmap, frame)
    graph = build_encode_graph(fmap)
    got = graph.run({"v": x[:, None], "w": x[:, None]})
    np.testing.assert_array_equal(got[~skipped], expected[~skipped])
    assert (got[skipped] == 0).all(), "inf, -inf, |v| >= 2^63: OOV"
    np.testing.assert_array_equal(skipped, np.isinf(x) | (np.abs(x64) >= 2.0**63))
    assert (got[np.isnan(x)] == len(vocab)).all(), "NaN is missing"
    # FP64 inputs through the same checks
    wide = build_encode_graph(fmap, numeric_type="float64")
    got = wide.run({"v": x64[:, None], "w": x64[:, None]})
    np.testing.assert_array_equal(got[~skipped], expected[~skipped])


def test_fp32_rounding_is_refused_or_widened() -> None:
    vocab = [str(k) for k in range(0, 400)] + ["16777217", "16777216", MISSING]
    fmap = feature_map([("n", "n", "int", vocab)])
    narrow, wide = build_encode_graph(fmap), build_encode_graph(fmap, numeric_type="float64")
    with pytest.raises(UserError, match=r"record 1: column n value '16777217' changes its int token in FP32 "
                                        r"\(16777217 -> 16777216.*numeric_type='float64'"):
        raw_feed(narrow, [{"n": "3"}, {"n": "16777217"}])
    with pytest.raises(UserError, match=r"record 0: column n value '2.9999999999' changes"):
        raw_feed(narrow, [{"n": "2.9999999999"}])
    near_e2 = build_encode_graph(feature_map([("p", "p", "log_square", ["3", "4"])]))
    with pytest.raises(UserError, match=r"value '7.389056' changes its log_square token in FP32 \(3 -> 4"):
        raw_feed(near_e2, [{"p": "7.389056"}])  # ln(7.389056)^2 = 3.99999..., in FP32 4.0000001
    records = [{"n": "16777217"}, {"n": "2.9999999999"}, {"n": None}, {"n": float("nan")}, {}]
    np.testing.assert_array_equal(encode_with_graph(wide, records), RecordEncoder(fmap).encode(records))
    assert encode_with_graph(narrow, records, check=False)[0, 0] == vocab.index("16777216") + 1, (
        "unchecked, the FP32 value is what the graph sees")


def test_string_transforms_value_by_value() -> None:
    words = ["FR", "fr", "Fr", "ÉIRE", "Ærø", "ΔΕΛΤΑ", "straße", "日本語123", "a", "ab", "", "<missing>",
             "<MISSING>", LONG, "tab\there", "new\nline", "1995", "x 2001 1999", "١٩٩٥", "no year",
             "😀😀😀😀", " pad ", "Ⅻ"]
    pools = pl.Series(words).str.to_lowercase().to_list() + pl.Series(words).str.slice(0, 3).to_list()
    vocab = list(dict.fromkeys([*(t for t in pools if t), MISSING, "1995", "2001", "١٩٩٥"]))
    frame = pl.DataFrame({"s": words}).with_columns(pl.col("s").replace("", None))
    fmap = feature_map([("low", "s", "lower", vocab), ("pre", "s", "prefix:3", vocab),
                        ("one", "s", "prefix:1", vocab), ("raw", "s", "none", vocab)])
    expected, skipped = prepare_ids(fmap, frame)
    graph = build_encode_graph(fmap)
    got = graph.run(raw_feed(graph, columns={"s": words}))
    assert not skipped.any()
    np.testing.assert_array_equal(got, expected)
    assert got[words.index(""), 0] == got[words.index("<missing>"), 0] == vocab.index(MISSING) + 1
    assert got[words.index("<MISSING>"), 0] == vocab.index(MISSING) + 1, "lowercased, it is the token"
    # year: the first run of 4 (Unicode) digits; none -> prepare skips the row, the graph gives OOV
    years = feature_map([("yr", "s", "year", vocab)])
    expected, skipped = prepare_ids(years, frame)
    graph = build_encode_graph(years)
    got = graph.run(raw_feed(graph, columns={"s": words}, check=False))
    np.testing.assert_array_equal(got[~skipped], expected[~skipped])
    assert (got[skipped] == 0).all() and skipped.sum() == len(words) - 4
    assert got[words.index("x 2001 1999"), 0] == vocab.index("2001") + 1
    with pytest.raises(UserError, match=r"record 0: unreadable value in column s \(year\)"):
        raw_feed(graph, [{"s": "no year"}])
    # the documented lowercase differences (glibc towlower vs Unicode's full mapping)
    lower = build_encode_graph(feature_map([("low", "s", "lower", ["i̇", "οδος"])]))
    assert pl.Series(["İ", "ΟΔΟΣ"]).str.to_lowercase().to_list() == ["i̇", "οδος"]
    assert encode_with_graph(lower, [{"s": "İ"}, {"s": "ΟΔΟΣ"}])[:, 0].tolist() == [0, 0]


def test_empty_vocabulary_batches_and_model() -> None:
    fmap = feature_map([("a", "a", "none", []), ("b", "b", "int", []), ("c", "c", "log_square", [MISSING]),
                        ("d", "d", "prefix:2", ["ab"]), ("e", "e", "lower", ["x"])])
    graph = build_encode_graph(fmap)
    onnx.checker.check_model(graph.model, full_check=True)
    model = graph.model
    assert model.ir_version == IR_VERSION
    assert {(o.domain, o.version) for o in model.opset_import} == {("", OPSET), ("ai.onnx.ml", ML_OPSET),
                                                                   (CONTRIB_DOMAIN, 1)}
    assert model.graph.output[0].name == "feat_ids"
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    records = [{"a": "q", "b": "5", "c": "", "d": "abc", "e": "X"}, {"c": "7", "d": ""}]
    np.testing.assert_array_equal(encode_with_graph(graph, records), [[0, 0, 1, 1, 1], [0, 0, 0, 0, 0]])
    assert encode_with_graph(graph, []).shape == (0, 5), "an empty batch keeps its shape"
    assert encode_with_graph(graph, records[:1]).shape == (1, 5)


def test_names_are_sanitised_and_recorded(tmp_path: Path) -> None:
    fmap = feature_map([("user id", "user id", "none", ["u"]), ("user_id", "user_id", "none", ["v"]),
                        ("1st", "1st", "none", ["w"]), ("feat_ids", "feat_ids", "int", ["3"]),
                        ("prix.€", "prix.€", "log_square", ["2"])])
    graph = build_encode_graph(fmap)
    assert graph.input_names == ["user_id", "user_id_2", "f_1st", "feat_ids_2", "prix__"]
    meta = {p.key: p.value for p in graph.model.metadata_props}
    recorded = json.loads(meta[METADATA_INPUTS])
    assert [(r["name"], r["source"], r["fields"]) for r in recorded] == [
        (i.name, i.source, list(i.fields)) for i in graph.inputs]
    assert meta["ttsrec.feature_map_hash"] == fmap.hash
    records = [{"user id": "u", "user_id": "v", "1st": "w", "feat_ids": "3.5", "prix.€": "2"}]
    assert encode_with_graph(graph, records).tolist() == [[1, 1, 1, 1, 1]]
    saved = graph.save(tmp_path / "encode" / "1" / "model.onnx")
    assert onnx.load(saved).graph.input[0].name == "user_id"


def test_unsupported_transforms_are_named() -> None:
    fmap = feature_map([("zip3", "zip", "prefix:3", ["750"]), ("u", "u", "none", ["a"]),
                        ("hour", "ts", "hour_of_day", ["1"])])
    assert unsupported_fields(fmap) == []
    assert unsupported_fields(fmap, contrib_ops=False) == [("zip3", "prefix:3"), ("hour", "hour_of_day")]
    with pytest.raises(UserError, match=r"field 'zip3': transform 'prefix:3' cannot be expressed .*standard "
                                        r"ONNX domains only.*python-backend"):
        build_encode_graph(fmap, contrib_ops=False)
    plain = build_encode_graph(feature_map([("u", "u", "lower", ["a"]), ("n", "n", "int", ["1"])]),
                               contrib_ops=False)
    assert CONTRIB_DOMAIN not in {o.domain for o in plain.model.opset_import}
    strange = feature_map([("u", "u", "none", ["a"])])
    strange.fields[0].preprocess = "sqrt"
    with pytest.raises(UserError, match="field 'u': transform 'sqrt' cannot be expressed"):
        build_encode_graph(strange)


def test_raw_feed_refuses_what_prepare_refuses() -> None:
    fmap = feature_map([("n", "n", "log_square", ["1", MISSING]), ("c", "c", "none", ["a"])])
    graph = build_encode_graph(fmap)
    for value in ("abc", "inf", "1e400", "nan", " 5", "9.3e18"):
        with pytest.raises(UserError, match=r"record 1: unreadable value in column n \(log_square\)"):
            raw_feed(graph, [{"n": "3"}, {"n": value}])
    feed = raw_feed(graph, [{"n": "nan", "c": None}], check=False)
    assert math.isnan(feed["n"][0, 0]) and feed["c"][0, 0] == ""
    assert feed["n"].dtype == np.float32 and feed["c"].dtype == object and feed["n"].shape == (1, 1)
    with pytest.raises(UserError, match="raw columns missing: c"):
        raw_feed(graph, columns={"n": [1.0]})
    with pytest.raises(UserError, match="records or columns"):
        raw_feed(graph)


@pytest.mark.slow
def test_log_square_every_integer_exact_in_fp32() -> None:
    """Criteo's integers: every v in 3..2^24 (exact in FP32) gets prepare's bucket."""
    graph = build_encode_graph(feature_map([("v", "v", "log_square", [str(k) for k in range(1, 280)])]))
    session = graph.session()
    for start in range(3, 2**24 + 1, 1 << 22):
        v = np.arange(start, min(start + (1 << 22), 2**24 + 1), dtype=np.float64)
        expected, _ = prepare_ids(graph.feature_map, pl.DataFrame({"v": v}))
        np.testing.assert_array_equal(graph.run({"v": v.astype(np.float32)[:, None]}, session), expected)


@pytest.mark.slow
def test_lower_every_code_point() -> None:
    """StringNormalizer (glibc C.UTF-8) lowercases every code point as polars does, except U+0130 and
    letters newer than this Python's Unicode database (new in the Unicode version polars knows)."""
    import unicodedata

    chars = [chr(c) for c in range(1, 0x110000) if not 0xD800 <= c < 0xE000]
    lowered = pl.Series(chars).str.to_lowercase().to_list()
    graph = build_encode_graph(feature_map([("low", "s", "lower", list(dict.fromkeys(lowered)))]))
    expected, _ = prepare_ids(graph.feature_map, pl.DataFrame({"s": chars}))
    got = graph.run({"low": np.array(chars, dtype=object)[:, None]})
    differ = [c for c, a, b in zip(chars, got[:, 0], expected[:, 0], strict=True) if a != b]
    assert "İ" in differ
    assert all(c == "İ" or unicodedata.category(c) == "Cn" for c in differ), [hex(ord(c)) for c in differ]
