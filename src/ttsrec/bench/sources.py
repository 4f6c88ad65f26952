"""What a sweep reads before it runs: the local repository, a running server's models, the request pool.

Loaded once, before any server starts, so a missing repository, a mismatched feature map or an
unreachable server fails first. Also what is derived from them alone: precision, weight bytes and
the exporter's MAC counts per M.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ttsrec.bench import inputs, pinning
from ttsrec.bench.config import SweepConfig
from ttsrec.bench.modes import selected
from ttsrec.bench.repo_info import RepositoryInfo
from ttsrec.bench.row import RAW
from ttsrec.bench.server_info import ServedInfo, served_info
from ttsrec.bench.targets import server_models
from ttsrec.data.feature_map import FeatureMap
from ttsrec.errors import UserError
from ttsrec.repository import naming
from ttsrec.repository.manifest import read_shards


@dataclass
class Sources:
    repo: RepositoryInfo | None
    """The local repository; None with `-u URL` and no local copy."""
    served: set[str] | None
    """Models the given server has loaded; None without a URL (servers this bench starts come later)."""
    served_info: ServedInfo | None
    core_sets: list[list[int]] | None
    """Core sets of the shard servers this sweep will start (`--pin-cores`)."""
    pool: np.ndarray
    """Request rows the loads draw their batches from."""
    url: str | None = None
    raw_pool: inputs.RawPool | None = None
    """`--raw`: the raw records the raw rows send; `pool` then holds their ids, so both send the same rows."""
    raw_eval: inputs.RawPool | None = None
    """`--raw --eval-data`: the evaluated test rows as raw records (the raw models' AUC)."""

    @classmethod
    def load(cls, cfg: SweepConfig) -> Sources:
        needs_repo = cfg.url is None or any(u.in_process for u in selected(cfg.modes))
        repo = RepositoryInfo.load(cfg.repository) if needs_repo or cfg.repository.is_dir() else None
        if cfg.shards_repository is not None and not cfg.shard_urls:
            if not Path(cfg.shards_repository).is_dir():
                raise UserError(f"shards repository not found: {cfg.shards_repository}")
            read_shards(cfg.shards_repository)  # a UserError if it is not a sharded export
        core_sets = _core_sets(cfg) if cfg.pin_cores else None
        # An unreachable server fails here, before anything starts.
        served = server_models(cfg.url, cfg.protocol) if cfg.url else None
        info = served_info(cfg.url, cfg.protocol, served) if served else None
        pool = _input_pool(cfg, repo.feature_map if repo else None, info)
        raw_pool = raw_eval = None
        if cfg.raw:
            raw_pool, raw_eval = _raw_pools(cfg, repo.feature_map if repo else None)
            pool = raw_pool.ids
        return cls(repo, served, info, core_sets, pool, cfg.url, raw_pool, raw_eval)

    def pool_for(self, kind: str) -> Any:
        """What a row's loads cut their batches from: ids, or (`raw`) the raw records."""
        if kind == RAW:
            assert self.raw_pool is not None, "raw rows are planned only with --raw"
            return self.raw_pool.records
        return self.pool

    @property
    def fmap(self) -> FeatureMap | None:
        return self.repo.feature_map if self.repo else None

    @property
    def local(self) -> set[str] | None:
        """Model names of the local repository (None: no local copy)."""
        return self.repo.models if self.repo else None

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
        """What the rows' `repository` column names: the local repository, else the URL."""
        return str(self.repo.path if self.repo else self.url)

    def member_macs(self, m: int) -> list[int] | None:
        """Dense MACs of each of ensemble_mM's members, in member order (None where not counted)."""
        if self.repo is None or not self.repo.has(naming.ensemble_name(m)):
            return None
        costs = {r["name"]: r.get("cost", {}) for r in self.repo.manifest.get("members", [])}
        macs = [costs.get(n, {}).get("macs_per_sample") for n in self.repo.members(m)]
        return macs if macs and all(isinstance(x, int) for x in macs) else None

    def macs_per_row(self, m: int) -> int | None:
        """Dense MACs of one row through ensemble_mM's members, as the exporter counted them
        (`ttsrec.models.cost`, in the manifest); None without a local repository or the counts."""
        macs = self.member_macs(m)
        return None if macs is None else sum(macs)

    def weight_bytes(self, ms: list[int]) -> dict[int, int]:
        """Dense weight bytes a batch-1 request of each M reads (the members' ONNX initializers)."""
        if self.repo is None:  # the served configs' ttsrec.weight_bytes (ONNX bytes, tables included)
            known = self.served_info.weight_bytes if self.served_info else {}
            return {m: known[m] for m in ms if m in known}
        out = {}
        for m in ms:
            if self.repo.has(naming.ensemble_name(m)):
                out[m] = sum(self.repo.member_weight_bytes(n) for n in self.repo.members(m))
        return out


def _core_sets(cfg: SweepConfig) -> list[list[int]]:
    """Core sets of the shard servers this sweep will start (running ones cannot be pinned)."""
    from ttsrec.serve import find_shards

    assert cfg.shards_repository is not None  # checked with the other sharded options
    return pinning.core_sets(len(find_shards(cfg.shards_repository)))


def _raw_pools(cfg: SweepConfig, fmap: FeatureMap | None) -> tuple[inputs.RawPool, inputs.RawPool | None]:
    """`--raw`: the records to send (the test rows of `--data`, else vocabulary rows) and, with
    `--eval-data`, its evaluated test rows as records; read now, so a missing raw file fails first."""
    if fmap is None:
        raise UserError("--raw builds raw records from the repository's feature map: pass --repository "
                        "(the export the server serves)")
    if cfg.data is not None:
        pool = inputs.raw_test_records(fmap, cfg.data, inputs.POOL_ROWS)
    else:
        pool = inputs.vocabulary_records(fmap, inputs.POOL_ROWS, seed=cfg.seed)
    evaluated = None
    if cfg.eval_data is not None:
        inputs.check_matches(FeatureMap.load(cfg.eval_data), cfg.eval_data, fmap)
        evaluated = inputs.raw_test_records(fmap, cfg.eval_data, cfg.eval_rows)
    return pool, evaluated


def _input_pool(cfg: SweepConfig, fmap: FeatureMap | None, info: ServedInfo | None) -> np.ndarray:
    if cfg.data is not None:
        data_fmap = FeatureMap.load(cfg.data)
        if fmap is not None:
            inputs.check_matches(data_fmap, cfg.data, fmap)
        ids, _ = inputs.data_ids(cfg.data, inputs.POOL_ROWS)
        return ids
    if fmap is not None:
        return inputs.random_ids(fmap, inputs.POOL_ROWS, seed=cfg.seed)
    # Only a server: members map any id outside a field's vocabulary to its OOV id, so any ids do.
    features = info.features if info else None
    if not features:
        raise UserError(f"{cfg.url} serves no ensemble_mM or fused_mM model (input width unknown)")
    return inputs.any_ids(features, inputs.POOL_ROWS, seed=cfg.seed)
