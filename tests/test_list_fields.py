"""List fields (issue 27): the spec and its errors, `prepare` on every edge case (against a plain
reference), Ray equal to local, and the pooled embedding (padding never counts, an empty list gives zeros,
no batch coupling, out-of-range ids to OOV) in every backbone. Export and serving: test_list_fields_export."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from list_fixtures import EDGE_TAGS, SMALL_BY_BACKBONE, TAGS_SPEC, reference_ids, write_tags_csv
from ttsrec.data.encode import RecordEncoder
from ttsrec.data.feature_map import FeatureMap
from ttsrec.data.prepare import prepare
from ttsrec.data.prepared import PreparedData
from ttsrec.data.spec import DatasetSpec, load_spec
from ttsrec.data.split import SPLITS, split_of
from ttsrec.errors import UserError
from ttsrec.models import BACKBONES, build_model
from ttsrec.models.layers import FeatureEmbedding


@pytest.fixture(scope="module")
def tags_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tags_csv(tmp_path_factory.mktemp("tags") / "tags.csv")


@pytest.fixture(scope="module")
def tags_spec(tags_csv: Path) -> Path:
    path = tags_csv.with_name("tags.yaml")
    path.write_text(TAGS_SPEC)
    return path


@pytest.fixture(scope="module")
def tags_dir(tags_csv: Path, tags_spec: Path) -> Path:
    out = tags_csv.parent / "prepared"
    prepare("csv", [tags_csv], out, spec=tags_spec)
    return out


# -- the spec -------------------------------------------------------------------------------------------


def test_spec_declares_a_list_field(tags_spec: Path) -> None:
    spec = load_spec(tags_spec)
    tags, summed = spec.fields[2], spec.fields[3]
    assert (tags.kind, tags.separator, tags.max_len, tags.pooling) == ("list", "|", 4, "mean")
    assert (summed.source, summed.max_len, summed.pooling) == ("tags", 3, "sum")
    assert spec.fields[0].kind == "categorical" and not spec.fields[0].is_list
    again = DatasetSpec.from_dict(spec.to_dict())
    assert again == spec, "the spec stored in feature_map.json reads back the same"
    assert "separator" not in spec.to_dict()["fields"][0], "a one-value field's entry is unchanged"
    default = DatasetSpec.from_dict({"label": "y", "fields": [{"name": "g", "type": "list", "separator": ";",
                                                              "max_len": 2}]})
    assert default.fields[0].pooling == "mean"


BAD_FIELDS = [
    ({"name": "genres", "type": "list", "max_len": 8}, "genres: a list field needs a separator"),
    ({"name": "genres", "type": "list", "separator": "|", "max_len": 0},
     "genres: max_len must be an integer >= 1"),
    ({"name": "genres", "type": "list", "separator": "|"}, "genres: a list field needs max_len"),
    ({"name": "genres", "type": "list", "separator": "|", "max_len": 4, "pooling": "max"},
     "genres: unknown pooling 'max'"),
    ({"name": "genres", "type": "list", "separator": "|", "max_len": 4, "preprocess": "log_square"},
     "genres: a list field cannot be numeric"),
    ({"name": "genres", "type": "list", "separator": "||", "max_len": 4},
     "genres: a list separator must be one"),
    ({"name": "genres", "separator": "|"}, "genres: separator only apply to a list field"),
    ({"name": "genres", "type": "bag"}, "genres: unknown type 'bag'"),
]


@pytest.mark.parametrize(("entry", "message"), BAD_FIELDS)
def test_bad_list_specs_name_the_field(entry: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        DatasetSpec.from_dict({"label": "y", "fields": ["user", entry]}, origin="s.yaml")


def test_bad_list_spec_is_one_error_line_exit_2(tmp_path: Path, tags_csv: Path,
                                                capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from ttsrec.cli.data import main

    spec = tmp_path / "bad.yaml"
    spec.write_text(TAGS_SPEC.replace('separator: "|", max_len: 4', "max_len: 4"))
    monkeypatch.setattr(sys, "argv", ["tts-data", "prepare", "-p", "csv", "--spec", str(spec), "--input",
                                      str(tags_csv), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as exit_:
        main()
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert exit_.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith("error: ") and "tags: a list field needs a separator" in lines[0]
    assert not (tmp_path / "o").exists()


# -- prepare --------------------------------------------------------------------------------------------


def raw_rows(csv: Path) -> list[dict[str, str]]:
    lines = csv.read_text().splitlines()
    header = lines[0].split(",")
    return [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]


def test_prepare_every_edge_case_against_a_plain_reference(tags_csv: Path, tags_dir: Path) -> None:
    data = PreparedData(tags_dir)
    fmap = data.feature_map
    rows = raw_rows(tags_csv)
    split = split_of(np.arange(len(rows)), 0)
    tags, summed = fmap.fields[2], fmap.fields[3]
    assert fmap.widths == [1, 1, 4, 3] and fmap.width == 9
    assert tags.pad_id == len(tags.vocab) + 1 != 0 and tags.vocab_size == len(tags.vocab) + 2
    train_tokens = [t for r, s in zip(rows, split, strict=True) if s == 0
                    for t in [t for t in r["tags"].split("|") if t][:4]]
    counts = {t: train_tokens.count(t) for t in set(train_tokens)}
    want_vocab = sorted((t for t, n in counts.items() if n >= 2), key=lambda t: (-counts[t], t))
    assert tags.vocab == want_vocab, "counted per token, on the train split, first max_len tokens"
    assert "never1" not in tags.vocab and "zz" not in tags.vocab and " a" not in tags.vocab
    for s, name in enumerate(SPLITS):
        ids = np.load(tags_dir / name / "ids.npy", mmap_mode="r")  # memory-mappable
        assert ids.dtype == np.int32 and ids.shape[1] == 9
        mine = [r for r, k in zip(rows, split, strict=True) if k == s]
        want = np.array([reference_ids(r["tags"], tags.vocab, 4) + reference_ids(r["tags"], summed.vocab, 3)
                         for r in mine])
        np.testing.assert_array_equal(ids[:, 2:], want, err_msg=name)
    first = np.concatenate([data.ids(s) for s in SPLITS])
    assert (first[:, 2] == tags.pad_id).any(), "an empty list is all padding"
    summary = json.loads((tags_dir / "summary.json").read_text())
    n_tokens = [len([t for t in r["tags"].split("|") if t]) for r in rows]
    assert summary["list_fields"] == {
        "tags": {"truncated_rows": sum(n > 4 for n in n_tokens), "empty_rows": n_tokens.count(0)},
        "tags_sum": {"truncated_rows": sum(n > 3 for n in n_tokens), "empty_rows": n_tokens.count(0)},
    }
    encoder = RecordEncoder(fmap)
    edge = encoder.encode([{"user": "u1", "item": "i1", "tags": t} for t in EDGE_TAGS])
    for k, text in enumerate(EDGE_TAGS):
        assert edge[k, 2:6].tolist() == reference_ids(text, tags.vocab, 4), text
    as_list = encoder.encode([{"user": "u1", "item": "i1", "tags": ["a", None, "b", ""]}, {"tags": []}])
    np.testing.assert_array_equal(as_list, encoder.encode([{"user": "u1", "item": "i1", "tags": "a|b"},
                                                           {"tags": None}]))


def test_one_value_fields_are_unchanged(tags_dir: Path) -> None:
    """A one-value field's feature-map entry has no list keys (so the presets' hashes are unchanged)."""
    fmap = FeatureMap.load(tags_dir)
    entry = fmap.to_dict()["fields"][0]
    assert set(entry) == {"name", "kind", "vocab", "source", "preprocess"}


def test_movielens_joined_genres_stay_reachable_by_a_spec(tmp_path: Path) -> None:
    from test_data_presets import write_ml100k
    from ttsrec.data.spec import preset_dict

    write_ml100k(tmp_path / "ml-100k")
    spec = preset_dict("movielens")
    spec["fields"] = [f if not (isinstance(f, dict) and f.get("name") == "genres") else "genres"
                      for f in spec["fields"]]
    (tmp_path / "joined.yaml").write_text(yaml.safe_dump(spec))
    prepare("csv", [tmp_path / "ml-100k"], tmp_path / "joined", spec=tmp_path / "joined.yaml")
    prepare("movielens", [tmp_path / "ml-100k"], tmp_path / "list")
    joined, listed = FeatureMap.load(tmp_path / "joined"), FeatureMap.load(tmp_path / "list")
    assert "Animation|Children's|Comedy" in joined.fields[6].vocab and joined.width == 8
    assert listed.fields[6].is_list and listed.width == 8 - 1 + 6


@pytest.fixture(scope="module")
def local_ray() -> Iterator[object]:
    ray = pytest.importorskip("ray", reason="the optional `ray` extra is not installed")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_output_equals_local_with_list_fields(local_ray: object, tags_csv: Path, tags_spec: Path,
                                                  tags_dir: Path, tmp_path: Path) -> None:
    remote = prepare("csv", [tags_csv], tmp_path / "ray", spec=tags_spec, executor="ray",
                     shard_bytes=20_000, chunk_bytes=8_000)
    assert remote.shards > 1
    for name in ("feature_map.json", *(f"{s}/{f}" for s in SPLITS for f in ("ids.npy", "labels.npy"))):
        assert (tmp_path / "ray" / name).read_bytes() == (tags_dir / name).read_bytes(), name
    local = json.loads((tags_dir / "summary.json").read_text())
    assert remote.list_fields == local["list_fields"]


# -- the pooled embedding -----------------------------------------------------------------------------

VOCAB = [5, 9, 4]
"""Field 1 is a list of max_len 4: ids 1..7 tokens, 8 its padding id."""
BAGS = [None, [4, "mean"], None]


def ids_with(tokens: list[list[int]], width: int = 4, pad: int = 8) -> torch.Tensor:
    return torch.tensor([[2, *t, *[pad] * (width - len(t)), 1] for t in tokens])


def test_padding_never_counts_and_an_empty_list_is_zeros() -> None:
    table = FeatureEmbedding(VOCAB, 3, BAGS)
    with torch.no_grad():
        out = table(ids_with([[1, 2], [1, 2, 1, 2], []]))
        assert out.shape == (3, 3, 3)
        assert torch.allclose(out[0, 1], (table.weight[5 + 1] + table.weight[5 + 2]) / 2)
        assert torch.allclose(out[0, 1], out[1, 1]), "a mean: repeating the same tokens changes nothing"
        assert torch.equal(out[2, 1], torch.zeros(3)), "an empty list gives zeros"
        table.weight[5 + 8] = 1e6  # the padding row
        assert torch.equal(table(ids_with([[1, 2], []])), out[[0, 2]])
        wide = FeatureEmbedding(VOCAB, 3, [None, [6, "mean"], None])
        wide.weight.copy_(table.weight)
        assert torch.allclose(wide(ids_with([[1, 2]], width=6)), out[:1]), "more padding, same vector"
        summed = FeatureEmbedding(VOCAB, 3, [None, [4, "sum"], None])
        summed.weight.copy_(table.weight)
        assert torch.allclose(summed(ids_with([[1, 2]]))[0, 1], 2 * out[0, 1])
        wild = ids_with([[-1, 10**12, 9, 0]])  # out of range -> OOV (0), which counts as a token
        assert torch.allclose(table(wild)[0, 1], table.weight[5 + 0])
    assert table.weight.grad is None
    table(ids_with([[1]])).sum().backward()
    assert float(table.weight.grad[5 + 8].abs().sum()) == 0.0, "no gradient reaches the padding row"


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_pools_per_row(backbone: str) -> None:
    torch.manual_seed(0)
    model = build_model(backbone, VOCAB, bags=BAGS, **SMALL_BY_BACKBONE.get(backbone, {"embed_dim": 4,
                                                                                      "mlp_dims": [16]}))
    model.eval()
    assert model.width == 6 and model.column_sizes == [5, 9, 9, 9, 9, 4]
    batch = torch.cat([ids_with([[1, 2], [3], [], [7, 7, 7, 7]]),
                       torch.tensor([[-3, 99, -1, 8, 8, 2**40]])])
    with torch.no_grad():
        together = model(batch)
        alone = torch.cat([model(batch[k:k + 1]) for k in range(len(batch))])
        shuffled = model(batch.flip(0)).flip(0)
    assert together.shape == (5, 1) and torch.isfinite(together).all()
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(together, shuffled, rtol=1e-5, atol=1e-6)
