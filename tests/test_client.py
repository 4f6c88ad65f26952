"""Client behaviour that needs no tritonserver: config parsing, refused connections, and timeouts
against a real TCP listener that never answers."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest

from ttsrec.client import (
    Client,
    ClientError,
    ClientRuntimeError,
    DeadlineExceededError,
    ModelInfo,
    ServerUnavailableError,
    ShardedClient,
    ShardsFailedError,
)
from ttsrec.client.utils import normalise_url
from ttsrec.serve.ports import free_port

HTTP_CONFIG = {
    "name": "ensemble_m2", "platform": "ensemble", "max_batch_size": 256,
    "input": [{"name": "feat_ids", "data_type": "TYPE_INT64", "dims": [39]}],
    "output": [{"name": "logit", "data_type": "TYPE_FP32", "dims": [1]},
               {"name": "prob", "data_type": "TYPE_FP32", "dims": [1]}],
    "ensemble_scheduling": {"step": [
        {"model_name": "member_00_fnn", "input_map": {"feat_ids": "feat_ids"},
         "output_map": {"logit": "logit_00"}},
        {"model_name": "member_01_dcnv2", "input_map": {"feat_ids": "feat_ids"},
         "output_map": {"logit": "logit_01"}},
        {"model_name": "merge_mean_m2", "input_map": {"logit_0": "logit_00", "logit_1": "logit_01"},
         "output_map": {"logit": "logit", "prob": "prob"}},
    ]},
}


def test_model_info_from_http_and_grpc_json():
    info = ModelInfo.from_config(HTTP_CONFIG)
    assert (info.input_name, info.input_dtype) == ("feat_ids", "INT64")
    assert (info.num_fields, info.max_batch_size) == (39, 256)
    assert info.outputs == ("logit", "prob")
    assert info.members == ("member_00_fnn", "member_01_dcnv2")
    grpc_form = {"config": {**HTTP_CONFIG, "max_batch_size": 256,
                            "input": [{"name": "feat_ids", "data_type": "TYPE_INT64", "dims": ["39"]}]}}
    assert ModelInfo.from_config(grpc_form) == info


def test_normalise_url():
    assert normalise_url("grpc://127.0.0.1:8001/", "grpc") == "127.0.0.1:8001"
    assert normalise_url("http://localhost:8000", "http") == "localhost:8000"
    with pytest.raises(ClientError, match="unknown protocol"):
        normalise_url("localhost:8000", "udp")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_refused_connection_names_server_and_model(protocol: str):
    url = f"127.0.0.1:{free_port()}"
    with Client(url, protocol, "ensemble_m4", timeout_s=5) as client:
        start = time.monotonic()
        with pytest.raises(ServerUnavailableError) as err:
            client.predict([[1] * 39])
        assert time.monotonic() - start < 5
    assert url in str(err.value) and "ensemble_m4" in str(err.value)
    assert not client.is_ready()


@pytest.fixture()
def silent_server() -> Iterator[str]:
    """A TCP listener that accepts connections and never answers: a hung server."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        yield f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_no_request_hangs_past_its_timeout(silent_server: str, protocol: str):
    with Client(silent_server, protocol, "ensemble_m1", timeout_s=1.0) as client:
        start = time.monotonic()
        with pytest.raises(ClientRuntimeError) as err:
            client.predict([[1] * 39])
        elapsed = time.monotonic() - start
    assert elapsed < 3.0, elapsed
    assert isinstance(err.value, DeadlineExceededError | ServerUnavailableError), err.value
    assert silent_server in str(err.value)


def test_sharded_client_argument_checks():
    with pytest.raises(ClientError, match="at least one"):
        ShardedClient([])
    with pytest.raises(ClientError, match="min_members"):
        ShardedClient(["127.0.0.1:1"], min_members=0)
    with pytest.raises(ClientError, match="duplicate"):
        ShardedClient(["127.0.0.1:1", "grpc://127.0.0.1:1"])


def test_sharded_client_times_out_on_hung_shards(silent_server: str):
    with ShardedClient([silent_server, f"127.0.0.1:{free_port()}"], timeout_s=1.0, min_members=1) as client:
        start = time.monotonic()
        with pytest.raises(ShardsFailedError, match="fewer than min_members=1"):
            client.predict([[1] * 39])
        assert time.monotonic() - start < 3.0
