"""What a sweep measures, checked in one place, so the Python API rejects what `tts-bench` rejects.

Only the configuration's own meaning is checked here, on construction (no file opened, no server
asked): each rule is a one-line `UserError`, worded as the CLI has always worded it. What the
repositories and servers hold is read when the sweep loads (`bench.sources`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsrec.bench.measure import MeasureSettings
from ttsrec.bench.targets import check_modes
from ttsrec.client.utils import PROTOCOLS
from ttsrec.ensemble.modes import CLI_MODES, Mode
from ttsrec.errors import UserError

ENGINES = ("native", "perf_analyzer", "auto")
PERCENTILES = (50, 90, 95, 99)
RAW_MODES: tuple[Mode, ...] = (Mode.ENSEMBLE, Mode.FUSED)
"""Modes whose models have a raw-record twin (`raw_ensemble_mM`, `raw_fused_mM`) that `--raw` measures too."""

__all__ = ["ENGINES", "PERCENTILES", "PROTOCOLS", "RAW_MODES", "SweepConfig", "check_settings",
           "configs_for"]


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
    raw: bool = False
    """Each ensemble/fused row also with raw records to its `raw_*` twin (`tts-export --raw-inputs`), next to
    it; rows say which in `inputs` (ids/raw)."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every rule, in the order `tts-bench` reports them; normalises `modes` (duplicates dropped)."""
        check_settings(self.settings)
        self.modes = check_modes(self.modes)
        if not self.modes:
            raise UserError(f"unknown mode (none) (choose from {', '.join(CLI_MODES)})")
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
        if Mode.SHARDED in self.modes and not (self.shards_repository or self.shard_urls):
            raise UserError(
                "--mode sharded needs --shards-repository (a `tts-export --shards K` output) "
                "or --shard-url for each running shard server"
            )
        if self.pin_cores and (Mode.SHARDED not in self.modes or self.shard_urls):
            raise UserError("--pin-cores needs --mode sharded with --shards-repository (servers it starts)")
        if self.raw and not set(self.modes) & set(RAW_MODES):
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


def configs_for(repositories: Sequence[Path], **fields: Any) -> list[SweepConfig]:
    """One config per repository of a combined run; one URL is one server, so it allows one repository."""
    if fields.get("url") is not None and len(repositories) > 1:
        raise UserError("-u/--url is one server; several --repository values need tts-bench to start them")
    return [SweepConfig(repository=Path(path), **fields) for path in repositories]
