"""A sweep's outcome: its rows, the roofline and notes, the figures derived from them, and its JSON.

Built by `bench.sweep` and read by `bench.report`; `combine` joins the results of several
repositories (one per precision, say) benched in one run into one table and one JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ttsrec.bench import analysis, pinning
from ttsrec.bench.config import SweepConfig
from ttsrec.bench.meta import run_metadata
from ttsrec.bench.roofline import Roofline
from ttsrec.bench.row import Row


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
                "inputs": _inputs(cfg),
                "raw": cfg.raw,
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



def _inputs(cfg: SweepConfig) -> str:
    """What the requests carried (with --raw: the raw rows' records, and their ids to the id models)."""
    if cfg.data:
        return f"rows of {cfg.data}" + (" (ids, and as raw records: --raw)" if cfg.raw else "")
    if cfg.raw:
        return "vocabulary rows as raw records and their ids (--raw)"
    return "random valid ids from the feature map"


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
