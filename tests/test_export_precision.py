"""Reduced precision: every backbone's graph passes strict shape inference and onnxruntime's
quantizer (fast, tiny models); an int8 export of the small trained run passes the accuracy gate and
the real tritonserver serves it (ensembles, fused graphs, shards) exactly as in-process onnxruntime
runs its files; a gate set impossibly tight stops the export (exit 2) and leaves nothing behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest

from models_fixtures import small_model, valid_ids
from serve_fixtures import export, onnx_path
from test_export_cli import assert_one_line_error, cli
from ttsrec.data.prepared import PreparedData
from ttsrec.ensemble.session import ort_session
from ttsrec.export.onnx_member import export_member_onnx
from ttsrec.export.precision import reduce_precision
from ttsrec.models import BACKBONES
from ttsrec.repository import naming, read_manifest, read_shards
from ttsrec.repository.config import get_parameters, read_config
from ttsrec.repository.graphs import fused_graph

GATE = 5e-3
"""The fixture's members are barely trained (test AUC ~0.62) and its test split has ~2k rows: int8 moves
their AUC by up to ~2e-3 there. The 5e-4 default is for real runs (docs/export.md)."""


def strict(model: onnx.ModelProto) -> onnx.ModelProto:
    return onnx.shape_inference.infer_shapes(model, strict_mode=True, check_type=True)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_every_backbone_passes_strict_inference_and_the_quantizer(backbone: str, tmp_path: Path) -> None:
    model = small_model(backbone)
    fp32 = onnx.load(export_member_onnx(model, tmp_path / "m.onnx"))
    strict(fp32)
    strict(fused_graph([fp32, fp32]))
    ids = valid_ids(64).numpy()
    reference = ort_session(fp32.SerializeToString()).run(None, {"feat_ids": ids})[0]
    for mode in ("qdq", "dynamic"):
        int8 = reduce_precision(fp32, "int8", int8_mode=mode, calibration=ids)
        dense = any(n.op_type in ("MatMul", "Gemm") for n in fp32.graph.node)  # FM has no dense layer
        quantized = any(n.op_type in ("QuantizeLinear", "DynamicQuantizeLinear") for n in int8.graph.node)
        assert quantized == dense, mode
        strict(int8)
        fused = strict(fused_graph([int8, int8]))
        got = ort_session(int8.SerializeToString()).run(None, {"feat_ids": ids})[0]
        assert got.shape == reference.shape and np.all(np.isfinite(got))
        both = ort_session(fused.SerializeToString()).run(None, {"feat_ids": ids})[0]
        np.testing.assert_allclose(both, got, rtol=1e-5, atol=1e-5)


def test_qdq_rows_do_not_depend_on_their_batch(tmp_path: Path) -> None:
    """Static scales: a row's int8 logit is the same alone and inside any batch (the member contract)."""
    fp32 = onnx.load(export_member_onnx(small_model("dcnv2"), tmp_path / "m.onnx"))
    ids = valid_ids(128).numpy()
    session = ort_session(reduce_precision(fp32, "int8", calibration=ids).SerializeToString())
    whole = session.run(None, {"feat_ids": ids})[0]
    alone = np.concatenate([session.run(None, {"feat_ids": ids[i:i + 1]})[0] for i in range(8)])
    np.testing.assert_array_equal(alone, whole[:8])


# -- a small trained run, exported in int8 and served ---------------------------------------------------


@pytest.fixture(scope="module")
def int8_repo(member_checkpoints: list[Path], prepared_dir: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(member_checkpoints, tmp_path_factory.mktemp("int8") / "repo", prepared_dir, m_list=[1, 4],
                  precision="int8", max_auc_drop=GATE)


@pytest.fixture(scope="module")
def int8_shards(member_checkpoints: list[Path], prepared_dir: Path,
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(member_checkpoints, tmp_path_factory.mktemp("int8") / "shards", prepared_dir, shards=2,
                  precision="int8", max_auc_drop=GATE)


@pytest.fixture(scope="module")
def ids(prepared_dir: Path) -> np.ndarray:
    return np.ascontiguousarray(PreparedData(prepared_dir).ids("test")[:200], dtype=np.int64)


class InProcess:
    """The repository's own ONNX files in onnxruntime (one session each), wired as the configs say."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.sessions: dict[str, object] = {}

    def run(self, model: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        if model not in self.sessions:
            self.sessions[model] = ort_session(onnx_path(self.repo, model))
        return self.sessions[model].run(None, feeds)

    def ensemble(self, name: str, ids: np.ndarray) -> list[np.ndarray]:
        cfg = read_config(self.repo / name)
        *members, merge = cfg.ensemble_scheduling.step
        logits = {next(iter(s.output_map.values())): self.run(s.model_name, {"feat_ids": ids})[0]
                  for s in members}
        return self.run(merge.model_name, {k: logits[v] for k, v in merge.input_map.items()})


@pytest.mark.slow
def test_int8_export_passes_the_gate_and_records_precision(int8_repo: Path, int8_shards: Path) -> None:
    manifest = read_manifest(int8_repo)
    assert manifest["precision"] == "int8" and manifest["int8"]["mode"] == "qdq"
    assert manifest["int8"]["calibration_rows"] > 0 and manifest["gate"]["max_auc_drop"] == GATE
    for entry in manifest["members"] + manifest["fused"]:
        gate = entry["gate"]
        assert abs(gate["auc_change"]) <= GATE and gate["rows"] == manifest["gate"]["rows"] > 1000
        assert 0 < gate["max_logit_drift"] < 1 and gate["mean_logit_drift"] <= gate["max_logit_drift"]
    for m in manifest["members"]:
        proto = onnx.load(int8_repo / m["onnx"]["file"])
        assert any(t.data_type == onnx.TensorProto.INT8 for t in proto.graph.initializer)
    for entry in manifest["ensembles"] + manifest["fused"]:
        assert get_parameters(read_config(int8_repo / entry["name"]))["precision"] == "int8"
    assert "`int8`" in (int8_repo / "README.md").read_text()
    index = read_shards(int8_shards)
    assert index["precision"] == "int8"
    for shard in index["shards"]:
        assert read_manifest(int8_shards / shard["path"])["precision"] == "int8"
        params = get_parameters(read_config(int8_shards / shard["path"] / naming.SHARD_ENSEMBLE))
        assert params["precision"] == "int8" and params["export_id"] == index["export_id"]


@pytest.fixture(scope="module")
def servers(int8_repo: Path, int8_shards: Path) -> Iterator[tuple[object, object]]:
    from ttsrec.serve import ShardedServers, TritonServer

    with TritonServer(int8_repo) as single, ShardedServers(int8_shards) as sharded:
        yield single, sharded


@pytest.mark.slow
def test_served_int8_equals_in_process_int8_exactly(servers: tuple, int8_repo: Path, int8_shards: Path,
                                                    ids: np.ndarray) -> None:
    from ttsrec.client import Client

    single, sharded = servers
    local = InProcess(int8_repo)
    for batch in (1, 7, 200):
        rows = ids[:batch]
        for name in ("ensemble_m1", "ensemble_m4"):
            with Client(single.grpc_url, model=name, timeout_s=30) as client:
                prob, logit = client.predict(rows)
            expected_logit, expected_prob = local.ensemble(name, rows)
            np.testing.assert_array_equal(logit, expected_logit.ravel())
            np.testing.assert_array_equal(prob, expected_prob.ravel())
        with Client(single.grpc_url, model="fused_m4", timeout_s=30) as client:
            _, logit = client.predict(rows)
        np.testing.assert_array_equal(logit, local.run("fused_m4", {"feat_ids": rows})[0].ravel())
    index = read_shards(int8_shards)
    for k, shard in enumerate(index["shards"]):
        import tritonclient.grpc as grpcclient

        local = InProcess(int8_shards / shard["path"])
        with grpcclient.InferenceServerClient(sharded.servers[k].grpc_url.removeprefix("grpc://")) as client:
            feed = grpcclient.InferInput("feat_ids", list(ids.shape), "INT64")
            feed.set_data_from_numpy(ids)
            for model in (naming.SHARD_ENSEMBLE, naming.FUSED_SUM):
                result = client.infer(model, [feed])
                expected = (local.ensemble(model, ids) if model == naming.SHARD_ENSEMBLE
                            else local.run(model, {"feat_ids": ids}))
                np.testing.assert_array_equal(result.as_numpy(naming.LOGIT_SUM), expected[0])


@pytest.mark.slow
def test_impossible_gate_stops_the_export_and_leaves_nothing(member_checkpoints: list[Path],
                                                            prepared_dir: Path, tmp_path: Path, capsys,
                                                            monkeypatch) -> None:
    out = tmp_path / "repo"
    code, err = cli([*member_checkpoints[:2], "--data", prepared_dir, "--out", out, "--precision", "int8",
                     "--m-list", "2", "--max-auc-drop", "0", "--gate-rows", "2000"], capsys, monkeypatch)
    errors = [line for line in err.splitlines() if line.startswith("error:")]  # after the progress bar
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err
    assert_one_line_error(code, errors[0], "accuracy gate failed", "int8", "member_0", "limit 0")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == []
