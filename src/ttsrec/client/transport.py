"""The one Triton transport of ttsrec: `Client`, `ShardedClient`, `tts-serve --check` and the bench use it.

What it offers (everything else builds on these):

- `PROTOCOLS` (grpc, http), `check_protocol`, `normalise_url` (drops `grpc://`, `http://`).
- `Transport(url, protocol, timeout_s)`: one server. gRPC: one thread-safe client with keepalive
  (a dead peer is noticed within seconds); HTTP: one client per thread (gevent is not thread-safe).
  - `model_config(model)` (JSON, unwrapped), `model_metadata(model)`, `server_models()` (READY names),
    `inference_statistics(model="")`, `is_ready(model=None)`;
  - `infer(model, input_name, ids, outputs, timeout_s=None)`: int64 ids in, {output: array} out. The
    deadline goes to the server as Triton's request `timeout` (µs; a queue policy rejects a request
    that waited past it) and bounds the client's wait (`client_timeout` / the HTTP network timeout).
    Input and requested-output objects are built once per thread and shape, then reused.
- `config_parameters(config)`: the `ttsrec.*` string parameters of a config (export id, members...).
- `translate(err, url=, model=, protocol=, timeout_s=)`: any tritonclient/gRPC/socket error as one of
  the two families (`ttsrec.client.errors`): bad input -> `ClientError` (exit 2); unavailable, deadline,
  queue rejection, other server faults -> `ClientRuntimeError` subclasses (exit 1).
- load generators (the bench): requests encoded once per batch, a serialized `ModelInferRequest` or a
  binary HTTP body, then sent as bytes: `grpc_sender(...)` (blocking, one raw channel, many threads: the
  lightest path) and `async_sender(...)` (a coroutine on a raw `grpc.aio` channel or aiohttp, many
  requests in flight from one thread); `grpc_payload_sender` / `async_payload_sender` send requests already
  built (raw models: `grpc_raw_infer_request`, `http_raw_infer_body`); `decode_answer` reads an answer when a
  caller needs it.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from ttsrec.client.errors import (
    ClientError,
    ClientRuntimeError,
    DeadlineExceededError,
    RequestRejectedError,
    ServerUnavailableError,
)

PROTOCOLS = ("grpc", "http")
DEFAULT_TIMEOUT_S = 30.0
PARAMETER_PREFIX = "ttsrec."
KEEPALIVE_MS = 10_000
"""gRPC keepalive ping interval while calls are in flight; a peer silent for `KEEPALIVE_TIMEOUT_MS`
after a ping is dropped (UNAVAILABLE) instead of holding the call until its deadline."""
KEEPALIVE_TIMEOUT_MS = 5_000
MAX_RECONNECT_BACKOFF_MS = 1_000
"""gRPC's default reconnect backoff grows to 120 s: a restarted shard would stay 'unavailable' that long."""

_BAD_INPUT_WORDS = ("unknown model", "is not found", "unexpected shape", "unexpected datatype",
                    "unexpected inference input", "unexpected inference output", "invalid argument",
                    "inconsistent", "byte size", "unable to find", "not supported")
_REJECTED_WORDS = ("exceeds maximum queue size", "request timeout expired", "timeout expired")
_DEADLINE_WORDS = ("deadline exceeded", "deadline", "timed out", "timeout")
_UNREACHABLE_WORDS = ("failed to connect", "connection refused", "name resolution", "no route to host",
                      "network is unreachable")
_UNAVAILABLE_WORDS = ("unavailable", "failed to connect", "connection refused", "connection reset",
                      "not healthy", "socket closed", "broken pipe", "server is not ready", "shutting down",
                      "name resolution", "no route to host", "network is unreachable", "end of stream")


def check_protocol(protocol: str) -> str:
    if protocol not in PROTOCOLS:
        raise ClientError(f"unknown protocol {protocol!r} (choose {' or '.join(PROTOCOLS)})")
    return protocol


def normalise_url(url: str, protocol: str) -> str:
    """`host:port` as tritonclient wants it; a scheme like `grpc://` or `http://` is dropped."""
    check_protocol(protocol)
    for scheme in ("grpc://", "http://", "https://"):
        url = url.removeprefix(scheme)
    url = url.rstrip("/")
    if not url:
        raise ClientError("empty server url")
    return url


def deadline_us(timeout_s: float) -> int:
    """Triton's request `timeout` field: microseconds, at least 1."""
    return max(1, int(timeout_s * 1e6))


def config_parameters(config: dict[str, Any]) -> dict[str, str]:
    """`ttsrec.*` parameters of a model config (JSON from either protocol), without the prefix."""
    config = config.get("config", config)
    params = config.get("parameters", {}) or {}
    return {key[len(PARAMETER_PREFIX):]: str(value.get("string_value", "")) if isinstance(value, dict)
            else str(value) for key, value in params.items() if key.startswith(PARAMETER_PREFIX)}


def grpc_channel_args() -> list[tuple[str, Any]]:
    """tritonclient's default channel options, plus keepalive while calls are in flight and a short
    reconnect backoff, so a dead peer fails fast and a restarted one is used again within a second."""
    from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE

    return [("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", KEEPALIVE_MS), ("grpc.keepalive_timeout_ms", KEEPALIVE_TIMEOUT_MS),
            ("grpc.keepalive_permit_without_calls", 0), ("grpc.http2.max_pings_without_data", 2),
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", MAX_RECONNECT_BACKOFF_MS)]


def _message(err: BaseException) -> str:
    if callable(getattr(err, "message", None)):  # tritonclient
        msg = err.message()
    elif callable(getattr(err, "details", None)):  # grpc.RpcError (the raw channel of `async_sender`)
        msg = err.details()
    else:
        msg = str(err)
    msg = (msg or "").strip()
    return msg.splitlines()[0] if msg else type(err).__name__


def _status(err: BaseException) -> str:
    if callable(getattr(err, "status", None)):
        return str(err.status() or "")
    code = err.code() if callable(getattr(err, "code", None)) else None
    return str(code or "")  # grpc.StatusCode.X -> "StatusCode.X", tritonclient's spelling


def translate(err: BaseException, *, url: str = "", model: str = "", protocol: str = "",
              timeout_s: float | None = None) -> ClientError | ClientRuntimeError:
    """Any failure of a call as one of the two client families, naming url, model and protocol."""
    if isinstance(err, ClientError | ClientRuntimeError):
        return err
    text, status = _message(err), _status(err)
    low, kind = text.lower(), type(err).__name__
    tag = f" [{protocol}]" if protocol else ""
    where = {"url": url, "model": model}
    if any(w in low for w in _REJECTED_WORDS):
        return RequestRejectedError(f"rejected by the server's queue policy ({text}){tag}", **where)
    if "DEADLINE_EXCEEDED" in status or "Timeout" in kind or any(w in low for w in _DEADLINE_WORDS):
        within = f"within {timeout_s:g}s " if timeout_s else ""
        return DeadlineExceededError(f"no answer {within}({text}){tag}", **where)
    if ("UNAVAILABLE" in status or status == "503" or isinstance(err, ConnectionError | OSError)
            or any(w in low for w in _UNAVAILABLE_WORDS)):
        what = "unreachable" if any(w in low for w in _UNREACHABLE_WORDS) else "unavailable"
        return ServerUnavailableError(f"server {what} ({text}){tag}", **where)
    if ("INVALID_ARGUMENT" in status or "NOT_FOUND" in status or status in ("400", "404")
            or any(w in low for w in _BAD_INPUT_WORDS)):
        return ClientError(f"{text}{tag}", **where)
    return ClientRuntimeError(f"{text}{tag}", **where)


def _module(protocol: str) -> Any:
    if protocol == "grpc":
        import tritonclient.grpc as grpcclient

        return grpcclient
    import tritonclient.http as httpclient

    return httpclient


def build_inputs(protocol: str, input_name: str, ids: np.ndarray) -> list[Any]:
    """One INT64 input tensor for `ids` (binary on HTTP)."""
    mod = _module(protocol)
    tensor = mod.InferInput(input_name, list(ids.shape), "INT64")
    if protocol == "grpc":
        tensor.set_data_from_numpy(ids)
    else:
        tensor.set_data_from_numpy(ids, binary_data=True)
    return [tensor]


def build_raw_input(protocol: str, name: str, datatype: str, rows: int, payload: bytes) -> Any:
    """One [rows, 1] input whose bytes are already in Triton's wire layout (`ttsrec.client.raw`): set as the
    tensor's raw contents, so tritonclient does not serialize BYTES element by element again."""
    mod = _module(protocol)
    tensor = mod.InferInput(name, [rows, 1], datatype)
    if protocol == "grpc" and hasattr(tensor, "_raw_content"):
        tensor._raw_content = payload
    elif protocol == "http" and hasattr(tensor, "_raw_data") and hasattr(tensor, "_parameters"):
        tensor._data = None
        tensor._raw_data = payload
        tensor._parameters["binary_data_size"] = len(payload)
    else:  # another tritonclient: its public (slower) path
        tensor.set_data_from_numpy(_decode_payload(datatype, rows, payload), **(
            {"binary_data": True} if protocol == "http" else {}))
    return tensor


def _decode_payload(datatype: str, rows: int, payload: bytes) -> np.ndarray:
    if datatype != "BYTES":
        return np.frombuffer(payload, dtype={"FP32": "<f4", "FP64": "<f8"}[datatype]).reshape(rows, 1)
    from tritonclient.utils import deserialize_bytes_tensor

    return deserialize_bytes_tensor(payload).reshape(rows, 1)


def build_outputs(protocol: str, outputs: Sequence[str]) -> list[Any]:
    mod = _module(protocol)
    if protocol == "grpc":
        return [mod.InferRequestedOutput(name) for name in outputs]
    return [mod.InferRequestedOutput(name, binary_data=True) for name in outputs]


class Transport:
    """Calls to one server over one protocol; every failure comes out through `translate`."""

    def __init__(self, url: str, protocol: str = "grpc", timeout_s: float = DEFAULT_TIMEOUT_S):
        self.url = normalise_url(url, protocol)
        self.protocol = protocol
        if not timeout_s > 0:
            raise ClientError(f"timeout must be > 0 seconds, got {timeout_s}")
        self.timeout_s = float(timeout_s)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[Any] = []
        self._outputs: dict[tuple[str, ...], list[Any]] = {}

    def __repr__(self) -> str:
        return f"Transport({self.url!r}, {self.protocol!r}, timeout_s={self.timeout_s:g})"

    # -- connection --------------------------------------------------------------------------

    def _client(self) -> Any:
        client = getattr(self._local, "client", None)
        if client is None:
            with self._lock:
                if self.protocol == "grpc" and self._clients:
                    client = self._clients[0]
                else:
                    client = self._new_client()
                    self._clients.append(client)
            self._local.client = client
        return client

    def _new_client(self) -> Any:
        mod = _module(self.protocol)
        if self.protocol == "grpc":
            return mod.InferenceServerClient(self.url, channel_args=grpc_channel_args())
        return mod.InferenceServerClient(self.url, connection_timeout=self.timeout_s,
                                         network_timeout=self.timeout_s)

    def _call(self, model: str, fn: Callable[[Any], Any], timeout_s: float | None = None) -> Any:
        try:
            return fn(self._client())
        except BaseException as err:  # tritonclient, grpc, gevent and socket errors alike
            if isinstance(err, KeyboardInterrupt | SystemExit | ClientError | ClientRuntimeError):
                raise
            if self.protocol == "http":  # a failed HTTP connection may be half-read: start afresh
                self._drop_thread_client()
            raise translate(err, url=self.url, model=model, protocol=self.protocol,
                            timeout_s=timeout_s or self.timeout_s) from err

    def _timeout_kw(self) -> dict[str, float]:
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}

    # -- metadata ----------------------------------------------------------------------------

    def model_config(self, model: str) -> dict[str, Any]:
        """The served model's config as JSON (the gRPC `config` wrapper removed)."""
        def call(client: Any) -> dict[str, Any]:
            if self.protocol == "grpc":
                return client.get_model_config(model, as_json=True, client_timeout=self.timeout_s)
            return client.get_model_config(model)

        config = self._call(model, call)
        return config.get("config", config)

    def model_metadata(self, model: str) -> dict[str, Any]:
        def call(client: Any) -> dict[str, Any]:
            if self.protocol == "grpc":
                return client.get_model_metadata(model, as_json=True, client_timeout=self.timeout_s)
            return client.get_model_metadata(model)

        return self._call(model, call)

    def server_models(self) -> set[str]:
        """Names of the models the server has loaded (READY)."""
        def call(client: Any) -> list[dict[str, Any]]:
            if self.protocol == "grpc":
                return client.get_model_repository_index(as_json=True,
                                                         client_timeout=self.timeout_s).get("models", [])
            return client.get_model_repository_index()

        return {m["name"] for m in self._call("", call) if m.get("state", "READY") == "READY"}

    def inference_statistics(self, model: str = "") -> dict[str, Any]:
        """Triton's statistics (all models when `model` is empty) as JSON, same shape for both protocols."""
        def call(client: Any) -> dict[str, Any]:
            if self.protocol == "grpc":
                return client.get_inference_statistics(model, as_json=True, client_timeout=self.timeout_s)
            return client.get_inference_statistics(model)

        return self._call(model, call)

    def is_ready(self, model: str | None = None) -> bool:
        try:
            if model is None:
                return bool(self._call("", lambda c: c.is_server_ready(**self._timeout_kw())))
            return bool(self._call(model, lambda c: c.is_model_ready(model, **self._timeout_kw())))
        except (ClientError, ClientRuntimeError):
            return False

    # -- inference ---------------------------------------------------------------------------

    def _inputs(self, input_name: str, ids: np.ndarray) -> list[Any]:
        """This thread's input object for this shape, data replaced (no per-request allocation)."""
        cache = getattr(self._local, "inputs", None)
        if cache is None:
            cache = self._local.inputs = {}
        key = (input_name, ids.shape)
        tensors = cache.get(key)
        if tensors is None:
            if len(cache) > 64:
                cache.clear()
            tensors = cache[key] = build_inputs(self.protocol, input_name, ids)
        elif self.protocol == "grpc":
            tensors[0].set_data_from_numpy(ids)
        else:
            tensors[0].set_data_from_numpy(ids, binary_data=True)
        return tensors

    def _requested(self, outputs: tuple[str, ...]) -> list[Any]:
        wanted = self._outputs.get(outputs)
        if wanted is None:
            wanted = self._outputs[outputs] = build_outputs(self.protocol, outputs)
        return wanted

    def infer(self, model: str, input_name: str, ids: np.ndarray, outputs: tuple[str, ...],
              timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """One request; `timeout_s` (default the transport's) is the deadline, sent to the server too."""
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        if limit <= 0:
            raise DeadlineExceededError("deadline already passed before the request was sent",
                                   url=self.url, model=model)
        outputs = tuple(outputs)

        def call(client: Any) -> dict[str, np.ndarray]:
            inputs = self._inputs(input_name, ids)
            wanted = self._requested(outputs)
            if self.protocol == "grpc":
                result = client.infer(model, inputs, outputs=wanted, timeout=deadline_us(limit),
                                      client_timeout=limit)
            else:
                result = client.infer(model, inputs, outputs=wanted, timeout=deadline_us(limit))
            return {name: result.as_numpy(name) for name in outputs}

        return self._call(model, call, limit)

    def infer_raw(self, model: str, tensors: Sequence[tuple[str, str, bytes]], rows: int,
                  outputs: tuple[str, ...], timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """One request to a raw model: `tensors` are (input name, datatype, payload in wire layout), each
        [rows, 1]; deadline as in `infer`."""
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        if limit <= 0:
            raise DeadlineExceededError("deadline already passed before the request was sent",
                                        url=self.url, model=model)
        outputs = tuple(outputs)

        def call(client: Any) -> dict[str, np.ndarray]:
            inputs = [build_raw_input(self.protocol, name, datatype, rows, payload)
                      for name, datatype, payload in tensors]
            wanted = self._requested(outputs)
            if self.protocol == "grpc":
                result = client.infer(model, inputs, outputs=wanted, timeout=deadline_us(limit),
                                      client_timeout=limit)
            else:
                result = client.infer(model, inputs, outputs=wanted, timeout=deadline_us(limit))
            return {name: result.as_numpy(name) for name in outputs}

        return self._call(model, call, limit)

    # -- teardown ----------------------------------------------------------------------------

    def _drop_thread_client(self) -> None:
        client, self._local.client = getattr(self._local, "client", None), None
        self._local.inputs = {}
        if client is not None:
            with self._lock:
                if client in self._clients:
                    self._clients.remove(client)
            with contextlib.suppress(Exception):
                client.close()

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                with contextlib.suppress(Exception):
                    client.close()
            self._clients.clear()
        self._local = threading.local()


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
