"""The transport against a real tritonserver on loopback: both protocols with the deadline sent as
Triton's request timeout, reused request objects, and each error family as the server really says it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from export_fixtures import tiny_feature_map
from serve_fixtures import OrtReference, RepoSpec
from ttsrec.client import (
    Client,
    ClientError,
    ServerUnavailableError,
    Transport,
)
from ttsrec.data.feature_map import FeatureMap
from ttsrec.errors import RuntimeFailure, UserError
from ttsrec.repository import naming
from ttsrec.serve import TritonServer

pytestmark = pytest.mark.slow
MODEL = naming.ensemble_name(2)
REPO = RepoSpec("client_server", members=2, options={"m_list": [2], "fused": False})


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_reused_requests_give_each_batch_its_own_answer(server: TritonServer, repo: Path, protocol: str):
    reference = OrtReference(repo)
    members = reference.members_of(MODEL)
    fields = len(FeatureMap.load(repo / naming.FEATURE_MAP_FILE).vocab_sizes)
    rng = np.random.default_rng(1)
    batches = [rng.integers(0, 20, size=(4, fields)) for _ in range(3)]
    with Client(server.url(protocol), protocol, MODEL, timeout_s=20) as client:
        for batch in batches + batches[::-1]:  # same shape: one input object, refilled each time
            _, logit = client.predict(batch, timeout_s=5.0)
            np.testing.assert_allclose(logit, reference.mean_logit(members, batch), atol=1e-6)
        stats = client.transport.inference_statistics(MODEL)["model_stats"]
    assert int(stats[0]["inference_stats"]["success"]["count"]) >= len(batches) * 2


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_server_errors_land_in_their_family(server: TritonServer, repo: Path, protocol: str):
    fields = len(FeatureMap.load(repo / naming.FEATURE_MAP_FILE).vocab_sizes)
    transport = Transport(server.url(protocol), protocol, timeout_s=10)
    try:
        with pytest.raises(ClientError, match="no_such_model") as unknown:
            transport.model_config("no_such_model")
        with pytest.raises(ClientError) as shape:  # past the client's own checks: the server refuses
            transport.infer(MODEL, naming.FEAT_IDS, np.zeros((2, fields + 1), np.int64), (naming.LOGIT,))
    finally:
        transport.close()
    for err in (unknown.value, shape.value):
        assert isinstance(err, UserError) and not isinstance(err, RuntimeFailure)
        assert server.url(protocol) in str(err) and f"[{protocol}]" in str(err)


def test_feature_map_of_another_dataset_is_refused(server: TritonServer, repo: Path):
    served = FeatureMap.load(repo / naming.FEATURE_MAP_FILE)
    with Client(server.grpc_url, model=MODEL, timeout_s=10) as client:
        advertised = client.info.parameters.get("feature_map_hash")
        assert advertised == served.hash, "the served config must advertise ttsrec.feature_map_hash"
        client.check_feature_map(served)
        with pytest.raises(ClientError, match="does not match the served model's"):
            client.predict_records([{"c0": "1"}], feature_map=tiny_feature_map())


def test_stopped_server_is_a_runtime_failure(repo: Path):
    """Its own server, stopped under a connected client (the module's server stays up for the others)."""
    fields = len(FeatureMap.load(repo / naming.FEATURE_MAP_FILE).vocab_sizes)
    with TritonServer(repo) as own, Client(own.grpc_url, model=MODEL, timeout_s=5) as client:
        url = own.grpc_url
        client.predict(np.zeros((1, fields), np.int64))
        own.stop()
        with pytest.raises(ServerUnavailableError) as err:
            client.predict(np.zeros((1, fields), np.int64))
    assert isinstance(err.value, RuntimeFailure) and url in str(err.value)
