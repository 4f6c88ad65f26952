"""The figures the sweep exists for, derived from its rows.

- scaling efficiency: M · throughput(M) / throughput(1) (1.0 = an extra member costs exactly its share);
- serving ratio: best Triton mode's throughput / in-process fused throughput at the same point;
- batch-1 floor: p50 at batch 1, concurrency 1 against M × member dense weight bytes / copy bandwidth;
- fan-out overhead: sharded p50 minus the slowest shard's own p50 at the same batch and concurrency.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ttsrec.bench.bandwidth import latency_floor_us
from ttsrec.bench.row import Row

TRITON_MODES = ("ensemble", "fused", "sharded")
INPROCESS_FUSED = "inprocess_fused"


def _index(rows: Sequence[Row]) -> dict[tuple[str, int, int, int], Row]:
    return {(r.mode, r.m, r.batch, r.concurrency): r for r in rows}


def scaling_efficiency(rows: Sequence[Row]) -> list[dict[str, Any]]:
    index = _index(rows)
    out = []
    for r in rows:
        base = index.get((r.mode, 1, r.batch, r.concurrency))
        if r.m > 1 and base is not None and base.throughput > 0:
            out.append(
                {
                    "mode": r.mode,
                    "m": r.m,
                    "batch": r.batch,
                    "concurrency": r.concurrency,
                    "efficiency": r.m * r.throughput / base.throughput,
                }
            )
    return out


def serving_ratio(rows: Sequence[Row]) -> list[dict[str, Any]]:
    index = _index(rows)
    out = []
    for (mode, m, batch, conc), ref in index.items():
        if mode != INPROCESS_FUSED or ref.throughput <= 0:
            continue
        served = [index[(t, m, batch, conc)] for t in TRITON_MODES if (t, m, batch, conc) in index]
        if served:
            best = max(served, key=lambda r: r.throughput)
            out.append(
                {
                    "m": m,
                    "batch": batch,
                    "concurrency": conc,
                    "best_mode": best.mode,
                    "ratio": best.throughput / ref.throughput,
                }
            )
    return out


def bandwidth_floor(
    rows: Sequence[Row], weight_bytes: Mapping[int, int], bandwidth: float
) -> list[dict[str, Any]]:
    """Batch-1, concurrency-1 p50 next to the floor; `weight_bytes[M]`: dense bytes of M members."""
    out = []
    for r in rows:
        if r.batch != 1 or r.concurrency != 1 or r.m not in weight_bytes:
            continue
        floor = latency_floor_us(1, weight_bytes[r.m], bandwidth)
        out.append(
            {
                "mode": r.mode,
                "m": r.m,
                "p50_us": r.p50_us,
                "floor_us": floor,
                "weight_bytes": weight_bytes[r.m],
                "ratio": r.p50_us / floor if floor > 0 else None,
            }
        )
    return out


def fanout_overhead(rows: Sequence[Row], shard_rows: Sequence[Row]) -> list[dict[str, Any]]:
    """`shard_rows`: each shard alone (mode "shard", model = its name) at the sharded rows' points."""
    out = []
    for r in rows:
        if r.mode != "sharded":
            continue
        alone = [s for s in shard_rows if (s.m, s.batch, s.concurrency) == (r.m, r.batch, r.concurrency)]
        if alone:
            slowest = max(alone, key=lambda s: s.p50_us)
            out.append(
                {
                    "m": r.m,
                    "batch": r.batch,
                    "concurrency": r.concurrency,
                    "sharded_p50_us": r.p50_us,
                    "slowest_shard_p50_us": slowest.p50_us,
                    "slowest_shard": slowest.model,
                    "overhead_us": r.p50_us - slowest.p50_us,
                }
            )
    return out


def summarise(
    rows: Sequence[Row], shard_rows: Sequence[Row], weight_bytes: Mapping[int, int], bandwidth: float
) -> dict[str, list[dict[str, Any]]]:
    return {
        "scaling_efficiency": scaling_efficiency(rows),
        "serving_ratio": serving_ratio(rows),
        "bandwidth_floor": bandwidth_floor(rows, weight_bytes, bandwidth),
        "fanout_overhead": fanout_overhead(rows, shard_rows),
    }
