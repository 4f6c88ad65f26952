"""The sweep: modes × M × batch × concurrency, one measured row each, plus the figures derived from them.

Servers are started here when no URL is given (the bundled tritonserver on the repository, and K of
them on a sharded export); the roofline (`bench.roofline`) is measured first, while the machine is quiet.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ttsrec.bench import analysis, inputs, perf_analyzer, pinning
from ttsrec.bench.cpu import tree_cpu_seconds
from ttsrec.bench.measure import Measurement, MeasureSettings, measure
from ttsrec.bench.meta import run_metadata
from ttsrec.bench.repo_info import RepositoryInfo
from ttsrec.bench.roofline import Roofline
from ttsrec.bench.row import Row
from ttsrec.bench.server_info import served_info
from ttsrec.bench.targets import (
    TRITON_MODES,
    Target,
    check_modes,
    inprocess_fused_target,
    inprocess_members_target,
    model_config,
    server_models,
    sharded_target,
    triton_target,
    usable_cores,
)
from ttsrec.data.feature_map import FeatureMap
from ttsrec.errors import UserError
from ttsrec.repository import naming
from ttsrec.repository.manifest import read_shards

ENGINES = ("native", "perf_analyzer", "auto")
PROTOCOLS = ("grpc", "http")


@dataclass
class SweepConfig:
    modes: list[str]
    m_list: list[int] | None = None
    """None: every M the repository (or the server) has."""
    batches: list[int] = field(default_factory=lambda: [1])
    concurrencies: list[int] = field(default_factory=lambda: [1])
    repository: Path = Path("model_repository")
    shards_repository: Path | None = None
    url: str | None = None
    shard_urls: list[str] = field(default_factory=list)
    protocol: str = "grpc"
    data: Path | None = None
    eval_data: Path | None = None
    eval_rows: int = 20_000
    settings: MeasureSettings = field(default_factory=MeasureSettings)
    engine: str = "native"
    seed: int = 0
    pin_cores: bool = False
    """Sharded mode: pin shard server i to cores [i*c, (i+1)*c), c = cores // K (see `bench.pinning`)."""


@dataclass(frozen=True)
class Point:
    mode: str
    m: int
    batch: int
    concurrency: int

    def __str__(self) -> str:
        return f"{self.mode} M={self.m} batch={self.batch} c={self.concurrency}"


@dataclass
class SweepResult:
    config: SweepConfig
    rows: list[Row]
    shard_rows: list[Row]
    roofline: Roofline | None
    """Measured in the run (None: not measured): compute roofs and read bandwidths."""
    weight_bytes: dict[int, int]
    accuracy: list[dict[str, Any]]
    manifest: dict[str, Any] | None
    notes: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=run_metadata)
    weight_bytes_by_source: dict[str, dict[int, int]] = field(default_factory=dict)
    """Per repository (or URL) of a combined run; empty: `weight_bytes` holds for every row."""

    @property
    def summary(self) -> dict[str, list[dict[str, Any]]]:
        """The derived figures per repository (one per precision in a combined run), tagged with it."""
        sources = list(dict.fromkeys(r.repository for r in self.rows)) or [""]
        out: dict[str, list[dict[str, Any]]] = {}
        for source in sources:
            rows = [r for r in self.rows if r.repository == source]
            shard_rows = [r for r in self.shard_rows if r.repository == source]
            weights = self.weight_bytes_by_source.get(source, self.weight_bytes)
            part = analysis.summarise(rows, shard_rows, weights, self.roofline)
            if self.notes.get("pinning"):
                part["parallel_servers"] = pinning.compare(
                    rows, shard_rows, self.notes["pinning"]["cores_per_server"]
                )
            precision = rows[0].precision if rows else "fp32"
            for key, entries in part.items():
                out.setdefault(key, []).extend(e | {"precision": precision} for e in entries)
        return out

    def to_json(self) -> dict[str, Any]:
        cfg = self.config
        return {
            **self.metadata,
            "config": {
                "modes": cfg.modes,
                "m_list": cfg.m_list,
                "batches": cfg.batches,
                "concurrencies": cfg.concurrencies,
                "repository": str(cfg.repository),
                "shards_repository": str(cfg.shards_repository or "") or None,
                "url": cfg.url,
                "protocol": cfg.protocol,
                "engine": cfg.engine,
                "pin_cores": cfg.pin_cores,
                "inputs": f"rows of {cfg.data}" if cfg.data else "random valid ids from the feature map",
                "measurement": vars(cfg.settings),
            },
            "roofline": self.roofline.to_dict() if self.roofline else None,
            "dense_weight_bytes_per_m": self.weight_bytes,
            "dense_weight_bytes_per_repository": self.weight_bytes_by_source or None,
            "notes": self.notes,
            "manifest": self.manifest,
            "rows": [r.to_dict() for r in self.rows],
            "shard_rows": [r.to_dict() for r in self.shard_rows],
            "accuracy": self.accuracy,
            "summary": self.summary,
        }


class Sweep:
    """Plan, then run; `on_row(point, row)` and `on_start(point)` let a CLI show progress."""

    def __init__(self, config: SweepConfig) -> None:
        self.cfg = config
        self.cfg.modes = check_modes(config.modes)
        if config.engine not in ENGINES:
            raise UserError(f"unknown engine {config.engine!r} (choose from {', '.join(ENGINES)})")
        if config.protocol not in PROTOCOLS:
            raise UserError(f"unknown protocol {config.protocol!r} (choose grpc or http)")
        if config.engine == "perf_analyzer":
            perf_analyzer.find_perf_analyzer()
        if any(b < 1 for b in config.batches) or any(c < 1 for c in config.concurrencies):
            raise UserError("batch sizes and concurrencies must be >= 1")
        if config.m_list is not None and any(m < 1 for m in config.m_list):
            raise UserError("M values must be >= 1")
        if "sharded" in self.cfg.modes and not (config.shards_repository or config.shard_urls):
            raise UserError(
                "--mode sharded needs --shards-repository (a `tts-export --shards K` output) "
                "or --shard-url for each running shard server"
            )
        if config.pin_cores and ("sharded" not in self.cfg.modes or config.shard_urls):
            raise UserError("--pin-cores needs --mode sharded with --shards-repository (servers it starts)")
        needs_repo = config.url is None or "inprocess" in self.cfg.modes
        self.repo = (
            RepositoryInfo.load(config.repository) if needs_repo or config.repository.is_dir() else None
        )
        self.fmap: FeatureMap | None = self.repo.feature_map if self.repo else None
        if config.shards_repository is not None and not config.shard_urls:
            if not Path(config.shards_repository).is_dir():
                raise UserError(f"shards repository not found: {config.shards_repository}")
            read_shards(config.shards_repository)  # a UserError if it is not a sharded export
        self.core_sets = self._plan_pinning() if config.pin_cores else None
        # Bad M values, missing models or an unreachable server fail here, before anything starts.
        self.served = server_models(config.url, config.protocol) if config.url else None
        self.served_info = served_info(config.url, config.protocol, self.served) if self.served else None
        self.pool = self._input_pool()
        if set(self.cfg.modes) - {"sharded"}:
            self.plan(self.served, 1)

    # -- planning ----------------------------------------------------------------------------

    def _plan_pinning(self) -> list[list[int]]:
        """Core sets of the shard servers this sweep will start (running ones cannot be pinned)."""
        from ttsrec.serve import find_shards

        assert self.cfg.shards_repository is not None  # checked with the other sharded options
        return pinning.core_sets(len(find_shards(self.cfg.shards_repository)))

    def _input_pool(self) -> np.ndarray:
        if self.cfg.data is not None:
            fmap = FeatureMap.load(self.cfg.data)
            if self.fmap is not None:
                inputs.check_matches(fmap, self.cfg.data, self.fmap)
            ids, _ = inputs.data_ids(self.cfg.data, inputs.POOL_ROWS)
            return ids
        if self.fmap is not None:
            return inputs.random_ids(self.fmap, inputs.POOL_ROWS, seed=self.cfg.seed)
        # Only a server: members map any id outside a field's vocabulary to its OOV id, so any ids do.
        features = self.served_info.features if self.served_info else None
        if not features:
            raise UserError(f"{self.cfg.url} serves no ensemble_mM or fused_mM model (input width unknown)")
        return inputs.any_ids(features, inputs.POOL_ROWS, seed=self.cfg.seed)

    @property
    def precision(self) -> str:
        """The export's precision: its manifest, else the served configs' `ttsrec.precision`."""
        if self.repo is not None and self.repo.manifest.get("precision"):
            return str(self.repo.manifest["precision"])
        if self.served_info is not None and self.served_info.precision:
            return self.served_info.precision
        return "fp32"

    @property
    def source(self) -> str:
        return str(self.repo.path if self.repo else self.cfg.url)

    def _m_values(self, served: set[str] | None) -> list[int]:
        have: set[int] = set()
        if served is not None:
            have |= {
                int(n.rsplit("_m", 1)[1])
                for n in served
                if n.rsplit("_m", 1)[-1].isdigit() and n.startswith(("ensemble_m", "fused_m"))
            }
        if self.repo is not None and (served is None or "inprocess" in self.cfg.modes):
            have = (have & set(self.repo.m_values)) if served is not None else set(self.repo.m_values)
        where = self.cfg.url or str(self.cfg.repository)
        if not have and set(self.cfg.modes) - {"sharded"}:
            raise UserError(f"{where} has no ensemble_mM or fused_mM models")
        wanted = self.cfg.m_list if self.cfg.m_list is not None else sorted(have)
        missing = [m for m in wanted if m not in have]
        if missing and set(self.cfg.modes) - {"sharded"}:
            raise UserError(
                f"M={', '.join(map(str, missing))} not in {where} (it has M = "
                f"{', '.join(map(str, sorted(have))) or 'none'})"
            )
        return wanted

    def _check_model(self, model: str, served: set[str] | None, mode: str) -> None:
        available = served if served is not None else (self.repo.models if self.repo else set())
        if model not in available:
            raise UserError(
                f"--mode {mode} needs {model}, which {self.cfg.url or self.cfg.repository} does not have "
                f"(exported with --no-fused?)"
            )

    def plan(self, served: set[str] | None, shard_m: int | None) -> list[Point]:
        ms = self._m_values(served) if set(self.cfg.modes) - {"sharded"} else []
        points = []
        for mode in self.cfg.modes:
            mode_ms = ([shard_m] if shard_m else []) if mode == "sharded" else ms
            for m in mode_ms:
                if mode in TRITON_MODES:
                    self._check_model(
                        naming.ensemble_name(m) if mode == "ensemble" else naming.fused_name(m), served, mode
                    )
                labels = ["inprocess_members", "inprocess_fused"] if mode == "inprocess" else [mode]
                for label in labels:
                    if label == "inprocess_fused":
                        self._check_model(naming.fused_name(m), None, mode)
                    for batch in self.cfg.batches:
                        for conc in self.cfg.concurrencies:
                            points.append(Point(label, m, batch, conc))
        return points

    # -- running -----------------------------------------------------------------------------

    def run(
        self,
        on_plan: Callable[[list[Point]], None] = lambda p: None,
        on_start: Callable[[Point], None] = lambda p: None,
        on_row: Callable[[Point, Row], None] = lambda p, r: None,
        on_status: Callable[[str], None] = lambda s: None,
    ) -> SweepResult:
        on_status("measuring the roofline: GEMM per precision, read bandwidth, cache size")
        roofline = self._roofline()
        rows: list[Row] = []
        shard_rows: list[Row] = []
        accuracy: list[dict[str, Any]] = []
        notes: dict[str, Any] = {"usable_cores": usable_cores(), "targets": {}}
        with ExitStack() as stack:
            url, main_pids, shard_pids = self.cfg.url, [], []
            needs_server = bool(set(self.cfg.modes) & set(TRITON_MODES)) or (
                self.cfg.eval_data is not None and "inprocess" not in self.cfg.modes
            )
            if url is None and needs_server:
                on_status(f"starting tritonserver on {self.cfg.repository}")
                url, pid = stack.enter_context(
                    _server(self.repo.path if self.repo else self.cfg.repository, self.cfg.protocol)
                )
                main_pids = [pid]
            served = self.served if self.cfg.url else server_models(url, self.cfg.protocol) if url else None
            shard_urls = list(self.cfg.shard_urls)
            if "sharded" in self.cfg.modes and not shard_urls:
                on_status(f"starting shard servers on {self.cfg.shards_repository}")
                shard_urls, shard_pids = stack.enter_context(
                    _shard_servers(self.cfg.shards_repository, self.cfg.protocol, self.core_sets)
                )
                if self.core_sets is not None:
                    from ttsrec.serve import find_shards

                    notes["pinning"] = pinning.plan_notes(
                        self.core_sets, find_shards(self.cfg.shards_repository)  # type: ignore[arg-type]
                    ) | {"affinity": pinning.check_affinity(shard_pids, self.core_sets)}
            shard_m = self._shard_m(shard_urls) if "sharded" in self.cfg.modes else None
            points = self.plan(served, shard_m)
            on_plan(points)
            targets: dict[tuple[str, int, int], Target] = {}
            for point in points:
                on_start(point)
                target = self._target(point, url, shard_urls, targets)
                target.server_pids = shard_pids if point.mode == "sharded" else main_pids
                if point.mode.startswith("inprocess"):
                    target.server_pids = []
                row = self._measure(target, point)
                row.precision, row.repository = self.precision, self.source
                if point.mode != "sharded":  # a sharded export's members may differ from this one's
                    analysis.set_roof_fractions(row, self._macs_per_row(point.m), roofline)
                rows.append(row)
                key = f"{point.mode}_m{point.m}" + (f"_c{point.concurrency}" if "fused" in point.mode else "")
                notes["targets"][key] = {"model": target.model, **target.notes}
                on_row(point, row)
                if point.mode == "sharded":
                    for i, shard_url in enumerate(shard_urls):
                        alone = triton_target(
                            "shard", point.m, shard_url, self.cfg.protocol, naming.SHARD_ENSEMBLE
                        )
                        alone.server_pids = shard_pids[i : i + 1]
                        shard_row = self._measure(alone, point)
                        shard_row.model = f"shard {i} ({shard_url})"
                        shard_row.precision, shard_row.repository = self.precision, self.source
                        shard_rows.append(shard_row)
                targets = {k: v for k, v in targets.items() if k[1] == point.m}  # free other M's sessions
            if self.cfg.eval_data is not None:
                on_status(f"evaluating AUC/logloss per M on {self.cfg.eval_data}")
                accuracy = self._evaluate(url, served, sorted({p.m for p in points if p.mode != "sharded"}))
        weight_bytes = self._weight_bytes(sorted({p.m for p in points if p.mode != "sharded"}))
        return SweepResult(
            config=self.cfg,
            rows=rows,
            shard_rows=shard_rows,
            roofline=roofline,
            weight_bytes=weight_bytes,
            accuracy=accuracy,
            manifest=self.repo.manifest if self.repo else None,
            notes=notes,
        )

    def _target(
        self, point: Point, url: str | None, shard_urls: list[str], cache: dict[tuple[str, int, int], Target]
    ) -> Target:
        key = (point.mode, point.m, point.concurrency if point.mode == "inprocess_fused" else 0)
        if key in cache:
            return cache[key]
        mode, m = point.mode, point.m
        if mode == "ensemble":
            target = triton_target(mode, m, url, self.cfg.protocol, naming.ensemble_name(m))
        elif mode == "fused":
            target = triton_target(mode, m, url, self.cfg.protocol, naming.fused_name(m))
        elif mode == "sharded":
            target = sharded_target(m, shard_urls, self.cfg.protocol)
        elif mode == "inprocess_members":
            assert self.repo is not None
            target = inprocess_members_target(m, [self.repo.onnx_path(n) for n in self.repo.members(m)])
        else:
            assert self.repo is not None
            target = inprocess_fused_target(m, self.repo.onnx_path(naming.fused_name(m)), point.concurrency)
        cache[key] = target
        return target

    def _use_perf_analyzer(self, target: Target, point: Point) -> bool:
        """perf_analyzer for served rows; with `auto` only at batch 1, where the native client's own
        per-request overhead is a visible share of the latency, and only when it is installed."""
        if target.url is None or target.mode == "sharded":
            return False
        if self.cfg.engine == "auto":
            return point.batch == 1 and perf_analyzer.locate() is not None
        return self.cfg.engine == "perf_analyzer"

    def _measure(self, target: Target, point: Point) -> Row:
        if self._use_perf_analyzer(target, point):
            return perf_analyzer.run(
                target.model,
                target.url,
                target.protocol,
                point.batch,
                point.concurrency,
                self.cfg.settings,
                self.pool,
                mode=target.mode,
                m=point.m,
            )
        load = target.make_load(inputs.batches(self.pool, point.batch))
        stats, pids = target.snapshot, list(target.server_pids)

        def snapshot() -> tuple[Any, float]:
            return (stats() if stats else None), tree_cpu_seconds(pids)

        result = measure(
            load,
            point.concurrency,
            point.batch,
            self.cfg.settings,
            snapshot,
            label=f"{target.mode} {target.model} batch {point.batch} c={point.concurrency}",
        )
        return _row(target, point, result)

    def _shard_m(self, urls: list[str]) -> int:
        total = 0
        for url in urls:
            config = model_config(url, self.cfg.protocol, naming.SHARD_ENSEMBLE)
            steps = config.get("ensemble_scheduling", {}).get("step", [])
            total += sum(1 for s in steps if s["model_name"].startswith("member_")) or 1
        return total

    def _roofline(self) -> Roofline:
        """Before any server starts; read rates at the weight sizes the batch-1 rows will read."""
        ms = self._m_values(self.served) if set(self.cfg.modes) - {"sharded"} else []
        return Roofline.measure(self._weight_bytes(ms).values())

    def _macs_per_row(self, m: int) -> int | None:
        """Dense MACs of one row through ensemble_mM's members, as the exporter counted them
        (`ttsrec.models.cost`, in the manifest); None without a local repository or the counts."""
        if self.repo is None or not self.repo.has(naming.ensemble_name(m)):
            return None
        costs = {r["name"]: r.get("cost", {}) for r in self.repo.manifest.get("members", [])}
        macs = [costs.get(n, {}).get("macs_per_sample") for n in self.repo.members(m)]
        return sum(macs) if macs and all(isinstance(x, int) for x in macs) else None

    def _weight_bytes(self, ms: list[int]) -> dict[int, int]:
        if self.repo is None:  # the served configs' ttsrec.weight_bytes (ONNX bytes, tables included)
            known = self.served_info.weight_bytes if self.served_info else {}
            return {m: known[m] for m in ms if m in known}
        out = {}
        for m in ms:
            if self.repo.has(naming.ensemble_name(m)):
                out[m] = sum(self.repo.member_weight_bytes(n) for n in self.repo.members(m))
        return out

    def _evaluate(self, url: str | None, served: set[str] | None, ms: list[int]) -> list[dict[str, Any]]:
        from ttsrec.bench.accuracy import evaluate_served, evaluate_session

        ids, labels = inputs.data_ids(self.cfg.eval_data, self.cfg.eval_rows)
        if self.fmap is not None:
            inputs.check_matches(FeatureMap.load(self.cfg.eval_data), self.cfg.eval_data, self.fmap)
        out = []
        for m in ms:
            if url is not None and served is not None:
                model = next(
                    (n for n in (naming.ensemble_name(m), naming.fused_name(m)) if n in served), None
                )
                if model is None:
                    continue
                out.append(
                    evaluate_served(url, self.cfg.protocol, model, ids, labels)
                    | {"m": m, "precision": self.precision, "repository": self.source}
                )
            elif self.repo is not None:
                out.append(
                    evaluate_session(self.repo.onnx_path(naming.fused_name(m)), ids, labels)
                    | {"m": m, "precision": self.precision, "repository": self.source}
                )
        return out


def _row(target: Target, point: Point, result: Measurement) -> Row:
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


@contextmanager
def _server(repository: Path, protocol: str) -> Iterator[tuple[str, int]]:
    from ttsrec.serve import TritonServer

    with TritonServer(repository) as server:
        yield server.url(protocol), server.pid


@contextmanager
def _shard_servers(
    export_dir: Path | None, protocol: str, cpu_sets: list[list[int]] | None = None
) -> Iterator[tuple[list[str], list[int]]]:
    from ttsrec.serve import ShardedServers

    assert export_dir is not None
    if not Path(export_dir).is_dir():
        raise UserError(f"shards repository not found: {export_dir}")
    with ShardedServers(export_dir, cpu_sets=cpu_sets) as servers:
        yield servers.urls(protocol), [server.pid for server in servers.servers]


def combine(results: list[SweepResult]) -> SweepResult:
    """Several repositories (e.g. one export per precision) benched in one run: one table, one JSON."""
    if len(results) == 1:
        return results[0]
    first = results[0]
    by_source = {
        (r.rows[0].repository if r.rows else str(r.config.repository)): r.weight_bytes for r in results
    }
    return SweepResult(
        config=first.config,
        rows=[row for r in results for row in r.rows],
        shard_rows=[row for r in results for row in r.shard_rows],
        roofline=first.roofline.merged(r.roofline for r in results[1:] if r.roofline)
        if first.roofline
        else None,
        weight_bytes=first.weight_bytes,
        accuracy=[a for r in results for a in r.accuracy],
        manifest=first.manifest,
        notes={"repositories": [str(r.config.url or r.config.repository) for r in results], **first.notes},
        metadata=first.metadata,
        weight_bytes_by_source=by_source,
    )
