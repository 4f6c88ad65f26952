"""`TritonServer`: the bundled tritonserver as a context manager, on loopback, ready when it returns.

Readiness is polled over HTTP (gRPC when HTTP is off) while watching our own PID: with a busy port the
new server exits, but an old server on that port would still answer the poll.

A server never outlives its owner: a tiny watchdog process holds the read end of a pipe whose write end
only the owner has; when the owner dies (SIGKILL included) the pipe reads EOF and the watchdog SIGKILLs the
server's process group (server and python stubs) and removes its /dev/shm regions. PR_SET_PDEATHSIG alone
would not do: it fires when the *thread* that started the server ends, and leaves the shm regions behind.

`cpus` pins the server to a core set (to model one machine per server on one box): the launching thread
takes that affinity just for the fork, so the server and every thread and python stub it starts inherit
it from birth (setting it on the pid afterwards would miss the threads it already made).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ttsrec.errors import UserError
from ttsrec.repository.generations import server_args as generation_args
from ttsrec.serve import shm
from ttsrec.serve.bundle import find_bundle
from ttsrec.serve.ports import check_ports, free_ports
from ttsrec.serve.repo_check import check_repository

_HARMLESS = ("CUDA", "cuda", "NVML", "DCGM", "CudaDriverHelper", "pinned", "GPU metrics")
_ERROR_LINE = re.compile(r"^E\d{4} ")
_LIVE: set[TritonServer] = set()  # strong refs: a dropped server is still stopped at exit
STUB_NAME = "triton_python_backend_stub"
_WATCHDOG = """
import glob, os, signal, sys, time
for sig in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
    signal.signal(sig, signal.SIG_IGN)
pgid, prefix = int(sys.argv[1]), sys.argv[2]
sys.stdin.buffer.read()  # returns at EOF: the owner is gone
try:
    os.killpg(pgid, signal.SIGKILL)
except OSError:
    pass
time.sleep(0.5)
for path in glob.glob("/dev/shm/" + prefix + "*"):
    try:
        os.unlink(path)
    except OSError:
        pass
"""


class TritonServer:
    """One tritonserver process serving `repo`; ports left as None are picked free.

    >>> with TritonServer("model_repository") as server:
    ...     Client(server.grpc_url, model="ensemble_m8").predict(ids)
    """

    def __init__(self, repo: Path | str, *, http_port: int | None = None, grpc_port: int | None = None,
                 metrics_port: int | None = None, host: str = "127.0.0.1", log_file: Path | str | None = None,
                 extra_args: Sequence[str] = (), start_timeout_s: float = 180.0,
                 stop_timeout_s: float = 20.0, cpus: Sequence[int] | None = None):
        self.repo = Path(repo)
        self.cpus = _check_cpus(cpus)
        """Core ids the server (and its stubs) may run on; None: whatever its owner may use."""
        self.host = host
        self.requested_ports = {"http": http_port, "grpc": grpc_port, "metrics": metrics_port}
        self.ports: dict[str, int] = {}
        self.log_file = Path(log_file) if log_file else None
        self.extra_args = tuple(extra_args)
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        token = uuid.uuid4().hex[:10]
        self.server_id = f"ttsrec-{token}"
        """Passed as `--id`: tells our server's answers from another server's on the same port."""
        self.shm_prefix = f"{shm.REGION_PREFIX}tts{token}_"
        self.http_enabled = "--allow-http=false" not in self.extra_args
        self.admin_header = _restricted_key(self.extra_args)
        """(key, value) that opens the restricted APIs, when the server runs with them restricted."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._lifeline: int | None = None
        self.expected_stubs = 0
        self._log_path: Path | None = None
        self._own_log = False

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> TritonServer:
        """Launch and wait until every model is ready."""
        self.launch()
        self.wait_ready()
        return self

    def launch(self) -> None:
        """Start the process without waiting (lets several servers load side by side)."""
        if self.is_alive():
            raise UserError(f"{self.describe()} is already running")
        check_repository(self.repo)
        bundle = find_bundle()
        requested = {k: v for k, v in self.requested_ports.items() if v}
        check_ports(self.host, requested)
        picked = iter(free_ports(sum(not v for v in self.requested_ports.values()), self.host))
        self.ports = {k: v or next(picked) for k, v in self.requested_ports.items()}
        shm.remove_stale_regions()
        if self.log_file:
            self._log_path, self._own_log = self.log_file, False
            self._log_path.parent.mkdir(parents=True, exist_ok=True)
        else:
            fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(fd)
            self._log_path, self._own_log = Path(name), True
        cmd = [
            str(bundle.binary),
            f"--model-repository={self.repo.resolve()}",
            f"--backend-directory={bundle.backend_dir}",
            f"--id={self.server_id}", f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--http-address={self.host}", f"--http-port={self.ports['http']}",
            f"--grpc-address={self.host}", f"--grpc-port={self.ports['grpc']}",
            f"--metrics-address={self.host}", f"--metrics-port={self.ports['metrics']}",
            "--disable-auto-complete-config", "--strict-readiness=true", "--exit-on-error=true",
            "--pinned-memory-pool-byte-size=0", "--allow-gpu-metrics=false", "--exit-timeout-secs=5",
            *self.extra_args,
        ]
        if not any(a.startswith("--model-control-mode") for a in self.extra_args):
            cmd += generation_args(self.repo)  # explicit model control for a repository with generations
        with open(self._log_path, "ab") as log, _thread_affinity(self.cpus):
            # Own session: a terminal's Ctrl-C reaches us, and we shut the server down in order.
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                          env=bundle.env(), start_new_session=True)
        self._start_watchdog()
        _LIVE.add(self)

    def _start_watchdog(self) -> None:
        """The watchdog reads a pipe only we write to: EOF means we died, so it kills the server."""
        read_end, self._lifeline = os.pipe()
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-c", _WATCHDOG, str(self._proc.pid), self.shm_prefix],  # type: ignore[union-attr]
                stdin=read_end, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        finally:
            os.close(read_end)

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.kill()
            self._watchdog.wait(10)
            self._watchdog = None
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None

    def wait_ready(self, timeout_s: float | None = None) -> None:
        """Block until the server is ready; if a port we picked was taken meanwhile, relaunch on new ones."""
        auto = not all(self.requested_ports.values())
        for attempt in range(3):
            try:
                self._poll_ready(self.start_timeout_s if timeout_s is None else timeout_s)
                return
            except _PortTakenError as taken:
                if not auto or attempt == 2:
                    raise UserError(f"{self.describe()}: port already in use ({taken})") from None
                self.launch()

    def _poll_ready(self, timeout_s: float) -> None:
        """Poll `/v2/health/ready` until 200 from a server whose id is ours, failing fast (with the log
        tail) if our process exits."""
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while True:
            if self._proc is None or self._proc.poll() is not None:
                self._raise_exited()
            name = self._ready_server_name()
            if name is not None:
                if name != self.server_id:  # another server holds our port
                    self.stop()
                    protocol = "http" if self.http_enabled else "grpc"
                    raise _PortTakenError(f"{protocol} port {self.ports[protocol]} is served by {name!r}")
                self.expected_stubs = len(self.stub_pids())
                return
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise UserError(f"{self.describe()} was not ready after {timeout_s:.0f}s{_fmt_tail(tail)}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def _ready_server_name(self) -> str | None:
        """The id of the server answering ready on our port, None while not ready."""
        if not self.http_enabled:
            import tritonclient.grpc as grpcclient

            try:
                with grpcclient.InferenceServerClient(self.grpc_url) as client:
                    if client.is_server_ready(client_timeout=2.0):
                        return client.get_server_metadata(client_timeout=2.0).name
            except Exception:  # any gRPC failure means "not ready yet"
                pass
            return None
        base = f"http://{self._poll_host()}:{self.ports['http']}/v2"
        try:
            with urllib.request.urlopen(f"{base}/health/ready", timeout=2.0) as resp:
                if resp.status != 200:
                    return None
            with urllib.request.urlopen(base, timeout=2.0) as resp:
                return json.loads(resp.read()).get("name")
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def is_ready(self) -> bool:
        """The server answers ready and is ours."""
        return self.is_alive() and self._ready_server_name() == self.server_id

    def stub_pids(self) -> list[int]:
        """The python-backend stub processes of this server (one per model instance)."""
        if not self.is_alive():
            return []
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                comm = (stat.parent / "cmdline").read_bytes()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == self.pid and STUB_NAME.encode() in comm:
                pids.append(int(stat.parent.name))
        return sorted(pids)

    def affinity(self) -> dict[int, list[int]]:
        """pid -> allowed core ids of the server and each of its stubs (from /proc), to check pinning."""
        if self.pid is None or not self.is_alive():
            return {}
        found = {pid: process_cpus(pid) for pid in (self.pid, *self.stub_pids())}
        return {pid: cpus for pid, cpus in found.items() if cpus is not None}

    def restart(self) -> None:
        """Kill this server (and its stubs) and start it again on the same ports; wait until ready."""
        self.requested_ports = dict(self.ports)
        proc, self._proc = self._proc, None
        self._stop_watchdog()
        if proc is not None:
            _kill_group(proc.pid)
            proc.wait(10)
        shm.remove_regions(self.shm_prefix)
        self.start()

    def terminate(self) -> None:
        """Ask the server to shut down (SIGTERM) without waiting: lets several unload side by side."""
        if self.is_alive():
            self._proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]

    def stop(self) -> None:
        """SIGTERM, wait, then SIGKILL the process group; remove this server's shm regions."""
        self.terminate()
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                try:
                    proc.wait(self.stop_timeout_s)
                except subprocess.TimeoutExpired:
                    _kill_group(proc.pid)
                    proc.wait(10)
            _kill_group(proc.pid)  # stub processes of a server that died hard
            shm.remove_regions(self.shm_prefix)
        self._stop_watchdog()
        _LIVE.discard(self)
        if self._own_log and self._log_path is not None:
            self._log_path.unlink(missing_ok=True)
            self._log_path = None

    # -- state -------------------------------------------------------------------------------

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Exit status of an exited server (negative: killed by that signal), None while running."""
        return self._proc.poll() if self._proc is not None else None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def http_url(self) -> str:
        """`host:port`, as tritonclient wants it."""
        return f"{self._poll_host()}:{self.ports['http']}"

    @property
    def grpc_url(self) -> str:
        return f"{self._poll_host()}:{self.ports['grpc']}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self._poll_host()}:{self.ports['metrics']}/metrics"

    def url(self, protocol: str = "grpc") -> str:
        return self.grpc_url if protocol == "grpc" else self.http_url

    def models(self) -> list[dict[str, Any]]:
        """The repository index: name, version, state (and reason) per model."""
        if not self.http_enabled:
            import tritonclient.grpc as grpcclient

            headers = dict([self.admin_header]) if self.admin_header else None
            with grpcclient.InferenceServerClient(self.grpc_url) as client:
                index = client.get_model_repository_index(headers=headers, as_json=True)
            return [{"version": "", **m} for m in index.get("models", [])]
        headers = dict([self.admin_header]) if self.admin_header else {}
        req = urllib.request.Request(f"http://{self.http_url}/v2/repository/index", data=b"{}", method="POST",
                                     headers=headers)
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def log_tail(self, lines: int = 15) -> list[str]:
        """The log lines that explain a failure: Triton's error lines if any, else the last lines
        (CUDA/NVML noise of a CPU machine, tables and tracebacks' continuations left out)."""
        if self._log_path is None or not self._log_path.is_file():
            return []
        text = self._log_path.read_text(errors="replace").splitlines()
        kept = [line.split("\\n")[0][:400] for line in text
                if line.strip() and not line.lstrip().startswith(("|", "+"))
                and not any(h in line for h in _HARMLESS)]
        errors = [line for line in kept if _ERROR_LINE.match(line) or "error" in line.lower()]
        return (errors or kept)[-lines:]

    def describe(self) -> str:
        ports = ", ".join(f"{k} {v}" for k, v in self.ports.items()) or "no ports yet"
        return f"tritonserver for {self.repo} on {self.host} ({ports})"

    def __repr__(self) -> str:
        return f"TritonServer({str(self.repo)!r}, pid={self.pid}, http={self.ports.get('http')}, " \
               f"grpc={self.ports.get('grpc')})"

    # -- internals ---------------------------------------------------------------------------

    def _poll_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host

    def _raise_exited(self) -> None:
        code = self._proc.returncode if self._proc is not None else None
        tail = self.log_tail()
        path = self._log_path
        log = path.read_text(errors="replace") if path and path.is_file() else ""
        busy = [line for line in log.splitlines() if "already in use" in line]
        self.stop()
        if busy:
            raise _PortTakenError(busy[-1].strip())
        raise UserError(f"{self.describe()} exited with code {code} while starting{_fmt_tail(tail)}")


class _PortTakenError(Exception):
    """A port was free when checked and taken before tritonserver bound it."""


def _restricted_key(args: Sequence[str]) -> tuple[str, str] | None:
    """The (header, value) of `--http-restricted-api=<apis>:<key>=<value>` (or the gRPC one) in args."""
    for arg in args:
        if arg.startswith(("--http-restricted-api=", "--grpc-restricted-protocol=")):
            key, _, value = arg.split("=", 1)[1].split(":", 1)[1].partition("=")
            return key, value
    return None


def parse_cpu_list(text: str) -> list[int]:
    """The kernel's cpu-list format (`0-2,5`) -> [0, 1, 2, 5]."""
    out: list[int] = []
    for part in text.strip().split(","):
        if part:
            low, _, high = part.partition("-")
            out.extend(range(int(low), int(high or low) + 1))
    return out


def process_cpus(pid: int) -> list[int] | None:
    """`Cpus_allowed_list` of a process, None when it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("Cpus_allowed_list:"):
            return parse_cpu_list(line.split(":", 1)[1])
    return None


def _check_cpus(cpus: Sequence[int] | None) -> tuple[int, ...] | None:
    """A non-empty set of cores this process may use itself (a child cannot be given others)."""
    if cpus is None:
        return None
    wanted = tuple(sorted({int(c) for c in cpus}))
    allowed = os.sched_getaffinity(0)
    if not wanted or not set(wanted) <= allowed:
        raise UserError(f"cpus {list(wanted)}: not a non-empty subset of the usable cores {sorted(allowed)}")
    return wanted


@contextlib.contextmanager
def _thread_affinity(cpus: Sequence[int] | None) -> Iterator[None]:
    """This thread runs on `cpus` for the block (a child forked in it inherits them), then as before."""
    if cpus is None:
        yield
        return
    before = os.sched_getaffinity(0)  # pid 0: the calling thread only, other threads are unaffected
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def _fmt_tail(tail: list[str]) -> str:
    return ("; server log ends with:\n  " + "\n  ".join(tail)) if tail else ""


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


@atexit.register
def _stop_all() -> None:
    """Never leave a server behind when the interpreter exits without `stop()`."""
    for server in list(_LIVE):
        server.stop()
