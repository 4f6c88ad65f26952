"""List fields through export and serving (issue 27): every backbone trains and exports with two list
fields (the parity gate on members, merges, fused graphs, the raw encode graph and raw fused graphs),
the one INT64 `feat_ids` whose layout configs and manifest record, cascades, int8 and shards; and on a
real tritonserver raw records (strings or Python lists, every edge case) equal served ids exactly over HTTP
and gRPC."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from export_fixtures import torch_logits
from list_fixtures import EDGE_TAGS, SMALL, SMALL_BY_BACKBONE, TAGS_SPEC, train_briefly, write_tags_csv
from serve_fixtures import export
from ttsrec.data.feature_map import FeatureMap
from ttsrec.data.prepare import prepare
from ttsrec.data.prepared import PreparedData
from ttsrec.export import raw
from ttsrec.export.encode_graph import build_encode_graph
from ttsrec.export.encode_parity import prepare_ids
from ttsrec.models import BACKBONES, build_model
from ttsrec.models.checkpoint import load_member, save_member
from ttsrec.repository import naming
from ttsrec.repository.config import get_parameters, read_config

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tags_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tags")
    (root / "tags.yaml").write_text(TAGS_SPEC)
    prepare("csv", [write_tags_csv(root / "tags.csv")], root / "prepared", spec=root / "tags.yaml")
    return root / "prepared"


@pytest.fixture(scope="module")
def checkpoints(tags_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Every backbone, trained for one epoch on the list-field data."""
    data = PreparedData(tags_dir)
    out = tmp_path_factory.mktemp("members")
    paths = []
    for index, backbone in enumerate(BACKBONES):
        torch.manual_seed(index)
        hparams = SMALL_BY_BACKBONE.get(backbone, SMALL)
        model = train_briefly(build_model(backbone, data.feature_map, **hparams), data, seed=index)
        paths.append(save_member(out / f"member_{index:02d}_{backbone}_s0.pt", model, backbone=backbone,
                                 hparams=model.hparams, seed=0, vocab_sizes=data.feature_map.vocab_sizes,
                                 feature_map_hash=data.feature_map.hash))
    return paths


def test_checkpoints_record_the_lists(checkpoints: list[Path], tags_dir: Path) -> None:
    fmap = FeatureMap.load(tags_dir)
    member = load_member(checkpoints[0])
    assert member.model.bags == fmap.bags == [None, None, [4, "mean"], [3, "sum"]]
    assert member.model.width == fmap.width == 9


def test_every_backbone_exports_with_list_fields(checkpoints: list[Path], tags_dir: Path,
                                                 tmp_path: Path) -> None:
    """The export's gates pass (else it raises); configs and manifest give the one `feat_ids` its layout;
    the fused graph answers the torch members' mean on test rows."""
    repo = export(checkpoints, tmp_path / "repo", tags_dir, m_list=[1, 9], raw_inputs=True, cascade=True,
                  fused_instance_count=1)
    fmap = FeatureMap.load(tags_dir)
    manifest = json.loads((repo / naming.MANIFEST_FILE).read_text())
    assert manifest["feat_ids_width"] == 9 and manifest["feat_ids_layout"] == fmap.layout()
    assert manifest["raw"]["encode"]["parity"][0]["differing_ids"] == 0
    for model in (naming.fused_name(9), naming.ensemble_name(9), naming.raw_fused_name(9)):
        cfg = read_config(repo / model)
        params = get_parameters(cfg)
        assert json.loads(params["feat_ids_layout"]) == fmap.layout(), model
    ids_cfg = read_config(repo / naming.fused_name(9))
    assert list(ids_cfg.input[0].dims) == [9] and len(ids_cfg.input) == 1, "one INT64 feat_ids, 9 wide"
    assert any(m["name"].startswith("cascade") for m in manifest.get("cascades", [])) or \
        (repo / "cascade_m9").is_dir()
    ids = np.ascontiguousarray(PreparedData(tags_dir).ids("test")[:64], dtype=np.int64)
    want = np.mean(list(torch_logits(checkpoints, ids).values()), axis=0)
    import onnxruntime as ort

    session = ort.InferenceSession(str(repo / naming.fused_name(9) / "1" / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    got = session.run(None, {naming.FEAT_IDS: ids})[0]
    np.testing.assert_allclose(got.reshape(-1, 1), want.reshape(-1, 1), rtol=1e-4, atol=1e-5)


def test_int8_and_shards_with_list_fields(checkpoints: list[Path], tags_dir: Path, tmp_path: Path) -> None:
    export(checkpoints[:3], tmp_path / "int8", tags_dir, m_list=[1, 3], precision="int8")
    root = export(checkpoints[:4], tmp_path / "shards", tags_dir, shards=2)
    shards = json.loads((root / "shards.json").read_text())
    assert len(shards["shards"]) == 2
    cfg = read_config(root / "shard_00" / "shard_sum")
    assert list(cfg.input[0].dims) == [9]


def test_zero_skew_on_test_rows_and_edge_cases(tags_dir: Path) -> None:
    """The encode graph gives prepare's ids on every test row read again from the raw file, and on the
    vocabulary rows (every edge case among them)."""
    fmap = FeatureMap.load(tags_dir)
    graph = build_encode_graph(fmap)
    found, note = raw.raw_test_rows(fmap, tags_dir, 10**6)
    assert found is not None, note
    frame, ids = found
    assert len(ids) == PreparedData(tags_dir).num_rows("test")
    from ttsrec.export.encode_feed import raw_feed

    got = graph.run(raw_feed(graph, columns={c: frame.get_column(c) for c in frame.columns}, check=False))
    assert int((got != ids).sum()) == 0
    rows = raw.vocabulary_rows(fmap)
    values = rows.get_column("tags").to_list()
    tokens = [[t for t in (v or "").split("|") if t] for v in values]
    assert None in values and "" in values and "|||" in values, "missing, empty, separators only"
    assert any(len(t) > 4 for t in tokens) and any(len(t) > len(set(t)) for t in tokens), "long, repeats"
    assert any(set(t) - set(fmap.fields[2].vocab) and set(t) & set(fmap.fields[2].vocab) for t in tokens)
    want, _ = prepare_ids(fmap, rows)
    got = graph.run(raw_feed(graph, columns={c: rows.get_column(c) for c in rows.columns}, check=False))
    assert int((got != want).sum()) == 0


# -- a real server ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(checkpoints: list[Path], tags_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    from ttsrec.serve import TritonServer

    repo = export([checkpoints[BACKBONES.index("fnn")], checkpoints[BACKBONES.index("dcnv2")]],
                  tmp_path_factory.mktemp("served") / "repo", tags_dir, m_list=[1, 2], raw_inputs=True,
                  fused_instance_count=1)
    with TritonServer(repo) as server:
        yield server, repo


def edge_records() -> list[dict[str, Any]]:
    """Every edge case as a raw string and as a Python list, for known and unknown users."""
    out: list[dict[str, Any]] = []
    for k, text in enumerate([*EDGE_TAGS, "a|b|c|d|e|f|g|h|i|j|k|l", "never1|never2"]):
        out.append({"user": f"u{k % 7}", "item": f"i{k}", "tags": text})
        out.append({"user": "nobody", "item": "", "tags": [t for t in (text or "").split("|")]})
    return out


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_served_raw_records_equal_served_ids(served: Any, tags_dir: Path, protocol: str) -> None:
    from ttsrec.client import Client
    from ttsrec.data.encode import RecordEncoder

    server, repo = served
    fmap = FeatureMap.load(tags_dir)
    found, _ = raw.raw_test_rows(fmap, tags_dir, 200)
    assert found is not None
    frame, ids = found
    records = frame.to_dicts() + edge_records()
    ids = np.concatenate([ids, RecordEncoder(fmap).encode(edge_records())])
    url = server.url(protocol)
    for m in (1, 2):
        for raw_name, ids_name in ((naming.raw_fused_name(m), naming.fused_name(m)),
                                   (naming.raw_ensemble_name(m), naming.ensemble_name(m))):
            with Client(url, protocol, raw_name) as raw_client, Client(url, protocol, ids_name,
                                                                       feature_map=repo) as ids_client:
                prob, logit = raw_client.predict_records(records)
                want_prob, want_logit = ids_client.predict(ids)
                np.testing.assert_array_equal(logit, want_logit, err_msg=raw_name)
                np.testing.assert_array_equal(prob, want_prob, err_msg=raw_name)
                local = ids_client.predict_records(records)  # client-side encoding, lists joined too
                np.testing.assert_array_equal(local[1], want_logit)
