"""The servers a sweep starts itself when no URL is given: the bundled tritonserver on the repository,
and K of them on a sharded export (pinned to their own cores with `--pin-cores`).

Context managers, so every server this bench started is stopped again, whatever fails in between; `start`
decides which a sweep needs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ttsrec.bench import pinning
from ttsrec.bench.config import SweepConfig
from ttsrec.bench.modes import selected
from ttsrec.bench.plan import shard_m
from ttsrec.bench.sources import Sources
from ttsrec.bench.targets import model_config, server_models
from ttsrec.errors import UserError
from ttsrec.repository import naming


@contextmanager
def server(repository: Path, protocol: str) -> Iterator[tuple[str, int]]:
    """(url, pid) of a tritonserver on `repository`."""
    from ttsrec.serve import TritonServer

    with TritonServer(repository) as running:
        yield running.url(protocol), running.pid


@contextmanager
def shard_servers(
    export_dir: Path | None, protocol: str, cpu_sets: list[list[int]] | None = None
) -> Iterator[tuple[list[str], list[int]]]:
    """(urls, pids) of one tritonserver per shard of a `tts-export --shards K` output."""
    from ttsrec.serve import ShardedServers

    assert export_dir is not None
    if not Path(export_dir).is_dir():
        raise UserError(f"shards repository not found: {export_dir}")
    with ShardedServers(export_dir, cpu_sets=cpu_sets) as servers:
        yield servers.urls(protocol), [s.pid for s in servers.servers]


@dataclass
class Servers:
    """The servers a sweep reaches: given (`-u`, `--shard-url`) or started by `start` (and stopped with its
    `ExitStack`)."""

    url: str | None
    """The main tritonserver (None: no mode needs one)."""
    pids: list[int]
    """Its processes, when this sweep started it."""
    served: set[str] | None
    """The models it has loaded (None: no server)."""
    shard_urls: list[str] = field(default_factory=list)
    shard_pids: list[int] = field(default_factory=list)
    shard_m: int | None = None
    """M of the sharded deployment (None: no mode measures shard servers)."""
    pinning: dict[str, Any] | None = None
    """`--pin-cores`: where the shard servers run, read back from /proc."""


def start(cfg: SweepConfig, src: Sources, stack: ExitStack, on_status: Callable[[str], None]) -> Servers:
    """The main server when a mode queries it (or accuracy goes through it) and no `-u` names one; the shard
    servers when a mode measures them and no `--shard-url` names them, pinned with `--pin-cores`."""
    units = selected(cfg.modes)
    url, pids = cfg.url, []
    needs_server = any(u.main_server for u in units) or (
        cfg.eval_data is not None and not any(u.in_process for u in units)
    )
    if url is None and needs_server:
        on_status(f"starting tritonserver on {cfg.repository}")
        url, pid = stack.enter_context(server(src.repo.path if src.repo else cfg.repository, cfg.protocol))
        pids = [pid]
    served = src.served if cfg.url else server_models(url, cfg.protocol) if url else None
    out = Servers(url, pids, served, list(cfg.shard_urls))
    if not any(u.shards for u in units):
        return out
    if not out.shard_urls:
        on_status(f"starting shard servers on {cfg.shards_repository}")
        out.shard_urls, out.shard_pids = stack.enter_context(
            shard_servers(cfg.shards_repository, cfg.protocol, src.core_sets)
        )
        if src.core_sets is not None:
            from ttsrec.serve import find_shards

            out.pinning = pinning.plan_notes(
                src.core_sets, find_shards(cfg.shards_repository)  # type: ignore[arg-type]
            ) | {"affinity": pinning.check_affinity(out.shard_pids, src.core_sets)}
    out.shard_m = shard_m(model_config(u, cfg.protocol, naming.SHARD_ENSEMBLE) for u in out.shard_urls)
    return out
