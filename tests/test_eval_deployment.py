"""Deployment comparison: both sides exported, served by a real tritonserver, benched and scored."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ttsrec.data.prepared import PreparedData
from ttsrec.errors import UserError
from ttsrec.experiments.deployment import compare_deployment
from ttsrec.models import build_model
from ttsrec.models.checkpoint import save_member


def scaled_fnn(prepared_dir: Path, folder: Path) -> Path:
    fmap = PreparedData(prepared_dir).feature_map
    torch.manual_seed(7)
    model = build_model("fnn", fmap, embed_dim=8, mlp_dims=[128, 32])
    folder.mkdir()
    return save_member(folder / "fnn_wider.pt", model, backbone="fnn", hparams=model.hparams, seed=7,
                       vocab_sizes=fmap.vocab_sizes, feature_map_hash=fmap.hash)


def test_the_ensemble_side_needs_two_members(member_checkpoints: list[Path], prepared_dir: Path,
                                             tmp_path: Path) -> None:
    with pytest.raises(UserError, match="at least two"):
        compare_deployment(member_checkpoints[:1], member_checkpoints[1], prepared_dir, tmp_path / "out")
    with pytest.raises(UserError, match="fused or ensemble"):
        compare_deployment(member_checkpoints, member_checkpoints[1], prepared_dir, tmp_path / "out",
                           mode="x")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_both_sides_are_served_benched_and_scored_in_one_table(member_checkpoints: list[Path],
                                                                prepared_dir: Path, tmp_path: Path) -> None:
    fnn = [p for p in member_checkpoints if "fnn" in p.name]
    scaled = scaled_fnn(prepared_dir, tmp_path / "scaled")
    out = tmp_path / "deploy"
    result = compare_deployment(fnn, scaled, prepared_dir, out, batches=[1, 16], window_ms=200, max_trials=3,
                                eval_rows=500)
    ens, one = result["sides"]["ensemble"], result["sides"]["scaled"]
    assert (ens["M"], one["M"]) == (2, 1) and ens["backbones"] == ["fnn", "fnn"]
    for side in (ens, one):
        assert 0.4 < side["served_auc"] < 1 and side["served_logloss"] > 0
        assert [(r["batch"], r["concurrency"]) for r in side["rows"]] == [(1, 1), (16, 1)]
        assert all(r["throughput"] > 0 and 0 < r["p50_us"] <= r["p99_us"] for r in side["rows"])
    assert result["macs_ratio"] == pytest.approx(one["macs_per_sample"] / ens["macs_per_sample"])
    assert {p.name for p in out.iterdir()} >= {"deployment.md", "deployment.png", "deployment.json",
                                              "repo_ensemble", "repo_scaled"}
    table = (out / "deployment.md").read_text()
    assert table.count("| ensemble | 2 |") == 2 and table.count("| scaled | 1 |") == 2
    assert json.loads((out / "deployment.json").read_text())["sides"]["scaled"]["M"] == 1
