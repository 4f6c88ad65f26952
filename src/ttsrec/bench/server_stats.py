"""Server-side queue and compute times from Triton's statistics API, as deltas over the measured windows.

Cumulative counters are read at each window boundary; the difference over the reported windows,
divided by the requests the model finished, gives per-request times like perf_analyzer's
`Server Queue` / `Server Compute Input|Infer|Output` columns. An ensemble's members run as
parallel steps, so its row reports the critical path: the slowest member plus the merge step
(the per-model figures go to the JSON).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

PHASES = ("queue", "compute_input", "compute_infer", "compute_output")

Snapshot = dict[str, dict[str, int]]
"""model name -> {"count", "queue", "compute_input", "compute_infer", "compute_output"} (ns, cumulative)."""


@dataclass
class ServerTimes:
    """Per-request server times in microseconds."""

    queue: float = 0.0
    compute_input: float = 0.0
    compute_infer: float = 0.0
    compute_output: float = 0.0

    @property
    def total(self) -> float:
        return self.queue + self.compute_input + self.compute_infer + self.compute_output

    def __add__(self, other: ServerTimes) -> ServerTimes:
        return ServerTimes(
            *(a + b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True))
        )


def parse_statistics(stats: dict[str, Any]) -> Snapshot:
    """Triton's statistics JSON (HTTP dict or gRPC `as_json`, whose int64 come as strings) -> Snapshot."""
    out: Snapshot = {}
    for model in stats.get("model_stats", []):
        inference = model.get("inference_stats", {})
        entry = {"count": int(inference.get("success", {}).get("count", 0))}
        for phase in PHASES:
            entry[phase] = int(inference.get(phase, {}).get("ns", 0))
        name = model["name"]
        if name in out:  # several versions: add them up
            out[name] = {k: out[name][k] + v for k, v in entry.items()}
        else:
            out[name] = entry
    return out


def model_times(before: Snapshot, after: Snapshot, model: str) -> ServerTimes | None:
    """Average per-request times of one model between two snapshots (None if it served nothing)."""
    if model not in before or model not in after:
        return None
    count = after[model]["count"] - before[model]["count"]
    if count <= 0:
        return None
    return ServerTimes(*((after[model][p] - before[model][p]) / count / 1e3 for p in PHASES))


def critical_path(
    before: Snapshot, after: Snapshot, members: list[str], tail: list[str]
) -> ServerTimes | None:
    """Slowest of the parallel `members`, plus the sequential `tail` steps (the merge)."""
    parallel = [t for t in (model_times(before, after, m) for m in members) if t is not None]
    if not parallel:
        return None
    path = max(parallel, key=lambda t: t.total)
    for name in tail:
        step = model_times(before, after, name)
        if step is not None:
            path = path + step
    return path


def statistics_reader(url: str, protocol: str) -> Callable[[], Snapshot]:
    """A function reading all models' statistics from a server in one call."""
    if protocol == "grpc":
        import tritonclient.grpc as grpcclient

        grpc_client = grpcclient.InferenceServerClient(url)
        return lambda: parse_statistics(grpc_client.get_inference_statistics(as_json=True))
    import tritonclient.http as httpclient

    http_client = httpclient.InferenceServerClient(url)
    return lambda: parse_statistics(http_client.get_inference_statistics())
