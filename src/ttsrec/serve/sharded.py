"""K tritonservers for a sharded export (`tts-export --shards K`): one per `shard_XX/` repository,
loading side by side. On one machine this shows the wiring; the paper's point is one shard per machine."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from ttsrec.errors import UserError
from ttsrec.serve.repo_check import SHARDS_FILE
from ttsrec.serve.server import TritonServer


def find_shards(export_dir: Path) -> list[Path]:
    """Shard repositories of a sharded export, in order (from `shards.json`, else `shard_*/`)."""
    export_dir = Path(export_dir)
    index = export_dir / SHARDS_FILE
    if not index.is_file():
        raise UserError(f"{export_dir} is not a sharded export (no {SHARDS_FILE}; export with `--shards K`)")
    try:
        data = json.loads(index.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{index} is not valid JSON ({err})") from None
    entries = data.get("shards") if isinstance(data, dict) else data
    dirs: list[Path] = []
    for entry in entries if isinstance(entries, list) else []:
        name = entry
        if isinstance(entry, dict):
            name = next((entry[k] for k in ("dir", "path", "repository", "name") if k in entry), None)
        if isinstance(name, str):
            dirs.append(export_dir / name)
    if not dirs:
        dirs = sorted(p for p in export_dir.glob("shard_*") if p.is_dir())
    missing = [str(d) for d in dirs if not d.is_dir()]
    if missing or not dirs:
        raise UserError(f"{index} lists shard folders that do not exist: "
                        f"{', '.join(missing) or 'none found'}")
    return dirs


class ShardedServers:
    """Context manager over one `TritonServer` per shard.

    Ports left as None are picked free; given ports are the first shard's, shard i adds `i * port_step`.
    `cpu_sets[i]`: the cores shard i's server is pinned to (one machine per shard, modelled on one box).
    """

    def __init__(self, export_dir: Path | str, *, http_port: int | None = None, grpc_port: int | None = None,
                 metrics_port: int | None = None, port_step: int = 10, host: str = "127.0.0.1",
                 log_dir: Path | str | None = None, extra_args: Sequence[str] = (),
                 start_timeout_s: float = 180.0, cpu_sets: Sequence[Sequence[int]] | None = None):
        self.export_dir = Path(export_dir)
        self.shards = find_shards(self.export_dir)
        if cpu_sets is not None and len(cpu_sets) != len(self.shards):
            raise UserError(f"{len(cpu_sets)} core sets for {len(self.shards)} shards of {self.export_dir}")

        def port(base: int | None, i: int) -> int | None:
            return base + i * port_step if base else None

        self.servers = [
            TritonServer(repo, http_port=port(http_port, i), grpc_port=port(grpc_port, i),
                         metrics_port=port(metrics_port, i), host=host, extra_args=extra_args,
                         log_file=Path(log_dir) / f"{repo.name}.log" if log_dir else None,
                         start_timeout_s=start_timeout_s, cpus=cpu_sets[i] if cpu_sets else None)
            for i, repo in enumerate(self.shards)
        ]

    def __enter__(self) -> ShardedServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> ShardedServers:
        """Launch all, then wait for all: the shards load in parallel."""
        try:
            for server in self.servers:
                server.launch()
            for server in self.servers:
                server.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """All shut down in parallel (python-backend unloading takes seconds each)."""
        for server in self.servers:
            server.terminate()
        for server in self.servers:
            server.stop()

    def urls(self, protocol: str = "grpc") -> list[str]:
        """What to pass to `ShardedClient`."""
        return [server.url(protocol) for server in self.servers]
