"""`tts-eval`: merge curves, JS diversity, parameter scaling, outputs, and the done criterion
(merging 8 members beats the mean single member on the test split)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from train_fixtures import QUICK, SMALL, cli, one_error_line, one_thread  # noqa: F401
from ttsrec.cli.evaluate import main as eval_main
from ttsrec.data.prepared import PreparedData
from ttsrec.ensemble.order import balanced_order
from ttsrec.errors import UserError
from ttsrec.evaluate import evaluate_runs
from ttsrec.evaluate.diversity import js_matrix, mean_pairwise
from ttsrec.evaluate.subsets import choose_subsets
from ttsrec.models import build_model
from ttsrec.models.checkpoint import save_member
from ttsrec.models.scaling import deeper, macs_of, match_macs, wider
from ttsrec.train import train_members

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def homogeneous_run(prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight small FNN members, seeds 0-7, four epochs on the 20k-row session dataset (one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train_members(prepared_dir, "fnn*8", tmp_path_factory.mktemp("eval") / "fnn8", epochs=4,
                             **QUICK)
    finally:
        torch.set_num_threads(threads)


def test_subsets_enumerate_when_few_and_sample_distinct_when_many() -> None:
    assert choose_subsets(4, 2, 10) == list(itertools.combinations(range(4), 2))
    drawn = choose_subsets(16, 8, 10, seed=3)
    assert len(drawn) == len(set(drawn)) == 10
    assert all(len(s) == 8 and len(set(s)) == 8 and max(s) < 16 for s in drawn)
    assert drawn == choose_subsets(16, 8, 10, seed=3)
    assert choose_subsets(8, 8, 10) == [tuple(range(8))]
    assert choose_subsets(16, 1, 10) == [(i,) for i in range(16)]


def test_balanced_order_round_robins_backbones() -> None:
    backbones = ["a", "a", "a", "b", "c", "c"]
    order = balanced_order(backbones)
    assert [backbones[i] for i in order] == ["a", "b", "c", "a", "c", "a"]
    assert sorted(order) == list(range(6))


def test_js_matrix_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 500))
    got = js_matrix(logits)
    probs = 1 / (1 + np.exp(-logits))
    for i, j in itertools.permutations(range(3), 2):
        rows = [jensenshannon([probs[i, k], 1 - probs[i, k]], [probs[j, k], 1 - probs[j, k]], base=2) ** 2
                for k in range(500)]
        assert got[i, j] == pytest.approx(np.mean(rows), rel=1e-6)
    assert np.allclose(np.diag(got), 0) and np.allclose(got, got.T)
    assert js_matrix(np.stack([logits[0], logits[0]]))[0, 1] == pytest.approx(0, abs=1e-12)
    assert mean_pairwise(got) == pytest.approx((got[0, 1] + got[0, 2] + got[1, 2]) / 3)
    assert mean_pairwise(got, [2]) == 0


def test_parameter_scaling_matches_the_macs_of_m_members() -> None:
    base = build_model("fnn", [5] * 6, **SMALL).hparams
    assert deeper("fnn", base, 2)["mlp_dims"] == [64, 64, 64, 32]
    assert wider("fnn", base, 2.0)["mlp_dims"] == [128, 64]
    assert deeper("dcnv2", {"num_cross_layers": 3, "mlp_dims": [8]}, 1) == {"num_cross_layers": 4,
                                                                             "mlp_dims": [8, 8]}
    one = macs_of("fnn", base, 6)
    for kind in ("depth", "width"):
        hparams, macs = match_macs("fnn", base, 6, kind, 4 * one)
        assert macs == macs_of("fnn", hparams, 6)
        assert abs(macs / (4 * one) - 1) < 0.25, (kind, hparams, macs, one)
    with pytest.raises(UserError, match="depth"):
        match_macs("fm", {"embed_dim": 8}, 6, "depth", 10)


@pytest.mark.slow
def test_merging_eight_members_beats_the_mean_single_member(homogeneous_run: Path, prepared_dir: Path,
                                                            tmp_path: Path) -> None:
    """The issue's done criterion, with margin: deterministic data, seeds and training."""
    result = evaluate_runs([homogeneous_run], prepared_dir, tmp_path / "report")
    rows = {r["M"]: r for r in result["rows"] if r["kind"] == "tts" and r["merge"] == "mean"}
    assert sorted(rows) == [1, 2, 4, 8]
    singles = [m["auc"] for m in result["groups"][0]["members"]]
    assert rows[1]["auc"] == pytest.approx(np.mean(singles))
    assert rows[8]["auc"] > np.mean(singles) + 0.003, (rows[8]["auc"], singles)
    assert rows[8]["logloss"] < rows[1]["logloss"]
    assert rows[1]["auc"] < rows[2]["auc"] < rows[4]["auc"] < rows[8]["auc"]
    assert rows[8]["auc_std"] == 0 and rows[8]["subsets"] == 1 and rows[4]["subsets"] == 10


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_report_outputs_are_written_and_consistent(homogeneous_run: Path, prepared_dir: Path, tmp_path: Path,
                                                   capsys, monkeypatch) -> None:
    out = tmp_path / "report"
    code, stdout, err = cli(eval_main, "tts-eval", [
        homogeneous_run, "--data", prepared_dir, "--out", out, "--m-list", "1,2,8", "--subsets", "3",
        "--param-scaling", "--scaling-m", "2", "--merges", "mean", "--no-soup", "-q"], capsys, monkeypatch)
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["auc_vs_m.png", "frontier.png", "js_fnn8.png",
                                                     "param_scaling", "report.md", "results.csv",
                                                     "results.json"]
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 5000
    result = json.loads((out / "results.json").read_text())
    group = result["groups"][0]
    assert group["homogeneous"] and len(group["members"]) == 8
    js = np.array(group["js_matrix"])
    assert js.shape == (8, 8) and np.allclose(js, js.T) and (js[~np.eye(8, dtype=bool)] > 0).all()
    assert group["js_mean"] == pytest.approx(js.sum() / 56, rel=1e-4)
    kinds = [(r["kind"], r["M"]) for r in result["rows"]]
    assert kinds == [("tts", 1), ("tts", 2), ("tts", 8), ("param_depth", 2), ("param_width", 2)]
    member_macs = group["members"][0]["macs_per_sample"]
    for r in result["rows"]:
        assert r["macs_per_sample"] == pytest.approx(r["M"] * member_macs, rel=0.25)
        assert 0.5 < r["auc"] < 1 and r["logloss"] > 0
    csv = (out / "results.csv").read_text().splitlines()
    assert csv[0].startswith("group,kind,merge,backbone,M,subsets,auc") and len(csv) == 1 + len(kinds)
    assert len(list((out / "param_scaling").glob("*.pt"))) == 2
    report = (out / "report.md").read_text()
    assert "| merge M members | mean | 8 |" in report
    assert "Parameter scaling at equal inference cost" in report
    assert "equal-cost comparisons" in report
    assert "fnn8 (homogeneous, 8 members, fp32)" in stdout  # the group's table, its precision in the title
    assert ["mean", "8"] in [line.split()[:2] for line in stdout.splitlines()] and "deeper MLP" in stdout


@pytest.mark.slow
def test_heterogeneous_members_get_a_balanced_curve_and_best_backbone(
        member_checkpoints: list[Path], prepared_dir: Path, tmp_path: Path) -> None:
    result = evaluate_runs(member_checkpoints, prepared_dir, tmp_path / "report")
    group = result["groups"][0]
    assert not group["homogeneous"] and group["reference"]["kind"] == "best_backbone"
    singles = {}
    for m in group["members"]:
        singles.setdefault(m["backbone"], []).append(m["auc"])
    best = max(singles, key=lambda b: np.mean(singles[b]))
    assert group["reference"]["backbone"] == best
    assert group["reference"]["auc"] == pytest.approx(np.mean(singles[best]))
    balanced = [r for r in result["rows"] if r["kind"] == "tts_balanced" and r["merge"] == "mean"]
    assert [r["M"] for r in balanced] == [1, 2, 4] and balanced[1]["backbone"] == "dcnv2+fnn"
    assert [r["M"] for r in result["rows"] if r["kind"] == "best_backbone" and r["merge"] == "mean"] == [1, 2]
    fitted = [(r["merge"], r["M"]) for r in result["rows"]
              if r["kind"] == "tts_balanced" and r["merge"] != "mean"]
    assert fitted == [("weighted", 2), ("selection", 2), ("weighted", 4), ("selection", 4)]
    assert not any(r["kind"] == "soup" for r in result["rows"])  # two architectures: nothing to soup


def untrained(prepared_dir: Path, path: Path, backbone: str = "fnn", fmap_hash: str | None = None) -> Path:
    """A small untrained member checkpoint (bad-input tests need no training)."""
    fmap = PreparedData(prepared_dir).feature_map
    model = build_model(backbone, fmap, **SMALL)
    return save_member(path, model, backbone=backbone, hparams=model.hparams, seed=0,
                       vocab_sizes=fmap.vocab_sizes, feature_map_hash=fmap_hash or fmap.hash)


@pytest.fixture()
def four_members(prepared_dir: Path, tmp_path: Path) -> list[Path]:
    return [untrained(prepared_dir, tmp_path / "four" / f"member_{i:02d}_{b}_s0.pt", b)
            for i, b in enumerate(["fnn", "dcnv2", "fnn", "dcnv2"])]


@pytest.fixture()
def foreign_checkpoint(prepared_dir: Path, tmp_path: Path) -> Path:
    """A member that claims another feature map."""
    return untrained(prepared_dir, tmp_path / "other" / "member_00_fnn_s0.pt",
                     fmap_hash="sha256:0000000000000000")


@pytest.mark.parametrize("case", ["mixed", "corrupt", "m_too_big", "missing", "foreign_data", "bad_kind",
                                  "bad_merge", "module_on_fnn"])
def test_bad_input_is_one_line_and_exit_2(case: str, four_members: list[Path], prepared_dir: Path,
                                          foreign_checkpoint: Path, tmp_path: Path, capsys,
                                          monkeypatch) -> None:
    run = four_members[0].parent
    corrupt = tmp_path / "member_09_fnn_s9.pt"
    corrupt.write_bytes(b"not a checkpoint")
    args, message = {
        "mixed": ([run, foreign_checkpoint], "different feature maps"),
        "corrupt": ([*four_members, corrupt], "cannot load checkpoint"),
        "m_too_big": ([run, "--m-list", "1,8"], "M=8 is larger than the 4 members"),
        "missing": ([tmp_path / "nope"], "not found"),
        "foreign_data": ([foreign_checkpoint], "trained on feature map"),
        "bad_kind": ([run, "--param-scaling", "--scaling-kinds", "depth,height"], "unknown scaling kind"),
        "bad_merge": ([run, "--merges", "mean,median"], "unknown merge(s) median"),
        "module_on_fnn": ([run, "--param-scaling", "--scaling-kinds", "module_width"], "interaction module"),
    }[case]
    out = tmp_path / "report"
    code, _, err = cli(eval_main, "tts-eval", [*args, "--data", prepared_dir, "--out", out], capsys,
                       monkeypatch)
    assert code == 2
    assert message in one_error_line(err)
    assert not out.exists()


def test_existing_report_needs_force(four_members: list[Path], prepared_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "keep.txt").write_text("old")
    with pytest.raises(UserError, match="--force"):
        evaluate_runs(four_members, prepared_dir, tmp_path / "report")
    assert (tmp_path / "report" / "keep.txt").read_text() == "old"


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_report_shows_each_runs_precision(prepared_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    """Two runs of the same seeds in fp32 and bf16 side by side in one table; a loose checkpoint (no
    run.json) takes its precision from the checkpoint itself."""
    import shutil

    runs = [train_members(prepared_dir, "fnn*2", tmp_path / p, epochs=1, precision=p, train_limit=4096,
                          **QUICK) for p in ("fp32", "bf16")]
    loose = tmp_path / "loose"
    loose.mkdir()
    shutil.copy(next(runs[1].glob("member_00_*.pt")), loose / "member_00_fnn_s0.pt")
    out = tmp_path / "report"
    code, stdout, err = cli(eval_main, "tts-eval", [
        *runs, loose / "member_00_fnn_s0.pt", "--data", prepared_dir, "--out", out, "--m-list", "1",
        "--merges", "mean", "--no-soup", "-q"], capsys, monkeypatch)
    assert code == 0, err
    result = json.loads((out / "results.json").read_text())
    assert [g["precision"] for g in result["groups"]] == ["fp32", "bf16", "bf16"]
    assert all(m["precision"] == g["precision"] for g in result["groups"] for m in g["members"])
    assert {(r["group"], r["precision"]) for r in result["rows"]} == {
        (g["name"], g["precision"]) for g in result["groups"]}
    header, *lines = (out / "results.csv").read_text().splitlines()
    assert header.endswith(",precision") and {line.rsplit(",", 1)[1] for line in lines} == {"fp32", "bf16"}
    report = (out / "report.md").read_text()
    assert "trained in fp32)" in report and "trained in bf16)" in report
    assert "bf16" in stdout and "fp32" in stdout  # each group's table says its precision in its title
