"""`tts-export --merge weighted|selection`: member weights fitted on the validation split go into the
merge steps and fused graphs; the real tritonserver then serves the weighted mean of the members'
logits, equal to the same weighted mean computed in-process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from serve_fixtures import OrtReference, RepoSpec
from ttsrec.data.prepared import PreparedData
from ttsrec.ensemble.session import ort_session
from ttsrec.repository import naming, read_manifest
from ttsrec.repository.config import get_parameters, read_config
from ttsrec.repository.graphs import merge_graph

TOL = 2e-5
REPO = RepoSpec("merge", options={"m_list": [2, 4], "merge": "selection"})
"""Greedy selection (with replacement): weights are pick counts, rarely all equal."""


def test_weighted_merge_graph_is_the_weighted_mean() -> None:
    rng = np.random.default_rng(0)
    logits = [rng.normal(size=(9, 1)).astype(np.float32) for _ in range(3)]
    weights = [0.5, 0.0, 0.5]
    session = ort_session(merge_graph(3, "mean", weights).SerializeToString())
    logit, prob = session.run(None, {naming.merge_input(k): x for k, x in enumerate(logits)})
    expected = np.average(logits, axis=0, weights=weights)
    np.testing.assert_allclose(logit, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-expected)), rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_fitted_export_records_weights(repo: Path) -> None:
    manifest = read_manifest(repo)
    assert manifest["merge"] == "selection" and manifest["merge_fit"]["split"] == "valid"
    for entry in manifest["ensembles"]:
        weights = np.asarray(entry["weights"])
        assert len(weights) == entry["m"] and np.all(weights >= 0) and abs(weights.sum() - 1) < 1e-9
        assert entry["merge"] == f"merge_selection_m{entry['m']}"
        fit = manifest["merge_fit"]["per_m"][str(entry["m"])]
        assert fit["weights"] == entry["weights"] and 0.5 < fit["valid_auc"] < 1
        assert get_parameters(read_config(repo / entry["name"]))["merge"] == "selection"
    assert [f["weights"] for f in manifest["fused"]] == [e["weights"] for e in manifest["ensembles"]]


@pytest.mark.slow
def test_served_fitted_merge_equals_in_process_weighted_mean(server, repo: Path,
                                                               prepared_dir: Path) -> None:
    from ttsrec.client import Client

    ids = np.ascontiguousarray(PreparedData(prepared_dir).ids("test")[:200], dtype=np.int64)
    reference = OrtReference(repo)
    entries = {e["name"]: e for e in reference.manifest["ensembles"] + reference.manifest["fused"]}
    for name in ("ensemble_m2", "ensemble_m4", "fused_m4"):
        entry = entries[name]
        expected = np.average([reference.member_logit(m, ids) for m in entry["members"]], axis=0,
                              weights=entry["weights"])
        plain = reference.mean_logit(entry["members"], ids)
        with Client(server.grpc_url, model=name, timeout_s=30) as client:
            prob, logit = client.predict(ids)
        assert np.abs(logit - expected).max() <= TOL, name
        assert np.abs(prob - 1 / (1 + np.exp(-expected))).max() <= TOL
        if np.abs(expected - plain).max() > 10 * TOL:  # the fitted merge is not the plain mean here
            assert np.abs(logit - plain).max() > 5 * TOL, name


@pytest.mark.slow
def test_member_refuses_a_malformed_request_and_keeps_serving(server, prepared_dir: Path) -> None:
    """A gRPC request whose batch dimension lies (10^12 rows, one row of data) reaches the python model
    (the server's batch check lets it through): it gets an error answer, and the next request is served."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    ids = np.ascontiguousarray(PreparedData(prepared_dir).ids("test")[:3], dtype=np.int64)
    member = read_manifest(server.repo)["members"][0]["name"]
    with grpcclient.InferenceServerClient(server.grpc_url.removeprefix("grpc://")) as client:
        bad = grpcclient.InferInput(naming.FEAT_IDS, [1, ids.shape[1]], "INT64")
        bad.set_data_from_numpy(ids[:1])
        bad.set_shape([10**12, ids.shape[1]])
        with pytest.raises(InferenceServerException):
            client.infer(member, [bad], client_timeout=30)
        good = grpcclient.InferInput(naming.FEAT_IDS, list(ids.shape), "INT64")
        good.set_data_from_numpy(ids)
        out = client.infer(member, [good], client_timeout=30).as_numpy(naming.LOGIT)
        assert out.shape == (3, 1) and np.all(np.isfinite(out))
        assert client.is_server_live() and client.is_model_ready(member)
