"""Protocol helpers of the client: the two protocols, url and deadline forms, `ttsrec.*` config
parameters, gRPC channel options and the tritonclient module of a protocol.

- `PROTOCOLS` (grpc, http), `check_protocol`, `normalise_url` (drops `grpc://`, `http://`).
- `deadline_us(timeout_s)`: Triton's request `timeout` field (µs).
- `config_parameters(config)`: the `ttsrec.*` string parameters of a config (export id, members...).
- `grpc_channel_args()`: keepalive while calls are in flight and a short reconnect backoff.
"""

from __future__ import annotations

from typing import Any

from ttsrec.client.errors import ClientError

PROTOCOLS = ("grpc", "http")
DEFAULT_TIMEOUT_S = 30.0
PARAMETER_PREFIX = "ttsrec."
KEEPALIVE_MS = 10_000
"""gRPC keepalive ping interval while calls are in flight; a peer silent for `KEEPALIVE_TIMEOUT_MS`
after a ping is dropped (UNAVAILABLE) instead of holding the call until its deadline."""
KEEPALIVE_TIMEOUT_MS = 5_000
MAX_RECONNECT_BACKOFF_MS = 1_000
"""gRPC's default reconnect backoff grows to 120 s: a restarted shard would stay 'unavailable' that long."""


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


def tritonclient_module(protocol: str) -> Any:
    """`tritonclient.grpc` or `tritonclient.http`, imported on first use."""
    if protocol == "grpc":
        import tritonclient.grpc as grpcclient

        return grpcclient
    import tritonclient.http as httpclient

    return httpclient
