"""Faults on real servers (slow): owners killed hard leave nothing behind; tts-serve brings a crashed
server or a dead stub back; exposure. Each test is bounded and stops what it started."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from serve_fixtures import RepoSpec
from ttsrec.cli.serve import KEY_HEADER
from ttsrec.client import Client
from ttsrec.serve import shm

pytestmark = pytest.mark.slow
MODEL = "fused_m2"
CRASH = {"inputs": [{"name": "feat_ids", "shape": [1000000000000, 39], "datatype": "INT64",
                     "data": [1] * 39}]}
REPO = RepoSpec("faults", options={"m_list": [2]})


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait(cond, timeout_s: float) -> float | None:
    """Seconds until cond() held, None if it did not within timeout_s."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if cond():
            return time.monotonic() - start
        time.sleep(0.1)
    return None


def _ready(http_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{http_url}/v2/health/ready", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return out


def _ids(rows: int = 8) -> np.ndarray:
    return np.ones((rows, 39), dtype=np.int64)


@pytest.fixture
def tts_serve(repo: Path, tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict]]:
    """`tts-serve` on free ports, supervised; its endpoints; stopped (SIGTERM, then SIGKILL) at the end."""
    ready = tmp_path / "ready.json"
    log = open(tmp_path / "tts-serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([sys.executable, "-m", "ttsrec.cli.serve", str(repo), "--http-port", "0",
                             "--grpc-port", "0", "--metrics-port", "0", "--ready-file", str(ready),
                             "--supervise-every", "0.2"], stdout=log, stderr=subprocess.STDOUT)
    try:
        assert _wait(lambda: ready.is_file() or proc.poll() is not None, 240) is not None
        assert proc.poll() is None, (tmp_path / "tts-serve.log").read_text()
        yield proc, json.loads(ready.read_text())["servers"][0]
    finally:
        _terminate(proc)
        log.close()
        print((tmp_path / "tts-serve.log").read_text()[-2000:])


def _terminate(proc: subprocess.Popen) -> None:
    """SIGTERM (a clean stop), then SIGKILL if it is not gone within a minute."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _server_pid(serve_pid: int) -> int:
    return next(p for p in _children(serve_pid) if b"tritonserver" in Path(f"/proc/{p}/cmdline").read_bytes())


def _stubs(server_pid: int) -> list[int]:
    return [p for p in _children(server_pid)
            if b"triton_python_backend_stub" in Path(f"/proc/{p}/cmdline").read_bytes()]


def _regions(server_pid: int) -> tuple[list[str], str]:
    cmd = Path(f"/proc/{server_pid}/cmdline").read_bytes().decode()
    prefix = cmd.split("shm-region-prefix-name=")[1].split("\0")[0]
    return [p.name for p in shm.SHM_DIR.glob(f"{prefix}*")], prefix


def _left_behind(pids: list[int], prefix: str) -> list[str]:
    return [f"pid {p}" for p in pids if _alive(p)] + [p.name for p in shm.SHM_DIR.glob(f"{prefix}*")]


def test_http_crash_request_is_survived_by_the_supervisor(tts_serve):
    proc, ep = tts_serve
    old = _server_pid(proc.pid)
    req = urllib.request.Request(f"http://{ep['http_url']}/v2/models/{MODEL}/infer",
                                 data=json.dumps(CRASH).encode(), method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = f"status {resp.status}"
    except urllib.error.HTTPError as err:
        answer = f"status {err.code}"
    except (urllib.error.URLError, OSError) as err:
        answer = f"connection lost ({err})"
    start = time.monotonic()
    assert _wait(lambda: not _alive(old), 10) is not None, "the known crash: 2.51 aborts on this request"
    assert _wait(lambda: _ready(ep["http_url"]), 120) is not None
    with Client(ep["grpc_url"], model=MODEL) as client:
        prob, _ = client.predict(_ids())
        assert prob.shape == (8,) and np.isfinite(prob).all()
    print(f"crash request: {answer}; server pid {old} gone, a new one "
          f"serving again {time.monotonic() - start:.1f}s later")
    assert proc.poll() is None


def test_dead_stub_under_load_is_recovered_and_readiness_drops_meanwhile(tts_serve):
    proc, ep = tts_serve
    server = _server_pid(proc.pid)
    counts = {"ok": 0, "failed": 0, "not_ready_seen": 0}
    stop = threading.Event()

    def load() -> None:
        with Client(ep["grpc_url"], model=MODEL, timeout_s=5) as client:
            while not stop.is_set():
                try:
                    client.predict(_ids())
                    counts["ok"] += 1
                except Exception:
                    counts["failed"] += 1
                    time.sleep(0.05)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(2)
        victim = _stubs(server)[0]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        went_down = _wait(lambda: not _ready(ep["http_url"]), 20)
        back = _wait(lambda: _ready(ep["http_url"]), 120)
        assert went_down is not None and back is not None
        recovered = time.monotonic() - killed
        before = dict(counts)
        time.sleep(2)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    assert counts["ok"] > before["ok"], "requests succeed again after recovery"
    print(f"stub kill under load: {counts['ok']} ok, {counts['failed']} failed, not ready "
          f"{went_down:.1f}s after the kill, serving again after {recovered:.1f}s")


def test_sigkill_of_tts_serve_leaves_no_server_stub_or_shm(tts_serve):
    proc, _ = tts_serve
    server = _server_pid(proc.pid)
    stubs = _stubs(server)
    regions, prefix = _regions(server)
    assert stubs and regions
    proc.kill()
    proc.wait()
    gone = _wait(lambda: not _left_behind([server, *stubs], prefix), 15)
    assert gone is not None, _left_behind([server, *stubs], prefix)
    print(f"tts-serve SIGKILLed: server, {len(stubs)} stubs, {len(regions)} shm regions gone in {gone:.1f}s")


def test_sigkill_of_a_python_owner_leaves_no_server_stub_or_shm(repo: Path, tmp_path: Path):
    info = tmp_path / "info.json"
    code = (f"import json, time; from ttsrec.serve import TritonServer\n"
            f"s = TritonServer({str(repo)!r}).start()\n"
            f"open({str(info)!r}, 'w').write(json.dumps([s.pid, s.stub_pids(), s.shm_prefix]))\n"
            f"time.sleep(600)\n")
    owner = subprocess.Popen([sys.executable, "-c", code])
    try:
        assert _wait(lambda: info.is_file() and info.stat().st_size > 0, 240) is not None
        server, stubs, prefix = json.loads(info.read_text())
        assert _alive(server) and stubs and list(shm.SHM_DIR.glob(f"{prefix}*"))
    finally:
        owner.kill()
        owner.wait()
    gone = _wait(lambda: not _left_behind([server, *stubs], prefix), 15)
    assert gone is not None, _left_behind([server, *stubs], prefix)
    print(f"python owner SIGKILLed: server, {len(stubs)} stubs gone in {gone:.1f}s")


def _listeners(pid: int) -> set[str]:
    """Local addresses this process listens on (hex from /proc/net/tcp{,6}, matched by socket inode)."""
    inodes = _socket_inodes(pid)
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:
                out.add(cols[1].split(":")[0])
    return out


def test_default_listens_on_loopback_only_and_exposed_restricts_admin_apis(tts_serve, repo: Path,
                                                                           tmp_path: Path):
    proc, _ = tts_serve
    loopback = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
    listening = _listeners(_server_pid(proc.pid))  # 127.0.0.1, ::ffff:127.0.0.1 (gRPC), ::1 only
    assert listening and listening <= loopback, listening
    refused = subprocess.run([sys.executable, "-m", "ttsrec.cli.serve", str(repo), "--host", "0.0.0.0"],
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--expose" in refused.stderr + refused.stdout
    ready = tmp_path / "exposed.json"
    env = {**os.environ, "TTSREC_ADMIN_KEY": "s3cret"}
    exposed = subprocess.Popen([sys.executable, "-m", "ttsrec.cli.serve", str(repo), "--host", "0.0.0.0",
                                "--expose", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
                                "--ready-file", str(ready)], env=env, stdout=subprocess.DEVNULL)
    try:
        assert _wait(lambda: ready.is_file() or exposed.poll() is not None, 240) is not None
        url = json.loads(ready.read_text())["servers"][0]["http_url"]
        for path, body in (("/v2/repository/index", b"{}"), ("/v2/systemsharedmemory/status", None),
                           ("/v2/logging", None), ("/v2/trace/setting", None)):
            req = urllib.request.Request(f"http://{url}{path}", data=body, method="POST" if body else "GET")
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(req, timeout=10)
            assert err.value.code == 403, path
        req = urllib.request.Request(f"http://{url}/v2/repository/index", data=b"{}", method="POST",
                                     headers={"tts-admin-key": "s3cret"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
        assert _ready(url)  # health and inference stay open
        grpc_port = json.loads(ready.read_text())["servers"][0]["grpc_url"].rsplit(":", 1)[1]
        _check_grpc_restricted(f"127.0.0.1:{grpc_port}", "s3cret")  # bound to every address
    finally:
        _terminate(exposed)


def _check_grpc_restricted(grpc_url: str, key: str) -> None:
    """Over gRPC too: model control and shared memory need the key; health and inference do not."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(grpc_url)
    try:
        for call in (client.get_model_repository_index, client.get_system_shared_memory_status):
            with pytest.raises(InferenceServerException) as err:
                call()
            assert "This protocol is restricted" in str(err.value), (call.__name__, err.value)
        header = {f"triton-grpc-protocol-{KEY_HEADER}": key}  # Triton 2.51 prefixes gRPC's header name
        assert client.get_model_repository_index(headers=header, as_json=True)["models"]
        assert client.is_server_ready()
        ids = grpcclient.InferInput("feat_ids", [2, 39], "INT64")
        ids.set_data_from_numpy(_ids(2))
        assert client.infer(MODEL, [ids]).as_numpy("logit").shape == (2, 1)
    finally:
        client.close()


def test_integrity_refusal_then_grpc_only_serving_stops_cleanly_on_sighup(repo: Path, tmp_path: Path):
    """A tampered copy is refused in one line naming the file; --skip-integrity serves it anyway; with
    --protocol grpc nothing listens on HTTP; SIGHUP stops it like SIGTERM, leaving nothing behind."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(repo, copy)
    config = copy / MODEL / "config.pbtxt"
    config.write_text(config.read_text() + "# edited by hand\n")
    cmd = [sys.executable, "-m", "ttsrec.cli.serve", str(copy), "--http-port", "0", "--grpc-port", "0",
           "--metrics-port", "0"]
    refused = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    lines = [line for line in (refused.stdout + refused.stderr).splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1, lines
    assert f"{MODEL}/config.pbtxt does not match its sha256" in lines[0]

    ready = tmp_path / "ready.json"
    proc = subprocess.Popen([*cmd, "--skip-integrity", "--protocol", "grpc", "--ready-file", str(ready)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert _wait(lambda: ready.is_file() or proc.poll() is not None, 240) is not None
        assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
        server = _server_pid(proc.pid)
        stubs, (regions, prefix) = _stubs(server), _regions(server)
        assert stubs and regions
        grpc_url = json.loads(ready.read_text())["servers"][0]["grpc_url"]
        grpc_port = f"{int(grpc_url.rsplit(':', 1)[1]):04X}"
        ports = {line.split()[1].split(":")[1] for table in ("/proc/net/tcp", "/proc/net/tcp6")
                 for line in Path(table).read_text().splitlines()[1:]
                 if line.split()[3] == "0A" and line.split()[9] in _socket_inodes(server)}
        assert grpc_port in ports and len(ports) == 2, ports  # gRPC and metrics; no HTTP
        with Client(grpc_url, protocol="grpc", model=MODEL, timeout_s=30) as client:
            assert client.predict(_ids(4))[0].shape == (4,)
        proc.send_signal(signal.SIGHUP)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and "stopped" in out, out[-2000:]
    assert _wait(lambda: not _left_behind([server, *stubs], prefix), 10) is not None, \
        _left_behind([server, *stubs], prefix)
    assert not ready.exists()


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _post(url: str, body: bytes, headers: dict[str, str] | None = None) -> int:
    req = urllib.request.Request(url, data=body, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status
    except urllib.error.HTTPError as err:
        return err.code


def test_malformed_http_and_grpc_requests_get_an_error_and_the_server_stays_up(tts_serve):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    proc, ep = tts_serve
    server = _server_pid(proc.pid)
    url = f"http://{ep['http_url']}/v2/models/{MODEL}/infer"

    def tensor(shape: list[int], datatype: str = "INT64", data: list | None = None) -> bytes:
        return json.dumps({"inputs": [{"name": "feat_ids", "shape": shape, "datatype": datatype,
                                       "data": [1] * 39 if data is None else data}]}).encode()

    binary = json.dumps({"inputs": [{"name": "feat_ids", "shape": [1, 39], "datatype": "INT64",
                                     "parameters": {"binary_data_size": 312}}]}).encode()
    bad = {"zero dim": tensor([0, 39], data=[]), "negative dim": tensor([-1, 39]),
           "wrong feature count": tensor([1, 38]), "wrong dtype": tensor([1, 39], "FP32"),
           "data of wrong type": tensor([1, 39], data=["x"] * 39), "wrong JSON": b'{"inputs": [',
           "random bytes": np.random.default_rng(0).bytes(512),
           "byte-size mismatch": binary + b"\0" * 100}
    bad_headers = {"byte-size mismatch": {"Inference-Header-Content-Length": str(len(binary))}}
    statuses = {}
    for what, body in bad.items():
        statuses[what] = _post(url, body, bad_headers.get(what))
        assert 400 <= statuses[what] < 600, (what, statuses[what])  # an error answer, not a crash
    rng = np.random.default_rng(1)
    with grpcclient.InferenceServerClient(ep["grpc_url"]) as client:
        for shape, dtype in (([0, 39], "INT64"), ([1, 38], "INT64"), ([1, 39], "FP32"), ([300, 39], "INT64")):
            inp = grpcclient.InferInput("feat_ids", shape, dtype)
            inp.set_data_from_numpy(rng.integers(0, 5, size=shape).astype(np.int64 if dtype == "INT64"
                                                                             else np.float32))
            with pytest.raises(InferenceServerException):
                client.infer(MODEL, [inp], client_timeout=30)
        inp = grpcclient.InferInput("feat_ids", [2, 39], "INT64")
        inp._raw_content = b"\1" * 100  # byte size that does not match the shape
        with pytest.raises(InferenceServerException):
            client.infer(MODEL, [inp], client_timeout=30)
        inp = grpcclient.InferInput("feat_ids", [-1, 39], "INT64")
        inp._raw_content = np.ones((1, 39), dtype=np.int64).tobytes()  # a negative dimension
        with pytest.raises(InferenceServerException):
            client.infer(MODEL, [inp], client_timeout=30)
    _random_bytes_over_grpc(ep["grpc_url"])
    assert _alive(server) and _server_pid(proc.pid) == server, "no restart was needed"
    assert _ready(ep["http_url"])
    with Client(ep["grpc_url"], model=MODEL) as client:
        assert np.isfinite(client.predict(_ids())[0]).all()
    print(f"malformed requests: HTTP {statuses} and 7 gRPC error answers, bare-port garbage dropped; "
          "same server still ready")


def _random_bytes_over_grpc(grpc_url: str) -> None:
    """Random bytes as the ModelInfer message (an error answer), and on the bare TCP port (dropped)."""
    import socket

    import grpc

    payload = np.random.default_rng(2).bytes(512)
    with grpc.insecure_channel(grpc_url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")  # bytes in, bytes out
        with pytest.raises(grpc.RpcError) as err:
            call(payload, timeout=30)
        assert err.value.code() != grpc.StatusCode.OK
    host, port = grpc_url.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(payload)
        sock.settimeout(10)
        try:
            while sock.recv(4096):  # the server answers with an HTTP/2 GOAWAY or closes: either ends it
                pass
        except (ConnectionResetError, TimeoutError):
            pass
