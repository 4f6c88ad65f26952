"""Shard servers as separate hosts: network namespaces wired to one client namespace, and the two
roles run inside them (this file is also a script: `serve` inside a shard namespace, `load` scenarios
inside the client namespace, each printing JSON).

Layout for K shards (every address lives only inside namespaces created here):

    client ns  c{i}: 10.200.{i+1}.1/24  <-- veth -->  shard ns i  s{i}: 10.200.{i+1}.2/24 (+ .3, a 2nd name)

Ports are private to each namespace, so fixed ones cannot collide with anyone else's servers.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

GRPC_PORT, HTTP_PORT, METRICS_PORT = 8001, 8000, 8002
IP = "/usr/sbin/ip" if Path("/usr/sbin/ip").exists() else "ip"


def shard_host(i: int, second_name: bool = False) -> str:
    return f"10.200.{i + 1}.{3 if second_name else 2}"


def shard_url(i: int, second_name: bool = False) -> str:
    return f"{shard_host(i, second_name)}:{GRPC_PORT}"


def _ip(*args: str, netns: str | None = None) -> None:
    cmd = [IP, "netns", "exec", netns, IP, *args] if netns else [IP, *args]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=20)


class NetnsLab:
    """One client namespace and K shard namespaces; `close()` deletes them all (and their veths)."""

    def __init__(self, shards: int):
        token = uuid.uuid4().hex[:6]
        self.client_ns = f"tts{token}c"
        self.shard_ns = [f"tts{token}s{i}" for i in range(shards)]
        self._token = token
        self._procs: list[subprocess.Popen[str]] = []

    def open(self) -> NetnsLab:
        try:
            for ns in (self.client_ns, *self.shard_ns):
                _ip("netns", "add", ns)
                _ip("link", "set", "lo", "up", netns=ns)
            for i, ns in enumerate(self.shard_ns):
                c_end, s_end = f"t{self._token}c{i}", f"t{self._token}s{i}"
                _ip("link", "add", c_end, "netns", self.client_ns, "type", "veth", "peer", "name", s_end,
                    "netns", ns)
                _ip("addr", "add", f"10.200.{i + 1}.1/24", "dev", c_end, netns=self.client_ns)
                _ip("addr", "add", f"{shard_host(i)}/24", "dev", s_end, netns=ns)
                _ip("addr", "add", f"{shard_host(i, True)}/24", "dev", s_end, netns=ns)
                _ip("link", "set", c_end, "up", netns=self.client_ns)
                _ip("link", "set", s_end, "up", netns=ns)
        except BaseException:
            self.close()
            raise
        return self

    def spawn(self, ns: str, *args: str) -> subprocess.Popen[str]:
        """This file run as a script inside namespace `ns`."""
        proc = subprocess.Popen([IP, "netns", "exec", ns, sys.executable, __file__, *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True)
        self._procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self._procs:
            stop_process(proc)
        for ns in (self.client_ns, *self.shard_ns):
            subprocess.run([IP, "netns", "del", ns], capture_output=True, timeout=20)


def stop_process(proc: subprocess.Popen[str], timeout_s: float = 25.0) -> None:
    """SIGTERM (a serve helper then stops its server in order), SIGKILL of the group if it lingers."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


class ShardHost:
    """A tritonserver serving one shard repository inside its namespace, started by the `serve` role."""

    def __init__(self, lab: NetnsLab, index: int, repo: Path, timeout_s: float = 120.0):
        self.index = index
        self.proc = lab.spawn(lab.shard_ns[index], "serve", str(repo))
        line = _read_line(self.proc, timeout_s)
        try:
            info = json.loads(line)
        except json.JSONDecodeError:
            stop_process(self.proc)
            raise RuntimeError(f"shard {index} did not start: {line[-2000:]}") from None
        self.server_pid: int = info["pid"]
        self.url = shard_url(index)

    def kill_server(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.server_pid, sig)

    def stop(self) -> None:
        stop_process(self.proc)
        self.kill_server()  # in case the helper died before stopping it


def _read_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The child's first stdout line within `timeout_s`, or its stderr tail."""
    result: list[str] = []
    reader = threading.Thread(target=lambda: result.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    reader.join(timeout_s)
    if result and result[0].strip():
        return result[0]
    stop_process(proc, 5)
    return proc.stderr.read() if proc.stderr and not proc.stderr.closed else "no output"


def run_load(lab: NetnsLab, scenario: dict[str, Any], timeout_s: float = 90.0,
             on_line: Any = None) -> dict[str, Any]:
    """Run a `load` scenario in the client namespace; `on_line(line)` sees its progress lines."""
    proc = lab.spawn(lab.client_ns, "load", json.dumps(scenario))
    out: list[str] = []

    def read() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            out.append(line)
            if on_line is not None and not line.startswith("{"):
                on_line(line.strip())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        stop_process(proc, 5)
        raise AssertionError(f"load scenario {scenario['kind']} did not finish in {timeout_s}s") from None
    reader.join(10)
    err = proc.stderr.read() if proc.stderr else ""
    results = [line for line in out if line.startswith("{")]
    assert proc.returncode == 0 and results, f"load scenario failed (rc {proc.returncode}): {err[-3000:]}"
    return json.loads(results[-1])


# -- roles (run inside the namespaces) -------------------------------------------------------------


def serve(repo: str) -> None:
    from ttsrec.serve import TritonServer

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # All addresses of this namespace (it has two names for the same shard); nothing outside the
    # namespace can reach them but the client namespace at the other end of the veth.
    with TritonServer(repo, host="0.0.0.0", grpc_port=GRPC_PORT, http_port=HTTP_PORT,
                      metrics_port=METRICS_PORT) as server:
        print(json.dumps({"pid": server.pid, "grpc_url": server.grpc_url}), flush=True)
        while not stop.wait(0.2):
            if not server.is_alive():  # killed by the test: nothing left to serve
                break


def _call(client: Any, ids: Any) -> dict[str, Any]:
    start = time.monotonic()
    try:
        result = client.predict(ids)
        return {"t": start, "s": time.monotonic() - start, "ok": True, "shards": result.shards,
                "failed": dict(result.failed), "members": result.members, "latency": result.latency_s}
    except Exception as err:
        return {"t": start, "s": time.monotonic() - start, "ok": False, "error": type(err).__name__,
                "message": str(err)}


def _loop(client: Any, ids: Any, until: float, out: list[dict[str, Any]]) -> None:
    while time.monotonic() < until:
        out.append(_call(client, ids))


def load(scenario: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from ttsrec.client import ShardedClient

    kind, urls = scenario["kind"], scenario["urls"]
    ids = np.random.default_rng(0).integers(0, 50, size=(scenario.get("batch", 8), scenario["fields"]))
    if kind == "refuse":  # refused at connect, or at the latest when both shards answer
        try:
            with ShardedClient(urls, timeout_s=5.0) as client:
                client.predict(ids)
            return {"refused": False}
        except Exception as err:
            return {"refused": True, "error": type(err).__name__, "message": str(err),
                    "user_error": isinstance(err, __import__("ttsrec.errors").errors.UserError)}

    timeout_s = scenario["timeout_s"]
    quorum = ShardedClient(urls, timeout_s=timeout_s, min_members=scenario["min_members"])
    strict = ShardedClient(urls, timeout_s=timeout_s)
    try:
        for client in (quorum, strict):  # both see every shard before the fault
            assert _call(client, ids)["ok"]
        calls: dict[str, list[dict[str, Any]]] = {"quorum": [], "strict": []}
        if kind == "kill":  # kill shard `victim` under load, then wait for it to come back
            stop_at = [time.monotonic() + scenario["rejoin_within_s"] + 3.0]

            def run(client: Any, out: list[dict[str, Any]]) -> None:
                while time.monotonic() < stop_at[0]:
                    out.append(_call(client, ids))
                    time.sleep(0.02)  # steady load that leaves the restarting shard some CPU
            threads = [threading.Thread(target=run, args=(quorum, calls["quorum"])) for _ in range(2)]
            threads.append(threading.Thread(target=run, args=(strict, calls["strict"])))
            for t in threads:
                t.start()
            time.sleep(1.0)
            killed_at = time.monotonic()
            os.kill(scenario["victim_pid"], signal.SIGKILL)
            print("KILLED", flush=True)
            rejoined_at = None
            while time.monotonic() < killed_at + scenario["rejoin_within_s"]:
                recent = [c for c in list(calls["strict"]) if c["t"] > killed_at + 1.0 and c["ok"]]
                if recent:
                    rejoined_at = recent[0]["t"]
                    break
                time.sleep(0.2)
            stop_at[0] = time.monotonic() + 1.0
            for t in threads:
                t.join(timeout_s * 3 + 5)
            return {"killed_at": killed_at, "rejoined_at": rejoined_at, "calls": calls}
        if kind == "stall":  # SIGSTOP shard `victim` while 4*K callers run; SIGCONT afterwards
            callers = 4 * len(urls)
            out: dict[str, list[dict[str, Any]]] = {"before": [], "during": []}
            for phase, seconds in (("before", scenario["phase_s"]), ("during", scenario["phase_s"])):
                if phase == "during":
                    os.kill(scenario["victim_pid"], signal.SIGSTOP)
                try:
                    until = time.monotonic() + seconds
                    threads = [threading.Thread(target=_loop, args=(quorum, ids, until, out[phase]))
                               for _ in range(callers)]
                    for t in threads:
                        t.start()
                    for t in threads:
                        t.join(seconds + timeout_s * 3 + 5)
                finally:
                    if phase == "during":
                        os.kill(scenario["victim_pid"], signal.SIGCONT)
            return {"calls": out, "callers": callers}
        raise ValueError(kind)
    finally:
        quorum.close()
        strict.close()


if __name__ == "__main__":
    role = sys.argv[1]
    if role == "serve":
        serve(sys.argv[2])
    else:
        print(json.dumps(load(json.loads(sys.argv[2]))), flush=True)
