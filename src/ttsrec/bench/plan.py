"""Which rows a sweep measures: (mode, M, batch, concurrency), from the config and the models there are.

Pure (no server, no file): `served` is what a server has loaded (None: no server asked), `local` the
model names of the local repository (None: no local copy). Missing M values or models fail here, as
one-line `UserError`s, before anything is started. Each mode's own rules (its rows, its M values, the
models it needs) are its unit's (`bench.modes`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from ttsrec.bench.config import SweepConfig
from ttsrec.bench.modes import Models, mode_of_row, raw_m_values, selected
from ttsrec.bench.point import Point
from ttsrec.bench.row import RAW
from ttsrec.errors import UserError

__all__ = ["Point", "local_m_values", "m_values", "plan", "raw_m_values", "served_m_values", "shard_m",
           "unsharded_ms"]

_M_RE = re.compile(r"^(?:ensemble|fused)_m(\d+)$")


def _where(cfg: SweepConfig) -> str:
    return cfg.url or str(cfg.repository)


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
    units = selected(cfg.modes)
    if all(u.shards for u in units):  # only rows whose M is the shard export's
        return []
    have = served_m_values(served) if served is not None else set()
    if local is not None and (served is None or any(u.in_process for u in units)):
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


def plan(
    cfg: SweepConfig, served: set[str] | None, local: set[str] | None, shard_m: int | None
) -> list[Point]:
    """Rows in measuring order (mode, M, batch, concurrency); a mode may give several rows per point
    (`inprocess`), and with `--raw` a raw row right after each id row of a mode with a raw twin."""
    ms = m_values(cfg, served, local)
    models = Models(served, local, _where(cfg))
    points = []
    for unit in selected(cfg.modes):
        for m in unit.ms(ms, shard_m):
            unit.check_models(m, models, cfg.raw)
            for label in unit.row_modes():
                for batch in cfg.batches:
                    for conc in cfg.concurrencies:
                        points.append(Point(label, m, batch, conc))
                        if cfg.raw and unit.raw_twin:  # right after its id row: measured alike
                            points.append(Point(label, m, batch, conc, RAW))
    return points


def unsharded_ms(points: Iterable[Point]) -> list[int]:
    """M values of the planned rows that measure this repository's members (not a sharded export's)."""
    return sorted({p.m for p in points if not ((unit := mode_of_row(p.mode)) and unit.shards)})


def shard_m(configs: Iterable[dict[str, Any]]) -> int:
    """M of a sharded deployment: the member steps of each shard's ensemble config (at least one each)."""
    total = 0
    for config in configs:
        steps = config.get("ensemble_scheduling", {}).get("step", [])
        total += sum(1 for s in steps if s["model_name"].startswith("member_")) or 1
    return total
