"""The bench's pre-encoded requests, no server: what goes on the wire is what tritonclient would send,
answers decode back to arrays, raw gRPC errors land in the two families, and the load closes its channel."""

from __future__ import annotations

import asyncio
import json

import grpc
import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from ttsrec.bench.load import ThreadLoad
from ttsrec.bench.loadgen import (
    HTTP_HEADER_LENGTH,
    async_sender,
    decode_answer,
    grpc_infer_request,
    grpc_sender,
    http_infer_body,
)
from ttsrec.client import ClientError, ClientRuntimeError, DeadlineExceededError, ServerUnavailableError
from ttsrec.client.errors import translate
from ttsrec.errors import RuntimeFailure, UserError

IDS = np.arange(12, dtype=np.int64).reshape(3, 4)


def test_grpc_request_is_built_once_as_tritonclient_would_send_it() -> None:
    raw = grpc_infer_request("fused_m1", "feat_ids", IDS.astype(np.int32), ("logit", "prob"), timeout_s=2.5)
    request = service_pb2.ModelInferRequest.FromString(raw)
    assert request.model_name == "fused_m1"
    (tensor,) = request.inputs
    assert (tensor.name, tensor.datatype, list(tensor.shape)) == ("feat_ids", "INT64", [3, 4])
    np.testing.assert_array_equal(np.frombuffer(request.raw_input_contents[0], np.int64).reshape(3, 4), IDS)
    assert [o.name for o in request.outputs] == ["logit", "prob"]
    assert request.parameters["timeout"].int64_param == 2_500_000  # µs: Triton's request deadline


def test_http_body_is_json_header_then_binary_ids() -> None:
    body, headers = http_infer_body("feat_ids", IDS, ("logit",), timeout_s=0.5)
    length = int(headers[HTTP_HEADER_LENGTH])
    header = json.loads(body[:length])
    assert header["inputs"] == [{"name": "feat_ids", "shape": [3, 4], "datatype": "INT64",
                                 "parameters": {"binary_data_size": IDS.nbytes}}]
    assert header["outputs"] == [{"name": "logit", "parameters": {"binary_data": True}}]
    assert header["parameters"] == {"timeout": 500_000}
    assert body[length:] == IDS.tobytes()
    assert headers["Accept-Encoding"] == "identity"  # no gzip work on the server's side


def test_answers_decode_for_both_protocols() -> None:
    logit = np.array([[0.5], [-1.0], [2.0]], np.float32)
    response = service_pb2.ModelInferResponse(model_name="m")
    response.outputs.add(name="logit", datatype="FP32", shape=[3, 1])
    response.raw_output_contents.append(logit.tobytes())
    np.testing.assert_array_equal(decode_answer("grpc", response.SerializeToString())["logit"], logit)

    header = json.dumps({"outputs": [
        {"name": "logit", "datatype": "FP32", "shape": [3, 1], "parameters": {"binary_data_size": 12}},
        {"name": "count", "datatype": "INT32", "shape": [1], "data": [4]}]}).encode()
    out = decode_answer("http", (header + logit.tobytes(), len(header)))
    np.testing.assert_array_equal(out["logit"], logit)
    assert out["count"].tolist() == [4]


@pytest.mark.parametrize(("code", "details", "family"), [
    (grpc.StatusCode.NOT_FOUND, "Request for unknown model: 'x' is not found", ClientError),
    (grpc.StatusCode.INVALID_ARGUMENT, "unexpected shape for input 'feat_ids'", ClientError),
    (grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses", ServerUnavailableError),
    (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", DeadlineExceededError),
    (grpc.StatusCode.INTERNAL, "onnxruntime ran out of memory", ClientRuntimeError),
])
def test_raw_grpc_errors_land_in_their_family(code: grpc.StatusCode, details: str, family: type) -> None:
    err = translate(grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details),
                    url="h:1", model="m", protocol="grpc", timeout_s=2)
    assert type(err) is family and details in str(err) and "[grpc]" in str(err)
    assert isinstance(err, UserError) != isinstance(err, RuntimeFailure)


def test_unreachable_server_is_a_runtime_failure_on_both_paths() -> None:
    send, close = grpc_sender("127.0.0.1:1", "m", "feat_ids", ("logit",), [IDS], timeout_s=5)
    try:
        with pytest.raises(ServerUnavailableError, match=r"m at 127\.0\.0\.1:1: server unreachable"):
            send(0)
    finally:
        close()

    async def once(protocol: str) -> None:
        send, close = await async_sender("127.0.0.1:1", protocol, "m", "feat_ids", ("logit",), [IDS], 5)
        try:
            await send(0)
        finally:
            await close()

    for protocol in ("grpc", "http"):
        with pytest.raises(ServerUnavailableError, match=rf"\[{protocol}\]"):
            asyncio.run(once(protocol))


def test_no_batches_is_bad_input() -> None:
    with pytest.raises(ClientError, match="no request batches"):
        grpc_sender("127.0.0.1:1", "m", "feat_ids", ("logit",), [])


def test_thread_load_closes_its_connection_once_stopped() -> None:
    closed: list[int] = []
    load = ThreadLoad(lambda k: None, close=lambda: closed.append(len(load._threads)))
    load.start(3)
    load.stop()
    assert closed == [0]  # after every worker has joined
