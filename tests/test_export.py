"""Export real (briefly trained) members in both flavours and as shards, then check what a Triton
server would read: every config parsed back into `ModelConfig`, ensembles run step by step from
their configs in onnxruntime, fused graphs, manifest figures, and the parity gate on a tampered model.
One export per flavour per module (2 cores)."""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from tritonclient.grpc import model_config_pb2 as pb

from export_fixtures import EnsembleRunner, torch_logits
from ttsrec.data.feature_map import FeatureMap
from ttsrec.data.prepared import PreparedData
from ttsrec.export import export_repository, parity
from ttsrec.export.writer import ExportConfig
from ttsrec.repository import naming, read_manifest, read_shards
from ttsrec.repository.config import Serving, get_parameters, read_config

pytestmark = pytest.mark.slow

F = 39
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def checkpoints(member_checkpoints: list[Path]) -> list[Path]:
    """Same backbones grouped (fnn, fnn, dcnv2, dcnv2): the export must interleave them again."""
    by_name = sorted(member_checkpoints, key=lambda p: ("dcnv2" in p.name, p.name))
    assert ["dcnv2" in p.name for p in by_name] == [False, False, True, True]
    return by_name


@pytest.fixture(scope="module")
def ids(prepared_dir: Path) -> np.ndarray:
    return np.ascontiguousarray(PreparedData(prepared_dir).ids("test")[:256], dtype=np.int64)


@pytest.fixture(scope="module")
def reference(checkpoints: list[Path], ids: np.ndarray) -> dict[str, np.ndarray]:
    return torch_logits(checkpoints, ids)


@pytest.fixture(scope="module")
def py_repo(checkpoints: list[Path], prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "py"
    return export_repository(checkpoints, out, serving=Serving(fused_intra_op_threads=2), data=prepared_dir)


@pytest.fixture(scope="module")
def ort_repo(checkpoints: list[Path], prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three members (fnn s0, fnn s1, dcnv2 s0 -> interleaved fnn, dcnv2, fnn)."""
    out = tmp_path_factory.mktemp("export") / "ort"
    serving = Serving(backend="onnxruntime", max_batch_size=64, instance_count=2, dynamic_batching=False)
    return export_repository(checkpoints[:3], out, serving, ExportConfig(m_list=[1, 3]), data=prepared_dir)


@pytest.fixture(scope="module")
def shard_root(checkpoints: list[Path], prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_repository(checkpoints, tmp_path_factory.mktemp("export") / "shards",
                             Serving(max_batch_size=128), ExportConfig(shards=2), data=prepared_dir)


def mean_of(reference: dict[str, np.ndarray], manifest: dict, members: list[str]) -> np.ndarray:
    by_name = {m["name"]: reference[m["checkpoint"]] for m in manifest["members"]}
    return np.mean([by_name[name] for name in members], axis=0)


def nudged(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The last float weight matrix scaled by 1.05: a small, silent corruption."""
    weight = [t for t in proto.graph.initializer
              if t.data_type == onnx.TensorProto.FLOAT and len(t.dims) == 2][-1]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * np.float32(1.05), weight.name))
    return proto


def model_dirs(repo: Path) -> dict[str, pb.ModelConfig]:
    return {p.name: read_config(p) for p in sorted(repo.iterdir()) if (p / "config.pbtxt").is_file()}


# -- python flavour ------------------------------------------------------------------------------------


def test_python_layout_and_configs(py_repo: Path) -> None:
    configs = model_dirs(py_repo)
    members = ["member_00_fnn", "member_01_dcnv2", "member_02_fnn", "member_03_dcnv2"]  # interleaved
    expected = {*members, *(f"{k}_m{m}" for k in ("merge_mean", "ensemble", "fused") for m in (1, 2, 4))}
    assert set(configs) == expected
    files = {p.name for p in py_repo.iterdir() if p.is_file()}
    assert files == {naming.FEATURE_MAP_FILE, naming.MANIFEST_FILE, "README.md"}
    model_py = resources.files("ttsrec.repository").joinpath("triton_model.py").read_bytes()
    for name, cfg in configs.items():
        assert cfg.name == name and cfg.max_batch_size == 4096
        version = py_repo / name / "1"
        if name.startswith("ensemble_"):
            assert cfg.platform == "ensemble" and not any(version.iterdir())
            assert not cfg.HasField("dynamic_batching") and not cfg.instance_group
            continue
        assert cfg.backend == "python" and not cfg.platform
        assert (version / "model.py").read_bytes() == model_py and (version / "model.onnx").is_file()
        assert cfg.HasField("dynamic_batching") and cfg.dynamic_batching.max_queue_delay_microseconds == 0
        assert not cfg.dynamic_batching.HasField("default_queue_policy")  # Triton 2.51 stalls with one
        count = 2 if name.startswith("fused_") else 1  # a fused graph gets two instances by default
        assert [(g.count, g.kind) for g in cfg.instance_group] == [(count, pb.ModelInstanceGroup.KIND_CPU)]
        threads = "2" if name.startswith("fused_") else "1"
        assert cfg.parameters["intra_op_threads"].string_value == threads
        assert all(o.data_type == pb.TYPE_FP32 and list(o.dims) == [1] for o in cfg.output)
        if name.startswith(("member_", "fused_")):
            assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [
                ("feat_ids", pb.TYPE_INT64, [F])]
        if name.startswith("member_"):
            assert [o.name for o in cfg.output] == ["logit"]
        else:
            assert [o.name for o in cfg.output] == ["logit", "prob"]


def test_python_ensemble_wiring(py_repo: Path) -> None:
    configs = model_dirs(py_repo)
    members = sorted(n for n in configs if n.startswith("member_"))
    for m in (1, 2, 4):
        cfg = configs[f"ensemble_m{m}"]
        assert [(i.name, i.data_type, list(i.dims)) for i in cfg.input] == [("feat_ids", pb.TYPE_INT64, [F])]
        assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [
            ("logit", pb.TYPE_FP32, [1]), ("prob", pb.TYPE_FP32, [1])]
        *steps, merge = cfg.ensemble_scheduling.step
        assert [s.model_name for s in steps] == members[:m] and merge.model_name == f"merge_mean_m{m}"
        scope = [s.output_map["logit"] for s in steps]
        assert len(set(scope)) == m and all(s.input_map["feat_ids"] == "feat_ids" for s in steps)
        merge_cfg = configs[merge.model_name]
        assert set(merge.input_map) == {i.name for i in merge_cfg.input} == {f"logit_{k}" for k in range(m)}
        assert sorted(merge.input_map.values()) == sorted(scope)
        assert dict(merge.output_map) == {"logit": "logit", "prob": "prob"}
        assert all(cfg.max_batch_size <= configs[s.model_name].max_batch_size for s in [*steps, merge])


def check_every_model(repo: Path, reference: dict[str, np.ndarray], ids: np.ndarray,
                      batches: tuple[int, ...]) -> None:
    """Members against their checkpoints; ensembles (run from their configs) and fused graphs against
    the PyTorch mean of their members, `prob` against its sigmoid."""
    manifest = read_manifest(repo)
    runner = EnsembleRunner(repo)
    for entry in manifest["members"]:
        got = runner.model(entry["name"], {"feat_ids": ids})["logit"]
        np.testing.assert_allclose(got, reference[entry["checkpoint"]][:len(ids)], **TOL)
    for entry in manifest["ensembles"] + manifest["fused"]:
        expected = mean_of(reference, manifest, entry["members"])
        for batch in batches:
            if entry["name"].startswith("ensemble_"):
                out = runner.ensemble(entry["name"], ids[:batch])
            else:
                out = runner.model(entry["name"], {"feat_ids": ids[:batch]})
            assert out["logit"].shape == (batch, 1) and out["logit"].dtype == np.float32
            np.testing.assert_allclose(out["logit"], expected[:batch], **TOL)
            np.testing.assert_allclose(out["prob"], 1 / (1 + np.exp(-expected[:batch])), **TOL)


def test_python_models_match_torch_mean(py_repo: Path, reference: dict[str, np.ndarray],
                                        ids: np.ndarray) -> None:
    check_every_model(py_repo, reference, ids, (1, 7, 256))


def test_python_manifest(py_repo: Path, checkpoints: list[Path], prepared_dir: Path) -> None:
    manifest = read_manifest(py_repo)
    fmap = FeatureMap.load(py_repo)
    assert fmap.hash == FeatureMap.load(prepared_dir).hash == manifest["feature_map_hash"]
    assert manifest["flavour"] == "python" and manifest["m_list"] == [1, 2, 4] and manifest["fp16"] is False
    assert manifest["precision"] == "fp32" and manifest["merge"] == "mean"
    assert len(manifest["export_id"]) == 32
    assert manifest["serving"]["queue_policy"] == {"applied": False}
    on_disk = {p.relative_to(py_repo).as_posix() for p in py_repo.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {naming.MANIFEST_FILE, "README.md"}
    assert "member_00_fnn/1/model.py" in manifest["files"] and naming.FEATURE_MAP_FILE in manifest["files"]
    for rel, sha in manifest["files"].items():
        assert hashlib.sha256((py_repo / rel).read_bytes()).hexdigest() == sha
    onnx_bytes = {m["name"]: m["onnx"]["bytes"] for m in manifest["members"]}
    for entry in manifest["ensembles"] + manifest["fused"]:
        params = get_parameters(read_config(py_repo / entry["name"]))
        assert params == {"export_id": manifest["export_id"], "feature_map_hash": fmap.hash,
                          "precision": "fp32", "merge": "mean", "members": ",".join(entry["members"]),
                          "weight_bytes": str(sum(onnx_bytes[m] for m in entry["members"]))}
    assert {"torch", "onnx", "onnxruntime-gpu", "tritonclient", "python"} <= set(manifest["versions"])
    assert manifest["parity"]["batch_sizes"] == [1, 2, 7, 4096] and "test rows" in manifest["parity"]["rows"]
    assert [(m["backbone"], m["seed"]) for m in manifest["members"]] == [
        ("fnn", 0), ("dcnv2", 0), ("fnn", 1), ("dcnv2", 1)]
    shas = {str(p.resolve()): hashlib.sha256(p.read_bytes()).hexdigest() for p in checkpoints}
    for m in manifest["members"]:
        assert m["checkpoint_sha256"] == shas[m["checkpoint"]] and m["feature_map_hash"] == fmap.hash
        assert m["cost"]["params"] > 0 and m["cost"]["macs_per_sample"] > 0
        onnx_path = py_repo / m["onnx"]["file"]
        assert m["onnx"]["sha256"] == hashlib.sha256(onnx_path.read_bytes()).hexdigest()
        proto = onnx.load(onnx_path)
        assert proto.ir_version <= 10 and m["onnx"]["opset"] == 18
        assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis
        p = m["parity"]
        assert p["passed"] and p["max_abs_diff"] <= 1e-5 and p["batch_sizes"] == [1, 2, 7, 4096]
    for f in manifest["fused"]:
        assert f["parity"]["passed"] and f["parity"]["max_abs_diff"] <= 1e-5
    for e in manifest["ensembles"]:
        assert e["merge_parity"]["max_abs_diff"] <= 1e-6


def test_gate_catches_a_tampered_member(py_repo: Path, checkpoints: list[Path], prepared_dir: Path,
                                        tmp_path: Path) -> None:
    """The gate function itself, on a member file with one weight nudged."""
    from ttsrec.models.checkpoint import load_member

    entry = read_manifest(py_repo)["members"][1]
    proto = nudged(onnx.load(py_repo / entry["onnx"]["file"]))
    tampered = tmp_path / "tampered.onnx"
    onnx.save(proto, tampered)
    sample = parity.build_sample(FeatureMap.load(prepared_dir), 64, prepared_dir)
    expected = parity.torch_logits(load_member(Path(entry["checkpoint"])).model, sample)
    clean = parity.onnx_outputs(py_repo / entry["onnx"]["file"], sample, "logit")
    assert parity.compare(entry["name"], expected, clean, parity.FP32)["passed"]
    with pytest.raises(parity.ParityError, match=entry["name"]):
        parity.compare(entry["name"], expected, parity.onnx_outputs(tampered, sample, "logit"), parity.FP32)


def test_failed_export_leaves_nothing_and_keeps_the_old_repository(
        checkpoints: list[Path], prepared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A member whose exported graph drifts stops the export with its name and figures."""
    from ttsrec.export import members

    real = members.export_member_onnx

    def drifting(model, path, **kwargs):
        out = real(model, path, **kwargs)
        onnx.save(nudged(onnx.load(out)), out)
        return out

    monkeypatch.setattr(members, "export_member_onnx", drifting)
    out = tmp_path / "repo"
    out.mkdir()
    (out / "old.txt").write_text("previous export")
    (out / naming.MANIFEST_FILE).write_text("{}")  # what makes it an export --force may replace
    with pytest.raises(parity.ParityError, match=r"member_00_fnn.*off by up to"):
        export_repository(checkpoints[:1], out, data=prepared_dir, force=True)
    assert sorted(p.name for p in out.iterdir()) == ["old.txt", naming.MANIFEST_FILE]
    assert [p.name for p in tmp_path.iterdir()] == ["repo"]  # no temp folder left behind


# -- onnxruntime flavour -------------------------------------------------------------------------------


def test_onnxruntime_flavour(ort_repo: Path, py_repo: Path, reference: dict[str, np.ndarray],
                             ids: np.ndarray) -> None:
    configs = model_dirs(ort_repo)
    assert set(configs) == {"member_00_fnn", "member_01_dcnv2", "member_02_fnn",
                            *(f"{k}_m{m}" for k in ("merge_mean", "ensemble", "fused") for m in (1, 3))}
    assert not list(ort_repo.glob("*/1/model.py"))
    for cfg in configs.values():
        assert cfg.max_batch_size == 64
        if cfg.platform == "ensemble":
            continue
        assert cfg.platform == "onnxruntime_onnx" and cfg.backend == "onnxruntime"
        assert not cfg.HasField("dynamic_batching")
        assert [(g.count, g.kind) for g in cfg.instance_group] == [(2, pb.ModelInstanceGroup.KIND_CPU)]
    # same ensemble as the python flavour: one writer, two flavours
    same, ours = read_config(py_repo / "ensemble_m1"), configs["ensemble_m1"]
    same.max_batch_size = 64
    for cfg in (same, ours):  # export id and weight bytes differ from one export to the next
        cfg.ClearField("parameters")
    assert ours == same
    manifest = read_manifest(ort_repo)
    assert manifest["flavour"] == "onnxruntime" and manifest["m_list"] == [1, 3]
    assert manifest["parity"]["batch_sizes"] == [1, 2, 7, 64]
    assert [e["members"] for e in manifest["ensembles"]] == [
        ["member_00_fnn"], ["member_00_fnn", "member_01_dcnv2", "member_02_fnn"]]
    check_every_model(ort_repo, reference, ids[:64], (1, 7, 64))


# -- shards --------------------------------------------------------------------------------------------


def test_shards_layout_and_sum(shard_root: Path, reference: dict[str, np.ndarray], ids: np.ndarray) -> None:
    index = read_shards(shard_root)
    assert index["num_shards"] == 2 and index["num_members"] == 4 and index["ensemble"] == "shard_sum"
    assert [s["members"] for s in index["shards"]] == [["member_00_fnn", "member_02_fnn"],
                                                       ["member_01_dcnv2", "member_03_dcnv2"]]
    sums = {"shard_sum": [], "fused_sum": []}
    counts = {"shard_sum": [], "fused_sum": []}
    all_members = {}
    for k, entry in enumerate(index["shards"]):
        repo = shard_root / entry["path"]
        manifest = read_manifest(repo)
        assert manifest["shard"] == {"index": k, "count": 2} and manifest["m_list"] == []
        assert manifest["export_id"] == index["export_id"] and manifest["files"]
        for name in ("shard_sum", "fused_sum"):
            params = get_parameters(read_config(repo / name))
            assert (params["export_id"], params["shard_index"], params["shard_count"], params["members"]) == (
                index["export_id"], str(k), "2", ",".join(entry["members"]))
        assert FeatureMap.load(repo).hash == index["feature_map_hash"]
        configs = model_dirs(repo)
        assert set(configs) == {*entry["members"], "merge_sum_m2", "shard_sum", "fused_sum"}
        cfg = configs["shard_sum"]
        assert cfg.platform == "ensemble" and cfg.max_batch_size == 128
        assert [(o.name, o.data_type, list(o.dims)) for o in cfg.output] == [
            ("logit_sum", pb.TYPE_FP32, [1]), ("member_count", pb.TYPE_FP32, [1])]
        assert [s.model_name for s in cfg.ensemble_scheduling.step] == [*entry["members"], "merge_sum_m2"]
        runner = EnsembleRunner(repo)
        outs = {"shard_sum": runner.ensemble("shard_sum", ids), "fused_sum": runner.model("fused_sum", {
            "feat_ids": ids})}
        for name, out in outs.items():
            sums[name].append(out["logit_sum"])
            counts[name].append(out["member_count"])
        all_members.update({m["name"]: m for m in manifest["members"]})
    expected = np.mean([reference[m["checkpoint"]] for m in all_members.values()], axis=0)
    for name in sums:
        assert all(np.all(c == 2) for c in counts[name])
        np.testing.assert_allclose(np.sum(sums[name], axis=0) / np.sum(counts[name], axis=0), expected, **TOL)


# -- fp16 ------------------------------------------------------------------------------------------------


def test_fp16_export(checkpoints: list[Path], prepared_dir: Path, tmp_path: Path, ids: np.ndarray) -> None:
    repo = export_repository([checkpoints[0], checkpoints[2]], tmp_path / "fp16",
                             Serving(max_batch_size=64),
                             ExportConfig(precision="fp16", m_list=[2], max_auc_drop=1e-3), data=prepared_dir)
    manifest = read_manifest(repo)
    assert manifest["fp16"] is True and manifest["precision"] == "fp16"
    assert manifest["parity"]["atol"] == parity.REDUCED.atol
    for m in manifest["members"]:
        proto = onnx.load(repo / m["onnx"]["file"])
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in proto.graph.initializer)
        assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        gate = m["gate"]
        assert abs(gate["auc_change"]) <= 1e-3 and gate["rows"] == manifest["gate"]["rows"] > 100
    assert get_parameters(read_config(repo / "fused_m2"))["precision"] == "fp16"
    out = EnsembleRunner(repo).ensemble("ensemble_m2", ids[:64])
    assert out["logit"].dtype == np.float32
    fused = EnsembleRunner(repo).model("fused_m2", {"feat_ids": ids[:64]})
    np.testing.assert_allclose(fused["logit"], out["logit"], atol=1e-2)
    assert json.loads((repo / naming.MANIFEST_FILE).read_text())["members"][0]["parity"]["atol"] == 1e-5
