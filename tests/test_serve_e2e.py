"""End to end on real tritonservers (loopback): one server for the whole repository, two for a
2-shard export, and `tts-serve` itself. Few servers, shared per module: the machine has 2 cores."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb
from tritonclient.utils import InferenceServerException

from serve_fixtures import MAX_BATCH, OrtReference, RepoSpec, criteo_records, export
from ttsrec.client import Client, ClientError, ShardedClient
from ttsrec.client.errors import CLIENT_ERRORS, ShardsFailedError
from ttsrec.data.encode import RecordEncoder
from ttsrec.data.feature_map import FeatureMap
from ttsrec.data.prepared import PreparedData
from ttsrec.errors import UserError
from ttsrec.serve import ShardedServers, TritonServer

pytestmark = pytest.mark.slow

M_LIST = [1, 2, 4]
MODELS = [f"{kind}_m{m}" for kind in ("ensemble", "fused") for m in M_LIST]
TOL = 1e-6
REPO = RepoSpec("serve", options={"m_list": M_LIST})


@pytest.fixture(scope="module")
def sharded_repo(member_checkpoints: list[Path], prepared_dir: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(member_checkpoints, tmp_path_factory.mktemp("serve") / "sharded", prepared_dir, shards=2,
                  fused=False)


@pytest.fixture(scope="module")
def reference(repo: Path) -> OrtReference:
    return OrtReference(repo)


@pytest.fixture(scope="module")
def ids(prepared_dir: Path) -> np.ndarray:
    """Real test-split rows, then random int64 ids (negative, huge) that must map to OOV."""
    real = np.asarray(PreparedData(prepared_dir).ids("test")[:200], dtype=np.int64)
    rng = np.random.default_rng(0)
    info = np.iinfo(np.int64)
    wild = rng.integers(info.min, info.max, size=(56, real.shape[1]), dtype=np.int64)
    wild[0, :] = info.max
    wild[1, :] = info.min
    wild[2, :] = -1
    return np.concatenate([real, wild])


# -- single server -------------------------------------------------------------------------------------


def test_server_loads_every_model(server: TritonServer, repo: Path):
    states = {m["name"]: m.get("state") for m in server.models()}
    expected = {p.name for p in repo.iterdir() if (p / "config.pbtxt").is_file()}
    assert set(states) == expected and set(states.values()) == {"READY"}
    assert server.is_alive() and server.pid


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_every_ensemble_and_fused_model_equals_ort_mean(server: TritonServer, reference: OrtReference,
                                                        ids: np.ndarray, protocol: str):
    for model in MODELS:
        members = reference.members_of(model)
        assert len(members) == int(model.rsplit("_m", 1)[1])
        with Client(server.url(protocol), protocol, model, timeout_s=30) as client:
            for batch in (1, 7, 256):
                rows = ids[-batch:] if batch == 7 else ids[:batch]  # batch 7: random int64 ids
                prob, logit = client.predict(rows)
                expected = reference.mean_logit(members, rows)
                assert prob.shape == logit.shape == (batch,) and prob.dtype == np.float32
                assert np.abs(logit - expected).max() <= TOL, (model, batch)
                assert np.abs(prob - 1 / (1 + np.exp(-expected))).max() <= TOL
                assert np.all(np.isfinite(logit)) and np.all((prob > 0) & (prob < 1))


def test_ensemble_members_read_from_server_config(server: TritonServer, reference: OrtReference):
    with Client(server.grpc_url, model="ensemble_m4") as client:
        assert list(client.info.members) == reference.members_of("ensemble_m4")
        assert client.info.max_batch_size == MAX_BATCH


def test_predict_records_equals_encode_then_predict(server: TritonServer, repo: Path, synthetic_tsv: Path,
                                                    reference: OrtReference):
    records = criteo_records(synthetic_tsv, 50)
    records[0] = {"I1": "", "C1": "never-seen-token"}  # missing and unknown values: OOV ids
    with Client(server.http_url, "http", "ensemble_m2", feature_map=repo) as client:
        prob, logit = client.predict_records(records)
        encoded = RecordEncoder(FeatureMap.load(repo)).encode(records)
        assert (encoded[1:] > 0).mean() > 0.5  # real records hit the vocabulary
        prob2, logit2 = client.predict(encoded)
    np.testing.assert_array_equal(logit, logit2)
    np.testing.assert_array_equal(prob, prob2)
    assert np.abs(logit - reference.mean_logit(reference.members_of("ensemble_m2"), encoded)).max() <= TOL


def test_predict_records_needs_a_feature_map(server: TritonServer):
    with Client(server.grpc_url, model="ensemble_m1") as client, \
            pytest.raises(ClientError, match="feature map"):
        client.predict_records([{"I1": "1"}])


def test_batches_above_max_are_split_or_refused(server: TritonServer, reference: OrtReference,
                                                ids: np.ndarray):
    rows = np.concatenate([ids, ids])[: MAX_BATCH * 2 + 3]
    with Client(server.grpc_url, model="ensemble_m2") as client:
        _, logit = client.predict(rows)
    assert logit.shape == (len(rows),)
    assert np.abs(logit - reference.mean_logit(reference.members_of("ensemble_m2"), rows)).max() <= TOL
    with Client(server.grpc_url, model="ensemble_m2", split_batches=False) as client, \
            pytest.raises(ClientError, match=f"above the model's max_batch_size {MAX_BATCH}") as err:
        client.predict(rows)
    assert server.grpc_url in str(err.value) and "ensemble_m2" in str(err.value)


def test_bad_requests_fail_clearly_and_server_keeps_answering(server: TritonServer, ids: np.ndarray):
    url, num_fields = server.grpc_url, ids.shape[1]
    with Client(url, model="ensemble_m1") as client:
        with pytest.raises(ClientError, match="must be integer ids"):
            client.predict(ids[:4].astype(np.float32))
        with pytest.raises(ClientError, match=rf"shape \[B, {num_fields}\]"):
            client.predict(np.zeros((4, num_fields + 1), np.int64))
        before = client.predict(ids[:8])[1]
    with Client(url, model="no_such_model", timeout_s=5) as client, pytest.raises(ClientError) as err:
        client.predict(ids[:1])
    assert "no_such_model" in str(err.value) and url in str(err.value)

    # The same mistakes sent raw, past the client's checks: the server refuses each and stays up.
    raw = grpcclient.InferenceServerClient(url)
    bad_requests = [
        ("feat_ids", ids[:4].astype(np.float32), "FP32"),
        ("feat_ids", np.zeros((4, num_fields + 1), np.int64), "INT64"),
        ("feat_ids", np.zeros((MAX_BATCH + 1, num_fields), np.int64), "INT64"),
        ("not_an_input", ids[:4], "INT64"),
    ]
    for name, array, dtype in bad_requests:
        inp = grpcclient.InferInput(name, list(array.shape), dtype)
        inp.set_data_from_numpy(array)
        with pytest.raises(InferenceServerException):
            raw.infer("ensemble_m1", [inp], client_timeout=10)
    raw.close()
    assert server.is_alive()
    with Client(url, model="ensemble_m1") as client:
        np.testing.assert_array_equal(client.predict(ids[:8])[1], before)


def test_concurrent_and_async_calls(server: TritonServer, reference: OrtReference, ids: np.ndarray):
    batches = [ids[i:i + 16] for i in range(0, 128, 16)]
    for protocol in ("grpc", "http"):
        with Client(server.url(protocol), protocol, "ensemble_m4") as client:
            results = client.predict_many(batches, concurrency=4)
            future = client.predict_async(batches[0])
            np.testing.assert_array_equal(future.result(timeout=30)[1], results[0][1])
    members = reference.members_of("ensemble_m4")
    for batch, (_, logit) in zip(batches, results, strict=True):
        assert np.abs(logit - reference.mean_logit(members, batch)).max() <= TOL


def test_failed_model_load_reports_the_log(tmp_path: Path):
    cfg = pb.ModelConfig(name="broken", backend="python", max_batch_size=4)
    cfg.input.add(name="feat_ids", data_type=pb.TYPE_INT64, dims=[3])
    cfg.output.add(name="logit", data_type=pb.TYPE_FP32, dims=[1])
    (tmp_path / "broken" / "1").mkdir(parents=True)
    (tmp_path / "broken" / "config.pbtxt").write_text(text_format.MessageToString(cfg))
    (tmp_path / "broken" / "1" / "model.py").write_text("raise RuntimeError('boom at import')\n")
    server = TritonServer(tmp_path, start_timeout_s=60)
    with pytest.raises(UserError, match=r"(?s)exited with code \d+ while starting.*failed to load 'broken'"):
        server.start()
    assert not server.is_alive()


def test_port_taken_after_the_check_is_detected_by_server_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A port free at check time but taken before tritonserver binds it: another server may then
    answer our readiness poll; the `--id` check tells, an explicit port fails, a picked one is re-picked."""
    import ttsrec.serve.server as server_mod

    with TritonServer(tmp_path) as first:
        monkeypatch.setattr(server_mod, "check_ports", lambda *args: None)
        with pytest.raises(UserError, match="port already in use"):
            TritonServer(tmp_path, http_port=first.ports["http"]).start()
        first_pick = iter([True])
        real_free_ports = server_mod.free_ports

        def picks(count: int, host: str) -> list[int]:  # the next start's first pick: a taken port
            ports = real_free_ports(count, host)
            return [first.ports["http"], *ports[1:]] if next(first_pick, False) else ports

        monkeypatch.setattr(server_mod, "free_ports", picks)
        with TritonServer(tmp_path) as second:
            assert second.ports["http"] != first.ports["http"]
            assert second.models() == [] and second.is_alive()


def test_check_helpers_round_trip(server: TritonServer):
    """`tts-serve --check` helpers: every ensemble/fused model answers over both protocols."""
    from ttsrec.client.check import check_server

    names = [m["name"] for m in server.models()]
    rows = check_server({"grpc": server.grpc_url, "http": server.http_url}, server.repo, names, repeats=1)
    assert {(r["model"], r["protocol"]) for r in rows} == {(m, p) for m in MODELS for p in ("grpc", "http")}
    assert all(0 < p < 1 for r in rows for p in r["prob"])


# -- two shard servers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shards(sharded_repo: Path) -> Iterator[ShardedServers]:
    with ShardedServers(sharded_repo) as group:
        yield group


def test_two_shards_equal_the_single_server_ensemble(shards: ShardedServers, server: TritonServer,
                                                     reference: OrtReference, ids: np.ndarray):
    with Client(server.grpc_url, model="ensemble_m4") as single:
        _, expected = single.predict(ids)
    for protocol, model in (("grpc", "shard_sum"), ("http", "shard_sum")):
        with ShardedClient(shards.urls(protocol), protocol, model) as client:
            result = client.predict(ids)
        prob, logit = result
        assert np.abs(logit - expected).max() <= TOL, (protocol, model)
        assert np.abs(prob - 1 / (1 + np.exp(-logit.astype(np.float64)))).max() <= TOL
        assert result.complete and result.shards == shards.urls(protocol)
        assert sorted(result.members) == sorted(reference.members_of("ensemble_m4"))
    with ShardedClient(shards.urls(), min_members=1) as client:  # bad input is not a shard failure
        with pytest.raises(ClientError, match="must be integer ids") as err:
            client.predict(ids[:4].astype(np.float64))
        assert err.value.bad_input
        assert len(client.predict(ids[:0]).logit) == 0


def test_hung_shard_is_left_out_within_the_timeout(shards: ShardedServers, reference: OrtReference,
                                                   ids: np.ndarray):
    urls, stopped = shards.urls(), shards.servers[1]
    with ShardedClient(urls, min_members=1, timeout_s=2.0) as client:
        members_0 = client.members()[urls[0]]
        os.kill(stopped.pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            result = client.predict(ids[:16])
            elapsed = time.monotonic() - start
        finally:
            os.kill(stopped.pid, signal.SIGCONT)
    assert elapsed < 2.0 + 1.0, elapsed
    assert result.members == members_0 and result.shards == [urls[0]] and urls[1] in result.failed
    assert np.abs(result.logit - reference.mean_logit(members_0, ids[:16])).max() <= TOL


def test_killing_a_shard_under_load_quorum_keeps_answering(shards: ShardedServers, ids: np.ndarray):
    """Runs last: it kills shard 1's server."""
    urls = shards.urls()
    quorum = ShardedClient(urls, min_members=2, timeout_s=3.0)
    strict = ShardedClient(urls, timeout_s=3.0)
    stop, results, errors, durations = threading.Event(), [], [], []

    def load() -> None:
        while not stop.is_set():
            start = time.monotonic()
            try:
                results.append(quorum.predict(ids[:32]))
            except CLIENT_ERRORS as err:
                errors.append(err)
            durations.append(time.monotonic() - start)

    workers = [threading.Thread(target=load) for _ in range(2)]
    for w in workers:
        w.start()
    time.sleep(1.0)
    os.kill(shards.servers[1].pid, signal.SIGKILL)
    killed_at = len(results)
    time.sleep(2.0)
    stop.set()
    for w in workers:
        w.join(10)
    after = results[killed_at + 2:]  # requests in flight during the kill may still hold both shards
    assert not errors, errors[:1]
    assert killed_at > 0 and after, (killed_at, len(results))
    assert all(r.shards == [urls[0]] and len(r.members) == 2 and urls[1] in r.failed for r in after)
    assert max(durations) < 3.0 + 1.0
    with pytest.raises(ShardsFailedError, match="1 of 2 shards failed") as err:
        strict.predict(ids[:4])
    assert urls[1] in str(err.value)
    with pytest.raises(ShardsFailedError, match="fewer than min_members=3"):
        ShardedClient(urls, min_members=3, timeout_s=3.0).predict(ids[:4])
    quorum.close()
    strict.close()
    dead = shards.servers[1]
    dead.stop()
    assert not list(Path("/dev/shm").glob(f"{dead.shm_prefix}*"))


# -- tts-serve -----------------------------------------------------------------------------------------


def test_tts_serve_sharded_export_serves_until_sigterm(sharded_repo: Path, tmp_path: Path, ids: np.ndarray):
    ready = tmp_path / "ready.json"
    cmd = [str(Path(sys.executable).parent / "tts-serve"), str(sharded_repo), "--http-port", "0",
           "--grpc-port", "0", "--metrics-port", "0", "--ready-file", str(ready)]
    proc = subprocess.Popen(cmd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not ready.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ready.exists(), proc.stderr.read() if proc.poll() is not None else "not ready in time"
        endpoints = json.loads(ready.read_text())
        with ShardedClient(endpoints["grpc_urls"]) as client:
            result = client.predict(ids[:8])
        assert len(result.members) == 4 and result.complete
        pids = [s["pid"] for s in endpoints["servers"]]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "shard_sum" in out and "ShardedClient urls" in out and "READY" in out
    assert not ready.exists()
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)



def test_tts_serve_check_queries_and_stops(sharded_repo: Path):
    cmd = [str(Path(sys.executable).parent / "tts-serve"), str(sharded_repo), "--http-port", "0",
           "--grpc-port", "0", "--metrics-port", "0", "--check"]
    env = {**os.environ, "COLUMNS": "160"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert result.returncode == 0, result.stderr
    assert "shard_sum x2" in result.stdout and "round trip" in result.stdout
    assert "stopped" in result.stderr
