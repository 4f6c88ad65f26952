"""`tts-eval --cascade` and the compute-AUC frontier: the fitted threshold never reads the test split, the
real CLI writes the rows, plots and tables, distilled students are labelled as such, and a cascade over
members of different feature maps is refused with one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from export_fixtures import tiny_run
from train_fixtures import cli, one_error_line, one_thread  # noqa: F401
from ttsrec.cli.evaluate import main as eval_main
from ttsrec.ensemble.runs import RUN_FORMAT
from ttsrec.evaluate import evaluate_runs
from ttsrec.evaluate.cascade import fitted_rows
from ttsrec.evaluate.report import frontier_points, frontier_rows

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def fitted_numbers(result: dict) -> list[tuple]:
    """What the validation split decides: per order, merge and rule, the fitted threshold and its
    validation AUC, the kept rule, and (on the test rows, from their logits alone) members per row."""
    return [(r["group"], r["order"], r["merge"], r["rule"], r["threshold"], r["valid_auc"], r["kept"],
             r["avg_members"], r.get("avg_macs")) for r in result["cascade"] if r["fitted"]]


@pytest.mark.usefixtures("one_thread")
def test_the_fitted_threshold_never_reads_the_test_split(member_checkpoints: list[Path], prepared_dir: Path,
                                                         tmp_path: Path, monkeypatch) -> None:
    """The same members evaluated twice, the second time with the test labels permuted: every fitted
    threshold, kept rule and members/row is identical; only the test AUCs move."""
    import ttsrec.evaluate.run as run

    kwargs = {"merges": ["mean", "weighted"], "soup": False, "m_list": [1, 2, 4], "subsets": 2}
    one = evaluate_runs(member_checkpoints, prepared_dir, tmp_path / "one", cascade=True, **kwargs)
    real = run.split_labels

    def permuted(data, split):
        labels = real(data, split)
        return np.random.default_rng(7).permutation(labels) if split == "test" else labels

    monkeypatch.setattr(run, "split_labels", permuted)
    two = evaluate_runs(member_checkpoints, prepared_dir, tmp_path / "two", cascade=True, **kwargs)
    assert fitted_numbers(one) == fitted_numbers(two)
    assert len(fitted_numbers(one)) == 2 * 2 * 3  # (export, best) x (mean, weighted) x (se, delta, rank)
    kept_one, kept_two = fitted_rows(one["cascade"]), fitted_rows(two["cascade"])
    assert len(kept_one) == 4 and all(r["reason"] for r in kept_one)
    assert [r["auc"] for r in kept_one] != [r["auc"] for r in kept_two]  # the test split was scored
    assert all(abs(r["auc"] - 0.5) < 0.05 for r in kept_two)  # on labels that no longer match


def fake_student(source: Path, folder: Path, width: float = 2.0, alpha: float = 0.5) -> Path:
    """A run dir holding one member and a run.json that says it was distilled (as `tts-train
    --distill-from` writes it; what eval reads is only the record)."""
    folder.mkdir(parents=True)
    name = "member_00_fnn_s0.pt"
    shutil.copy(source, folder / name)
    record = {"run": "runs/teacher", "m": 4, "alpha": alpha, "temperature": 1.0, "width_mult": width}
    (folder / "run.json").write_text(json.dumps({
        "format": RUN_FORMAT, "members": [{"index": 0, "file": name, "backbone": "fnn", "seed": 0}],
        "group": False, "precision": "fp32", "distilled_from": record}))
    return folder


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_cli_cascade_writes_rows_plots_and_tables(member_checkpoints: list[Path], prepared_dir: Path,
                                                  tmp_path: Path, capsys, monkeypatch) -> None:
    """Through the real CLI: a heterogeneous group (fnn, dcnv2 x 2 seeds), a homogeneous one (the two
    dcnv2 seeds) and a distilled student."""
    hetero = member_checkpoints[0].parent
    pair = tmp_path / "dcnv2pair"
    pair.mkdir()
    for path in member_checkpoints:
        if "dcnv2" in path.name:
            shutil.copy(path, pair / path.name)
    student = fake_student(member_checkpoints[0], tmp_path / "student")
    out = tmp_path / "report"
    code, stdout, err = cli(eval_main, "tts-eval", [
        hetero, pair, student, "--data", prepared_dir, "--out", out, "--cascade", "--merges", "mean,weighted",
        "--subsets", "2", "-q"], capsys, monkeypatch)
    assert code == 0, err
    groups = [hetero.name, "dcnv2pair"]
    assert {p.name for p in out.iterdir()} >= {"frontier.png", "cascade.csv", "results.json", "report.md",
                                               *(f"cascade_{g}.png" for g in groups)}
    assert not (out / "auc_vs_macs.png").exists()  # the frontier replaced it: one plot on that axis
    for png in [out / "frontier.png", *(out / f"cascade_{g}.png" for g in groups)]:
        assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    result = json.loads((out / "results.json").read_text())
    assert result["options"]["cascade"] is True
    rows = result["cascade"]
    assert {r["group"] for r in rows} == set(groups)  # the single student has nothing to cascade
    info = {g["name"]: g for g in result["groups"]}
    assert info["student"]["distilled"]["width_mult"] == 2.0 and info["dcnv2pair"]["distilled"] is None
    for g in groups:
        mine = [r for r in rows if r["group"] == g]
        n = len(info[g]["members"])
        macs = [m["macs_per_sample"] for m in info[g]["members"]]
        assert {r["kind"] for r in mine} == {"cascade", "prefix", "full"}
        assert {(r["order"], r["merge"]) for r in fitted_rows(mine)} == {
            (o, m) for o in ("export", "best") for m in ("mean", "weighted")}
        for r in mine:
            assert 1 <= r["avg_members"] <= n and min(macs) <= r["avg_macs"] <= sum(macs) + 1e-6
        ends = [r for r in mine
                if r["kind"] == "cascade" and r["threshold"] == "inf" and r["merge"] == "mean"]
        full = [r for r in mine if r["kind"] == "full" and r["merge"] == "mean"]
        assert ends and all(r["auc"] == full[0]["auc"] and r["avg_members"] == n for r in ends)
    csv = (out / "cascade.csv").read_text().splitlines()
    assert csv[0].startswith("group,kind,order,merge,rule,threshold,avg_members,avg_macs,auc")
    assert len(csv) == 1 + len(rows) and any(",inf," in line for line in csv)
    report = (out / "report.md").read_text()
    assert "### Cascaded merging (`--cascade`)" in report and "## The compute-AUC frontier" in report
    assert "|  | merge | order | rule | members | MACs/row | AUC | Δ mean | logloss |" in report
    assert f"![cascade {hetero.name}](cascade_{hetero.name}.png)" in report and "(frontier.png)" in report
    assert "| student | distilled 2x (of M=4) | 1 |" in report
    assert "Distilled students against merging at about the same MACs" in report
    assert f"{hetero.name}: cascaded merging, 4 members" in stdout and "the compute-AUC frontier" in stdout
    assert "members/row, test AUC" in err  # one line per fitted cascade (with the notes, on stderr)
    # the frontier: merging, soups (the dcnv2 pair), the student, and each kept cascade's sweep
    families = {p["family"] for p in frontier_points(result)}
    assert families == {"merge", "soup", "distilled", "cascade"}


def test_frontier_marks_what_nothing_cheaper_beats() -> None:
    def row(kind: str, m: int, macs: float, auc: float, merge: str = "mean") -> dict:
        return {"group": "g", "kind": kind, "merge": merge, "M": m, "macs_per_sample": macs, "auc": auc,
                "logloss": 0.5}

    def student(alpha: float, width: float) -> dict:
        return {"m": 4, "alpha": alpha, "width_mult": width}

    result = {"groups": [{"name": "g", "members": [{}] * 4, "distilled": None},
                         {"name": "s", "members": [{}], "distilled": student(0.5, 2)},
                         {"name": "l", "members": [{}], "distilled": student(0.0, 4)}],
              "rows": [row("tts", 1, 1.0, 0.70), row("tts", 2, 2.0, 0.71),
                       row("tts", 2, 2.0, 0.709, "weighted"), row("tts", 4, 4.0, 0.712),
                       row("soup", 2, 1.0, 0.69), row("param_width", 2, 2.1, 0.705),
                       {**row("tts", 1, 2.05, 0.7105), "group": "s"},
                       {**row("tts", 1, 4.0, 0.72), "group": "l"}]}
    rows = frontier_rows(result)
    front = {(p["group"], p["method"], p["M"]) for p in rows if p["front"]}
    assert front == {("g", "merge mean", 1), ("g", "merge mean", 2), ("s", "distilled 2x (of M=4)", 1),
                     ("l", "labels only 4x", 1)}
    assert [p["macs"] for p in rows] == sorted(p["macs"] for p in rows)
    families = {p["group"]: p["family"] for p in rows if p["group"] != "g"}
    assert families == {"s": "distilled", "l": "single"}  # alpha 0: trained on the labels alone


@pytest.mark.parametrize("layout", ["one_run", "two_runs"])
def test_cascade_over_different_feature_maps_is_one_line_exit_2(layout: str, prepared_dir: Path,
                                                                  tmp_path: Path, capsys,
                                                                  monkeypatch) -> None:
    """Members whose feature maps differ (their ids mean different things) never reach a cascade: one run
    holding both, or two runs given together."""
    first = tiny_run(tmp_path / "a", ("fnn", "dcnv2"), dataset_id="a")
    second = tiny_run(tmp_path / "b", ("fnn", "dcnv2"), dataset_id="b")
    if layout == "one_run":
        shutil.copy(second[1], first[0].parent / "member_02_dcnv2_s2.pt")
        sources = [first[0].parent]
    else:
        sources = [first[0].parent, second[0].parent]
    out = tmp_path / "report"
    code, _, err = cli(eval_main, "tts-eval", [*sources, "--data", prepared_dir, "--out", out, "--cascade"],
                       capsys, monkeypatch)
    assert code == 2
    assert "different feature maps" in one_error_line(err)
    assert not out.exists()
