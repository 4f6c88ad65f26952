"""Every preset on small format-exact files written here, and user specs for the `csv` preset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ttsrec.data.encode import RecordEncoder
from ttsrec.data.feature_map import FeatureMap
from ttsrec.data.prepare import prepare
from ttsrec.data.prepared import PreparedData
from ttsrec.data.spec import DatasetSpec, load_spec, preset_dict, preset_names, resolve_spec
from ttsrec.data.transforms import MISSING
from ttsrec.errors import UserError

AVAZU_HEADER = (
    "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,device_id,"
    "device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21"
)


def avazu_row(i: int, click: int, hour: str, site: str = "1fbe01fe") -> str:
    return (
        f"{10**18 + i},{click},{hour},1005,0,{site},f3845767,28905ebd,ecad2386,7801e8d9,07d7df22,a99f214a,"
        f"ddd2926e,44956a24,1,2,15706,320,50,1722,0,35,-1,79"
    )


def vocab(out: Path, name: str) -> list[str]:
    fmap = FeatureMap.load(out)
    return fmap.fields[fmap.field_names.index(name)].vocab


def test_presets_are_listed_and_valid() -> None:
    assert preset_names() == ["avazu", "criteo", "kdd12", "movielens"]
    sizes = {name: len(resolve_spec(name).fields) for name in preset_names()}
    assert sizes == {"avazu": 24, "criteo": 39, "kdd12": 11, "movielens": 8}


def test_avazu(tmp_path: Path) -> None:
    rows = []
    for i in range(60):  # Tuesday 2014-10-21 and Saturday 2014-10-25
        rows.append(avazu_row(i, int(i % 3 == 0), "14102100" if i % 2 else "14102513"))
    rows.append(avazu_row(60, 1, "14102100", site="seen0nce"))
    rows.append(avazu_row(61, 0, "14132100"))  # month 13: bad row
    rows.append(avazu_row(62, 0, "14102100")[:-3])  # one column short
    src = tmp_path / "train.csv"
    src.write_text("\n".join([AVAZU_HEADER, *rows]) + "\n")
    summary = prepare("avazu", [src], tmp_path / "out")
    assert (summary.rows_read, summary.rows_kept) == (63, 61)
    assert summary.skipped_by_reason == {
        "unreadable value in column hour (hour_of_day)": 1,
        "wrong number of columns (expected 24, got 23)": 1,
    }
    fmap = FeatureMap.load(tmp_path / "out")
    assert (
        fmap.num_fields == 24
        and "id" not in fmap.field_names
        and fmap.field_names[:3] == ["hour_of_day", "weekday", "is_weekend"]
    )
    assert sorted(vocab(tmp_path / "out", "hour_of_day")) == ["0", "13"]
    assert sorted(vocab(tmp_path / "out", "weekday")) == ["2", "6"]
    assert sorted(vocab(tmp_path / "out", "is_weekend")) == ["0", "1"]
    assert vocab(tmp_path / "out", "site_id") == ["1fbe01fe"], "min count 2: a value seen once is OOV"
    enc = RecordEncoder(fmap).encode(
        [{"hour": "14102513", "site_id": "1fbe01fe"}, {"hour": "14102100", "site_id": "x"}]
    )
    weekday = vocab(tmp_path / "out", "weekday")
    assert enc[0, 1] == weekday.index("6") + 1 and enc[1, 1] == weekday.index("2") + 1
    assert enc[0, 3 + 2] == 1 and enc[1, 3 + 2] == 0, "site_id: known value id 1, unseen -> OOV"
    data = PreparedData(tmp_path / "out")
    labels = np.concatenate([data.labels(s) for s in ("train", "valid", "test")])
    assert labels.sum() == sum(i % 3 == 0 for i in range(60)) + 1


def test_kdd12(tmp_path: Path) -> None:
    lines = []
    for i in range(40):
        click = [0, 1, 2][i % 3]
        lines.append(
            f"{click}\t{1 + i % 4}\t4298118681424644510\t7686695\t385\t3\t{1 + i % 3}\t1601\t5521\t7709\t"
            f"576\t{490234 + i % 2}"
        )
    lines.append("1\t1\t2")
    src = tmp_path / "training.txt"
    src.write_text("\n".join(lines) + "\n")
    spec = DatasetSpec.from_dict({**preset_dict("kdd12"), "min_count": 1})
    summary = prepare("kdd12", [src], tmp_path / "out", spec=spec)
    assert summary.rows_kept == 40 and summary.rows_skipped == 1 and summary.num_fields == 11
    data = PreparedData(tmp_path / "out")
    labels = np.concatenate([data.labels(s) for s in ("train", "valid", "test")])
    assert labels.sum() == sum(1 for i in range(40) if i % 3), "Click > 0 is a click"
    assert set(vocab(tmp_path / "out", "Impression")) == {"1", "2"}, (
        "1, 2 -> int(v); 3, 4 -> floor(ln(v)^2) = 1"
    )


def write_ml100k(folder: Path) -> None:
    folder.mkdir()
    ratings = [f"{1 + i % 3}\t{1 + i % 2}\t{1 + i % 5}\t88125{i:04d}" for i in range(50)]
    ratings.insert(10, "1\t2\t5")  # a short line
    (folder / "u.data").write_text("\n".join(ratings) + "\n")
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n3|23|M|writer|32067\n")
    flags_toy = "|".join(["0", "0", "0", "1", "1", "1"] + ["0"] * 13)
    flags_mis = "|".join(["0"] * 8 + ["1"] + ["0"] * 10)
    (folder / "u.item").write_bytes(
        (
            f"1|Toy Story (1995)|01-Jan-1995||http://us.imdb.com/M/title-exact?Toy%20Story%20(1995)|{flags_toy}\n"
            f"2|Misérables, Les (1995)|01-Jan-1996||http://us.imdb.com/M/title-exact?Mis%E9rables|{flags_mis}\n"
        ).encode("latin-1")
    )


def test_movielens(tmp_path: Path) -> None:
    write_ml100k(tmp_path / "ml-100k")
    summary = prepare("movielens", [tmp_path / "ml-100k"], tmp_path / "out")
    assert summary.rows_read == 51 and summary.rows_kept == 50 and summary.num_fields == 8
    out = tmp_path / "out"
    assert sorted(vocab(out, "genres")) == ["Animation", "Children's", "Comedy", "Drama"], "a list field"
    assert sorted(vocab(out, "release_year")) == ["1995", "1996"]
    assert sorted(vocab(out, "zip_prefix")) == ["32", "85", "94"]
    assert sorted(vocab(out, "gender")) == ["F", "M"]
    data = PreparedData(out)
    labels = np.concatenate([data.labels(s) for s in ("train", "valid", "test")])
    assert labels.sum() == sum(1 for i in range(50) if 1 + i % 5 >= 4), "rating >= 4 is positive"
    enc = RecordEncoder(FeatureMap.load(out)).encode([{"user_id": "1", "item_id": "2", "genres": "Drama"}])
    pad = len(vocab(out, "genres")) + 1
    assert (
        enc[0, 0] == vocab(out, "user").index("1") + 1
        and enc[0, 6:12].tolist() == [vocab(out, "genres").index("Drama") + 1, *[pad] * 5]
    )
    with pytest.raises(UserError, match=r"ml-100k folder: missing u\.user"):
        (tmp_path / "ml-100k" / "u.user").unlink()
        prepare("movielens", [tmp_path / "ml-100k"], tmp_path / "out2")


SPEC = """
dataset_id: shop
label: clicked
label_transform: gt0
min_count: 2
fields:
  - user
  - item
  - {name: price_bucket, source: price, preprocess: log_square}
  - {name: country, preprocess: lower}
"""


def shop_frame() -> pl.DataFrame:
    n = 40
    return pl.DataFrame(
        {
            "user": [f"u{i % 4}" for i in range(n)],
            "item": [f"i{i % 5}" if i else "rare" for i in range(n)],
            "price": [str(1.5 * (i % 7)) if i % 9 else "" for i in range(n)],
            "clicked": [str(i % 2) for i in range(n)],
            "country": ["FR" if i % 2 else "fr" for i in range(n)],
            "unused": ["x"] * n,
        }
    )


def test_csv_spec_text_and_parquet_agree(tmp_path: Path) -> None:
    (tmp_path / "shop.yaml").write_text(SPEC)
    frame = shop_frame()
    frame.write_csv(tmp_path / "log.csv")
    frame.write_parquet(tmp_path / "log.parquet")
    a = prepare("csv", [tmp_path / "log.csv"], tmp_path / "a", spec=tmp_path / "shop.yaml")
    b = prepare(
        "csv", [tmp_path / "log.parquet"], tmp_path / "b", spec=tmp_path / "shop.yaml"
    )
    assert a.rows_kept == b.rows_kept == 40 and a.feature_map_hash == b.feature_map_hash
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(
            PreparedData(tmp_path / "a").ids(split), PreparedData(tmp_path / "b").ids(split)
        )
    assert vocab(tmp_path / "a", "country") == ["fr"]
    assert "rare" not in vocab(tmp_path / "a", "item")
    assert MISSING in vocab(tmp_path / "a", "price_bucket"), (
        "missing prices are their own token when frequent"
    )
    tsv = tmp_path / "log.tsv"
    frame.write_csv(tsv, separator="\t")
    (tmp_path / "tab.yaml").write_text(SPEC + 'separator: "\\t"\n')
    c = prepare("csv", [tsv], tmp_path / "c", spec=tmp_path / "tab.yaml")
    np.testing.assert_array_equal(
        PreparedData(tmp_path / "c").ids("train"), PreparedData(tmp_path / "a").ids("train")
    )
    assert c.rows_kept == 40


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("label: y\nfields: [a]\n", "spec names column\\(s\\) \\['y', 'a'\\] not present"),
        ("label: clicked\nfields: [user]\ncolour: red\n", "unknown spec key\\(s\\) \\['colour'\\]"),
        ("label: clicked\nfields: [{name: user, preprocess: sqrt}]\n", "unknown preprocess 'sqrt'"),
        ("label: clicked\n", "missing required key 'fields'"),
        ("label: clicked\nfields: [user, user]\n", "duplicate field name"),
        ("label: clicked\nfields: [user]\nmin_count: 0\n", "min_count must be a positive integer"),
        ("label: clicked\nfields: [user]\nlabel_transform: ge\n", "label_transform 'ge' needs a threshold"),
        ("label: [clicked\n", "not valid YAML"),
        ("- a\n- b\n", "a spec must be a mapping"),
    ],
)
def test_spec_errors(tmp_path: Path, text: str, message: str) -> None:
    shop_frame().write_csv(tmp_path / "log.csv")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(UserError, match=message):
        prepare("csv", [tmp_path / "log.csv"], tmp_path / "out", spec=tmp_path / "s.yaml")
    assert not (tmp_path / "out").exists()


def test_spec_needed_and_loaded(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--preset csv needs --spec"):
        resolve_spec("csv")
    with pytest.raises(UserError, match="spec file not found"):
        load_spec(tmp_path / "none.yaml")
    (tmp_path / "s.yaml").write_text(SPEC)
    spec = load_spec(tmp_path / "s.yaml")
    assert [f.name for f in spec.fields] == ["user", "item", "price_bucket", "country"]
    assert [f.kind for f in spec.fields] == ["categorical", "categorical", "numeric", "categorical"]
    assert spec.sources == ["user", "item", "price", "country"] and spec.min_count == 2
    assert DatasetSpec.from_dict(spec.to_dict()) == spec
