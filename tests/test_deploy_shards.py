"""A sharded deployment (`tts-export --shards 2`, one tritonserver per shard) rolled to a new generation
and back while `ShardedClient` callers run: no answer ever averages shards of two generations."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from deploy_fixtures import Load, Reference, inputs, two_runs
from ttsrec.repository import naming

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ttsrec.deploy.add import add_generation
    from ttsrec.export import export_repository
    from ttsrec.export.writer import ExportConfig
    from ttsrec.repository.config import Serving

    root = tmp_path_factory.mktemp("deploy-shards")
    first, second = two_runs(root / "runs", changed=(1, 2, 3))  # a changed member on every shard
    out = export_repository(first, root / "shards", Serving(max_batch_size=64), ExportConfig(shards=2))
    assert add_generation(second, out).generation == 2
    return out


@pytest.fixture(scope="module")
def servers(shards: Path) -> Iterator[list[Any]]:
    from ttsrec.serve import TritonServer

    group = [TritonServer(shards / naming.shard_dir(k)) for k in range(2)]
    try:
        for server in group:
            server.launch()
        for server in group:
            server.wait_ready()
        yield group
    finally:
        for server in group:
            server.stop()


def _reference(shards: Path) -> Any:
    """Per generation and batch: the mean over both shards' members, in-process."""
    ids = inputs()
    refs = []
    for k in range(2):
        root = shards / naming.shard_dir(k)
        refs.append(Reference(root, json.loads((root / naming.MANIFEST_FILE).read_text())))

    def expected(generation: int, batch: int) -> np.ndarray:
        parts = [r.member_mean(generation, ids[batch]) * len(r.manifest["generations"][0]["members"])
                 for r in refs]
        count = sum(len(r.manifest["generations"][0]["members"]) for r in refs)
        return (sum(parts) / count).astype(np.float32)

    return expected


def test_sharded_rollout_and_rollback_never_mix_generations(shards: Path, servers: list[Any]) -> None:
    from ttsrec.client import ShardedClient
    from ttsrec.deploy import rollout as steps
    from ttsrec.deploy import state

    targets = [steps.Target(shards / naming.shard_dir(k), s.http_url) for k, s in enumerate(servers)]
    client = ShardedClient([s.grpc_url for s in servers], timeout_s=30)

    def call(ids: np.ndarray) -> tuple[np.ndarray, int | None]:
        result = client.predict(ids)
        return result.logit, result.generation

    with Load([("sharded/a", call), ("sharded/b", call)]) as load:
        load.wait_for(20)
        for target in targets:  # by hand, to hold the window where shard 0 switched and shard 1 not
            target.manifest = state.load(target.root)
            steps.stage(target, 1, 2)
        steps.switch(targets[0], 2)
        load.wait_for(40)  # every call now meets shards of two generations
        steps.switch(targets[1], 2)
        for target in targets:
            steps.retire(target, 2)
            steps.record(target, 2)
        load.wait_for(20)
        steps.rollout(targets, 1)
        load.wait_for(20)
        steps.rollout(targets, 2)
        load.wait_for(20)
    client.close()
    assert not load.errors, load.errors[:5]
    expected = _reference(shards)
    seen = set()
    for _, batch, generation, logit in load.answers:
        assert generation in (1, 2)
        other = 3 - generation
        assert np.allclose(logit, expected(generation, batch), rtol=0, atol=1e-6), generation
        assert np.abs(expected(other, batch) - expected(generation, batch)).max() > 1e-4  # a mix would show
        seen.add(generation)
    assert seen == {1, 2}
    assert all(state.load(t.root)["live"] == 2 for t in targets)
