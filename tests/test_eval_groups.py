"""tts-eval on group runs (each its own M), weight-averaged soups, and fitted merges next to the mean."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from train_fixtures import QUICK, SMALL, one_thread  # noqa: F401
from ttsrec.data.prepared import PreparedData
from ttsrec.errors import UserError
from ttsrec.evaluate import evaluate_runs
from ttsrec.evaluate.soup import can_soup, uniform_soup
from ttsrec.models import build_model
from ttsrec.models.checkpoint import save_member
from ttsrec.train import train_group_series

VOCAB = [7, 5, 9]


def test_soup_averages_every_weight_and_of_one_model_twice_is_that_model() -> None:
    torch.manual_seed(0)
    a, b = build_model("fnn", VOCAB, **SMALL), build_model("fnn", VOCAB, **SMALL)
    soup = uniform_soup([a, b])
    for name, tensor in soup.state_dict().items():
        torch.testing.assert_close(tensor, (a.state_dict()[name] + b.state_dict()[name]) / 2)
    ids = torch.randint(0, 5, (4, 3))
    torch.testing.assert_close(uniform_soup([a.eval(), a]).eval()(ids), a.eval()(ids))


def test_soup_needs_one_architecture() -> None:
    torch.manual_seed(0)
    a = build_model("fnn", VOCAB, **SMALL)
    assert not can_soup([a]) and not can_soup([a, build_model("fnn", VOCAB, embed_dim=4, mlp_dims=[8])])
    with pytest.raises(UserError):
        uniform_soup([a, build_model("dcnv2", VOCAB, **SMALL)])


@pytest.fixture(scope="module")
def group_series(prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tts-train --group-series 2,4` on fnn+dcnv2+fnn+dcnv2: two jointly trained group runs, one epoch."""
    series = tmp_path_factory.mktemp("series") / "hetero_groups"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_group_series(prepared_dir, "fnn+dcnv2+fnn+dcnv2", series, [2, 4], epochs=1,
                           **QUICK)
    finally:
        torch.set_num_threads(threads)
    return series


@pytest.mark.slow
def test_group_runs_are_each_their_own_m_never_subsets(group_series: Path, prepared_dir: Path,
                                                       tmp_path: Path) -> None:
    result = evaluate_runs([group_series], prepared_dir, tmp_path / "report", subsets=3)
    assert [g["name"] for g in result["groups"]] == ["hetero_groups-m2", "hetero_groups-m4"]
    assert all(g["joint"] and g["series"] == "hetero_groups" for g in result["groups"])
    rows = [(r["group"], r["kind"], r["merge"], r["M"]) for r in result["rows"]]
    assert rows == [(f"hetero_groups-m{m}", "group", merge, m) for m in (2, 4)
                    for merge in ("mean", "weighted", "selection")]
    assert all(r["subsets"] == 1 and r["series"] == "hetero_groups" for r in result["rows"])
    report = (tmp_path / "report" / "report.md").read_text()
    assert "group runs (trained jointly)" in report and "Mean vs fitted merges" in report
    # One group run given directly is one group too, at its own size, even with --m-list style limits unset.
    alone = evaluate_runs([group_series / "m4"], prepared_dir, tmp_path / "alone", merges=["mean"])
    assert [(r["kind"], r["M"]) for r in alone["rows"]] == [("group", 4)]
    assert alone["groups"][0]["members"][1]["backbone"] == "dcnv2"
    # A plain folder of group runs (no series.json) is a series too, in order of size.
    plain = tmp_path / "plain"
    for name in ("m4", "m2"):
        shutil.copytree(group_series / name, plain / name)
    loose = evaluate_runs([plain], prepared_dir, tmp_path / "loose", merges=["mean"])
    assert [(r["group"], r["M"]) for r in loose["rows"]] == [("plain-m2", 2), ("plain-m4", 4)]


@pytest.fixture(scope="module")
def weak_mix(member_checkpoints: list[Path], prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> list[Path]:
    """The session's four trained members plus two deliberately weak ones (untrained, one per backbone, their
    logits scaled up so they are loud noise), in one folder (one group)."""
    fmap = PreparedData(prepared_dir).feature_map
    out = tmp_path_factory.mktemp("weak")
    trained = [Path(shutil.copy(p, out / p.name)) for p in member_checkpoints]
    weak = []
    for seed, backbone in ((50, "fnn"), (51, "dcnv2")):
        torch.manual_seed(seed)
        model = build_model(backbone, fmap, **SMALL)
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(5.0)
        weak.append(save_member(out / f"weak_{backbone}.pt", model, backbone=backbone, hparams=model.hparams,
                                seed=seed, vocab_sizes=fmap.vocab_sizes, feature_map_hash=fmap.hash))
    return [*trained, *weak]


@pytest.mark.slow
def test_fitted_merges_next_to_the_mean_for_every_m_and_never_far_below_the_best_member(
        weak_mix: list[Path], prepared_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = evaluate_runs(weak_mix, prepared_dir, out)
    rows = [r for r in result["rows"] if r["kind"] == "tts_balanced"]
    members = result["groups"][0]["members"]
    picked = max(members, key=lambda m: m["valid_auc"])  # the single member one would deploy
    assert picked["name"] in {p.stem for p in weak_mix[:4]}
    for m in (2, 4):
        by_merge = {r["merge"]: r for r in rows if r["M"] == m}
        assert sorted(by_merge) == ["mean", "selection", "weighted"]
        for kind in ("weighted", "selection"):
            w = by_merge[kind]["weights"]
            assert len(w) == m and abs(sum(w.values()) - 1) < 1e-5 and min(w.values()) >= 0
    six = {r["merge"]: r["auc"] for r in rows if r["M"] == 6}
    assert six["mean"] < picked["auc"] - 0.01  # the loud weak members drag the plain mean down
    for kind in ("weighted", "selection"):
        assert six[kind] >= picked["auc"], (six, picked["auc"])
    table = json.loads((out / "results.json").read_text())
    assert {r["merge"] for r in table["rows"]} == {"mean", "weighted", "selection"}
    csv = (out / "results.csv").read_text()
    assert ",weighted," in csv and ",selection," in csv


@pytest.mark.slow
def test_soup_row_for_same_architecture_seeds(member_checkpoints: list[Path], prepared_dir: Path,
                                              tmp_path: Path) -> None:
    fnn = [p for p in member_checkpoints if "fnn" in p.name]
    result = evaluate_runs(fnn, prepared_dir, tmp_path / "report", merges=["mean"])
    soup = [r for r in result["rows"] if r["kind"] == "soup"]
    merged = next(r for r in result["rows"] if r["kind"] == "tts" and r["M"] == 2)
    member = result["groups"][0]["members"][0]
    assert len(soup) == 1 and soup[0]["M"] == 2 and soup[0]["merge"] == "weights"
    assert soup[0]["macs_per_sample"] == member["macs_per_sample"]
    assert 0 < soup[0]["auc"] < 1 and soup[0]["auc"] != pytest.approx(merged["auc"], abs=1e-6)
    assert np.isfinite(soup[0]["logloss"])
