"""The paper's parameter scaling (stacked / parallel interaction modules) matched to the MACs of M members."""

from __future__ import annotations

import pytest

from ttsrec.errors import UserError
from ttsrec.models import build_model, model_cost
from ttsrec.models.scaling import macs_of, match_macs

SMALL_DCN = {"embed_dim": 4, "mlp_dims": [16], "num_cross_layers": 2}
SMALL_WUKONG = {"embed_dim": 4, "mlp_dims": [16], "num_layers": 2, "num_embed_lcb": 4, "num_embed_fmb": 4,
                "rank": 4, "fm_mlp_dims": [16]}


@pytest.mark.parametrize(("backbone", "base"), [("dcnv2", SMALL_DCN), ("wukong", SMALL_WUKONG)])
@pytest.mark.parametrize("m", [2, 4])
def test_module_width_is_k_modules_and_lands_near_m_members(backbone: str, base: dict, m: int) -> None:
    hparams = build_model(backbone, [5] * 6, **base).hparams
    one = macs_of(backbone, hparams, 6)
    scaled, macs = match_macs(backbone, hparams, 6, "module_width", m * one)
    assert scaled["num_modules"] >= 2 and {k for k in scaled if scaled[k] != hparams[k]} == {"num_modules"}
    assert abs(macs / (m * one) - 1) < 0.35, (scaled, macs, one)
    wide, narrow = (model_cost(build_model(backbone, [5] * 6, **hp)) for hp in (scaled, hparams))
    assert wide.embedding_params == scaled["num_modules"] * narrow.embedding_params


@pytest.mark.parametrize(("backbone", "base", "knob"), [("dcnv2", SMALL_DCN, "num_cross_layers"),
                                                         ("wukong", SMALL_WUKONG, "num_layers")])
def test_module_depth_stacks_interaction_layers_only(backbone: str, base: dict, knob: str) -> None:
    hparams = build_model(backbone, [5] * 6, **base).hparams
    one = macs_of(backbone, hparams, 6)
    scaled, macs = match_macs(backbone, hparams, 6, "module_depth", 3 * one)
    assert scaled[knob] > hparams[knob] and scaled["mlp_dims"] == hparams["mlp_dims"]
    assert {k for k in scaled if scaled[k] != hparams[k]} == {knob}
    assert macs > one


def test_backbones_without_interaction_modules_say_so() -> None:
    hparams = build_model("fnn", [5] * 6, embed_dim=4, mlp_dims=[8]).hparams
    with pytest.raises(UserError, match="interaction module"):
        match_macs("fnn", hparams, 6, "module_width", 1000)


@pytest.mark.slow
def test_eval_reports_the_papers_scaling_next_to_the_merge(member_checkpoints, prepared_dir, tmp_path):
    from ttsrec.evaluate import evaluate_runs

    dcnv2 = [p for p in member_checkpoints if "dcnv2" in p.name]
    result = evaluate_runs(dcnv2, prepared_dir, tmp_path / "report", merges=["mean"], soup=False,
                           param_scaling=True, scaling_kinds=["module_depth", "module_width"])
    rows = {r["kind"]: r for r in result["rows"] if r["kind"].startswith("param")}
    assert sorted(rows) == ["param_module_depth", "param_module_width"]
    member = result["groups"][0]["members"][0]
    assert rows["param_module_width"]["hparams"]["num_modules"] == 2
    assert rows["param_module_width"]["embedding_params"] > rows["param_module_depth"]["embedding_params"]
    for r in rows.values():
        assert abs(r["macs_per_sample"] / (2 * member["macs_per_sample"]) - 1) < 0.35 and 0.5 < r["auc"] < 1
    report = (tmp_path / "report" / "report.md").read_text()
    assert "stacked modules" in report and "parallel modules" in report
