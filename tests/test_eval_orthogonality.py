"""Orthogonality: M seeds of a base, a deeper and a wider member, merged; one table and one plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ttsrec.errors import UserError
from ttsrec.experiments.orthogonality import run_orthogonality, variants

SMALL = {"embed_dim": 8, "mlp_dims": [32], "num_cross_layers": 1}


def test_variants_scale_only_the_interaction_modules() -> None:
    plan = variants("dcnv2", SMALL, depth_add=2, width_modules=3)
    assert plan["base"] == SMALL
    assert plan["deeper"] == {**SMALL, "num_cross_layers": 3}
    assert plan["wider"] == {**SMALL, "num_modules": 3}
    assert variants("wukong", {}, 3, 2)["deeper"] == {"num_layers": 6}
    for bad in (("fnn", {}, 1, 2), ("dcnv2", {}, 0, 2), ("dcnv2", {}, 1, 1)):
        with pytest.raises(UserError):
            variants(*bad)


@pytest.mark.slow
def test_one_command_trains_merges_and_tabulates_three_variants(prepared_dir: Path, tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        summary = run_orthogonality(prepared_dir, tmp_path / "ortho", backbone="dcnv2", members=2,
                                    hparams=SMALL, depth_add=2, width_modules=2,
                                    train_options={"epochs": 1, "batch_size": 1024, "lr": 3e-3})
    finally:
        torch.set_num_threads(threads)
    out = tmp_path / "ortho"
    assert {p.name for p in out.iterdir()} >= {"orthogonality.md", "orthogonality.png", "orthogonality.json",
                                               "runs", "eval"}
    assert [(r["variant"], r["M"]) for r in summary["rows"]] == [
        (v, m) for v in ("base", "deeper", "wider") for m in (1, 2)]
    macs = {r["variant"]: r["macs_per_sample"] for r in summary["rows"] if r["M"] == 1}
    assert macs["base"] < macs["deeper"] and macs["base"] < macs["wider"]
    assert all(0.5 < r["auc"] < 1 for r in summary["rows"])
    table = (out / "orthogonality.md").read_text()
    assert "| wider |" in table and "| M=1 | M=2 |" in table
    assert json.loads((out / "orthogonality.json").read_text())["rows"] == summary["rows"]
