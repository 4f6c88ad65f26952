"""What a run measures and writes, typed and checked in one place, so the Python API rejects what
`tts-bench` rejects.

`BenchConfig` is a whole `tts-bench` run: one `SweepConfig` per repository (with its
`MeasureSettings`), the `OutputPaths` and the latency budget. Every flag of `tts-bench` is one of their
fields (`metadata=flag(...)`, see `bench.flags`): the CLI builds its options from them and its config
with `BenchConfig.from_flags`.

Only the configuration's own meaning is checked here, on construction (no file opened, no server
asked): each rule is a one-line `UserError`, worded as the CLI has always worded it. A mode's own rules
come from its unit (`bench.modes`). What the repositories and servers hold is read when the sweep loads
(`bench.sources`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import Field, astuple, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, get_type_hints

from ttsrec.bench.flags import Flag, flag, parse_concurrency, parse_int_list, parse_modes
from ttsrec.bench.measure import MeasureSettings
from ttsrec.bench.modes import MODES, check_modes, selected
from ttsrec.client.utils import PROTOCOLS
from ttsrec.errors import UserError

ENGINES = ("native", "perf_analyzer", "auto")
PERCENTILES = (50, 90, 95, 99)
RAW_MODES: tuple[str, ...] = tuple(name for name, unit in MODES.items() if unit.raw_twin)
"""Modes whose models have a raw-record twin (`raw_ensemble_mM`, `raw_fused_mM`) that `--raw` measures too."""
DEFAULT_MODES = "ensemble,fused,inprocess"

__all__ = ["ENGINES", "PERCENTILES", "PROTOCOLS", "RAW_MODES", "BenchConfig", "OutputPaths", "SweepConfig",
           "check_settings", "configs_for", "flag_fields"]


def _paths(values: list[str] | None) -> list[Path]:
    return [Path(p) for v in (values or ["model_repository"]) for p in v.split(",") if p.strip()]


@dataclass
class SweepConfig:
    """One repository's sweep: modes × M × batch × concurrency, and how each row is measured."""

    modes: list[str] = field(metadata=flag(
        "--mode", order=12, text=list[str] | None, parse=lambda v: parse_modes(v or [DEFAULT_MODES]),
        help=f"Any of {', '.join(MODES)} (comma list or repeated); default {DEFAULT_MODES}."))
    m_list: list[int] | None = field(default=None, metadata=flag(
        "--m-list", order=11, text=str | None, parse=lambda v: parse_int_list(v, "--m-list") if v else None,
        help="M values, e.g. 1,2,4,8,16 (default: all in the repository)."))
    """None: every M the repository (or the server) has."""
    batches: list[int] = field(default_factory=lambda: [1], metadata=flag(
        "-b", "--batch-size", order=3, text=str, text_default="1",
        parse=lambda v: parse_int_list(v, "-b/--batch-size"), help="Batch sizes, e.g. 1,64,256."))
    concurrencies: list[int] = field(default_factory=lambda: [1], metadata=flag(
        "--concurrency-range", order=4, text=str, text_default="1", parse=parse_concurrency,
        help="start:end[:step] (linear) or a list."))
    repository: Path = Path("model_repository")
    """One of `BenchConfig.repositories` (`--repository`)."""
    shards_repository: Path | None = field(default=None, metadata=flag(
        "--shards-repository", order=14, help="A `tts-export --shards K` output (sharded mode)."))
    url: str | None = field(default=None, metadata=flag(
        "-u", "--url", order=1, help="Running server (host:port); without it "
        "tts-bench starts the bundled tritonserver on --repository."))
    shard_urls: list[str] = field(default_factory=list, metadata=flag(
        "--shard-url", order=15, text=list[str] | None, parse=lambda v: list(v or []),
        help="Running shard servers instead of --shards-repository (repeat)."))
    protocol: str = field(default="grpc", metadata=flag("-i", "--protocol", order=2, help="grpc or http."))
    data: Path | None = field(default=None, metadata=flag(
        "--data", order=17, help="Prepared data dir: send its test rows instead of random valid ids."))
    eval_data: Path | None = field(default=None, metadata=flag(
        "--eval-data", order=22, help="Prepared data dir: AUC/logloss per M through the served models."))
    eval_rows: int = field(default=20_000, metadata=flag(
        "--eval-rows", order=23, help="Test rows for --eval-data."))
    settings: MeasureSettings = field(default_factory=MeasureSettings)
    engine: str = field(default="native", metadata=flag(
        "--engine", order=24, help="native; perf_analyzer (installed by `make perf-analyzer`); auto: "
        "perf_analyzer for the served batch-1 rows when installed, native for the rest (the engine column "
        "says which)."))
    seed: int = field(default=0, metadata=flag("--seed", order=25, help="Seed of the random request ids."))
    pin_cores: bool = field(default=False, metadata=flag(
        "--pin-cores", order=16, help="Sharded mode: pin shard server i to its own cores (cores // K each) "
        "and compare with each shard alone on those cores: K machines modelled on one (K <= usable "
        "cores)."))
    """Sharded mode: pin shard server i to cores [i*c, (i+1)*c), c = cores // K (see `bench.pinning`)."""
    raw: bool = field(default=False, metadata=flag(
        "--raw", order=18, help="Measure each ensemble/fused row again with raw records sent to its "
        "raw_ensemble_mM / raw_fused_mM (tts-export --raw-inputs), next to it (inputs column: ids/raw): the "
        "test rows of --data read again from its raw files, else rows covering the vocabulary; the id rows "
        "send the same rows' ids."))
    """Each ensemble/fused row also with raw records to its `raw_*` twin (`tts-export --raw-inputs`), next to
    it; rows say which in `inputs` (ids/raw)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every rule, in the order `tts-bench` reports them; normalises `modes` (duplicates dropped)."""
        check_settings(self.settings)
        self.modes = check_modes(self.modes)
        if not self.modes:
            raise UserError(f"unknown mode (none) (choose from {', '.join(MODES)})")
        if self.engine not in ENGINES:
            raise UserError(f"unknown engine {self.engine!r} (choose from {', '.join(ENGINES)})")
        if self.protocol not in PROTOCOLS:
            raise UserError(f"unknown protocol {self.protocol!r} (choose {' or '.join(PROTOCOLS)})")
        if not self.batches or not self.concurrencies:
            raise UserError("batch sizes and concurrencies: expected at least one value each")
        if any(b < 1 for b in self.batches) or any(c < 1 for c in self.concurrencies):
            raise UserError("batch sizes and concurrencies must be >= 1")
        if self.m_list is not None and not self.m_list:
            raise UserError("M values: expected at least one (None: every M there is)")
        if self.m_list is not None and any(m < 1 for m in self.m_list):
            raise UserError("M values must be >= 1")
        self._check_mode_rules()

    def _check_mode_rules(self) -> None:
        """What the selected modes' units ask of the other fields."""
        units = selected(self.modes)
        sharded = any(u.shards for u in units)
        if sharded and not (self.shards_repository or self.shard_urls):
            raise UserError(
                "--mode sharded needs --shards-repository (a `tts-export --shards K` output) "
                "or --shard-url for each running shard server"
            )
        if self.pin_cores and (not sharded or self.shard_urls):
            raise UserError("--pin-cores needs --mode sharded with --shards-repository (servers it starts)")
        if self.raw and not any(u.raw_twin for u in units):
            raise UserError("--raw needs --mode ensemble or fused (raw records go to raw_ensemble_mM / "
                            "raw_fused_mM)")
        if self.raw and self.engine == "perf_analyzer":
            raise UserError("--raw: the perf_analyzer engine sends ids only; use --engine native, or auto "
                            "(raw rows native)")


def check_settings(settings: MeasureSettings) -> None:
    """The measurement loop's bounds: windows long enough to count, enough of them to judge stability."""
    if (
        settings.window_ms < 10
        or settings.max_trials < 3
        or settings.stability_pct <= 0
        or settings.warmup_requests < 0
    ):
        raise UserError("-p must be >= 10 ms, --max-trials >= 3, -s > 0, --warmup-request-count >= 0")
    if settings.percentile is not None and settings.percentile not in PERCENTILES:
        raise UserError(f"--percentile must be 50, 90, 95 or 99, got {settings.percentile}")


def configs_for(repositories: Sequence[Path], config: SweepConfig) -> list[SweepConfig]:
    """One config per repository of a combined run; one URL is one server, so it allows one repository."""
    _check_one_server(config.url, repositories)
    return [replace(config, repository=Path(path)) for path in repositories]


def _check_budget(budget_ms: float | None, frontier: Path | None, eval_data: Path | None) -> None:
    if (budget_ms is not None or frontier is not None) and eval_data is None:
        raise UserError("--budget-ms and --frontier need --eval-data (the AUC of each configuration)")
    if budget_ms is not None and not budget_ms > 0:
        raise UserError(f"--budget-ms must be > 0, got {budget_ms}")


def _check_one_server(url: str | None, repositories: Sequence[Path]) -> None:
    if url is not None and len(repositories) > 1:
        raise UserError("-u/--url is one server; several --repository values need tts-bench to start them")


@dataclass(frozen=True)
class OutputPaths:
    """Where a sweep's files go; None: not written."""

    csv: Path | None = field(default=None, metadata=flag(
        "-f", "--latency-report-file", order=10, help="CSV of all rows."))
    """perf_analyzer's `-f` CSV of every row (`tts-bench -f/--latency-report-file`)."""
    json: Path | None = field(default=None, metadata=flag(
        "--json", order=19, help="JSON report (rows, machine, versions)."))
    """The rows with the run's metadata, roofline, derived figures and accuracy (`--json`)."""
    plot: Path | None = field(default=None, metadata=flag(
        "--plot", order=21, help="PNG: throughput and p99 against M."))
    """PNG: throughput and p99 against M (`--plot`)."""
    markdown: Path | None = field(default=None, metadata=flag(
        "--markdown", order=20, help="Markdown tables of the rows and derived figures."))
    """The rows and derived figures as markdown tables (`--markdown`)."""
    frontier: Path | None = field(default=None, metadata=flag(
        "--frontier", order=27, help="With --eval-data: PNG of served AUC against throughput and p99."))
    """PNG: served AUC against throughput and p99; needs the sweep's accuracy (`--frontier`)."""

    def check(self) -> None:
        """Refuse a folder where a file goes, before anything is measured."""
        for path in astuple(self):
            if path is not None and Path(path).is_dir():
                raise UserError(f"{path} is a directory, expected a file path")


@dataclass
class BenchConfig:
    """A whole `tts-bench` run: the sweep of each repository, the files it writes, the latency budget."""

    sweep: SweepConfig
    """The sweep every repository gets (its `repository` replaced by each of `repositories`)."""
    repositories: list[Path] = field(default_factory=lambda: [Path("model_repository")], metadata=flag(
        "--repository", order=13, text=list[str] | None, parse=_paths,
        help="Exported repository; several (comma list or repeated, e.g. an fp32 and an int8 export) "
        "are benched in one run and one table."))
    outputs: OutputPaths = field(default_factory=OutputPaths)
    budget_ms: float | None = field(default=None, metadata=flag(
        "--budget-ms", order=26,
        help="With --eval-data: print the configuration with the best AUC whose p99 stays under this."))

    def __post_init__(self) -> None:
        """This run's own rules (the sweep's are `SweepConfig`'s), in the order `tts-bench` reports them."""
        _check_budget(self.budget_ms, self.outputs.frontier, self.sweep.eval_data)
        _check_one_server(self.sweep.url, self.repositories)
        self.outputs.check()

    @property
    def sweeps(self) -> list[SweepConfig]:
        """One config per repository (`configs_for`)."""
        return configs_for(self.repositories, self.sweep)

    @classmethod
    def from_flags(cls, values: Mapping[str, Any]) -> BenchConfig:
        """The config of `tts-bench`'s flag values (by field name, as `flag_fields` lists them): each parsed
        into its field's type, then checked in the order `tts-bench` has always reported them."""
        _check_budget(values["budget_ms"], values["frontier"], values["eval_data"])
        parsed = {f.name: flag.parse(values[f.name]) if flag.parse else values[f.name]
                  for f, flag, _ in flag_fields()}
        _check_one_server(parsed["url"], parsed["repositories"])
        return _build(cls, parsed)  # type: ignore[return-value]


def flag_fields(cls: type = BenchConfig) -> list[tuple[Field[Any], Flag, Any]]:
    """(field, its flag, its type) of every flag, in declaration order: the config's and those of the
    dataclasses it holds (field names are unique across them)."""
    out: list[tuple[Field[Any], Flag, Any]] = []
    hints = get_type_hints(cls)
    for f in fields(cls):
        if "flag" in f.metadata:
            out.append((f, f.metadata["flag"], hints[f.name]))
        elif is_dataclass(hints[f.name]):
            out += flag_fields(hints[f.name])
    return out


def _build(cls: type, values: Mapping[str, Any]) -> Any:
    """An instance of `cls` from flag values by field name, the dataclasses it holds built first."""
    hints = get_type_hints(cls)
    kwargs = {}
    for f in fields(cls):
        if "flag" in f.metadata:
            kwargs[f.name] = values[f.name]
        elif is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], values)
    return cls(**kwargs)
