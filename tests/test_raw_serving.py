"""`tts-export --raw-inputs`: raw records in, the encoding inside the served graph.

Fast: the export's raw models, configs and manifest (both flavours), the gate's rows, the client's raw
layout and checks. Slow (one real tritonserver, python flavour): raw_fused_mM == fused_mM and
raw_ensemble_mM == ensemble_mM bit for bit on the criteo test split's raw rows over gRPC and HTTP, bad
raw input answered with an error naming the field while the server stays up, and the client refusing
bad records before sending.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as pb
from tritonclient.utils import InferenceServerException, serialize_byte_tensor

from serve_fixtures import MAX_BATCH, RepoSpec, export
from ttsrec.client import Client, ClientError
from ttsrec.client.model_info import ModelInfo
from ttsrec.client.raw import raw_columns, serialize_strings
from ttsrec.data.feature_map import FeatureMap
from ttsrec.data.prepared import PreparedData
from ttsrec.errors import UserError
from ttsrec.export import raw
from ttsrec.export.encode_graph import build_encode_graph
from ttsrec.export.encode_parity import check_encode
from ttsrec.export.parity import ParityError
from ttsrec.export.writer import ExportConfig
from ttsrec.repository import naming
from ttsrec.repository.config import get_parameters, read_config
from ttsrec.serve import TritonServer

M_LIST = [1, 4]
PROTOCOLS = ["grpc", "http"]
REPO = RepoSpec("raw", options={"m_list": M_LIST, "raw_inputs": True, "fused_instance_count": 1})
"""Python flavour, one instance per fused graph (the machine has 2 cores)."""


@pytest.fixture(scope="module")
def test_rows(prepared_dir: Path) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The criteo test split's first 300 raw rows as records (half with text values as in the TSV, half
    with numbers and None as a dataframe gives them) and their ids from test/ids.npy."""
    fmap = FeatureMap.load(prepared_dir)
    found, note = raw.raw_test_rows(fmap, prepared_dir, 300)
    assert found is not None, note
    frame, ids = found
    records = frame.to_dicts()
    for k, record in enumerate(records):
        if k % 2:
            record.update({c: "" if v is None or (isinstance(v, float) and math.isnan(v)) else
                           (str(int(v)) if isinstance(v, float) and v.is_integer() else str(v))
                           for c, v in record.items()})
    return records, ids


def _config_json(path: Path) -> dict[str, Any]:
    return json_format.MessageToDict(read_config(path), preserving_proto_field_name=True)


# -- export: models, configs, manifest (no server) -----------------------------------------------------


def test_export_writes_and_records_raw_models(repo: Path, prepared_dir: Path) -> None:
    fmap = FeatureMap.load(prepared_dir)
    manifest = json.loads((repo / naming.MANIFEST_FILE).read_text())
    section = manifest["raw"]
    inputs = section["encode"]["inputs"]
    assert [i["name"] for i in inputs] == fmap.field_names, "inputs named after the fields"
    assert [i["fields"] for i in inputs] == [[n] for n in fmap.field_names]
    assert {i["name"]: i["triton_dtype"] for i in inputs} == {
        f.name: "TYPE_FP32" if f.kind == "numeric" else "TYPE_STRING" for f in fmap.fields}
    assert [e["name"] for e in section["ensembles"]] == [naming.raw_ensemble_name(m) for m in M_LIST]
    assert [e["name"] for e in section["fused"]] == [naming.raw_fused_name(m) for m in M_LIST]
    assert all(f["parity"]["exact"] and f["parity"]["max_abs_diff"] == 0 for f in section["fused"])
    assert [(p["rows"], p["differing_ids"]) for p in section["encode"]["parity"]] == [("test", 0),
                                                                                      ("vocabulary", 0)]
    assert section["rows"]["test_rows"].startswith(f"the first {MAX_BATCH} test rows, read again")
    for entry in section["ensembles"] + section["fused"]:
        ids_entry = next(e for e in manifest["ensembles"] + manifest["fused"]
                         if e["name"] == entry["ids_model"])
        assert entry["members"] == ids_entry["members"]
    assert any(f.startswith(naming.raw_fused_name(4) + "/") for f in manifest["files"]), "hashed files"

    fused = read_config(repo / naming.raw_fused_name(4))
    assert fused.backend == "python" and fused.max_batch_size == MAX_BATCH
    assert [(t.name, t.data_type, list(t.dims)) for t in fused.input] == [
        (f.name, pb.TYPE_FP32 if f.kind == "numeric" else pb.TYPE_STRING, [1]) for f in fmap.fields]
    params = get_parameters(fused)
    assert params["inputs"] == "raw" and params["ids_model"] == "fused_m4"
    assert params["feature_map_hash"] == fmap.hash and int(params["max_string_bytes"]) == raw.MAX_STRING_BYTES
    assert fused.parameters["max_string_bytes"].string_value == str(raw.MAX_STRING_BYTES)
    assert (repo / naming.raw_fused_name(4) / naming.VERSION / "model.py").is_file()

    ensemble = read_config(repo / naming.raw_ensemble_name(4))
    steps = [s.model_name for s in ensemble.ensemble_scheduling.step]
    ids_steps = [s.model_name for s in read_config(repo / "ensemble_m4").ensemble_scheduling.step]
    assert steps == [naming.RAW_ENCODE, *ids_steps], "encode, then the id ensemble's own members and merge"
    encode_step = ensemble.ensemble_scheduling.step[0]
    assert dict(encode_step.input_map) == {n: n for n in fmap.field_names}
    assert dict(encode_step.output_map) == {naming.FEAT_IDS: naming.FEAT_IDS}
    assert not ensemble.HasField("dynamic_batching")

    info = ModelInfo.from_config(_config_json(repo / naming.raw_ensemble_name(4)))
    assert info.is_raw and [f.name for f in info.raw_inputs] == fmap.field_names
    assert len(info.members) == 4 and info.max_string_bytes == raw.MAX_STRING_BYTES
    assert not ModelInfo.from_config(_config_json(repo / "ensemble_m4")).is_raw


def test_raw_fused_graph_is_the_encode_graph_in_front_of_fused(repo: Path) -> None:
    raw_model = onnx.load(repo / naming.raw_fused_name(4) / "1" / "model.onnx")
    ids_model = onnx.load(repo / "fused_m4" / "1" / "model.onnx")
    encode = onnx.load(repo / naming.RAW_ENCODE / "1" / "model.onnx")
    assert [i.name for i in raw_model.graph.input] == [i.name for i in encode.graph.input]
    assert [o.name for o in raw_model.graph.output] == [o.name for o in ids_model.graph.output]
    assert len(raw_model.graph.node) == len(encode.graph.node) + len(ids_model.graph.node)
    onnx.checker.check_model(raw_model)


def test_onnxruntime_flavour(member_checkpoints: list[Path], prepared_dir: Path, tmp_path: Path) -> None:
    out = export(member_checkpoints[:2], tmp_path / "ort", prepared_dir, m_list=[2], raw_inputs=True,
                 backend="onnxruntime")
    for name in (naming.RAW_ENCODE, naming.raw_fused_name(2)):
        cfg = read_config(out / name)
        assert cfg.platform == "onnxruntime_onnx" and cfg.backend == "onnxruntime"
        assert "max_string_bytes" not in cfg.parameters
        assert {t.data_type for t in cfg.input} == {pb.TYPE_FP32, pb.TYPE_STRING}
        assert not (out / name / "1" / "model.py").exists()
    assert read_config(out / naming.raw_ensemble_name(2)).platform == "ensemble"
    assert json.loads((out / naming.MANIFEST_FILE).read_text())["raw"]["max_string_bytes_checked_by"] is None


def test_raw_inputs_refused_with_shards() -> None:
    with pytest.raises(UserError, match="--raw-inputs does not apply to --shards"):
        ExportConfig(raw_inputs=True, shards=2).validate()


def test_gate_rows_test_split_then_vocabulary(prepared_dir: Path, tmp_path: Path) -> None:
    fmap = FeatureMap.load(prepared_dir)
    plan = raw.plan(fmap, prepared_dir, 64)
    assert [r.name for r in plan.rows] == ["test", "vocabulary"]
    np.testing.assert_array_equal(plan.rows[0].ids, PreparedData(prepared_dir).ids("test")[:64])
    vocab = plan.rows[1]
    for j, f in enumerate(fmap.fields):  # every vocabulary id appears, OOV and missing ones too
        assert set(range(1, f.vocab_size)) <= set(vocab.ids[:, j].tolist()), f.name
        assert 0 in vocab.ids[:, j] or f.kind == "numeric", f.name
    # the raw input file gone: the vocabulary rows still gate, and the manifest says why
    moved = tmp_path / "data"
    shutil.copytree(prepared_dir, moved)
    summary = json.loads((moved / "summary.json").read_text())
    (moved / "summary.json").write_text(json.dumps({**summary, "inputs": [str(tmp_path / "gone.tsv")]}))
    plan = raw.plan(fmap, moved, 64)
    assert [r.name for r in plan.rows] == ["vocabulary"] and "is gone" in plan.notes["test_rows"]
    assert len(plan.model_rows(64)) == 64


def test_gate_names_the_field_that_differs(prepared_dir: Path) -> None:
    fmap = FeatureMap.load(prepared_dir)
    plan = raw.plan(fmap, prepared_dir, 16)
    rows = plan.rows[0]
    wrong = raw.RawRows(rows.name, rows.feed, rows.ids.copy())
    j = fmap.field_names.index("C3")
    wrong.ids[5, j] += 1
    with pytest.raises(ParityError, match=r"1 ids differ .* first field C3 \(none\) at row 5"):
        check_encode(plan.graph, plan.graph.session(), wrong)


# -- the client's raw layout (no server) ---------------------------------------------------------------


def test_serialize_strings_is_tritons_bytes_layout() -> None:
    columns = [["a", "bc", ""], [], ["日本", "x\x00y", "\x00"], ["z" * 300], [""], ["é", "ü"]]
    for column, got in zip(columns, serialize_strings(columns), strict=True):
        expected = serialize_byte_tensor(np.array(column, dtype=object)).item() if column else b""
        assert got == expected, column


def test_client_layout_and_checks_name_the_field(repo: Path, test_rows) -> None:
    info = ModelInfo.from_config(_config_json(repo / naming.raw_fused_name(1)))
    records, _ = test_rows
    good = records[:3]
    columns = raw_columns(info.raw_inputs, good, info.max_string_bytes)
    graph = build_encode_graph(FeatureMap.load(repo))
    assert [f.name for f in columns.fields] == graph.input_names
    assert columns.slice(1, 3).rows == 2
    cases = {
        "is missing: every record must carry every column": ("C5", ...),
        "has list value": ("C2", ["a"]),
        "not a number": ("I3", "abc"),
        "has bool value": ("I1", True),
        "has bytes value": ("C7", b"x"),
        "longer than the model's limit of 1024 bytes": ("C9", "é" * 600),
        "cannot be UTF-8 encoded": ("C10", "a\ud800"),
    }
    for message, (column, value) in cases.items():
        bad = dict(good[1])
        if value is ...:
            del bad[column]
        else:
            bad[column] = value
        where = rf"record 1: raw column '{column}' \(input {column}\) "
        with pytest.raises(ClientError, match=where + ".*" + message):
            raw_columns(info.raw_inputs, [good[0], bad], info.max_string_bytes)
    # numbers in string columns are written as RecordEncoder writes them; NaN and None are missing
    mixed = dict(good[0], C1=3.0, C2=np.int64(7), C3=float("nan"), C4=None, I1=np.float32(2.5), I2=None)
    cols = dict(zip([f.name for f in info.raw_inputs], raw_columns(info.raw_inputs, [mixed]).values,
                    strict=True))
    assert (cols["C1"], cols["C2"], cols["C3"], cols["C4"]) == (["3"], ["7"], [""], [""])
    assert cols["I1"][0] == 2.5 and math.isnan(cols["I2"][0])


# -- a real server (conftest.py's `server`) ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_served_raw_equals_served_ids_exactly(server: TritonServer, repo: Path, test_rows,
                                              protocol: str) -> None:
    """On the test split's raw rows: raw_fused_mM == fused_mM and raw_ensemble_mM == ensemble_mM, bit for
    bit, at batch 1, 7, the max batch and above it (split by the client); client-side encoding agrees."""
    records, ids = test_rows
    url = server.url(protocol)
    for m in M_LIST:
        for raw_name, ids_name in ((naming.raw_fused_name(m), naming.fused_name(m)),
                                   (naming.raw_ensemble_name(m), naming.ensemble_name(m))):
            with Client(url, protocol, raw_name) as raw_client, Client(url, protocol, ids_name,
                                                                       feature_map=repo) as ids_client:
                for lo, hi in ((0, 1), (1, 8), (8, 8 + MAX_BATCH), (0, len(records))):
                    prob, logit = raw_client.predict_records(records[lo:hi])
                    want_prob, want_logit = ids_client.predict(ids[lo:hi])
                    np.testing.assert_array_equal(logit, want_logit, err_msg=f"{raw_name} rows {lo}:{hi}")
                    np.testing.assert_array_equal(prob, want_prob, err_msg=f"{raw_name} rows {lo}:{hi}")
                local = ids_client.predict_records(records[:50])  # today's client-side encoding
                np.testing.assert_array_equal(raw_client.predict_records(records[:50])[1], local[1])
    print(f"{protocol}: raw == ids exactly on {len(records)} test rows, M={M_LIST}")


def _tensors(module: Any, feed: dict[str, np.ndarray], change: dict[str, np.ndarray | None]) -> list[Any]:
    out = []
    for name, array in feed.items():
        if name in change:
            if change[name] is None:
                continue
            array = change[name]
        datatype = "BYTES" if array.dtype == object else "FP32"
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        out.append(tensor)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_bad_raw_input_names_the_field_and_the_server_stays_up(server: TritonServer, repo: Path, test_rows,
                                                                protocol: str) -> None:
    """Sent past the client's checks (plain tritonclient): every bad request gets an error naming the field,
    on raw_fused and raw_ensemble alike; the same server answers good requests afterwards."""
    from ttsrec.export.encode_feed import raw_feed

    graph = build_encode_graph(FeatureMap.load(repo))
    records, _ = test_rows
    feed = raw_feed(graph, records[:4], check=False)
    long, not_utf8 = feed["C7"].copy(), feed["C8"].copy()
    long[2, 0] = "x" * 5000
    not_utf8[1, 0] = b"\xff\xfe"
    cases = {  # field -> (replacement tensor, words the answer must hold besides the field)
        "C5": (None, "missing required input"),
        "I3": (np.array([["abc"]] * 4, dtype=object), "data-type is 'BYTES'"),  # non-numeric text
        "C2": (np.zeros((4, 1), np.float32), "data-type is 'FP32'"),  # wrong dtype
        "C7": (long, "5000 bytes is longer than the limit of 1024"),
        "C8": (not_utf8, "not valid UTF-8"),
    }
    module = grpcclient if protocol == "grpc" else httpclient
    seen = []
    with module.InferenceServerClient(server.url(protocol)) as client:
        for model in (naming.raw_fused_name(1), naming.raw_ensemble_name(4)):
            for field, (tensor, words) in cases.items():
                with pytest.raises(InferenceServerException) as err:
                    client.infer(model, _tensors(module, feed, {field: tensor}))
                message = err.value.message()
                assert f"'{field}'" in message and words in message, (model, field, message)
                seen.append(f"{model} {field}: {message[:90]}")
            assert client.is_server_ready() and client.is_model_ready(model)
            good = client.infer(model, _tensors(module, feed, {}))
            assert np.isfinite(good.as_numpy("logit")).all()
    if protocol == "http":  # JSON text for an FP32 input: Triton's own parser refuses it (without the name)
        body = {"inputs": [{"name": name, "shape": [1, 1],
                            "datatype": "BYTES" if a.dtype == object else "FP32",
                            "data": ["abc"] if name == "I3" else
                            [str(a[0, 0]) if a.dtype == object else 0.0]} for name, a in feed.items()]}
        request = urllib.request.Request(f"http://{server.http_url}/v2/models/{naming.raw_fused_name(1)}/infer",
                                         data=json.dumps(body).encode(), method="POST")
        with pytest.raises(urllib.error.HTTPError) as http_err:
            urllib.request.urlopen(request, timeout=30)
        assert 400 <= http_err.value.code < 600
        seen.append(f"JSON text for I3: {http_err.value.code} {http_err.value.read()[:80]!r}")
    assert server.is_alive()
    print("\n".join(seen))


@pytest.mark.slow
def test_client_refuses_bad_records_before_sending(server: TritonServer, test_rows) -> None:
    records, _ = test_rows
    model = naming.raw_fused_name(1)
    with Client(server.grpc_url, "grpc", model) as client:
        before = client.transport.inference_statistics(model)["model_stats"][0]["inference_count"]
        absent = {k: v for k, v in records[0].items() if k != "C4"}
        for bad, words in ((absent, "raw column 'C4' (input C4) is missing"),
                           ({**records[0], "I2": "twelve"},
                            "raw column 'I2' (input I2) has str value 'twelve'"),
                           ({**records[0], "C1": {"x": 1}}, "raw column 'C1' (input C1) has dict value")):
            with pytest.raises(ClientError, match=re.escape(words)):
                client.predict_records([records[1], bad])
        with pytest.raises(ClientError, match="takes raw records"):
            client.predict(np.zeros((1, 39), np.int64))
        after = client.transport.inference_statistics(model)["model_stats"][0]["inference_count"]
        assert int(after or 0) == int(before or 0), "nothing was sent"
        assert client.predict_records(records[:2])[0].shape == (2,)

