"""The one Triton transport of ttsrec: `Client`, `ShardedClient` and `tts-serve --check` use it.

`Transport(url, protocol, timeout_s)`: one server. gRPC: one thread-safe client with keepalive (a dead
peer is noticed within seconds); HTTP: one client per thread (gevent is not thread-safe).

- `model_config(model)` (JSON, unwrapped), `model_metadata(model)`, `server_models()` (READY names),
  `inference_statistics(model="")`, `is_ready(model=None)`;
- `infer(model, input_name, ids, outputs, timeout_s=None)`: int64 ids in, {output: array} out. The
  deadline goes to the server as Triton's request `timeout` (µs; a queue policy rejects a request
  that waited past it) and bounds the client's wait (`client_timeout` / the HTTP network timeout).
  Input and requested-output objects are built once per thread and shape, then reused;
- `infer_raw(model, tensors, rows, outputs, timeout_s=None)`: the same for a raw model.

Every failure comes out through `ttsrec.client.errors.translate`. The protocol helpers are in
`ttsrec.client.utils`, the request tensors in `ttsrec.client.tensors`, the bench's load generators in
`ttsrec.bench.loadgen`.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ttsrec.client.errors import (
    ClientError,
    ClientRuntimeError,
    DeadlineExceededError,
    translate,
)
from ttsrec.client.tensors import build_inputs, build_outputs, build_raw_input
from ttsrec.client.utils import (
    DEFAULT_TIMEOUT_S,
    deadline_us,
    grpc_channel_args,
    normalise_url,
    tritonclient_module,
)

__all__ = ["Transport"]


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
        mod = tritonclient_module(self.protocol)
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
        return self._infer(model, lambda: self._inputs(input_name, ids), outputs, timeout_s)

    def infer_versioned(self, model: str, input_name: str, ids: np.ndarray, outputs: tuple[str, ...],
                        timeout_s: float | None = None,
                        model_version: str = "") -> tuple[dict[str, np.ndarray], str]:
        """`infer`, plus the `model_version` Triton answered with (in a repository with generations: the
        generation that made the answer, `ttsrec.client.generations`); `model_version` asks for one."""
        answered: list[str] = []
        out = self._infer(model, lambda: self._inputs(input_name, ids), outputs, timeout_s, model_version,
                          answered)
        return out, answered[0]

    def infer_raw(self, model: str, tensors: Sequence[tuple[str, str, bytes]], rows: int,
                  outputs: tuple[str, ...], timeout_s: float | None = None) -> dict[str, np.ndarray]:
        """One request to a raw model: `tensors` are (input name, datatype, payload in wire layout), each
        [rows, 1]; deadline as in `infer`."""
        return self._infer(model, lambda: [build_raw_input(self.protocol, name, datatype, rows, payload)
                                           for name, datatype, payload in tensors], outputs, timeout_s)

    def _infer(self, model: str, inputs: Callable[[], list[Any]], outputs: tuple[str, ...],
               timeout_s: float | None, model_version: str = "",
               answered: list[str] | None = None) -> dict[str, np.ndarray]:
        limit = self.timeout_s if timeout_s is None else float(timeout_s)
        if limit <= 0:
            raise DeadlineExceededError("deadline already passed before the request was sent",
                                        url=self.url, model=model)
        outputs = tuple(outputs)
        wait = {"client_timeout": limit} if self.protocol == "grpc" else {}

        def call(client: Any) -> dict[str, np.ndarray]:
            tensors = inputs()
            wanted = self._requested(outputs)
            result = client.infer(model, tensors, model_version=model_version, outputs=wanted,
                                  timeout=deadline_us(limit), **wait)
            if answered is not None:  # which version answered (gRPC: a protobuf, HTTP: a dict)
                response = result.get_response()
                answered.append(str(response.model_version if self.protocol == "grpc"
                                    else response.get("model_version", "")))
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
