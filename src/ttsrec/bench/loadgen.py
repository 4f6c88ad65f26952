"""Load generators of the bench: requests encoded once per batch, then sent as bytes.

Each batch becomes a serialized `ModelInferRequest` or a binary HTTP body before the clock starts:

- `grpc_sender(...)`: blocking calls on one raw gRPC channel, safe from many threads (the lightest path);
- `async_sender(...)`: a coroutine on a raw `grpc.aio` channel or aiohttp, many requests in flight from
  one thread;
- `grpc_payload_sender` / `async_payload_sender`: the same for requests already built (raw models:
  `grpc_raw_infer_request`, `http_raw_infer_body`);
- `decode_answer` reads an answer when a caller needs it.

Failures come out as the client's errors (`ttsrec.client.errors.translate`).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from ttsrec.client.errors import ClientError, translate
from ttsrec.client.utils import DEFAULT_TIMEOUT_S, deadline_us, grpc_channel_args, normalise_url

GRPC_INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
HTTP_HEADER_LENGTH = "Inference-Header-Content-Length"
"""Triton's binary-tensor extension: the JSON part's length; the raw tensors follow it in the body."""


def _raw_ids(ids: np.ndarray) -> bytes:
    return np.ascontiguousarray(ids, dtype="<i8").tobytes()


def grpc_infer_request(model: str, input_name: str, ids: np.ndarray, outputs: Sequence[str],
                       timeout_s: float = DEFAULT_TIMEOUT_S) -> bytes:
    """A serialized `ModelInferRequest` (INT64 `ids`, raw contents, Triton `timeout` in µs): built once and
    sent as bytes many times, so a load generator does no protobuf or numpy work per request."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    request.inputs.add(name=input_name, datatype="INT64", shape=list(ids.shape))
    request.raw_input_contents.append(_raw_ids(ids))
    for name in outputs:
        request.outputs.add(name=name)
    request.parameters["timeout"].int64_param = deadline_us(timeout_s)
    return request.SerializeToString()


def grpc_raw_infer_request(model: str, tensors: Sequence[tuple[str, str, bytes]], rows: int,
                           outputs: Sequence[str], timeout_s: float = DEFAULT_TIMEOUT_S) -> bytes:
    """`grpc_infer_request` for a raw model: (input name, datatype, payload in wire layout) per input, each
    [rows, 1] (`ttsrec.client.raw.RawColumns.payloads`)."""
    from tritonclient.grpc import service_pb2

    request = service_pb2.ModelInferRequest(model_name=model)
    for name, datatype, payload in tensors:
        request.inputs.add(name=name, datatype=datatype, shape=[rows, 1])
        request.raw_input_contents.append(payload)
    for name in outputs:
        request.outputs.add(name=name)
    request.parameters["timeout"].int64_param = deadline_us(timeout_s)
    return request.SerializeToString()


def http_infer_body(input_name: str, ids: np.ndarray, outputs: Sequence[str],
                    timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[bytes, dict[str, str]]:
    """An HTTP/REST infer body (JSON header + binary `ids`) and its headers, built once per batch."""
    data = _raw_ids(ids)
    header = json.dumps({
        "inputs": [{"name": input_name, "shape": list(ids.shape), "datatype": "INT64",
                    "parameters": {"binary_data_size": len(data)}}],
        "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
        "parameters": {"timeout": deadline_us(timeout_s)},
    }, separators=(",", ":")).encode()
    # identity: aiohttp would otherwise ask for gzip, and Triton would spend its CPU compressing answers
    return header + data, {HTTP_HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream",
                           "Accept-Encoding": "identity"}


def http_raw_infer_body(tensors: Sequence[tuple[str, str, bytes]], rows: int, outputs: Sequence[str],
                        timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[bytes, dict[str, str]]:
    """`http_infer_body` for a raw model: (input name, datatype, payload in wire layout) per input, each
    [rows, 1]; Triton's binary extension takes BYTES in the same length-prefixed layout as gRPC."""
    header = json.dumps({
        "inputs": [{"name": name, "shape": [rows, 1], "datatype": datatype,
                    "parameters": {"binary_data_size": len(payload)}} for name, datatype, payload in tensors],
        "outputs": [{"name": name, "parameters": {"binary_data": True}} for name in outputs],
        "parameters": {"timeout": deadline_us(timeout_s)},
    }, separators=(",", ":")).encode()
    body = b"".join([header, *(payload for _, _, payload in tensors)])
    return body, {HTTP_HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream",
                  "Accept-Encoding": "identity"}


def decode_answer(protocol: str, answer: Any) -> dict[str, np.ndarray]:
    """An `async_sender` answer as {output: array}: gRPC's serialized `ModelInferResponse`, or HTTP's
    (body, JSON header length) pair. Not done in the hot loop: the bench only needs the status."""
    from tritonclient.utils import triton_to_np_dtype

    if protocol == "grpc":
        from tritonclient.grpc import service_pb2

        response = service_pb2.ModelInferResponse.FromString(answer)
        return {out.name: np.frombuffer(raw, triton_to_np_dtype(out.datatype)).reshape(tuple(out.shape))
                for out, raw in zip(response.outputs, response.raw_output_contents, strict=True)}
    body, length = answer
    header, offset, result = json.loads(body[:length] if length else body), length, {}
    for out in header.get("outputs", []):
        dtype = triton_to_np_dtype(out["datatype"])
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is None:
            result[out["name"]] = np.asarray(out["data"], dtype).reshape(out["shape"])
            continue
        result[out["name"]] = np.frombuffer(body[offset:offset + size], dtype).reshape(out["shape"])
        offset += size
    return result


def grpc_sender(url: str, model: str, input_name: str, outputs: Sequence[str], batches: Sequence[np.ndarray],
                timeout_s: float = DEFAULT_TIMEOUT_S) -> tuple[Callable[[int], bytes], Callable[[], None]]:
    """(`send(k)`, `close()`): blocking calls on one raw gRPC channel, safe from many threads.

    The lightest Python gRPC path measured (docs/bench.md, "Agreement with perf_analyzer"): the calling
    thread waits in gRPC's C core with the GIL released, with no asyncio loop and no poller-thread handoff
    (grpc.aio's) per answer. Each batch is a serialized `ModelInferRequest` built once; `send(k)` sends batch
    `k % len(batches)` with the deadline, returns the undecoded answer (`decode_answer`) and raises
    `translate`d errors (gRPC carries failures in its status).
    """
    url = normalise_url(url, "grpc")
    if not batches:
        raise ClientError("no request batches to send", url=url, model=model)
    payloads = [grpc_infer_request(model, input_name, b, outputs, timeout_s) for b in batches]
    return grpc_payload_sender(url, model, payloads, timeout_s)


def grpc_payload_sender(url: str, model: str, payloads: Sequence[bytes], timeout_s: float = DEFAULT_TIMEOUT_S
                        ) -> tuple[Callable[[int], bytes], Callable[[], None]]:
    """`grpc_sender` for requests already serialized (`grpc_infer_request`, `grpc_raw_infer_request`)."""
    import grpc

    url = normalise_url(url, "grpc")
    if not payloads:
        raise ClientError("no request batches to send", url=url, model=model)
    channel = grpc.insecure_channel(url, options=grpc_channel_args())
    call, count = channel.unary_unary(GRPC_INFER_METHOD), len(payloads)  # no (de)serializers: bytes

    def send(k: int) -> bytes:
        try:
            return call(payloads[k % count], timeout=timeout_s)
        except Exception as err:
            raise translate(err, url=url, model=model, protocol="grpc", timeout_s=timeout_s) from err

    return send, channel.close


async def async_sender(url: str, protocol: str, model: str, input_name: str, outputs: tuple[str, ...],
                       batches: Sequence[np.ndarray], timeout_s: float = DEFAULT_TIMEOUT_S,
                       ) -> tuple[Callable[[int], Awaitable[Any]], Callable[[], Awaitable[None]]]:
    """(`send(k)`, `close()`) on an asyncio connection bound to the running loop, for load generators.

    Each batch is encoded once, before the clock starts: a serialized `ModelInferRequest` sent over a
    raw `grpc.aio` channel (no per-request protobuf building, numpy conversion or response parsing), or a
    pre-built binary HTTP body posted with aiohttp. `send(k)` sends batch `k % len(batches)` with the
    deadline (Triton's `timeout` and the client's own), returns the undecoded answer (`decode_answer`),
    and raises `translate`d errors: gRPC carries failures in its status, HTTP in a non-200 reply.
    """
    url = normalise_url(url, protocol)
    if not batches:
        raise ClientError("no request batches to send", url=url, model=model)
    if protocol == "grpc":
        payloads: list[Any] = [grpc_infer_request(model, input_name, b, outputs, timeout_s) for b in batches]
    else:
        payloads = [http_infer_body(input_name, b, outputs, timeout_s) for b in batches]
    return await async_payload_sender(url, protocol, model, payloads, timeout_s)


async def async_payload_sender(url: str, protocol: str, model: str, payloads: Sequence[Any],
                               timeout_s: float = DEFAULT_TIMEOUT_S,
                               ) -> tuple[Callable[[int], Awaitable[Any]], Callable[[], Awaitable[None]]]:
    """`async_sender` for requests already built: serialized `ModelInferRequest`s for gRPC
    (`grpc_infer_request`, `grpc_raw_infer_request`), (body, headers) pairs for HTTP (`http_infer_body`,
    `http_raw_infer_body`)."""
    url = normalise_url(url, protocol)
    if not payloads:
        raise ClientError("no request batches to send", url=url, model=model)
    where = {"url": url, "model": model, "protocol": protocol, "timeout_s": timeout_s}
    if protocol == "grpc":
        import grpc

        channel = grpc.aio.insecure_channel(url, options=grpc_channel_args())
        call = channel.unary_unary(GRPC_INFER_METHOD)  # no (de)serializers: bytes in, bytes out
        count = len(payloads)

        async def send_grpc(k: int) -> bytes:
            try:
                return await call(payloads[k % count], timeout=timeout_s)
            except Exception as err:
                raise translate(err, **where) from err

        return send_grpc, channel.close

    import aiohttp
    from tritonclient.utils import InferenceServerException

    bodies = list(payloads)
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1024),
                                    timeout=aiohttp.ClientTimeout(total=timeout_s), auto_decompress=False)
    endpoint, count = f"http://{url}/v2/models/{model}/infer", len(bodies)

    async def send_http(k: int) -> tuple[bytes, int]:
        body, headers = bodies[k % count]
        try:
            async with session.post(endpoint, data=body, headers=headers) as reply:
                raw = await reply.read()
                if reply.status != 200:
                    raise InferenceServerException(_http_error(raw), status=str(reply.status))
                return raw, int(reply.headers.get(HTTP_HEADER_LENGTH, 0))
        except Exception as err:
            raise translate(err, **where) from err

    return send_http, session.close


def _http_error(raw: bytes) -> str:
    """Triton's `{"error": ...}` reply text (or the raw reply when it is not that JSON)."""
    try:
        return str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace")[:200] or "empty reply"
