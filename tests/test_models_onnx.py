"""Every backbone exports to ONNX with a dynamic batch axis and onnxruntime matches torch (slow:
the dynamo exporter takes a second or two per model)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from models_fixtures import VOCAB_SIZES, oov_path, small_model, valid_ids, wild_ids
from ttsrec.ensemble.session import ort_session, run_session
from ttsrec.export.onnx_member import export_member_onnx, parity
from ttsrec.models import BACKBONES
from ttsrec.models.layers import EMBEDDING_INITS
from ttsrec.repository.graphs import IR_VERSION

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("init", EMBEDDING_INITS)
@pytest.mark.parametrize("name", BACKBONES)
def test_onnx_export_matches_torch_at_batch_1_7_256(name, init, tmp_path):
    model = small_model(name, init=init)
    path = export_member_onnx(model, tmp_path / "model.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # one file, nothing left behind

    proto = onnx.load(path)
    assert proto.ir_version <= IR_VERSION
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert (inp.name, inp.type.tensor_type.elem_type) == ("feat_ids", onnx.TensorProto.INT64)
    assert (out.name, out.type.tensor_type.elem_type) == ("logit", onnx.TensorProto.FLOAT)
    batch_dim, field_dim = inp.type.tensor_type.shape.dim
    assert batch_dim.dim_param and not batch_dim.dim_value and field_dim.dim_value == len(VOCAB_SIZES)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["ttsrec.backbone"] == name and json.loads(meta["ttsrec.hparams"]) == model.hparams

    session = ort_session(path)
    for batch in (1, 7, 256):
        ids = valid_ids(batch, seed=batch)
        got = run_session(session, ids.numpy())
        with torch.no_grad():
            expected = model(ids).numpy()
        assert got.shape == (batch, 1) and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)

    ids = wild_ids(64)  # what perf_analyzer sends: any int64
    with torch.no_grad():
        expected = model(oov_path(ids)).numpy()
    np.testing.assert_allclose(run_session(session, ids.numpy()), expected, rtol=0, atol=1e-5)
    assert parity(model, session) < 1e-5


def test_session_is_cpu_single_threaded_without_spinning(tmp_path):
    path = export_member_onnx(small_model("fnn"), tmp_path / "fnn.onnx", metadata={"feature_map_hash": "abc"})
    session = ort_session(path, intra_op_threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    config = session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    assert config == "0" and session.get_session_options().intra_op_num_threads == 1
    assert {p.key: p.value for p in onnx.load(path).metadata_props}["feature_map_hash"] == "abc"


def test_models_past_2gb_keep_their_weights_next_to_the_onnx_file(tmp_path, monkeypatch):
    import ttsrec.export.onnx_member as onnx_member

    monkeypatch.setattr(onnx_member, "_TWO_GB", 0)  # treat a tiny model as a huge one
    model = small_model("dcnv2")
    path = export_member_onnx(model, tmp_path / "model.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert path.stat().st_size < (tmp_path / "model.onnx.data").stat().st_size
    ids = valid_ids(7)
    with torch.no_grad():
        expected = model(ids).numpy()
    np.testing.assert_allclose(run_session(ort_session(path), ids.numpy()), expected, rtol=0, atol=1e-5)


def test_a_failed_export_leaves_nothing_behind(tmp_path):
    class Broken(torch.nn.Module):
        vocab_sizes = VOCAB_SIZES

        def forward(self, feat_ids: torch.Tensor) -> torch.Tensor:
            raise ValueError("cannot trace this")

    with pytest.raises(Exception, match="cannot trace this"):
        export_member_onnx(Broken(), tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", ["dcnv2", "wukong", "rankmixer"])
def test_width_scaled_models_with_parallel_modules_export(name, tmp_path):
    """The paper's width scaling (K tables and interaction stacks) exports and matches torch."""
    from models_fixtures import SMALL
    from ttsrec.models import build_model

    torch.manual_seed(0)
    model = build_model(name, VOCAB_SIZES, **SMALL[name], num_modules=2).eval()
    session = ort_session(export_member_onnx(model, tmp_path / "model.onnx"))
    ids = wild_ids(32)
    with torch.no_grad():
        expected = model(oov_path(ids)).numpy()
    np.testing.assert_allclose(run_session(session, ids.numpy()), expected, rtol=0, atol=1e-5)
