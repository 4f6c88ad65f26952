"""Client logic with the transport replaced (like PyTriton's tests/unit/test_sync_client.py): batch
splitting, deadlines, retries, error translation, shard identity and per-shard isolation. No server."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import typer
from tritonclient.utils import InferenceServerException

from export_fixtures import tiny_feature_map
from ttsrec.cli.common import run_app
from ttsrec.client import (
    Client,
    ClientError,
    ClientRuntimeError,
    DeadlineExceededError,
    RequestRejectedError,
    ServerUnavailableError,
    ShardedClient,
    ShardsFailedError,
)
from ttsrec.client.errors import status_code, translate
from ttsrec.client.utils import config_parameters
from ttsrec.errors import RuntimeFailure, UserError
from ttsrec.repository import naming

FIELDS = 3


def ensemble_config(max_batch: int = 4, params: dict[str, str] | None = None,
                    members: tuple[str, ...] = ("member_00_fnn",), shard: bool = False) -> dict[str, Any]:
    outputs = [naming.LOGIT_SUM, naming.MEMBER_COUNT] if shard else [naming.LOGIT, naming.PROB]
    return {"name": "m", "max_batch_size": max_batch,
            "input": [{"name": naming.FEAT_IDS, "data_type": "TYPE_INT64", "dims": [FIELDS]}],
            "output": [{"name": o, "data_type": "TYPE_FP32", "dims": [1]} for o in outputs],
            "parameters": {f"ttsrec.{k}": {"string_value": v} for k, v in (params or {}).items()},
            "ensemble_scheduling": {"step": [
                {"model_name": m, "input_map": {"feat_ids": naming.FEAT_IDS},
                 "output_map": {"logit": f"l{i}"}} for i, m in enumerate(members)]}}


class FakeTransport:
    """Stands in for `Transport`: a fixed config, an `answer(ids, timeout_s)` callback, calls recorded."""

    def __init__(self, url: str, config: dict[str, Any], answer: Callable[..., dict[str, np.ndarray]],
                 timeout_s: float = 5.0):
        self.url, self.protocol, self.timeout_s = url, "grpc", timeout_s
        self.config, self.answer = config, answer
        self.calls: list[tuple[int, float]] = []
        self.lock = threading.Lock()

    def model_config(self, model: str) -> dict[str, Any]:
        return self.config

    def is_ready(self, model: str | None = None) -> bool:
        return True

    def infer(self, model: str, input_name: str, ids: np.ndarray, outputs: tuple[str, ...],
              timeout_s: float | None = None) -> dict[str, np.ndarray]:
        with self.lock:
            self.calls.append((len(ids), float(timeout_s if timeout_s is not None else self.timeout_s)))
        return self.answer(ids, timeout_s)

    def close(self) -> None:
        pass


def row_sum_logits(ids: np.ndarray, timeout_s: float | None = None) -> dict[str, np.ndarray]:
    logit = ids.sum(axis=1, keepdims=True).astype(np.float32)
    return {naming.LOGIT: logit, naming.PROB: 1 / (1 + np.exp(-logit))}


def shard_answer(value: float, members: int = 1, delay_s: float = 0.0) -> Callable[..., Any]:
    def answer(ids: np.ndarray, timeout_s: float | None = None) -> dict[str, np.ndarray]:
        if delay_s:
            time.sleep(delay_s)
        return {naming.LOGIT_SUM: np.full((len(ids), 1), value * members, np.float32),
                naming.MEMBER_COUNT: np.full((len(ids), 1), members, np.int32)}
    return answer


def shard(url: str, index: int, members: tuple[str, ...], answer: Callable[..., Any], *,
          export_id: str = "e1", fmap: str = "sha256:aa", timeout_s: float = 5.0) -> FakeTransport:
    params = {"export_id": export_id, "shard_index": str(index), "shard_count": "2",
              "feature_map_hash": fmap, "members": ",".join(members)}
    return FakeTransport(url, ensemble_config(params=params, members=members, shard=True), answer, timeout_s)


# -- Client --------------------------------------------------------------------------------------


def test_batches_split_at_max_batch_size_and_rejoined_in_order():
    fake = FakeTransport("fake:1", ensemble_config(max_batch=4), row_sum_logits)
    ids = np.arange(10 * FIELDS).reshape(10, FIELDS)
    _, logit = Client("fake:1", transport=fake).predict(ids)
    assert [n for n, _ in fake.calls] == [4, 4, 2]
    np.testing.assert_allclose(logit, ids.sum(axis=1))
    with pytest.raises(ClientError, match="above the model's max_batch_size 4"):
        Client("fake:1", transport=fake, split_batches=False).predict(ids)


def test_bad_ids_are_user_errors_before_any_request():
    fake = FakeTransport("fake:1", ensemble_config(), row_sum_logits)
    client = Client("fake:1", transport=fake)
    for bad in (np.zeros((2, FIELDS), np.float32), np.zeros((2, FIELDS + 1), np.int64)):
        with pytest.raises(ClientError) as err:
            client.predict(bad)
        assert isinstance(err.value, UserError) and err.value.bad_input
    assert fake.calls == []


def test_one_deadline_for_all_split_parts():
    """Each part is sent with the time that is left; once it is gone, no further request is sent."""
    def slow(ids: np.ndarray, timeout_s: float | None = None) -> dict[str, np.ndarray]:
        time.sleep(0.15)
        return row_sum_logits(ids)

    fake = FakeTransport("fake:1", ensemble_config(max_batch=2), slow, timeout_s=10.0)
    client = Client("fake:1", transport=fake)
    with pytest.raises(DeadlineExceededError, match=r"deadline passed after [246] of 8 rows") as err:
        client.predict(np.zeros((8, FIELDS), np.int64), timeout_s=0.25)
    assert isinstance(err.value, RuntimeFailure) and err.value.timed_out
    sent = [t for _, t in fake.calls]
    assert f"after {2 * len(sent)} of 8" in str(err.value)  # nothing sent once the time was gone
    assert sent[0] <= 0.25 and all(b < a for a, b in itertools.pairwise(sent))


def test_feature_map_hash_mismatch_is_refused():
    fmap = tiny_feature_map()
    other = ensemble_config(params={"feature_map_hash": "sha256:0000"})
    fake = FakeTransport("fake:1", other, row_sum_logits)
    with pytest.raises(ClientError, match="does not match the served model's sha256:0000"):
        Client("fake:1", transport=fake).check_feature_map(fmap)
    same = FakeTransport("fake:1", ensemble_config(params={"feature_map_hash": fmap.hash}), row_sum_logits)
    Client("fake:1", transport=same).check_feature_map(fmap)  # no error


# -- error translation ---------------------------------------------------------------------------


@pytest.mark.parametrize(("error", "family", "words"), [
    (InferenceServerException("failed to connect to all addresses", status="StatusCode.UNAVAILABLE"),
     ServerUnavailableError, "unreachable"),
    (ConnectionRefusedError(111, "Connection refused"), ServerUnavailableError, "unreachable"),
    (InferenceServerException("Stub process 'member_00_0_0' is not healthy.", status="StatusCode.INTERNAL"),
     ServerUnavailableError, "not healthy"),
    (InferenceServerException("Deadline Exceeded", status="StatusCode.DEADLINE_EXCEEDED"),
     DeadlineExceededError, "no answer within 2s"),
    (TimeoutError("timed out"), DeadlineExceededError, "no answer"),
    (InferenceServerException("Exceeds maximum queue size", status="StatusCode.UNAVAILABLE"),
     RequestRejectedError, "queue policy"),
    (InferenceServerException("Request timeout expired", status="400"), RequestRejectedError, "queue policy"),
    (InferenceServerException("Request for unknown model: 'x' is not found", status="StatusCode.NOT_FOUND"),
     ClientError, "unknown model"),
    (InferenceServerException("unexpected shape for input 'feat_ids'", status="StatusCode.INVALID_ARGUMENT"),
     ClientError, "unexpected shape"),
    (InferenceServerException("[request id: <id_unknown>] unexpected datatype", status="400"),
     ClientError, "unexpected datatype"),
    (InferenceServerException("onnxruntime ran out of memory", status="StatusCode.INTERNAL"),
     ClientRuntimeError, "out of memory"),
    # the status code decides where it can, whatever words the message happens to hold
    (InferenceServerException("unable to parse 'timeout'", status="StatusCode.INVALID_ARGUMENT"),
     ClientError, "parse 'timeout'"),
    (InferenceServerException("model 'deadline_m2' is not ready", status="StatusCode.UNAVAILABLE"),
     ServerUnavailableError, "server unavailable"),
    (InferenceServerException("model version 3 of 'timeout_m1' is not found", status="404"),
     ClientError, "is not found"),
    (InferenceServerException("Service Unavailable", status="503"), ServerUnavailableError, "unavailable"),
])
def test_translate_puts_each_fault_in_its_family(error: BaseException, family: type, words: str):
    err = translate(error, url="h:1", model="ensemble_m2", protocol="grpc", timeout_s=2)
    assert type(err) is family, (type(err), err)
    assert words in str(err) and str(err).startswith("ensemble_m2 at h:1: ") and "[grpc]" in str(err)
    assert isinstance(err, UserError) != isinstance(err, RuntimeFailure)


def test_status_code_reads_grpc_and_http_codes() -> None:
    import grpc

    late = InferenceServerException("x", status="StatusCode.DEADLINE_EXCEEDED")
    assert status_code(late) == "DEADLINE_EXCEEDED"
    assert status_code(InferenceServerException("x", status="503")) == "503"
    assert status_code(InferenceServerException("x")) == ""
    raw = grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(),
                               details="x")
    assert status_code(raw) == "UNAVAILABLE"
    assert status_code(ConnectionResetError(104, "Connection reset by peer")) == ""


@pytest.mark.parametrize(("error", "code"), [
    (ClientError("bad shape"), 2), (DeadlineExceededError("late"), 1),
    (ShardsFailedError("1 of 2", failed={"a": "x"}), 1)])
def test_exit_codes_follow_the_two_families(error: Exception, code: int, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr("sys.argv", ["tts-client-test"])
    app = typer.Typer()

    @app.command()
    def fail() -> None:
        raise error

    with pytest.raises(SystemExit) as exit_:
        run_app(app)
    assert exit_.value.code == code
    out = capsys.readouterr()
    assert str(error) in out.out + out.err and "Traceback" not in out.out + out.err


def test_config_parameters_from_either_protocol():
    http = {"parameters": {"ttsrec.export_id": {"string_value": "abc"}, "other": {"string_value": "x"}}}
    assert config_parameters(http) == {"export_id": "abc"}
    assert config_parameters({"config": http}) == {"export_id": "abc"}
    assert config_parameters({}) == {}


# -- ShardedClient -------------------------------------------------------------------------------


def test_sharded_mean_over_all_members():
    a = shard("a:1", 0, ("member_00_fnn",), shard_answer(1.0))
    b = shard("b:1", 1, ("member_01_dcn", "member_02_fm"), shard_answer(4.0, members=2))
    with ShardedClient([], transports=[a, b]) as client:
        result = client.predict(np.zeros((3, FIELDS), np.int64))
    np.testing.assert_allclose(result.logit, (1.0 + 8.0) / 3)
    assert result.members == ["member_00_fnn", "member_01_dcn", "member_02_fm"] and result.complete
    assert set(result.latency_s) == {"a:1", "b:1"}


@pytest.mark.parametrize(("second", "words"), [
    (dict(url="b:1", index=0, members=("member_01_dcn",)), "duplicate shard: a:1 and b:1 both serve shard 0"),
    (dict(url="b:1", index=1, members=("member_01_dcn",), export_id="e2"), "different exports"),
    (dict(url="b:1", index=1, members=("member_01_dcn",), fmap="sha256:bb"), "different feature maps"),
    (dict(url="b:1", index=1, members=("member_00_fnn",)), "duplicate members: member_00_fnn"),
])
def test_shards_that_must_not_be_mixed_are_refused(second: dict[str, Any], words: str):
    a = shard("a:1", 0, ("member_00_fnn",), shard_answer(1.0))
    b = shard(second.pop("url"), second.pop("index"), second.pop("members"), shard_answer(1.0), **second)
    with pytest.raises(ClientError, match="refusing to merge these shards") as err:
        ShardedClient([], transports=[a, b])
    assert words in str(err.value)
    assert isinstance(err.value, UserError)


def test_not_a_shard_ensemble_is_refused():
    plain = FakeTransport("a:1", ensemble_config(), row_sum_logits)
    with pytest.raises(ClientError, match="not a shard ensemble"):
        ShardedClient([], transports=[plain])


def flaky(failures: int, then: Callable[..., Any], error: Exception) -> Callable[..., Any]:
    left = [failures]

    def answer(ids: np.ndarray, timeout_s: float | None = None) -> Any:
        if left[0] > 0:
            left[0] -= 1
            raise error
        return then(ids, timeout_s)
    return answer


def test_unavailable_shard_is_retried_once_within_the_deadline():
    down = ServerUnavailableError("server unreachable", url="b:1")
    a = shard("a:1", 0, ("member_00_fnn",), shard_answer(1.0))
    b = shard("b:1", 1, ("member_01_dcn",), flaky(1, shard_answer(3.0), down))
    with ShardedClient([], transports=[a, b]) as client:
        result = client.predict(np.zeros((1, FIELDS), np.int64))
    np.testing.assert_allclose(result.logit, 2.0)
    assert len(b.calls) == 2 and b.calls[1][1] < b.calls[0][1]  # the retry got the time that was left

    b2 = shard("b:1", 1, ("member_01_dcn",), flaky(2, shard_answer(3.0), down))
    a2 = shard("a:1", 0, ("member_00_fnn",), shard_answer(1.0))
    with ShardedClient([], transports=[a2, b2], min_members=1) as client:
        result = client.predict(np.zeros((1, FIELDS), np.int64))
    assert len(b2.calls) == 2 and result.shards == ["a:1"] and "unreachable" in result.failed["b:1"]
    np.testing.assert_allclose(result.logit, 1.0)


@pytest.mark.parametrize(("error", "raised"), [(DeadlineExceededError("late"), ShardsFailedError),
                                               (ClientError("bad shape"), ClientError)])
def test_only_unavailable_is_retried(error: Exception, raised: type):
    a = shard("a:1", 0, ("member_00_fnn",), shard_answer(1.0))
    b = shard("b:1", 1, ("member_01_dcn",), flaky(1, shard_answer(3.0), error))
    with ShardedClient([], transports=[a, b]) as client, pytest.raises(raised):
        client.predict(np.zeros((1, FIELDS), np.int64))
    assert len(b.calls) == 1


def test_without_quorum_one_failed_shard_fails_the_call_as_a_runtime_fault():
    a = shard("a:1", 0, ("member_00_fnn",), shard_answer(1.0))
    b = shard("b:1", 1, ("member_01_dcn",), flaky(5, shard_answer(3.0), RequestRejectedError("queue full")))
    with ShardedClient([], transports=[a, b]) as client, pytest.raises(ShardsFailedError) as err:
        client.predict(np.zeros((1, FIELDS), np.int64))
    assert "1 of 2 shards failed" in str(err.value) and set(err.value.failed) == {"b:1"}


def test_a_hung_shard_holds_only_its_own_threads():
    """More callers than one shared pool of 4·K threads had (the old design) while one shard hangs until
    each call's deadline: the healthy shard's answers keep their latency (with one shared pool they
    queued behind the hung calls: checked by swapping in a shared pool, this test then fails), and every
    call returns by its deadline with the hung shard named as left out."""
    release = threading.Event()

    def hang(ids: np.ndarray, timeout_s: float | None = None) -> Any:
        release.wait(timeout_s)
        raise DeadlineExceededError("no answer")

    a = shard("a:1", 0, ("member_00_fnn",), shard_answer(1.0, delay_s=0.01))
    b = shard("b:1", 1, ("member_01_dcn",), hang)
    deadline = 1.0
    try:
        with ShardedClient([], transports=[a, b], min_members=1, timeout_s=deadline,
                           threads_per_shard=8) as client:
            def call(_: int) -> tuple[float, Any]:
                start = time.monotonic()
                result = client.predict(np.zeros((1, FIELDS), np.int64))
                return time.monotonic() - start, result

            with ThreadPoolExecutor(16) as callers:
                results = list(callers.map(call, range(48)))
    finally:
        release.set()
    for _, result in results:  # the healthy shard answered every call, the hung one is named
        assert result.shards == ["a:1"] and "b:1" in result.failed
    healthy = sorted(result.latency_s["a:1"] for _, result in results)
    assert healthy[len(healthy) // 2] < 0.2 * deadline, healthy  # not queued behind the hung shard
    assert max(elapsed for elapsed, _ in results) < deadline + 0.5
