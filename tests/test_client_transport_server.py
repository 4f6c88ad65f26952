"""The bench's pre-encoded raw path against a real tritonserver: every batch gets its own answer (equal to
onnxruntime's), and what the server refuses lands in the right family on both protocols."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serve_fixtures import OrtReference, RepoSpec
from ttsrec.bench.load import AsyncLoad, ThreadLoad
from ttsrec.bench.loadgen import async_sender, decode_answer, grpc_sender
from ttsrec.bench.measure import MeasureSettings, measure
from ttsrec.client import ClientError, ClientRuntimeError
from ttsrec.data.feature_map import FeatureMap
from ttsrec.errors import RuntimeFailure, UserError
from ttsrec.repository import naming
from ttsrec.serve import TritonServer

pytestmark = pytest.mark.slow
MODEL = naming.fused_name(1)
OUTPUTS = (naming.LOGIT,)
REPO = RepoSpec("raw_path", members=1, options={"m_list": [1]})


def _batches(repo: Path, shapes: tuple[int, ...] = (1, 3, 5), extra_fields: int = 0) -> list[np.ndarray]:
    fmap = FeatureMap.load(repo / naming.FEATURE_MAP_FILE)
    rng = np.random.default_rng(7)
    return [np.stack([rng.integers(0, v, size=rows) for v in fmap.vocab_sizes]
                     + [np.zeros(rows, np.int64)] * extra_fields, axis=1).astype(np.int64) for rows in shapes]


def _send_all(protocol: str, url: str, model: str, batches: list[np.ndarray], *, blocking: bool,
              timeout_s: float = 20.0) -> list[Any]:
    """Each batch once through `grpc_sender` (blocking) or `async_sender`; answers or errors, in order."""
    if blocking:
        send, close = grpc_sender(url, model, naming.FEAT_IDS, OUTPUTS, batches, timeout_s)
        try:
            return [_attempt(lambda k=k: send(k)) for k in range(len(batches))]
        finally:
            close()

    async def run() -> list[Any]:
        send, close = await async_sender(url, protocol, model, naming.FEAT_IDS, OUTPUTS, batches, timeout_s)
        out = []
        try:
            for k in range(len(batches)):
                try:
                    out.append(await send(k))
                except Exception as err:
                    out.append(err)
        finally:
            await close()
        return out

    return asyncio.run(run())


def _attempt(fn: Any) -> Any:
    try:
        return fn()
    except Exception as err:
        return err


PATHS = [("grpc", True), ("grpc", False), ("http", False)]


@pytest.mark.parametrize(("protocol", "blocking"), PATHS)
def test_each_prebuilt_batch_gets_its_own_answer(server: TritonServer, repo: Path, protocol: str,
                                                  blocking: bool) -> None:
    reference = OrtReference(repo)
    members = reference.members_of(MODEL)
    batches = _batches(repo)
    answers = _send_all(protocol, server.url(protocol), MODEL, batches + batches[::-1], blocking=blocking)
    for batch, answer in zip(batches + batches[::-1], answers, strict=True):
        assert not isinstance(answer, Exception), answer
        logit = decode_answer(protocol, answer)[naming.LOGIT]
        assert logit.shape == (len(batch), 1)
        np.testing.assert_allclose(logit.reshape(-1), reference.mean_logit(members, batch), atol=1e-5)


@pytest.mark.parametrize(("protocol", "blocking"), PATHS)
def test_refusals_land_in_their_family(server: TritonServer, repo: Path, protocol: str,
                                       blocking: bool) -> None:
    url = server.url(protocol)
    (unknown,) = _send_all(protocol, url, "no_such_model", _batches(repo, (2,)), blocking=blocking)
    (shape,) = _send_all(protocol, url, MODEL, _batches(repo, (2,), extra_fields=1), blocking=blocking)
    for err, words in ((unknown, "no_such_model"), (shape, "unexpected shape")):
        assert isinstance(err, ClientError) and isinstance(err, UserError), repr(err)  # exit 2
        assert words in str(err) and f"[{protocol}]" in str(err) and url in str(err)
    (late,) = _send_all(protocol, url, MODEL, _batches(repo, (256,)), blocking=blocking, timeout_s=1e-4)
    assert isinstance(late, ClientRuntimeError) and isinstance(late, RuntimeFailure), repr(late)  # exit 1
    assert not isinstance(late, UserError)


@pytest.mark.parametrize(("protocol", "blocking"), PATHS)
def test_bench_loads_on_the_raw_path_count_answered_requests(server: TritonServer, repo: Path, protocol: str,
                                                              blocking: bool) -> None:
    """The loads the bench builds from these senders run and count answered requests."""
    url, batches = server.url(protocol), _batches(repo, (4, 4))
    settings = MeasureSettings(window_ms=150, stability_pct=100.0, max_trials=3, warmup_requests=5)

    def load() -> ThreadLoad | AsyncLoad:
        if blocking:
            return ThreadLoad(*grpc_sender(url, MODEL, naming.FEAT_IDS, OUTPUTS, batches, 10.0))
        return AsyncLoad(lambda: async_sender(url, protocol, MODEL, naming.FEAT_IDS, OUTPUTS, batches, 10.0))

    result = measure(load(), 2, 4, settings, label=f"raw {protocol}")
    assert result.requests > 0 and result.throughput > 0

