"""Running planned points: the engine that measures a point's target, the row it gives; and the accuracy
per M through the same models.

No planning, no targets and no server lifecycle here (`bench.plan`, `bench.modes`, `bench.servers`):
given a target and a point, measure it.
"""

from __future__ import annotations

from typing import Any

from ttsrec.bench import inputs, perf_analyzer
from ttsrec.bench.config import SweepConfig
from ttsrec.bench.cpu import tree_cpu_seconds
from ttsrec.bench.measure import Measurement, measure
from ttsrec.bench.modes import MODES, mode_of_row
from ttsrec.bench.point import Point
from ttsrec.bench.row import IDS, RAW, Row
from ttsrec.bench.sources import Sources
from ttsrec.bench.targets import Target
from ttsrec.data.feature_map import FeatureMap
from ttsrec.ensemble.modes import Mode
from ttsrec.repository import naming


def use_perf_analyzer(engine: str, target: Target, point: Point) -> bool:
    """perf_analyzer for served rows; with `auto` only at batch 1, where the native client's own
    per-request overhead is a visible share of the latency, and only when it is installed."""
    unit = mode_of_row(target.mode)
    if target.url is None or target.inputs == RAW or (unit is not None and not unit.perf_analyzer):
        return False  # a model on one server, the bench's ids only
    if engine == "auto":
        return point.batch == 1 and perf_analyzer.locate() is not None
    return engine == "perf_analyzer"


def measure_point(target: Target, point: Point, cfg: SweepConfig, pool: Any) -> Row:
    """One row: perf_analyzer's run, or the native loop with the server's statistics and CPU around it."""
    if use_perf_analyzer(cfg.engine, target, point):
        return perf_analyzer.run(
            target.model,
            target.url,
            target.protocol,
            point.batch,
            point.concurrency,
            cfg.settings,
            pool,
            mode=target.mode,
            m=point.m,
        )
    load = target.make_load(inputs.batches(pool, point.batch))
    stats, pids = target.snapshot, list(target.server_pids)

    def snapshot() -> tuple[Any, float]:
        return (stats() if stats else None), tree_cpu_seconds(pids)

    result = measure(
        load,
        point.concurrency,
        point.batch,
        cfg.settings,
        snapshot,
        label=f"{target.mode} {target.model} batch {point.batch} c={point.concurrency}",
    )
    return row_of(target, point, result)


def row_of(target: Target, point: Point, result: Measurement) -> Row:
    """The row of a native measurement; server times from the statistics diff, CPU from the process tree."""
    (stats_before, cpu_before), (stats_after, cpu_after) = result.server_before, result.server_after
    times = None
    if target.server_times is not None and stats_before is not None:
        times = target.server_times(stats_before, stats_after)
    seconds = sum(w.seconds for w in result.windows[-3:])
    row = Row(
        mode=target.mode,
        m=point.m,
        batch=point.batch,
        concurrency=point.concurrency,
        throughput=result.throughput,
        avg_us=result.latency.avg,
        p50_us=result.latency.p50,
        p90_us=result.latency.p90,
        p95_us=result.latency.p95,
        p99_us=result.latency.p99,
        stable=result.stable,
        client_cpu=result.client_cpu,
        requests=result.requests,
        windows=len(result.windows),
        protocol=target.protocol,
        model=target.model,
        server_cpu=100.0 * (cpu_after - cpu_before) / seconds if target.server_pids else None,
    )
    if times is not None:
        row.server_queue_us = times.queue
        row.server_compute_input_us = times.compute_input
        row.server_compute_infer_us = times.compute_infer
        row.server_compute_output_us = times.compute_output
        row.network_us = max(0.0, row.avg_us - times.total)
    return row


def evaluate(
    cfg: SweepConfig, src: Sources, url: str | None, served: set[str] | None, ms: list[int]
) -> list[dict[str, Any]]:
    """AUC/logloss per M on `cfg.eval_data`: through the served model, else the local fused graph."""
    from ttsrec.bench.accuracy import evaluate_served, evaluate_served_records, evaluate_session

    eval_data = cfg.eval_data
    assert eval_data is not None
    ids, labels = inputs.data_ids(eval_data, cfg.eval_rows)
    if src.fmap is not None:
        inputs.check_matches(FeatureMap.load(eval_data), eval_data, src.fmap)
    tags = {"precision": src.precision, "repository": src.source}
    out = []
    for m in ms:
        if url is not None and served is not None:
            model = next((n for n in (naming.ensemble_name(m), naming.fused_name(m)) if n in served), None)
            if model is None:
                continue
            out.append(evaluate_served(url, cfg.protocol, model, ids, labels) | {"m": m, **tags,
                                                                                 "inputs": IDS})
            twin = MODES[Mode.ENSEMBLE if model.startswith("ensemble") else Mode.FUSED].raw_model(m)  # type: ignore[attr-defined]
            if cfg.raw and src.raw_eval is not None and twin in served:  # the same rows as raw records
                out.append(evaluate_served_records(url, cfg.protocol, twin, src.raw_eval.records, labels)
                           | {"m": m, **tags, "inputs": RAW})
        elif src.repo is not None:
            onnx_path = src.repo.onnx_path(naming.fused_name(m))
            out.append(evaluate_session(onnx_path, ids, labels) | {"m": m, **tags})
    return out
