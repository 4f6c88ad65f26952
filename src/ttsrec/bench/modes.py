"""The bench's modes, each one small unit that owns its special cases.

A mode says which rows a `--mode` choice gives (`rows`), which M values and models they need (`ms`,
`check_models`), the target each row measures (`target`), the server processes whose CPU its rows report
(`server_pids`), the MACs a row costs (`macs`) and what it measures after a row (`after_row`). Its
capabilities (`raw_twin`, `main_server`, `in_process`, `shards`, `served`, `perf_analyzer`) are what
`config`, `plan`, `sources`, `servers`, `runner` and `analysis` ask: none of them names a mode.

Adding a mode: its name in `ttsrec.ensemble.modes.Mode`, its class here with its entry in `MODES`, and a test.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ttsrec.bench import inputs
from ttsrec.bench.point import Point
from ttsrec.bench.repo_info import RepositoryInfo
from ttsrec.bench.row import RAW, Row
from ttsrec.bench.targets import (
    REQUEST_TIMEOUT_S,
    Target,
    inprocess_fused_target,
    inprocess_members_target,
    sharded_target,
    triton_target,
)
from ttsrec.ensemble.modes import Mode
from ttsrec.errors import UserError
from ttsrec.repository import naming

_RAW_M_RE = re.compile(r"^raw_(?:ensemble|fused)_m(\d+)$")

__all__ = ["MODES", "BenchMode", "Deployment", "Models", "check_modes", "mode_of_row", "raw_m_values",
           "selected", "served_rows"]


@dataclass(frozen=True)
class Models:
    """The models a plan checks a mode's rows against, and where they are (for the messages)."""

    served: set[str] | None
    """What the server has loaded (None: no server asked)."""
    local: set[str] | None
    """The local repository's models (None: no local copy)."""
    where: str
    """The URL, else the repository."""

    @property
    def available(self) -> set[str]:
        """What the served modes query: the server's models, else the local repository's."""
        return (self.served if self.served is not None else self.local) or set()


@dataclass
class Deployment:
    """What a running sweep hands its modes: the servers it reaches, the local copy, how it measures."""

    protocol: str
    url: str | None = None
    """The main tritonserver (None: none needed)."""
    server_pids: list[int] = field(default_factory=list)
    """Processes of the main server this sweep started (their CPU goes in the rows)."""
    shard_urls: list[str] = field(default_factory=list)
    shard_pids: list[int] = field(default_factory=list)
    repo: RepositoryInfo | None = None
    pool_for: Callable[[str], Any] = lambda kind: None
    """What a row's loads cut their batches from: ids, or (`raw`) raw records."""
    member_macs: Callable[[int], list[int] | None] = lambda m: None
    """Dense MACs of each of ensemble_mM's members (None where not counted)."""
    measure: Callable[[Target, Point, Any], Row] | None = None
    """One row of a target at a point from a pool, with the sweep's engine and settings, tagged with the
    repository and precision."""

    def macs_per_row(self, m: int) -> int | None:
        macs = self.member_macs(m)
        return None if macs is None else sum(macs)


class BenchMode:
    """A `--mode` choice. The defaults describe a mode of one row per point, on the main server."""

    name: ClassVar[str]
    rows: ClassVar[tuple[str, ...]] = ()
    """The rows' modes, in measuring order (default: the name alone)."""
    raw_twin: ClassVar[bool] = False
    """`--raw` measures each row again with raw records to the model's `raw_*` twin, right after it."""
    main_server: ClassVar[bool] = False
    """Queries the main tritonserver (started on `--repository` without `-u`)."""
    in_process: ClassVar[bool] = False
    """Runs the local repository's graphs in this process: needs the local copy, and its M values."""
    shards: ClassVar[bool] = False
    """Its rows come from shard servers: M from the shard export, `--pin-cores` applies."""
    served: ClassVar[bool] = True
    """Its rows go through tritonserver: compared with the in-process fused graph (`analysis`)."""
    perf_analyzer: ClassVar[bool] = True
    """`--engine perf_analyzer` may measure its id rows (a model on one server)."""
    min_m: ClassVar[int] = 1

    def row_modes(self) -> tuple[str, ...]:
        return self.rows or (self.name,)

    def ms(self, ms: Sequence[int], shard_m: int | None) -> list[int]:
        """The M values this mode measures, given the sweep's (and the shard export's)."""
        return [m for m in ms if m >= self.min_m]

    def check_models(self, m: int, models: Models, raw: bool) -> None:
        """A one-line `UserError` when a model its rows at M need is missing."""

    def target(self, point: Point, run: Deployment) -> Target:
        raise NotImplementedError

    def cache_key(self, point: Point) -> tuple[str, int, int, str]:
        """Targets (sessions, channels) are reused between the points of one key."""
        return (point.mode, point.m, 0, point.inputs)

    def note_key(self, point: Point) -> str:
        """The target's entry in the JSON's `notes.targets`."""
        key = f"{point.mode}_m{point.m}"
        return f"raw_{key}" if point.inputs == RAW else key

    def server_pids(self, run: Deployment) -> list[int]:
        """Server processes whose CPU the rows report."""
        return run.server_pids

    def macs(self, row: Row, target: Target, point: Point, run: Deployment) -> int | None:
        """Dense MACs of one of the row's rows (the compute roof's numerator); None: not known."""
        return run.macs_per_row(point.m)

    def after_row(self, row: Row, point: Point, run: Deployment) -> list[Row]:
        """Rows measured after this one for its figures (the JSON's `shard_rows`)."""
        return []


# -- one model on the main tritonserver ---------------------------------------------------------------


class TritonMode(BenchMode):
    main_server = True
    hint: ClassVar[str] = "exported with --no-fused?"

    def model(self, m: int) -> str:
        raise NotImplementedError

    def raw_model(self, m: int) -> str:
        raise NotImplementedError(f"{self.name} has no raw-record twin")

    def check_models(self, m: int, models: Models, raw: bool) -> None:
        check_model(self.model(m), models.available, models.where, self.name, self.hint)
        if raw and self.raw_twin:
            check_raw_model(self.raw_model(m), models.available, models.where)

    def target(self, point: Point, run: Deployment) -> Target:
        model = self.raw_model(point.m) if point.inputs == RAW else self.model(point.m)
        return triton_target(point.mode, point.m, run.url, run.protocol, model)  # type: ignore[arg-type]


class Ensemble(TritonMode):
    """Triton `ensemble_mM`: M member models in parallel, then the merge step."""

    name = Mode.ENSEMBLE
    raw_twin = True

    def model(self, m: int) -> str:
        return naming.ensemble_name(m)

    def raw_model(self, m: int) -> str:
        return naming.raw_ensemble_name(m)


class Fused(TritonMode):
    """Triton `fused_mM`: all M members and the merge in one ONNX graph."""

    name = Mode.FUSED
    raw_twin = True

    def model(self, m: int) -> str:
        return naming.fused_name(m)

    def raw_model(self, m: int) -> str:
        return naming.raw_fused_name(m)

    def note_key(self, point: Point) -> str:
        return _with_concurrency(super().note_key(point), point)


class Cascade(TritonMode):
    """Triton `cascade_mM`: members in stages; a row's cost is read from the server's answers."""

    name = Mode.CASCADE
    min_m = 2  # one member has nothing to skip
    hint = "tts-export --cascade writes them, for M >= 2"

    def model(self, m: int) -> str:
        return naming.cascade_name(m)

    def macs(self, row: Row, target: Target, point: Point, run: Deployment) -> int | None:
        row.members_per_row, macs = cascade_cost(target, run.pool_for(point.inputs), point.batch,
                                                 run.member_macs(point.m))
        return macs


def cascade_cost(target: Target, pool: Any, batch: int,
                 member_macs: list[int] | None) -> tuple[float, int | None]:
    """A cascade row's cost, read from the server's answers: each of the row's request batches sent once,
    the average of `members_used` over their rows, and the dense MACs per row that implies (a row that
    went through k members paid for the first k)."""
    from ttsrec.client.transport import Transport

    assert target.url is not None
    transport = Transport(target.url, target.protocol, REQUEST_TIMEOUT_S)
    try:
        used = np.concatenate([
            transport.infer(target.model, naming.FEAT_IDS, ids, (naming.MEMBERS_USED,))[naming.MEMBERS_USED]
            .reshape(-1) for ids in inputs.batches(pool, batch)]).astype(np.int64)
    finally:
        transport.close()
    macs = None if member_macs is None else round(float(np.cumsum(member_macs)[used - 1].mean()))
    return float(used.mean()), macs


# -- K shard servers -----------------------------------------------------------------------------------


class Sharded(BenchMode):
    """K shard servers, each summing its members, merged by `ShardedClient`; then each shard alone."""

    name = Mode.SHARDED
    shards = True
    perf_analyzer = False  # its own client fans out

    def ms(self, ms: Sequence[int], shard_m: int | None) -> list[int]:
        return [shard_m] if shard_m else []

    def target(self, point: Point, run: Deployment) -> Target:
        return sharded_target(point.m, run.shard_urls, run.protocol)

    def server_pids(self, run: Deployment) -> list[int]:
        return run.shard_pids

    def macs(self, row: Row, target: Target, point: Point, run: Deployment) -> int | None:
        return None  # a sharded export's members may differ from this repository's

    def after_row(self, row: Row, point: Point, run: Deployment) -> list[Row]:
        """The point again on each shard server by itself: the fan-out's baseline."""
        assert run.measure is not None
        out = []
        for i, shard_url in enumerate(run.shard_urls):
            alone = triton_target(Mode.SHARD, point.m, shard_url, run.protocol, naming.SHARD_ENSEMBLE)
            alone.server_pids = run.shard_pids[i : i + 1]
            shard_row = run.measure(alone, point, run.pool_for(point.inputs))
            shard_row.model = f"shard {i} ({shard_url})"
            out.append(shard_row)
        return out


# -- onnxruntime in this process -------------------------------------------------------------------------


class InProcess(BenchMode):
    """onnxruntime in the bench's process: the members one by one, and the fused graph."""

    name = Mode.INPROCESS
    rows = (Mode.INPROCESS_MEMBERS, Mode.INPROCESS_FUSED)
    in_process = True
    served = False

    def check_models(self, m: int, models: Models, raw: bool) -> None:
        check_model(naming.fused_name(m), models.local, models.where, self.name, "exported with --no-fused?")

    def target(self, point: Point, run: Deployment) -> Target:
        repo, m = run.repo, point.m
        assert repo is not None
        if point.mode == Mode.INPROCESS_MEMBERS:
            return inprocess_members_target(m, [repo.onnx_path(n) for n in repo.members(m)])
        return inprocess_fused_target(m, repo.onnx_path(naming.fused_name(m)), point.concurrency)

    def cache_key(self, point: Point) -> tuple[str, int, int, str]:
        fused = point.mode == Mode.INPROCESS_FUSED  # intra-op threads depend on the concurrency
        return (point.mode, point.m, point.concurrency if fused else 0, point.inputs)

    def note_key(self, point: Point) -> str:
        key = super().note_key(point)
        return _with_concurrency(key, point) if point.mode == Mode.INPROCESS_FUSED else key

    def server_pids(self, run: Deployment) -> list[int]:
        return []


MODES: dict[str, BenchMode] = {unit.name: unit for unit in (Ensemble(), Fused(), Cascade(), Sharded(),
                                                            InProcess())}
"""Every `--mode` choice, in the order `tts-bench --help` lists them."""


def selected(modes: Sequence[str]) -> list[BenchMode]:
    """The units of a config's (checked) modes, in its order."""
    return [MODES[m] for m in modes]


def served_rows() -> list[str]:
    """Row modes that go through tritonserver, in `MODES` order (compared with the in-process fused graph)."""
    return [row for unit in MODES.values() if unit.served for row in unit.row_modes()]


def mode_of_row(row_mode: str) -> BenchMode | None:
    """The unit whose rows carry this mode (None: a row no `--mode` plans, e.g. one shard alone)."""
    return next((u for u in MODES.values() if row_mode in u.row_modes()), None)


def check_modes(modes: Sequence[str]) -> list[str]:
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        raise UserError(f"unknown mode {', '.join(unknown)} (choose from {', '.join(MODES)})")
    return list(dict.fromkeys(modes))


def check_model(model: str, available: set[str] | None, where: str, mode: str, hint: str) -> None:
    if model not in (available or set()):
        raise UserError(f"--mode {mode} needs {model}, which {where} does not have ({hint})")


def check_raw_model(model: str, available: set[str] | None, where: str) -> None:
    have = raw_m_values(available or set())
    if not have:
        raise UserError(f"--raw: {where} has no raw_ensemble_mM or raw_fused_mM models (export with "
                        "tts-export --raw-inputs)")
    if model not in (available or set()):
        raise UserError(f"--raw needs {model}, which {where} does not have (it has raw models for "
                        f"M = {', '.join(map(str, sorted(have)))}; tts-export --raw-inputs writes them)")


def raw_m_values(names: Iterable[str]) -> set[int]:
    """M values with a raw_ensemble_mM or raw_fused_mM model (`tts-export --raw-inputs`)."""
    return {int(match.group(1)) for name in names if (match := _RAW_M_RE.match(name))}


def _with_concurrency(key: str, point: Point) -> str:
    return f"{key}_c{point.concurrency}"
