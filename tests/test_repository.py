"""Fast tests of the repository pieces: config builders round-trip through Triton's protobuf,
merge/fused ONNX graphs compute the right numbers in onnxruntime, member order and sharding."""

from __future__ import annotations

import ast
from importlib import resources
from pathlib import Path

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper
from tritonclient.grpc import model_config_pb2 as pb

from ttsrec.ensemble.order import balanced_order, default_m_list, shard_members
from ttsrec.ensemble.session import ort_session
from ttsrec.errors import UserError
from ttsrec.export import parity
from ttsrec.repository import graphs, naming
from ttsrec.repository.config import (
    Serving,
    Step,
    Tensor,
    ensemble_config,
    onnx_model_config,
    read_config,
    write_config,
)

F = 5


def linear_member(seed: int, out_name: str = "logit", in_name: str = "feat_ids") -> onnx.ModelProto:
    """A real (tiny) member graph: logit = cast(ids) @ w + b, batch axis dynamic."""
    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(size=(F, 1)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(size=(1,)).astype(np.float32), "b")
    nodes = [helper.make_node("Cast", [in_name], ["x"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["x", "w"], ["xw"]), helper.make_node("Add", ["xw", "b"], [out_name])]
    inputs = [helper.make_tensor_value_info(in_name, TensorProto.INT64, ["B", F])]
    outputs = [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, ["B", 1])]
    graph = helper.make_graph(nodes, "linear", inputs, outputs, initializer=[w, b])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10)


def run(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort_session(model if isinstance(model, Path) else model.SerializeToString())
    return session.run(None, feeds)


def test_member_config_python_and_onnxruntime_round_trip(tmp_path: Path) -> None:
    for backend in ("python", "onnxruntime"):
        serving = Serving(backend=backend, max_batch_size=64, instance_count=2, instance_kind="gpu",
                          max_queue_delay_us=100, intra_op_threads=3)
        cfg = onnx_model_config("member_00_fnn", [Tensor("feat_ids", pb.TYPE_INT64, (F,))],
                                [Tensor("logit", pb.TYPE_FP32, (1,))], serving)
        write_config(tmp_path / backend, cfg)
        back = read_config(tmp_path / backend)
        assert back == cfg
        assert back.max_batch_size == 64 and list(back.input[0].dims) == [F]
        assert back.input[0].data_type == pb.TYPE_INT64 and back.output[0].data_type == pb.TYPE_FP32
        group = back.instance_group[0]
        assert group.count == 2 and group.kind == pb.ModelInstanceGroup.KIND_GPU
        assert back.dynamic_batching.max_queue_delay_microseconds == 100
        if backend == "python":
            assert back.backend == "python" and not back.platform
            assert back.parameters["intra_op_threads"].string_value == "3"
        else:
            assert back.platform == "onnxruntime_onnx" and back.backend == "onnxruntime"
            assert back.parameters["intra_op_thread_count"].string_value == "3"


def test_dynamic_batching_off_and_zero_delay_still_present() -> None:
    io = ([Tensor("a", pb.TYPE_FP32, (1,))], [Tensor("b", pb.TYPE_FP32, (1,))])
    off = onnx_model_config("m", *io, Serving(dynamic_batching=False))
    on = onnx_model_config("m", *io, Serving(max_queue_delay_us=0))
    assert not off.HasField("dynamic_batching")
    assert on.HasField("dynamic_batching") and "dynamic_batching {" in text_format.MessageToString(on)


def test_queue_policy_only_when_a_bound_is_asked_for() -> None:
    """No policy by default (Triton 2.51 stalls queued requests 500 ms with one); a bound sets it."""
    io = ([Tensor("a", pb.TYPE_FP32, (1,))], [Tensor("b", pb.TYPE_FP32, (1,))])
    plain = onnx_model_config("m", *io, Serving())
    assert not plain.dynamic_batching.HasField("default_queue_policy")
    for serving, expected in ((Serving(queue_max=8), (8, 0)), (Serving(queue_timeout_ms=20), (0, 20_000))):
        policy = onnx_model_config("m", *io, serving).dynamic_batching.default_queue_policy
        assert (policy.max_queue_size, policy.default_timeout_microseconds) == expected
        assert policy.timeout_action == pb.ModelQueuePolicy.REJECT and policy.allow_timeout_override
    assert not onnx_model_config("m", *io, Serving(dynamic_batching=False, queue_max=8)).HasField(
        "dynamic_batching")


def test_ensemble_config_wiring() -> None:
    steps = [Step(f"member_{k:02d}_fnn", "feat_ids", "logit") for k in range(3)]
    cfg = ensemble_config("ensemble_m3", num_fields=F, max_batch_size=128, members=steps,
                          merge_model="merge_mean_m3", merge_inputs=["logit_0", "logit_1", "logit_2"],
                          outputs=["logit", "prob"])
    back = text_format.Parse(text_format.MessageToString(cfg), pb.ModelConfig())
    assert back.platform == "ensemble" and back.max_batch_size == 128
    assert not back.HasField("dynamic_batching") and not back.instance_group
    assert [o.name for o in back.output] == ["logit", "prob"]
    *members, merge = back.ensemble_scheduling.step
    assert [s.model_name for s in members] == [s.model for s in steps] and merge.model_name == "merge_mean_m3"
    scope = [dict(s.output_map)["logit"] for s in members]
    assert scope == ["logit_00", "logit_01", "logit_02"] and len(set(scope)) == 3
    assert all(dict(s.input_map) == {"feat_ids": "feat_ids"} for s in members)
    assert dict(merge.input_map) == {"logit_0": "logit_00", "logit_1": "logit_01", "logit_2": "logit_02"}
    assert dict(merge.output_map) == {"logit": "logit", "prob": "prob"}


def test_read_config_rejects_garbage(tmp_path: Path) -> None:
    (tmp_path / "config.pbtxt").write_text("name: 'x'\nnot_a_field: 3\n")
    with pytest.raises(UserError, match="not a valid Triton model config"):
        read_config(tmp_path)


def test_serving_validation() -> None:
    for bad in (Serving(backend="tensorflow"), Serving(instance_kind="tpu"), Serving(max_batch_size=0),
                Serving(instance_count=0), Serving(max_queue_delay_us=-1), Serving(intra_op_threads=0),
                Serving(fused_intra_op_threads=0), Serving(fused_instance_count=0)):
        with pytest.raises(UserError):
            bad.validate()
    assert Serving(intra_op_threads=3).fused.intra_op_threads == 3
    assert Serving(fused_intra_op_threads=2).fused == Serving(intra_op_threads=2, fused_intra_op_threads=2,
                                                              instance_count=2)
    # Members keep --instance-count; fused graphs get their own (default 2: one instance uses one core).
    assert Serving().instance_count == 1 and Serving().fused.instance_count == 2
    assert Serving(fused_instance_count=3).fused.instance_count == 3


@pytest.mark.parametrize("m", [1, 2, 5])
def test_merge_graph_mean_and_sum(m: int) -> None:
    rng = np.random.default_rng(m)
    logits = [rng.normal(size=(7, 1)).astype(np.float32) for _ in range(m)]
    feeds = {naming.merge_input(k): x for k, x in enumerate(logits)}
    mean_model = graphs.merge_graph(m, "mean")
    assert mean_model.ir_version == graphs.IR_VERSION
    logit, prob = run(mean_model, feeds)
    np.testing.assert_allclose(logit, np.mean(logits, axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-np.mean(logits, axis=0))), rtol=1e-6)
    total, count = run(graphs.merge_graph(m, "sum"), feeds)
    np.testing.assert_allclose(total, np.sum(logits, axis=0), rtol=1e-6, atol=1e-6)
    assert count.shape == (7, 1) and count.dtype == np.float32 and np.all(count == m)


def test_fused_graph_equals_member_mean_and_sum() -> None:
    members = [linear_member(0), linear_member(1, out_name="y", in_name="ids"), linear_member(2)]
    ids = np.random.default_rng(0).integers(0, 9, size=(11, F)).astype(np.int64)
    outs = [run(m, {m.graph.input[0].name: ids})[0] for m in members]
    fused = graphs.fused_graph(members, "mean")
    onnx.checker.check_model(fused)
    assert [i.name for i in fused.graph.input] == ["feat_ids"]
    logit, prob = run(fused, {"feat_ids": ids})
    np.testing.assert_allclose(logit, np.mean(outs, axis=0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-logit)), rtol=1e-6, atol=1e-6)
    total, count = run(graphs.fused_graph(members[:2], "sum"), {"feat_ids": ids})
    np.testing.assert_allclose(total, outs[0] + outs[1], rtol=1e-6, atol=1e-5)
    assert np.all(count == 2)


def test_save_onnx_uses_triton_folder_layout_above_the_limit(tmp_path: Path, monkeypatch) -> None:
    model = linear_member(3)
    small = graphs.save_onnx(model, tmp_path / "small" / "1")
    assert small == tmp_path / "small" / "1" / "model.onnx" and small.is_file()
    monkeypatch.setattr(graphs, "EXTERNAL_DATA_BYTES", 1)
    big = graphs.save_onnx(model, tmp_path / "big" / "1")
    assert big == tmp_path / "big" / "1" / "model.onnx" / "model.onnx"
    assert (big.parent / "model.onnx.data").is_file()
    assert graphs.onnx_file(tmp_path / "big" / "1") == big
    ids = np.ones((3, F), dtype=np.int64)
    np.testing.assert_array_equal(run(big, {"feat_ids": ids})[0], run(small, {"feat_ids": ids})[0])


def test_balanced_order_interleaves_backbones() -> None:
    names = ["fnn", "fnn", "fnn", "dcnv2", "dcnv2", "wukong"]
    order = balanced_order(names)
    assert sorted(order) == list(range(6))
    assert [names[i] for i in order] == ["fnn", "dcnv2", "wukong", "fnn", "dcnv2", "fnn"]
    assert order[:3] == [0, 3, 5] and order[3:5] == [1, 4]  # seed order kept within a backbone
    assert balanced_order(["dcnv2"] * 4) == [0, 1, 2, 3]


def test_m_list_and_shards() -> None:
    assert default_m_list(4) == [1, 2, 4]
    assert default_m_list(6) == [1, 2, 4, 6]
    assert default_m_list(20) == [1, 2, 4, 8, 16]
    assert shard_members(5, 2) == [[0, 2, 4], [1, 3]]
    assert shard_members(4, 4) == [[0], [1], [2], [3]]


def test_parity_compare_reports_figures_and_failures() -> None:
    ref = {1: np.array([[0.5]], np.float32), 3: np.array([[1.0], [-2.0], [3.0]], np.float32)}
    ok = parity.compare("m", ref, {b: x + 1e-6 for b, x in ref.items()}, parity.FP32)
    assert ok["passed"] and ok["max_abs_diff"] == pytest.approx(1e-6, rel=0.1)
    bad = {1: ref[1], 3: ref[3] + np.array([[0], [0], [1e-3]], np.float32)}
    with pytest.raises(parity.ParityError, match=r"member_07_fnn.*batch 3.*0\.001"):
        parity.compare("member_07_fnn", ref, bad, parity.FP32)
    with pytest.raises(parity.ParityError, match="shape"):
        parity.compare("m", ref, {1: ref[1], 3: ref[3][:2]}, parity.FP32)
    assert parity.batch_sizes(4096) == [1, 2, 7, 4096] and parity.batch_sizes(5) == [1, 2, 5]


def test_python_backend_model_source_is_self_contained() -> None:
    source = resources.files("ttsrec.repository").joinpath("triton_model.py").read_text()
    tree = ast.parse(source)
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "ttsrec" not in imported  # it must run where ttsrec is not installed
    assert {"onnxruntime", "triton_python_backend_utils", "numpy"} <= imported
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert [c.name for c in classes] == ["TritonPythonModel"]
    methods = {f.name for f in classes[0].body if isinstance(f, ast.FunctionDef)}
    assert {"initialize", "execute", "finalize"} <= methods


def test_layout_tree_one_line_per_model(tmp_path: Path) -> None:
    from ttsrec.repository.tree import layout_tree

    for name in ("member_00_fnn", "ensemble_m1"):
        (tmp_path / "shard_00" / name / "1").mkdir(parents=True)
        (tmp_path / "shard_00" / name / "config.pbtxt").write_text(f'name: "{name}"\n')
    (tmp_path / "shard_00" / "member_00_fnn" / "1" / "model.onnx").write_bytes(b"x" * 2000)
    (tmp_path / "shard_00" / "member_00_fnn" / "1" / "__pycache__").mkdir()
    (tmp_path / "shards.json").write_text("{}")
    lines = layout_tree(tmp_path).splitlines()
    assert any("member_00_fnn/" in line and "1/model.onnx 2.0 kB" in line and "config.pbtxt" in line
               for line in lines)
    assert any("ensemble_m1/" in line and " 1/ " in line for line in lines)
    assert any("shard_00/" in line for line in lines) and any("shards.json" in line for line in lines)
    assert not any("__pycache__" in line for line in lines) and len(lines) == 5


def test_source_tree_model_repository_readme_is_the_one_every_export_writes() -> None:
    """`make demo` exports into model_repository/ and must leave its tracked README unchanged."""
    from ttsrec.export.assemble import REPOSITORY_README

    tracked = Path(__file__).resolve().parents[1] / "model_repository" / "README.md"
    assert tracked.read_text() == REPOSITORY_README.read_text()
