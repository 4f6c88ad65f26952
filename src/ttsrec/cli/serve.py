"""`tts-serve REPOSITORY`: run the bundled tritonserver on an exported repository until Ctrl-C/SIGTERM.

A sharded export (`tts-export --shards K`, it has `shards.json`) starts one server per shard and
prints the URLs to hand to `ShardedClient`.

Supervised: a server that exits is restarted on its ports (bounded retries, back-off, each restart
printed with its cause); so is one whose python stub died, since Triton keeps reporting a model with a
dead stub ready while failing every request. While it restarts its ports are closed, so
`/v2/health/ready` fails and a load balancer stops sending traffic.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import signal
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ttsrec.cli.common import console, run_app
from ttsrec.cli.reporter import RichReporter
from ttsrec.errors import RuntimeFailure, UserError
from ttsrec.serve import ShardedServers, TritonServer
from ttsrec.serve.repo_check import is_sharded, verify_files
from ttsrec.utils.atomic import atomic_write_text
from ttsrec.utils.report import Column, Table

app = typer.Typer(add_completion=False, help=__doc__)
out = Console(highlight=False)
tables = RichReporter(out)
RESTRICTED = "shared-memory,model-repository,model-config,logging,trace"
"""APIs that need the key when exposed: inference, health, metadata and statistics stay open."""
KEY_HEADER = "tts-admin-key"
MAX_RESTARTS = 5
RESTART_WINDOW_S = 600.0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_args(host: str, expose: bool, protocol: str, key: str | None) -> tuple[list[str], str | None]:
    """Triton options for this bind address: loopback as is; any other address only with --expose, and
    then with shared memory, model control/config, logging and trace behind a key header."""
    if protocol not in ("both", "grpc"):
        raise UserError(f"--protocol must be both or grpc, got {protocol!r}")
    args = ["--allow-http=false"] if protocol == "grpc" else []
    if _is_loopback(host):
        return args, None
    if not expose:
        raise UserError(f"--host {host} would open the server beyond this machine; add --expose to mean it "
                        f"(restricted APIs then need a key; see docs/serving.md 'Running it safely')")
    key = key or secrets.token_hex(16)
    args += [f"--grpc-restricted-protocol={RESTRICTED}:{KEY_HEADER}={key}"]
    if protocol == "both":
        args += [f"--http-restricted-api={RESTRICTED}:{KEY_HEADER}={key}"]
    return args, key


def _port(value: int | None) -> int | None:
    """0 means "pick a free one" (None to TritonServer)."""
    if value is not None and not 0 <= value < 65536:
        raise UserError(f"port {value} is out of range (0-65535; 0 picks a free port)")
    return value or None


@app.command()
def serve(
    repository: Annotated[Path, typer.Argument(help="Exported model repository (tts-export --out).")],
    http_port: Annotated[int, typer.Option(help="HTTP port (0: a free one).")] = 8000,
    grpc_port: Annotated[int, typer.Option(help="gRPC port (0: a free one).")] = 8001,
    metrics_port: Annotated[int, typer.Option(help="Prometheus metrics port (0: a free one).")] = 8002,
    host: Annotated[str, typer.Option(help="Address to bind; keep loopback unless you mean to expose it.")]
        = "127.0.0.1",
    shards: Annotated[bool | None, typer.Option(
        "--shards/--no-shards", help="One server per shard of a sharded export (default: if shards.json).")]
        = None,
    port_step: Annotated[int, typer.Option(help="With --shards: shard i uses each port + i * step.")] = 10,
    log_dir: Annotated[Path | None, typer.Option(help="Keep tritonserver logs here (default: temp files).")]
        = None,
    ready_file: Annotated[Path | None, typer.Option(
        help="Write the endpoints as JSON here once ready (for scripts); removed on exit.")] = None,
    start_timeout: Annotated[float, typer.Option(help="Seconds to wait for all models to load.")] = 180.0,
    check: Annotated[bool, typer.Option(
        "--check", help="Query every ensemble over gRPC and HTTP once ready, print the answers, stop.")]
        = False,
    expose: Annotated[bool, typer.Option(
        "--expose", help="Allow a non-loopback --host; restricted APIs then need the key header.")] = False,
    protocol: Annotated[str, typer.Option(help="both (HTTP and gRPC) or grpc (HTTP off).")] = "both",
    skip_integrity: Annotated[bool, typer.Option(
        "--skip-integrity", help="Do not check files against the manifest's sha256 (large repositories).")]
        = False,
    supervise_every: Annotated[float, typer.Option(
        help="Seconds between health checks of the servers and their stubs.")] = 0.5,
) -> None:
    """Start tritonserver on REPOSITORY, print endpoints and models, serve until Ctrl-C or SIGTERM."""
    ports = {"http_port": _port(http_port), "grpc_port": _port(grpc_port),
             "metrics_port": _port(metrics_port)}
    extra, key = exposure_args(host, expose, protocol, os.environ.get("TTSREC_ADMIN_KEY"))
    sharded = is_sharded(repository) if shards is None else shards
    servers = _servers(repository, sharded, ports, port_step, host, log_dir, start_timeout, extra)
    # Checked before anything starts; said once the servers are up, so a failure is one line.
    integrity = ["integrity check skipped (--skip-integrity)"] if skip_integrity else [
        verify_files(server.repo) for server in servers]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _raise_stop)
    clean = False  # "stopped" only after a clean stop: after a failure its one error line says it all
    try:
        with console.status(f"starting {len(servers)} tritonserver(s) on {repository} ..."):
            for server in servers:
                server.launch()
            for server in servers:
                server.wait_ready()
        _announce(servers, sharded, integrity, ready_file, host, key)
        if check:
            _print_check(servers, sharded)
            clean = True
            return
        out.print("[bold green]ready[/]: Ctrl-C or SIGTERM stops")
        _supervise(servers, supervise_every)
    except _Stop:
        console.print("shutting down ...")
        clean = True
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # a second Ctrl-C must not cut it short
            signal.signal(sig, signal.SIG_IGN)
        for server in servers:
            server.terminate()
        for server in servers:
            server.stop()
        if ready_file:
            ready_file.unlink(missing_ok=True)
        if clean:
            console.print("[green]stopped[/]")


def _servers(repository: Path, sharded: bool, ports: dict[str, int | None], port_step: int, host: str,
             log_dir: Path | None, start_timeout: float, extra: list[str]) -> list[TritonServer]:
    """The servers to start, not started: one per shard of a sharded export, else one."""
    if sharded:
        if port_step < 1:
            raise UserError(f"--port-step must be >= 1, got {port_step}")
        group = ShardedServers(repository, **ports, port_step=port_step, host=host, log_dir=log_dir,
                               start_timeout_s=start_timeout, extra_args=extra)
        return group.servers
    return [TritonServer(repository, **ports, host=host, start_timeout_s=start_timeout,
                         extra_args=extra, log_file=log_dir / "tritonserver.log" if log_dir else None)]


def _announce(servers: list[TritonServer], sharded: bool, integrity: list[str], ready_file: Path | None,
              host: str, key: str | None) -> None:
    """Once every server is ready: the integrity verdicts, the servers and their models, the ready file,
    and (exposed) which APIs need the key."""
    for line in dict.fromkeys(integrity):
        console.print(line)
    _print_servers(servers, sharded)
    if ready_file:
        atomic_write_text(ready_file, json.dumps(_endpoints(servers), indent=1) + "\n")
    if key:
        out.print(f"exposed on {host}: {RESTRICTED} need header {KEY_HEADER} (gRPC metadata "
                  f"triton-grpc-protocol-{KEY_HEADER}) "
                  f"(key from TTSREC_ADMIN_KEY, else this one: {key})")


def _supervise(servers: list[TritonServer], every_s: float) -> None:
    """Forever: restart a server that exited or lost a python stub; give up after MAX_RESTARTS in
    RESTART_WINDOW_S (a server that keeps crashing needs a person, not a loop)."""
    restarts: list[float] = []
    while True:
        time.sleep(every_s)
        for server in servers:
            cause = _fault(server)
            if cause is None:
                continue
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < RESTART_WINDOW_S] + [now]
            if len(restarts) > MAX_RESTARTS:
                raise RuntimeFailure(f"{server.describe()}: {MAX_RESTARTS} restarts within "
                                     f"{RESTART_WINDOW_S:.0f}s, giving up; last cause: {cause}")
            backoff = min(2.0 ** (len(restarts) - 1) - 1, 30.0)  # 0 s, 1 s, 3 s, 7 s, 15 s
            console.print(f"[yellow]restart {len(restarts)}/{MAX_RESTARTS}[/] of {server.describe()} "
                          f"in {backoff:.0f}s: {cause}")
            time.sleep(backoff)
            started = time.monotonic()
            server.restart()
            console.print(f"[green]ready again[/] after {time.monotonic() - started:.1f}s")


def _fault(server: TritonServer) -> str | None:
    """Why this server needs a restart, or None."""
    if not server.is_alive():
        code = server.returncode
        tail = " | ".join(server.log_tail(3))
        return f"tritonserver exited with code {code}; log ends with: {tail}"
    stubs = len(server.stub_pids())
    if stubs < server.expected_stubs:
        return f"{server.expected_stubs - stubs} of {server.expected_stubs} python stub process(es) died"
    return None


class _Stop(Exception):  # noqa: N818 - a signal, not an error
    """Raised in the main thread by SIGINT/SIGTERM, wherever it is (loading or serving)."""


def _raise_stop(signum: int, frame: object) -> None:
    raise _Stop()


def _endpoints(servers: list[TritonServer]) -> dict[str, object]:
    return {"servers": [{"repository": str(s.repo), "pid": s.pid, "http_url": s.http_url,
                         "grpc_url": s.grpc_url, "metrics_url": s.metrics_url} for s in servers],
            "grpc_urls": [s.grpc_url for s in servers], "http_urls": [s.http_url for s in servers]}


def _print_servers(servers: list[TritonServer], sharded: bool) -> None:
    for server in servers:
        table = Table(f"{server.repo}  (pid {server.pid})",
                      [Column("model", numeric=False), Column("version"), Column("state", numeric=False)])
        for model in server.models():
            table.add_row(model.get("name", ""), model.get("version", ""), model.get("state", ""))
        tables.table(table)
        out.print(f"  http    {server.http_url}\n  grpc    {server.grpc_url}\n  metrics {server.metrics_url}")
    if sharded:
        urls = ",".join(s.grpc_url for s in servers)
        out.print(f"\nShardedClient urls: grpc {urls}  http {','.join(s.http_url for s in servers)}")


def _print_check(servers: list[TritonServer], sharded: bool) -> None:
    from ttsrec.client.check import check_server, check_shards

    if sharded:
        rows = check_shards([s.grpc_url for s in servers], servers[0].repo)
    else:
        server = servers[0]
        # READY only: with generations (explicit model control) the index also lists unloaded models
        names = [m["name"] for m in server.models() if m.get("state", "READY") == "READY"]
        rows = check_server({"grpc": server.grpc_url, "http": server.http_url}, server.repo, names)
    table = Table("round trip (ids drawn from feature_map.json)",
                  [Column("model", numeric=False), Column("protocol", numeric=False),
                   *map(Column, ("members", "rows", "p50 ms")), Column("prob", numeric=False)])
    for r in rows:
        table.add_row(r["model"], r["protocol"], r["members"], r["rows"], f"{r['p50_ms']:.2f}",
                      " ".join(f"{p:.4f}" for p in r["prob"]))
    tables.table(table)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
