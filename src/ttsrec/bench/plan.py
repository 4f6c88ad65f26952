"""Which rows a sweep measures: (mode, M, batch, concurrency), from the config and the models there are.

Pure (no server, no file): `served` is what a server has loaded (None: no server asked), `local` the
model names of the local repository (None: no local copy). Missing M values or models fail here, as
one-line `UserError`s, before anything is started.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ttsrec.bench.config import RAW_MODES, SweepConfig
from ttsrec.bench.row import IDS, RAW
from ttsrec.ensemble.modes import INPROCESS_MODES, TRITON_MODES, Mode
from ttsrec.errors import UserError
from ttsrec.repository import naming

_M_RE = re.compile(r"^(?:ensemble|fused)_m(\d+)$")
_RAW_M_RE = re.compile(r"^raw_(?:ensemble|fused)_m(\d+)$")


@dataclass(frozen=True)
class Point:
    mode: str
    m: int
    batch: int
    concurrency: int
    inputs: str = IDS
    """`raw`: raw records to the mode's `raw_*` model (`--raw`), else ids."""

    def __str__(self) -> str:
        raw = " (raw)" if self.inputs == RAW else ""
        return f"{self.mode}{raw} M={self.m} batch={self.batch} c={self.concurrency}"


def _where(cfg: SweepConfig) -> str:
    return cfg.url or str(cfg.repository)


def _unsharded(cfg: SweepConfig) -> bool:
    """Whether any mode's M values come from the repository or server (sharded rows use the export's)."""
    return bool(set(cfg.modes) - {Mode.SHARDED})


def served_m_values(served: Iterable[str]) -> set[int]:
    """M values of the served ensemble_mM / fused_mM models."""
    return {
        int(n.rsplit("_m", 1)[1])
        for n in served
        if n.rsplit("_m", 1)[-1].isdigit() and n.startswith(("ensemble_m", "fused_m"))
    }


def local_m_values(local: Iterable[str]) -> set[int]:
    """M values with an ensemble or a fused model in the local repository (as `RepositoryInfo.m_values`)."""
    return {int(match.group(1)) for name in local if (match := _M_RE.match(name))}


def m_values(cfg: SweepConfig, served: set[str] | None, local: set[str] | None) -> list[int]:
    """The M values to measure: `cfg.m_list`, or all there are; in-process rows need them locally too."""
    if not _unsharded(cfg):
        return []
    have = served_m_values(served) if served is not None else set()
    if local is not None and (served is None or Mode.INPROCESS in cfg.modes):
        have = (have & local_m_values(local)) if served is not None else local_m_values(local)
    if not have:
        raise UserError(f"{_where(cfg)} has no ensemble_mM or fused_mM models")
    wanted = cfg.m_list if cfg.m_list is not None else sorted(have)
    missing = [m for m in wanted if m not in have]
    if missing:
        raise UserError(
            f"M={', '.join(map(str, missing))} not in {_where(cfg)} (it has M = "
            f"{', '.join(map(str, sorted(have))) or 'none'})"
        )
    return wanted


def raw_m_values(names: Iterable[str]) -> set[int]:
    """M values with a raw_ensemble_mM or raw_fused_mM model (`tts-export --raw-inputs`)."""
    return {int(match.group(1)) for name in names if (match := _RAW_M_RE.match(name))}


def raw_model(mode: str, m: int) -> str:
    """The raw-record twin of a mode's model at M (`--raw`)."""
    return naming.raw_ensemble_name(m) if mode == Mode.ENSEMBLE else naming.raw_fused_name(m)


def check_raw_model(cfg: SweepConfig, model: str, available: set[str] | None) -> None:
    have = raw_m_values(available or set())
    if not have:
        raise UserError(f"--raw: {_where(cfg)} has no raw_ensemble_mM or raw_fused_mM models (export with "
                        "tts-export --raw-inputs)")
    if model not in (available or set()):
        raise UserError(f"--raw needs {model}, which {_where(cfg)} does not have (it has raw models for "
                        f"M = {', '.join(map(str, sorted(have)))}; tts-export --raw-inputs writes them)")


def served_model(mode: str, m: int) -> str:
    """The Triton model a mode's row at M queries."""
    names = {Mode.ENSEMBLE: naming.ensemble_name, Mode.FUSED: naming.fused_name,
             Mode.CASCADE: naming.cascade_name}
    return names[Mode(mode)](m)


def check_model(cfg: SweepConfig, model: str, available: set[str] | None, mode: str) -> None:
    if model not in (available or set()):
        hint = ("tts-export --cascade writes them, for M >= 2" if mode == Mode.CASCADE
                else "exported with --no-fused?")
        raise UserError(f"--mode {mode} needs {model}, which {_where(cfg)} does not have ({hint})")


def plan(
    cfg: SweepConfig, served: set[str] | None, local: set[str] | None, shard_m: int | None
) -> list[Point]:
    """Rows in measuring order (mode, M, batch, concurrency); `inprocess` gives two rows per point."""
    ms = m_values(cfg, served, local)
    points = []
    for mode in cfg.modes:
        mode_ms = ([shard_m] if shard_m else []) if mode == Mode.SHARDED else ms
        if mode == Mode.CASCADE:
            mode_ms = [m for m in mode_ms if m >= 2]  # one member has nothing to skip
        for m in mode_ms:
            if mode in TRITON_MODES:
                name = served_model(mode, m)
                check_model(cfg, name, served if served is not None else local, mode)
                if cfg.raw and mode in RAW_MODES:
                    check_raw_model(cfg, raw_model(mode, m), served if served is not None else local)
            labels = list(INPROCESS_MODES) if mode == Mode.INPROCESS else [Mode(mode)]
            for label in labels:
                if label == Mode.INPROCESS_FUSED:
                    check_model(cfg, naming.fused_name(m), local, mode)
                for batch in cfg.batches:
                    for conc in cfg.concurrencies:
                        points.append(Point(label, m, batch, conc))
                        if cfg.raw and label in RAW_MODES:  # right after its id row: measured alike
                            points.append(Point(label, m, batch, conc, RAW))
    return points


def unsharded_ms(points: Iterable[Point]) -> list[int]:
    """M values of the planned rows that measure this repository's members (not a sharded export's)."""
    return sorted({p.m for p in points if p.mode != Mode.SHARDED})


def shard_m(configs: Iterable[dict[str, Any]]) -> int:
    """M of a sharded deployment: the member steps of each shard's ensemble config (at least one each)."""
    total = 0
    for config in configs:
        steps = config.get("ensemble_scheduling", {}).get("step", [])
        total += sum(1 for s in steps if s["model_name"].startswith("member_")) or 1
    return total
