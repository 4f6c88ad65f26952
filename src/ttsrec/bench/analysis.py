"""The figures the sweep exists for, derived from its rows.

- scaling efficiency: M · throughput(M) / throughput(1) (1.0 = an extra member costs exactly its share);
- serving ratio: best Triton mode's throughput / in-process fused throughput at the same point;
- batch-1 floor: p50 at batch 1, concurrency 1 against the M members' dense weight bytes / the read
  bandwidth that applies to them (cache when they fit the last-level cache, else memory; see roofline);
- compute roof: each row's dense MACs per row × rows/s over the runtime's and the hardware's GEMM roof;
- fan-out overhead: sharded p50 minus the slowest shard's own p50 at the same batch and concurrency;
- raw vs ids (`--raw`): a raw_* model's throughput and p50 against its id model's at the same point.

Rows of raw records (`inputs` raw) are compared with rows of raw records only; the serving ratio keeps to
id rows (its question is what serving the members costs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ttsrec.bench.modes import served_rows
from ttsrec.bench.roofline import Roofline
from ttsrec.bench.row import IDS, RAW, Row
from ttsrec.ensemble.modes import Mode


def _index(rows: Sequence[Row], inputs: str = IDS) -> dict[tuple[str, int, int, int], Row]:
    return {(r.mode, r.m, r.batch, r.concurrency): r for r in rows if r.inputs == inputs}


def scaling_efficiency(rows: Sequence[Row]) -> list[dict[str, Any]]:
    index = {kind: _index(rows, kind) for kind in (IDS, RAW)}
    out = []
    for r in rows:
        base = index.get(r.inputs, {}).get((r.mode, 1, r.batch, r.concurrency))
        if r.m > 1 and base is not None and base.throughput > 0:
            out.append(
                {
                    "mode": r.mode,
                    "m": r.m,
                    "batch": r.batch,
                    "concurrency": r.concurrency,
                    "efficiency": r.m * r.throughput / base.throughput,
                    "inputs": r.inputs,
                }
            )
    return out


def raw_vs_ids(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per raw row (`--raw`): its throughput and p50 against the id row of the same mode and point."""
    ids = _index(rows)
    out = []
    for r in rows:
        base = ids.get((r.mode, r.m, r.batch, r.concurrency))
        if r.inputs != RAW or base is None or base.throughput <= 0:
            continue
        out.append(
            {
                "mode": r.mode,
                "m": r.m,
                "batch": r.batch,
                "concurrency": r.concurrency,
                "model": r.model,
                "ids_model": base.model,
                "ids_throughput": base.throughput,
                "raw_throughput": r.throughput,
                "ratio": r.throughput / base.throughput,
                "ids_p50_us": base.p50_us,
                "raw_p50_us": r.p50_us,
                "stable": r.stable and base.stable,
            }
        )
    return out


def serving_ratio(rows: Sequence[Row]) -> list[dict[str, Any]]:
    index = _index(rows)
    out = []
    for (mode, m, batch, conc), ref in index.items():
        if mode != Mode.INPROCESS_FUSED or ref.throughput <= 0:
            continue
        served = [index[(t, m, batch, conc)] for t in served_rows() if (t, m, batch, conc) in index]
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
    rows: Sequence[Row], weight_bytes: Mapping[int, int], roofline: Roofline | None
) -> list[dict[str, Any]]:
    """Batch-1, concurrency-1 p50 next to the floor; `weight_bytes[M]`: dense bytes of M members."""
    out: list[dict[str, Any]] = []
    if roofline is None:
        return out
    for r in rows:
        if r.batch != 1 or r.concurrency != 1 or r.m not in weight_bytes:
            continue
        floor, bandwidth, where = roofline.floor_us(weight_bytes[r.m])
        out.append(
            {
                "mode": r.mode,
                "m": r.m,
                "p50_us": r.p50_us,
                "floor_us": floor,
                "weight_bytes": weight_bytes[r.m],
                "bandwidth_bytes_per_s": bandwidth,
                "weights_in": where,
                "fits_reported_cache": roofline.fits(weight_bytes[r.m]),
                "ratio": r.p50_us / floor if floor > 0 else None,
                "inputs": r.inputs,
            }
        )
    return out


def set_roof_fractions(row: Row, macs_per_row: int | None, roofline: Roofline | None) -> None:
    """Fill the row's MACs and achieved fractions of both compute roofs (left None when unknown)."""
    if not macs_per_row or roofline is None:
        return
    row.macs_per_row = int(macs_per_row)
    row.runtime_roof_fraction, row.hardware_roof_fraction = roofline.fractions(
        macs_per_row, row.throughput, row.precision
    )


def compute_roof(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """The rows that carry roof fractions, with the achieved MAC/s behind them."""
    return [
        {
            "mode": r.mode,
            "m": r.m,
            "batch": r.batch,
            "concurrency": r.concurrency,
            "macs_per_row": r.macs_per_row,
            "achieved_macs_per_s": r.macs_per_row * r.throughput,
            "runtime_roof_fraction": r.runtime_roof_fraction,
            "hardware_roof_fraction": r.hardware_roof_fraction,
            "inputs": r.inputs,
        }
        for r in rows
        if r.macs_per_row and r.runtime_roof_fraction is not None
    ]


def fanout_overhead(rows: Sequence[Row], shard_rows: Sequence[Row]) -> list[dict[str, Any]]:
    """`shard_rows`: each shard alone (mode "shard", model = its name) at the sharded rows' points."""
    out = []
    for r in rows:
        if r.mode != Mode.SHARDED:
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
    rows: Sequence[Row],
    shard_rows: Sequence[Row],
    weight_bytes: Mapping[int, int],
    roofline: Roofline | None,
) -> dict[str, list[dict[str, Any]]]:
    return {
        "scaling_efficiency": scaling_efficiency(rows),
        "serving_ratio": serving_ratio(rows),
        "bandwidth_floor": bandwidth_floor(rows, weight_bytes, roofline),
        "compute_roof": compute_roof(rows),
        "fanout_overhead": fanout_overhead(rows, shard_rows),
        "raw_vs_ids": raw_vs_ids(rows),
    }
