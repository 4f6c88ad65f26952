"""Synthetic data, Criteo preparation, splits, the record encoder and the loader."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from ttsrec.data.encode import RecordEncoder
from ttsrec.data.feature_map import FeatureMap
from ttsrec.data.loader import iter_batches
from ttsrec.data.prefetch import prefetch
from ttsrec.data.prepare import prepare
from ttsrec.data.prepared import PreparedData
from ttsrec.data.spec import DatasetSpec, preset_dict
from ttsrec.data.split import split_of
from ttsrec.data.synth import write_synthetic_criteo
from ttsrec.data.transforms import MISSING
from ttsrec.errors import UserError

CRITEO_COLUMNS = ["label", *(f"I{i}" for i in range(1, 14)), *(f"C{i}" for i in range(1, 27))]


def read_tsv(path: Path) -> pl.DataFrame:
    return pl.read_csv(
        path,
        separator="\t",
        has_header=False,
        new_columns=CRITEO_COLUMNS,
        infer_schema=False,
        quote_char=None,
    )


def criteo_spec(min_count: int = 1) -> DatasetSpec:
    return DatasetSpec.from_dict({**preset_dict("criteo"), "min_count": min_count})


def criteo_line(label: str = "1", ints: list[str] | None = None, cats: list[str] | None = None) -> str:
    ints = ints if ints is not None else [str(i) for i in range(13)]
    cats = cats if cats is not None else [f"{i:08x}" for i in range(26)]
    return "\t".join([label, *ints, *cats])


def test_synth_is_deterministic_and_criteo_shaped(tmp_path: Path) -> None:
    a = write_synthetic_criteo(tmp_path / "a.tsv", rows=3000, seed=7)
    b = write_synthetic_criteo(tmp_path / "b.tsv", rows=3000, seed=7)
    c = write_synthetic_criteo(tmp_path / "c.tsv", rows=3000, seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    lines = a.read_text().splitlines()
    assert len(lines) == 3000
    assert all(line.count("\t") == 39 for line in lines)
    df = read_tsv(a)
    assert set(df["label"].unique()) <= {"0", "1"}
    cats = df.select(pl.col("^C.*$")).unpivot()["value"].drop_nulls()
    assert cats.str.contains(r"^[0-9a-f]{8}$").all()
    ints = df.select(pl.col("^I.*$")).unpivot()["value"]
    assert ints.null_count() > 0, "numerics have missing values"
    assert ints.drop_nulls().cast(pl.Int64).min() < 0 < ints.drop_nulls().cast(pl.Int64).max()
    assert list(tmp_path.glob(".*tmp*")) == []


def test_synth_ctr_and_zipf(synthetic_tsv: Path) -> None:
    df = read_tsv(synthetic_tsv)
    ctr = df["label"].cast(pl.Int64).mean()
    assert 0.2 < ctr < 0.3
    counts = df["C3"].drop_nulls().value_counts(sort=True)["count"]
    assert counts[: len(counts) // 100].sum() > 0.1 * counts.sum(), "a heavy head: 1% of values, >10% of rows"
    assert (counts == 1).mean() > 0.5, "a long tail of values seen once"


def test_prepare_criteo_layout(prepared_dir: Path, synthetic_tsv: Path) -> None:
    data = PreparedData(prepared_dir)
    fmap = data.feature_map
    assert fmap.num_fields == 39 and fmap.field_names == CRITEO_COLUMNS[1:]
    assert [f.kind for f in fmap.fields[:13]] == ["numeric"] * 13 and fmap.fields[13].kind == "categorical"
    assert FeatureMap.load(prepared_dir).hash == fmap.hash
    sizes = {s: data.num_rows(s) for s in ("train", "valid", "test")}
    assert sum(sizes.values()) == 20_000
    assert 0.77 < sizes["train"] / 20_000 < 0.83 and 0.08 < sizes["test"] / 20_000 < 0.12
    for split in sizes:
        ids = data.ids(split)
        assert ids.dtype == np.int32 and ids.shape == (sizes[split], 39)
        assert (ids >= 0).all() and (ids < np.array(fmap.vocab_sizes)).all()
        assert data.labels(split).dtype == np.float32
    assert (data.ids("test") == 0).any(), "rare and unseen tokens map to OOV"
    summary = json.loads((prepared_dir / "summary.json").read_text())
    assert summary["rows_read"] == summary["rows_kept"] == 20_000 and summary["rows_skipped"] == 0
    assert summary["feature_map_hash"] == fmap.hash
    # min count 10 on the train split: every kept token of C1 occurs >= 10 times among train rows
    raw = read_tsv(synthetic_tsv).with_columns(pl.Series("split", split_of(np.arange(20_000), 0)))
    train_counts = dict(raw.filter(pl.col("split") == 0)["C1"].fill_null(MISSING).value_counts().iter_rows())
    vocab = fmap.fields[13].vocab
    assert vocab and all(train_counts[tok] >= 10 for tok in vocab)
    assert sum(1 for n in train_counts.values() if n >= 10) == len(vocab)


def test_labels_follow_the_rows(prepared_dir: Path, synthetic_tsv: Path) -> None:
    raw = read_tsv(synthetic_tsv)
    split = split_of(np.arange(raw.height), 0)
    for s, name in enumerate(("train", "valid", "test")):
        expected = raw["label"].cast(pl.Float32).to_numpy()[split == s]
        np.testing.assert_array_equal(PreparedData(prepared_dir).labels(name), expected)


def test_record_encoder_matches_prepare(prepared_dir: Path, synthetic_tsv: Path) -> None:
    raw = read_tsv(synthetic_tsv)
    split = split_of(np.arange(raw.height), 0)
    data = PreparedData(prepared_dir)
    encoder = RecordEncoder(data.feature_map)
    for s, name in enumerate(("train", "test")):
        rows = raw.filter(pl.Series(split == (0 if name == "train" else 2))).head(300)
        records = rows.drop("label").to_dicts()
        ids = encoder.encode(records)
        assert ids.dtype == np.int64
        np.testing.assert_array_equal(ids, data.ids(name)[:300], err_msg=f"split {s}")


def test_record_encoder_missing_unseen_and_bad(prepared_dir: Path) -> None:
    fmap = PreparedData(prepared_dir).feature_map
    encoder = RecordEncoder(fmap)
    ids = encoder.encode([{"I1": 5, "C1": "zzzzzzzz"}, {"I1": "", "C1": None}, {}, {"I1": float("nan")}])
    assert ids.shape == (4, 39)
    assert (ids[3] == ids[2]).all(), "NaN is a missing value, like an absent key"
    assert ids[0, 13] == 0, "unseen categorical value -> OOV"
    i1_missing = fmap.fields[0].vocab.index(MISSING) + 1 if MISSING in fmap.fields[0].vocab else 0
    assert ids[1, 0] == ids[2, 0] == i1_missing
    assert ids[0, 0] == fmap.fields[0].vocab.index("2") + 1, "I1 = 5 is bucket floor(ln(5)^2) = 2"
    assert encoder.encode([]).shape == (0, 39)
    with pytest.raises(UserError, match="record 1: unreadable value in column I3"):
        encoder.encode([{"I3": "1"}, {"I3": "abc"}])


def test_log_square_buckets(tmp_path: Path) -> None:
    values = ["-3", "0", "1", "2", "3", "10", "100", "1000", ""]
    expected = ["-3", "0", "1", "2", "1", "5", "21", "47", MISSING]  # floor(ln(v)^2) for v > 2
    lines = [criteo_line(ints=[v, *["1"] * 12]) for v in values]
    src = tmp_path / "in.tsv"
    src.write_text("\n".join(lines * 20) + "\n")
    prepare("criteo", [src], tmp_path / "out", spec=criteo_spec())
    vocab = FeatureMap.load(tmp_path / "out").fields[0].vocab
    assert sorted(vocab) == sorted(set(expected))


def test_split_is_deterministic_and_seeded() -> None:
    index = np.arange(100_000)
    a, b = split_of(index, 0), split_of(index, 0)
    np.testing.assert_array_equal(a, b)
    assert (a != split_of(index, 1)).mean() > 0.2
    assert abs((a == 0).mean() - 0.8) < 0.01 and abs((a == 1).mean() - 0.1) < 0.01


def test_prepare_same_output_for_any_chunking(
    tmp_path: Path, synthetic_tsv: Path, prepared_dir: Path
) -> None:
    small = tmp_path / "small"
    prepare("criteo", [synthetic_tsv], small, chunk_bytes=250_000)
    assert FeatureMap.load(small).hash == FeatureMap.load(prepared_dir).hash
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(PreparedData(small).ids(split), PreparedData(prepared_dir).ids(split))
        np.testing.assert_array_equal(
            PreparedData(small).labels(split), PreparedData(prepared_dir).labels(split)
        )
    other = tmp_path / "seed1"
    prepare("criteo", [synthetic_tsv], other, seed=1)
    assert PreparedData(other).num_rows("test") != PreparedData(prepared_dir).num_rows(
        "test"
    ) or not np.array_equal(PreparedData(other).labels("test"), PreparedData(prepared_dir).labels("test"))


def test_bad_rows_skip_and_fail(tmp_path: Path) -> None:
    good = [criteo_line() for _ in range(30)]
    lines = [
        *good[:5],
        criteo_line()[:-9],
        *good[5:10],
        criteo_line(ints=["x1", *["1"] * 12]),
        criteo_line(label="2"),
        "",
        *good[10:],
    ]
    src = tmp_path / "bad.tsv"
    src.write_text("\n".join(lines) + "\n")
    summary = prepare("criteo", [src], tmp_path / "skip", spec=criteo_spec())
    assert (summary.rows_read, summary.rows_kept, summary.rows_skipped) == (33, 30, 3)
    reasons = summary.skipped_by_reason
    assert reasons == {
        "wrong number of columns (expected 40, got 39)": 1,
        "unreadable value in column I1 (log_square)": 1,
        "missing or unreadable label in column label (binary)": 1,
    }
    assert json.loads((tmp_path / "skip" / "summary.json").read_text())["rows_skipped"] == 3
    with pytest.raises(UserError, match=r"bad\.tsv:6: wrong number of columns"):
        prepare("criteo", [src], tmp_path / "fail", spec=criteo_spec(), on_bad_row="fail")
    assert not (tmp_path / "fail").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "no temp folder left behind"


def test_prepare_refuses_bad_input(tmp_path: Path, synthetic_tsv: Path, prepared_dir: Path) -> None:
    with pytest.raises(UserError, match="input file not found"):
        prepare("criteo", [tmp_path / "nope.tsv"], tmp_path / "o")
    with pytest.raises(UserError, match="unknown preset 'nope'"):
        prepare("nope", [synthetic_tsv], tmp_path / "o")
    with pytest.raises(UserError, match="already exists"):
        prepare("criteo", [synthetic_tsv], prepared_dir)
    with pytest.raises(UserError, match="--on-bad-row"):
        prepare("criteo", [synthetic_tsv], tmp_path / "o", on_bad_row="ignore")
    junk = tmp_path / "junk.tsv"
    junk.write_text("a\tb\n")
    with pytest.raises(UserError, match="no usable rows"):
        prepare("criteo", [junk], tmp_path / "o")
    assert not (tmp_path / "o").exists()
    with pytest.raises(UserError, match="not a prepared dataset"):
        PreparedData(tmp_path)
    with pytest.raises(UserError, match="unknown split"):
        PreparedData(prepared_dir).ids("dev")


def test_loader_covers_every_row_once(prepared_dir: Path) -> None:
    data = PreparedData(prepared_dir)
    ids, labels = np.asarray(data.ids("train")), np.asarray(data.labels("train"))
    batches = list(iter_batches(data, "train", 1000, shuffle=True, seed=3, block_rows=512, pool_blocks=4))
    assert all(len(y) == 1000 for _, y in batches[:-1]) and len(batches[-1][1]) <= 1000
    got_ids = np.concatenate([x.numpy() for x, _ in batches])
    got_labels = np.concatenate([y.numpy() for _, y in batches])
    assert batches[0][0].dtype.is_floating_point is False and str(batches[0][0].dtype) == "torch.int64"
    assert str(batches[0][1].dtype) == "torch.float32"
    assert len(got_labels) == len(labels)
    order = np.lexsort(got_ids.T[::-1])
    expected = np.lexsort(ids.T[::-1])
    np.testing.assert_array_equal(got_ids[order], ids[expected].astype(np.int64))
    assert got_labels.sum() == labels.sum()
    assert not np.array_equal(got_ids[:1000], ids[:1000]), "shuffled"
    again = next(iter_batches(data, "train", 1000, shuffle=True, seed=3, block_rows=512, pool_blocks=4))
    other = next(iter_batches(data, "train", 1000, shuffle=True, seed=4, block_rows=512, pool_blocks=4))
    assert np.array_equal(again[0].numpy(), batches[0][0].numpy())
    assert not np.array_equal(other[0].numpy(), batches[0][0].numpy())


def test_loader_plain_order_limit_and_drop_last(prepared_dir: Path) -> None:
    data = PreparedData(prepared_dir)
    batches = list(iter_batches(data, "valid", 300, limit=1000))
    assert [len(y) for _, y in batches] == [300, 300, 300, 100]
    np.testing.assert_array_equal(np.concatenate([x.numpy() for x, _ in batches]), data.ids("valid")[:1000])
    assert [len(y) for _, y in iter_batches(data, "valid", 300, limit=1000, drop_last=True)] == [300] * 3
    assert sum(len(y) for _, y in iter_batches(data, "valid", 300, limit=1000, shuffle=True)) == 1000
    with pytest.raises(UserError, match="batch size"):
        next(iter_batches(data, "valid", 0))


def test_gzip_crlf_and_no_final_newline_read_the_same(tmp_path: Path) -> None:
    lines = [criteo_line(label=str(i % 2), cats=[f"{i % 3:08x}"] * 26) for i in range(60)]
    plain = tmp_path / "plain.tsv"
    plain.write_text("\n".join(lines) + "\n")
    crlf = tmp_path / "crlf.tsv"
    crlf.write_bytes("\r\n".join(lines).encode())  # Windows line ends, no final newline
    packed = tmp_path / "packed.tsv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    outs = {}
    for src in (plain, crlf, packed):
        outs[src.name] = prepare(
            "criteo",
            [src],
            tmp_path / src.name.replace(".", "_"),
            spec=criteo_spec(),
            chunk_bytes=1000,
        )
    assert {s.rows_kept for s in outs.values()} == {60}
    assert len({s.feature_map_hash for s in outs.values()}) == 1
    for name in ("crlf_tsv", "packed_tsv_gz"):
        for split in ("train", "valid", "test"):
            np.testing.assert_array_equal(
                PreparedData(tmp_path / name).ids(split), PreparedData(tmp_path / "plain_tsv").ids(split)
            )


def test_prefetch_keeps_order_raises_and_stops() -> None:
    assert list(prefetch(iter(range(50)), depth=2)) == list(range(50))

    def broken() -> Iterator[int]:
        yield 1
        raise UserError("boom")

    with pytest.raises(UserError, match="boom"):
        list(prefetch(broken()))
    produced: list[int] = []

    def counting() -> Iterator[int]:
        for i in range(1000):
            produced.append(i)
            yield i

    stream = prefetch(counting())
    assert next(stream) == 0
    stream.close()
    assert len(produced) < 10, "closing the consumer stops the producer"
