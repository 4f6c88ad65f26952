"""What one sweep row measures: a served model, a sharded deployment, or onnxruntime in this process.

A `Target` turns pre-built request tensors into a load generator, and (for Triton) knows how to read
the server's statistics and which models make up the request's critical path.

- Triton modes (`ensemble`, `fused`, one shard alone): requests encoded once per batch, then sent as bytes:
  gRPC as blocking calls from N threads on one raw channel, HTTP from one event-loop thread (aiohttp);
  a raw model (`raw_ensemble_mM`, `raw_fused_mM`, `--raw`) the same way, its batches raw records laid out
  with the client's raw layout from the model's served config;
- `sharded`: `ttsrec.client.ShardedClient` (its own fan-out to K servers), from N threads;
- in-process: members one by one + numpy mean (one intra-op thread per session, like the served
  members), or the fused graph with `cores // concurrency` intra-op threads (at least one), so that
  N concurrent callers never ask for more threads than there are cores.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ttsrec.bench import inputs
from ttsrec.bench.load import AsyncLoad, Load, ThreadLoad
from ttsrec.bench.loadgen import (
    async_payload_sender,
    async_sender,
    grpc_payload_sender,
    grpc_raw_infer_request,
    grpc_sender,
    http_raw_infer_body,
)
from ttsrec.bench.row import IDS, RAW
from ttsrec.bench.server_stats import ServerTimes, Snapshot, critical_path, model_times, statistics_reader
from ttsrec.client.raw import raw_fields
from ttsrec.client.transport import Transport
from ttsrec.client.utils import config_parameters
from ttsrec.ensemble.modes import Mode
from ttsrec.repository import naming
from ttsrec.repository.raw_inputs import RawInput
from ttsrec.utils.common import usable_cores

__all__ = ["REQUEST_TIMEOUT_S", "Target", "inprocess_fused_target",
           "inprocess_members_target", "model_config", "server_models", "sharded_target", "triton_target",
           "usable_cores"]

REQUEST_TIMEOUT_S = 120.0
METADATA_TIMEOUT_S = 10.0


@dataclass
class Target:
    mode: str
    m: int
    model: str
    make_load: Callable[[Sequence[Any]], Load]
    """Pre-built request batches -> a load: id tensors, or (`inputs` raw) lists of raw records."""
    protocol: str = ""
    url: str | None = None
    snapshot: Callable[[], Snapshot] | None = None
    server_times: Callable[[Snapshot, Snapshot], ServerTimes | None] | None = None
    notes: dict[str, Any] = field(default_factory=dict)
    server_pids: list[int] = field(default_factory=list)
    """Server processes whose CPU the row reports (only for servers this bench started)."""
    inputs: str = IDS
    """`raw`: the model takes raw records (`raw_*`), and `make_load` lists of them."""


# -- Triton ------------------------------------------------------------------------------------------


def model_config(url: str, protocol: str, model: str) -> dict[str, Any]:
    """The served model's config as JSON; the client's errors (bad input: exit 2, server down: exit 1)."""
    transport = Transport(url, protocol, METADATA_TIMEOUT_S)
    try:
        return transport.model_config(model)
    finally:
        transport.close()


def server_models(url: str, protocol: str) -> set[str]:
    """Names of the models the server has loaded (READY)."""
    transport = Transport(url, protocol, METADATA_TIMEOUT_S)
    try:
        return transport.server_models()
    finally:
        transport.close()


def triton_target(mode: str, m: int, url: str, protocol: str, model: str) -> Target:
    config = model_config(url, protocol, model)
    outputs = tuple(o["name"] for o in config.get("output", []))
    input_name = config["input"][0]["name"]
    steps = [s["model_name"] for s in config.get("ensemble_scheduling", {}).get("step", [])]
    parallel = [s for s in steps if s.startswith("member_")]
    tail = [s for s in steps if s not in parallel]

    def times(before: Snapshot, after: Snapshot) -> ServerTimes | None:
        if parallel:
            return critical_path(before, after, parallel, tail)
        return model_times(before, after, model)

    parameters = config_parameters(config)
    raw = raw_fields(config, parameters)  # () for an id model
    max_string_bytes = int(parameters.get("max_string_bytes") or 0)

    def make_load(batches: Sequence[Any]) -> Load:
        if raw:
            return _raw_load(url, protocol, model, raw, max_string_bytes, outputs, batches)
        if protocol == "grpc":  # blocking raw calls from N threads: the lightest Python gRPC path
            return ThreadLoad(*grpc_sender(url, model, input_name, outputs, batches, REQUEST_TIMEOUT_S))
        return AsyncLoad(lambda: async_sender(url, protocol, model, input_name, outputs, batches,
                                              timeout_s=REQUEST_TIMEOUT_S))

    notes: dict[str, Any] = {"composing_models": steps}
    if raw:
        notes["raw_inputs"] = len(raw)
    return Target(
        mode=mode,
        m=m,
        model=model,
        make_load=make_load,
        protocol=protocol,
        url=url,
        snapshot=statistics_reader(url, protocol),
        server_times=times,
        notes=notes,
        inputs=RAW if raw else IDS,
    )


def _raw_load(url: str, protocol: str, model: str, fields: Sequence[RawInput], max_string_bytes: int,
              outputs: tuple[str, ...], batches: Sequence[Sequence[dict[str, Any]]]) -> Load:
    """A raw model's load: each batch of records laid out and serialized once (the client's raw layout and
    checks), then sent as bytes like id requests: gRPC blocking from N threads, HTTP from the event loop."""
    tensors = [(inputs.raw_tensors(fields, b, max_string_bytes), len(b)) for b in batches]
    if protocol == "grpc":
        payloads = [grpc_raw_infer_request(model, t, rows, outputs, REQUEST_TIMEOUT_S) for t, rows in tensors]
        return ThreadLoad(*grpc_payload_sender(url, model, payloads, REQUEST_TIMEOUT_S))
    bodies = [http_raw_infer_body(t, rows, outputs, REQUEST_TIMEOUT_S) for t, rows in tensors]
    return AsyncLoad(lambda: async_payload_sender(url, protocol, model, bodies, timeout_s=REQUEST_TIMEOUT_S))


# -- sharded -----------------------------------------------------------------------------------------


def sharded_target(m: int, urls: Sequence[str], protocol: str, model: str = naming.SHARD_ENSEMBLE) -> Target:
    """Fan-out through `ShardedClient` (the user-facing path), one blocking call per worker thread."""
    from ttsrec.client import ShardedClient

    client = ShardedClient(list(urls), protocol=protocol, model=model, timeout_s=REQUEST_TIMEOUT_S)
    readers = [statistics_reader(u, protocol) for u in urls]
    shard_configs = [model_config(u, protocol, model) for u in urls]
    steps = [
        [s["model_name"] for s in c.get("ensemble_scheduling", {}).get("step", [])] for c in shard_configs
    ]

    def snapshot() -> Snapshot:
        return {f"{i}/{name}": value for i, read in enumerate(readers) for name, value in read().items()}

    def times(before: Snapshot, after: Snapshot) -> ServerTimes | None:
        """The slowest shard's critical path: it decides when the merged answer is ready."""
        paths = []
        for i, shard_steps in enumerate(steps):
            parallel = [f"{i}/{s}" for s in shard_steps if s.startswith("member_")]
            tail = [f"{i}/{s}" for s in shard_steps if not s.startswith("member_")]
            path = (
                critical_path(before, after, parallel, tail)
                if parallel
                else model_times(before, after, f"{i}/{model}")
            )
            if path is not None:
                paths.append(path)
        return max(paths, key=lambda t: t.total) if paths else None

    def make_load(batches: Sequence[np.ndarray]) -> Load:
        return ThreadLoad(lambda k: client.predict(batches[k % len(batches)]))

    return Target(
        mode=Mode.SHARDED,
        m=m,
        model=f"{model} x{len(urls)}",
        make_load=make_load,
        protocol=protocol,
        snapshot=snapshot,
        server_times=times,
        notes={"shards": list(urls)},
    )


# -- in-process --------------------------------------------------------------------------------------


def inprocess_members_target(m: int, onnx_paths: Sequence[Any]) -> Target:
    from ttsrec.ensemble.session import ort_session

    sessions = [ort_session(path, intra_op_threads=1) for path in onnx_paths]
    names = [s.get_inputs()[0].name for s in sessions]
    outs = [s.get_outputs()[0].name for s in sessions]

    def send(batch: np.ndarray) -> np.ndarray:
        logits = [s.run([o], {n: batch})[0] for s, n, o in zip(sessions, names, outs, strict=True)]
        return np.mean(logits, axis=0)

    def make_load(batches: Sequence[np.ndarray]) -> Load:
        return ThreadLoad(lambda k: send(batches[k % len(batches)]))

    return Target(
        mode=Mode.INPROCESS_MEMBERS,
        m=m,
        model=f"{m} onnxruntime sessions",
        make_load=make_load,
        notes={"intra_op_threads": 1},
    )


def inprocess_fused_target(m: int, onnx_path: Any, concurrency: int) -> Target:
    from ttsrec.ensemble.session import ort_session

    threads = max(1, usable_cores() // max(1, concurrency))
    session = ort_session(onnx_path, intra_op_threads=threads)
    name, out = session.get_inputs()[0].name, session.get_outputs()[0].name

    def make_load(batches: Sequence[np.ndarray]) -> Load:
        return ThreadLoad(lambda k: session.run([out], {name: batches[k % len(batches)]}))

    return Target(
        mode=Mode.INPROCESS_FUSED,
        m=m,
        model=naming.fused_name(m),
        make_load=make_load,
        notes={"intra_op_threads": threads},
    )
