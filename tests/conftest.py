"""Fixtures shared by every stage's tests: one small synthetic dataset and a few briefly trained
members, built once per test session (the machine has 2 cores); and, per test module, the repository the
module names in its `REPO = serve_fixtures.RepoSpec(...)` (`repo`) and one tritonserver serving it
(`server`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

SMALL_HPARAMS = {"embed_dim": 8, "mlp_dims": [64, 32]}


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread: tests train tiny models, and tritonserver stubs share the 2 cores with them."""
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def synthetic_tsv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ttsrec.data.synth import write_synthetic_criteo

    return write_synthetic_criteo(tmp_path_factory.mktemp("synth") / "criteo.tsv", rows=20_000, seed=0)


@pytest.fixture(scope="session")
def prepared_dir(synthetic_tsv: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared synthetic Criteo dataset (feature_map.json + splits)."""
    from ttsrec.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared") / "data"
    prepare("criteo", [synthetic_tsv], out)
    return out


@pytest.fixture(scope="session")
def member_checkpoints(prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four small members (two backbones, two seeds each), trained for a few hundred steps."""
    from ttsrec.data.loader import iter_batches
    from ttsrec.data.prepared import PreparedData
    from ttsrec.models import build_model
    from ttsrec.models.checkpoint import save_member

    data = PreparedData(prepared_dir)
    fmap = data.feature_map
    out = tmp_path_factory.mktemp("members")
    paths = []
    for index, (backbone, seed) in enumerate([("fnn", 0), ("dcnv2", 0), ("fnn", 1), ("dcnv2", 1)]):
        torch.manual_seed(seed)
        model = build_model(backbone, fmap, **SMALL_HPARAMS)
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        for feat_ids, labels in iter_batches(data, "train", 256, shuffle=True, seed=seed):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(model(feat_ids).squeeze(1), labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        model.eval()
        paths.append(save_member(out / f"member_{index:02d}_{backbone}_s{seed}.pt", model, backbone=backbone,
                                 hparams=model.hparams, seed=seed, vocab_sizes=fmap.vocab_sizes,
                                 feature_map_hash=fmap.hash))
    return paths


@pytest.fixture(scope="module")
def repo(request: pytest.FixtureRequest, member_checkpoints: list[Path], prepared_dir: Path,
         tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's repository, exported once as its `REPO` (`serve_fixtures.RepoSpec`) says."""
    spec = getattr(request.module, "REPO", None)
    if spec is None:
        pytest.fail(f"{request.module.__name__} uses the `repo` fixture: give it a module-level "
                    "REPO = serve_fixtures.RepoSpec(...)", pytrace=False)
    return spec.build(member_checkpoints, tmp_path_factory.mktemp(spec.name), prepared_dir)


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[Any]:
    """One tritonserver serving the module's `repo` (free ports, ready), stopped after the module."""
    from ttsrec.serve import TritonServer

    with TritonServer(repo) as srv:
        yield srv
