"""The sweep: modes × M × batch × concurrency, one measured row each, as plan → run → report.

Each step has its own module: `config` (what to measure, validated), `sources` (repository, server,
request pool), `plan` (the rows), `servers` (started here when no URL is given), `runner` (one row
per point), `result` (rows, derived figures, JSON). This one orders them: the roofline first, while
the machine is quiet, then the servers, the rows and the accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from ttsrec.bench import analysis, perf_analyzer, pinning
from ttsrec.bench.config import ENGINES, PROTOCOLS, SweepConfig
from ttsrec.bench.plan import Point, m_values, plan, shard_m, unsharded_ms
from ttsrec.bench.repo_info import RepositoryInfo
from ttsrec.bench.result import SweepResult, combine
from ttsrec.bench.roofline import Roofline
from ttsrec.bench.row import RAW, Row
from ttsrec.bench.runner import TargetCache, cascade_cost, evaluate, measure_point, target_for
from ttsrec.bench.servers import server, shard_servers
from ttsrec.bench.sources import Sources
from ttsrec.bench.targets import model_config, server_models, triton_target, usable_cores
from ttsrec.data.feature_map import FeatureMap
from ttsrec.ensemble.modes import INPROCESS_MODES, TRITON_MODES, Mode
from ttsrec.repository import naming

__all__ = ["ENGINES", "PROTOCOLS", "Point", "Sweep", "SweepConfig", "SweepResult", "combine"]


class Sweep:
    """Load and plan, then run; `on_row(point, row)` and `on_start(point)` let a CLI show progress."""

    def __init__(self, config: SweepConfig) -> None:
        config.validate()  # once more: a dataclass can be changed after it was built
        self.cfg = config
        if config.engine == "perf_analyzer":
            perf_analyzer.find_perf_analyzer()
        self.sources = Sources.load(config)
        # Bad M values or missing models fail here, before anything starts.
        if set(config.modes) - {Mode.SHARDED}:
            self.plan(self.sources.served, 1)

    @property
    def repo(self) -> RepositoryInfo | None:
        return self.sources.repo

    @property
    def fmap(self) -> FeatureMap | None:
        return self.sources.fmap

    @property
    def precision(self) -> str:
        return self.sources.precision

    @property
    def source(self) -> str:
        return self.sources.source

    def plan(self, served: set[str] | None, shard_m: int | None) -> list[Point]:
        return plan(self.cfg, served, self.sources.local, shard_m)

    def run(
        self,
        on_plan: Callable[[list[Point]], None] = lambda p: None,
        on_start: Callable[[Point], None] = lambda p: None,
        on_row: Callable[[Point, Row], None] = lambda p, r: None,
        on_status: Callable[[str], None] = lambda s: None,
    ) -> SweepResult:
        cfg, src = self.cfg, self.sources
        on_status("measuring the roofline: GEMM per precision, read bandwidth, cache size")
        # Before any server starts; read rates at the weight sizes the batch-1 rows will read.
        roofline = Roofline.measure(src.weight_bytes(m_values(cfg, src.served, src.local)).values())
        rows: list[Row] = []
        shard_rows: list[Row] = []
        accuracy: list[dict[str, Any]] = []
        notes: dict[str, Any] = {"usable_cores": usable_cores(), "targets": {}}
        if src.raw_pool is not None:
            notes["raw_records"] = src.raw_pool.source + "; the id rows send the same rows' ids"
        with ExitStack() as stack:
            url, main_pids, shard_pids = cfg.url, [], []
            needs_server = bool(set(cfg.modes) & set(TRITON_MODES)) or (
                cfg.eval_data is not None and Mode.INPROCESS not in cfg.modes
            )
            if url is None and needs_server:
                on_status(f"starting tritonserver on {cfg.repository}")
                repository = src.repo.path if src.repo else cfg.repository
                url, pid = stack.enter_context(server(repository, cfg.protocol))
                main_pids = [pid]
            served = src.served if cfg.url else server_models(url, cfg.protocol) if url else None
            shard_urls = list(cfg.shard_urls)
            if Mode.SHARDED in cfg.modes and not shard_urls:
                on_status(f"starting shard servers on {cfg.shards_repository}")
                shard_urls, shard_pids = stack.enter_context(
                    shard_servers(cfg.shards_repository, cfg.protocol, src.core_sets)
                )
                if src.core_sets is not None:
                    from ttsrec.serve import find_shards

                    notes["pinning"] = pinning.plan_notes(
                        src.core_sets, find_shards(cfg.shards_repository)  # type: ignore[arg-type]
                    ) | {"affinity": pinning.check_affinity(shard_pids, src.core_sets)}
            sharded_m = self._shard_m(shard_urls) if Mode.SHARDED in cfg.modes else None
            points = self.plan(served, sharded_m)
            on_plan(points)
            targets: TargetCache = {}
            for point in points:
                on_start(point)
                target = target_for(point, cfg, src, url, shard_urls, targets)
                target.server_pids = shard_pids if point.mode == Mode.SHARDED else main_pids
                if point.mode in INPROCESS_MODES:
                    target.server_pids = []
                row = measure_point(target, point, cfg, src.pool_for(point.inputs))
                row.precision, row.repository, row.inputs = src.precision, src.source, point.inputs
                macs = src.macs_per_row(point.m)
                if point.mode == Mode.CASCADE:
                    row.members_per_row, macs = cascade_cost(target, src.pool_for(point.inputs), point.batch,
                                                             src.member_macs(point.m))
                if point.mode != Mode.SHARDED:  # a sharded export's members may differ from this one's
                    analysis.set_roof_fractions(row, macs, roofline)
                rows.append(row)
                fused = point.mode in (Mode.FUSED, Mode.INPROCESS_FUSED)
                key = f"{point.mode}_m{point.m}" + (f"_c{point.concurrency}" if fused else "")
                key = f"raw_{key}" if point.inputs == RAW else key
                notes["targets"][key] = {"model": target.model, **target.notes}
                on_row(point, row)
                if point.mode == Mode.SHARDED:
                    shard_rows += self._each_shard_alone(point, shard_urls, shard_pids)
                targets = {k: v for k, v in targets.items() if k[1] == point.m}  # free other M's sessions
            if cfg.eval_data is not None:
                on_status(f"evaluating AUC/logloss per M on {cfg.eval_data}")
                accuracy = evaluate(cfg, src, url, served, unsharded_ms(points))
        return SweepResult(
            config=cfg,
            rows=rows,
            shard_rows=shard_rows,
            roofline=roofline,
            weight_bytes=src.weight_bytes(unsharded_ms(points)),
            accuracy=accuracy,
            manifest=src.repo.manifest if src.repo else None,
            notes=notes,
        )

    def _each_shard_alone(self, point: Point, shard_urls: list[str], shard_pids: list[int]) -> list[Row]:
        """The sharded point again on each shard server by itself: the fan-out's baseline."""
        out = []
        for i, shard_url in enumerate(shard_urls):
            alone = triton_target(Mode.SHARD, point.m, shard_url, self.cfg.protocol, naming.SHARD_ENSEMBLE)
            alone.server_pids = shard_pids[i : i + 1]
            row = measure_point(alone, point, self.cfg, self.sources.pool)
            row.model = f"shard {i} ({shard_url})"
            row.precision, row.repository = self.precision, self.source
            out.append(row)
        return out

    def _shard_m(self, urls: list[str]) -> int:
        return shard_m(model_config(url, self.cfg.protocol, naming.SHARD_ENSEMBLE) for url in urls)
