"""One result row: mode × M × batch × concurrency, in perf_analyzer's units (µs, rows per second)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

IDS = "ids"
"""A row's `inputs`: feat_ids to an id model (`ensemble_mM`, `fused_mM`, ...)."""
RAW = "raw"
"""A row's `inputs`: raw records to a `raw_ensemble_mM` / `raw_fused_mM` (`tts-bench --raw`)."""

# perf_analyzer's `-f` CSV columns, in its order, and the Row attribute each one comes from.
PA_COLUMNS: dict[str, str] = {
    "Concurrency": "concurrency",
    "Inferences/Second": "throughput",
    "Client Send": "client_send_us",
    "Network+Server Send/Recv": "network_us",
    "Server Queue": "server_queue_us",
    "Server Compute Input": "server_compute_input_us",
    "Server Compute Infer": "server_compute_infer_us",
    "Server Compute Output": "server_compute_output_us",
    "Client Recv": "client_recv_us",
    "p50 latency": "p50_us",
    "p90 latency": "p90_us",
    "p95 latency": "p95_us",
    "p99 latency": "p99_us",
}
EXTRA_COLUMNS = (
    "mode",
    "m",
    "batch",
    "avg_us",
    "stable",
    "client_cpu",
    "server_cpu",
    "requests",
    "windows",
    "engine",
    "precision",
    "client_overhead_us",
    "protocol",
    "model",
    "repository",
    "macs_per_row",
    "runtime_roof_fraction",
    "hardware_roof_fraction",
    "inputs",
    "members_per_row",
)


@dataclass
class Row:
    mode: str
    m: int
    batch: int
    concurrency: int
    throughput: float
    """Inferences (rows) per second: requests × batch / seconds."""
    avg_us: float
    p50_us: float
    p90_us: float
    p95_us: float
    p99_us: float
    stable: bool
    client_cpu: float
    """Bench process CPU in percent of one core (in-process modes: includes the inference itself)."""
    server_cpu: float | None = None
    """CPU of the server process trees this bench started, in percent of one core (None: not ours)."""
    requests: int = 0
    windows: int = 0
    engine: str = "native"
    """Which load generator produced the row: native or perf_analyzer."""
    precision: str = "fp32"
    """The export's precision (manifest, or the served config's `ttsrec.precision`)."""
    protocol: str = ""
    model: str = ""
    repository: str = ""
    """The repository (or server URL) the row was measured on: one table can hold several exports."""
    macs_per_row: int | None = None
    """Dense multiply-accumulates of one row through the M members (the manifest's counted cost)."""
    runtime_roof_fraction: float | None = None
    """macs_per_row × throughput / onnxruntime's GEMM MAC/s in the row's precision (this run's roofline)."""
    hardware_roof_fraction: float | None = None
    """The same over the fastest kernel at hand for the row's number format (torch/oneDNN or ort)."""
    client_send_us: float = 0.0
    network_us: float = 0.0
    """Latency not spent in the server's queue or compute: network, (de)serialisation, client."""
    server_queue_us: float = 0.0
    server_compute_input_us: float = 0.0
    server_compute_infer_us: float = 0.0
    server_compute_output_us: float = 0.0
    client_recv_us: float = 0.0
    inputs: str = IDS
    members_per_row: float | None = None
    """Cascade rows: the average number of members the requests' rows went through (served answers)."""
    """What the requests carried: `ids` (feat_ids), or `raw` records to the id model's raw twin (`--raw`)."""

    @property
    def client_overhead_us(self) -> float | None:
        """Average latency minus the server's own time (queue + compute) from its statistics."""
        server = self.server_queue_us + self.server_compute_input_us + self.server_compute_infer_us
        server += self.server_compute_output_us
        return max(0.0, self.avg_us - server) if server > 0 else None

    def csv_record(self) -> dict[str, Any]:
        """Columns in perf_analyzer's names and order, then ours."""
        record: dict[str, Any] = {"mode": self.mode, "m": self.m, "batch": self.batch}
        record.update({name: _round(getattr(self, attr)) for name, attr in PA_COLUMNS.items()})
        for name in EXTRA_COLUMNS:
            if name not in record:
                record[name] = _round(getattr(self, name), 5 if name.endswith("_fraction") else 1)
        return record

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"client_overhead_us": self.client_overhead_us}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


def _round(value: Any, digits: int = 1) -> Any:
    if value is None:
        return ""
    return round(value, digits) if isinstance(value, float) else value
