"""One request over gRPC or HTTP with tritonclient, errors turned into `ClientError`.

The gRPC client is thread-safe and shared; the HTTP one is not (gevent), so each thread gets its own.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import numpy as np

from ttsrec.client.errors import ClientError

PROTOCOLS = ("grpc", "http")
_TIMEOUT_WORDS = ("deadline", "timed out", "timeout")


def normalise_url(url: str, protocol: str) -> str:
    """`host:port` as tritonclient wants it; a scheme like `grpc://` or `http://` is dropped."""
    if protocol not in PROTOCOLS:
        raise ClientError(f"unknown protocol {protocol!r} (choose grpc or http)", url=url)
    for scheme in ("grpc://", "http://", "https://"):
        url = url.removeprefix(scheme)
    url = url.rstrip("/")
    if not url:
        raise ClientError("empty server url")
    return url


class Transport:
    def __init__(self, url: str, protocol: str, timeout_s: float):
        self.url = normalise_url(url, protocol)
        self.protocol = protocol
        self.timeout_s = float(timeout_s)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._clients: list[Any] = []

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
        if self.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            return grpcclient.InferenceServerClient(self.url)
        import tritonclient.http as httpclient

        return httpclient.InferenceServerClient(self.url, connection_timeout=self.timeout_s,
                                                network_timeout=self.timeout_s)

    def model_config(self, model: str) -> dict[str, Any]:
        def call(client: Any) -> dict[str, Any]:
            if self.protocol == "grpc":
                return client.get_model_config(model, as_json=True, client_timeout=self.timeout_s)
            return client.get_model_config(model)

        return self._call(model, call)

    def is_ready(self, model: str | None = None) -> bool:
        try:
            if model is None:
                return bool(self._call("", lambda c: c.is_server_ready(**self._timeout_kw())))
            return bool(self._call(model, lambda c: c.is_model_ready(model, **self._timeout_kw())))
        except ClientError:
            return False

    def infer(self, model: str, input_name: str, ids: np.ndarray,
              outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        def call(client: Any) -> dict[str, np.ndarray]:
            if self.protocol == "grpc":
                import tritonclient.grpc as mod

                inp = mod.InferInput(input_name, list(ids.shape), "INT64")
                inp.set_data_from_numpy(ids)
                req = [mod.InferRequestedOutput(name) for name in outputs]
                result = client.infer(model, [inp], outputs=req, client_timeout=self.timeout_s)
            else:
                import tritonclient.http as mod

                inp = mod.InferInput(input_name, list(ids.shape), "INT64")
                inp.set_data_from_numpy(ids, binary_data=True)
                req = [mod.InferRequestedOutput(name, binary_data=True) for name in outputs]
                result = client.infer(model, [inp], outputs=req)
            return {name: result.as_numpy(name) for name in outputs}

        return self._call(model, call)

    def _timeout_kw(self) -> dict[str, float]:
        return {"client_timeout": self.timeout_s} if self.protocol == "grpc" else {}

    def _call(self, model: str, fn: Any) -> Any:
        try:
            return fn(self._client())
        except ClientError:
            raise
        except BaseException as err:  # tritonclient, grpc, gevent and socket errors alike
            if isinstance(err, KeyboardInterrupt | SystemExit):
                raise
            if self.protocol == "http":  # a failed HTTP connection may be half-read: start afresh
                self._drop_thread_client()
            text = _message(err)
            timed_out = any(w in text.lower() for w in _TIMEOUT_WORDS) or "Timeout" in type(err).__name__
            if timed_out:
                text = f"no answer within {self.timeout_s:g}s ({text})"
            raise ClientError(f"{text} [{self.protocol}]", url=self.url, model=model,
                              timed_out=timed_out) from err

    def _drop_thread_client(self) -> None:
        client, self._local.client = getattr(self._local, "client", None), None
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


def _message(err: BaseException) -> str:
    msg = err.message() if callable(getattr(err, "message", None)) else str(err)
    msg = (msg or type(err).__name__).strip()
    unreachable = ("StatusCode.UNAVAILABLE", "failed to connect", "Connection refused")
    if isinstance(err, ConnectionError) or any(word in msg for word in unreachable):
        return f"server unreachable ({msg.splitlines()[0]})"
    return msg.splitlines()[0] if msg else type(err).__name__
