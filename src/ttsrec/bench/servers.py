"""The servers a sweep starts itself when no URL is given: the bundled tritonserver on the repository,
and K of them on a sharded export (pinned to their own cores with `--pin-cores`).

Context managers, so every server this bench started is stopped again, whatever fails in between.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ttsrec.errors import UserError


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
