"""The sweep: modes × M × batch × concurrency, one measured row each, as plan → run → report.

Each step has its own module: `config` (what to measure, validated), `sources` (repository, server,
request pool), `plan` (the rows), `servers` (started here when no URL is given), `modes` (each mode's
targets and special cases), `runner` (one row per point), `result` (rows, derived figures, JSON). This one
orders them: the roofline first, while the machine is quiet, then the servers, the rows and the accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

from ttsrec.bench import analysis, perf_analyzer, servers
from ttsrec.bench.config import ENGINES, PROTOCOLS, SweepConfig
from ttsrec.bench.modes import Deployment, mode_of_row, selected
from ttsrec.bench.plan import m_values, plan, unsharded_ms
from ttsrec.bench.point import Point
from ttsrec.bench.repo_info import RepositoryInfo
from ttsrec.bench.result import SweepResult, combine
from ttsrec.bench.roofline import Roofline
from ttsrec.bench.row import Row
from ttsrec.bench.runner import evaluate, measure_point
from ttsrec.bench.sources import Sources
from ttsrec.bench.targets import Target, usable_cores
from ttsrec.data.feature_map import FeatureMap

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
        if not all(u.shards for u in selected(config.modes)):
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
        accuracy: list[dict[str, Any]] = []
        notes: dict[str, Any] = {"usable_cores": usable_cores(), "targets": {}}
        if src.raw_pool is not None:
            notes["raw_records"] = src.raw_pool.source + "; the id rows send the same rows' ids"
        with ExitStack() as stack:
            running = servers.start(cfg, src, stack, on_status)
            if running.pinning is not None:
                notes["pinning"] = running.pinning
            points = self.plan(running.served, running.shard_m)
            on_plan(points)
            rows, shard_rows = self._rows(points, self._deployment(running), roofline, notes["targets"],
                                          on_start, on_row)
            if cfg.eval_data is not None:
                on_status(f"evaluating AUC/logloss per M on {cfg.eval_data}")
                accuracy = evaluate(cfg, src, running.url, running.served, unsharded_ms(points))
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

    def _deployment(self, running: servers.Servers) -> Deployment:
        """What the modes' targets and after-row measurements need of this sweep."""
        cfg, src = self.cfg, self.sources

        def measure(target: Target, point: Point, pool: Any) -> Row:
            row = measure_point(target, point, cfg, pool)
            row.precision, row.repository = src.precision, src.source
            return row

        return Deployment(protocol=cfg.protocol, url=running.url, server_pids=running.pids,
                          shard_urls=running.shard_urls, shard_pids=running.shard_pids, repo=src.repo,
                          pool_for=src.pool_for, member_macs=src.member_macs, measure=measure)

    def _rows(self, points: list[Point], run: Deployment, roofline: Roofline, targets_notes: dict[str, Any],
              on_start: Callable[[Point], None],
              on_row: Callable[[Point, Row], None]) -> tuple[list[Row], list[Row]]:
        """Each point's row, in order, and the rows its mode measures after it (`shard_rows`)."""
        assert run.measure is not None
        rows: list[Row] = []
        shard_rows: list[Row] = []
        targets: dict[tuple[str, int, int, str], Target] = {}
        for point in points:
            on_start(point)
            unit = mode_of_row(point.mode)
            assert unit is not None, f"{point.mode} is planned by no mode"
            key = unit.cache_key(point)
            target = targets[key] = targets.get(key) or unit.target(point, run)
            target.server_pids = unit.server_pids(run)
            row = run.measure(target, point, run.pool_for(point.inputs))
            row.inputs = point.inputs
            analysis.set_roof_fractions(row, unit.macs(row, target, point, run), roofline)
            rows.append(row)
            targets_notes[unit.note_key(point)] = {"model": target.model, **target.notes}
            on_row(point, row)
            shard_rows += unit.after_row(row, point, run)
            targets = {k: v for k, v in targets.items() if k[1] == point.m}  # free other M's sessions
        return rows, shard_rows
