"""The embedding-init table of docs/training.md from the runs and reports of benchmarks/init_compare.sh.

    .venv/bin/python benchmarks/init_compare.py out/inits [--claims out/claims] [--seeds 4]

Per (dataset, init): the embedding table's starting scale, validation AUC after 1, 2 and 5 epochs (the state
at that check, from each checkpoint's training history, mean over seeds), the epoch of the best state, test
AUC of one member and of the merged M seeds, the merging gain and the mean pairwise Jensen-Shannon divergence
(tts-eval's results.json). Prints the table and writes init_compare.csv/json into the folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import polars as pl
import torch
import typer

from ttsrec.cli.common import results, run_app
from ttsrec.errors import UserError
from ttsrec.utils.report import Column, Table

app = typer.Typer(add_completion=False, help=__doc__)
ARMS = (("small", "xavier"), ("small", "normal"), ("criteo", "xavier"), ("criteo", "normal"))


def arm_row(folder: Path, claims: Path, dataset: str, init: str, seeds: int) -> dict[str, Any] | None:
    """One row; None when the arm's report is missing (not measured)."""
    report = folder / "reports" / f"{dataset}_{init}" / "results.json"
    if not report.is_file():
        return None
    result = json.loads(report.read_text())
    group = result["groups"][0]
    files = [Path(m["path"]) for m in group["members"]][:seeds]
    histories = [torch.load(f, weights_only=True)["train"] for f in files]
    weights = [torch.load(f, weights_only=True)["state_dict"]["embedding.weight"] for f in files]

    def at(epoch: float) -> float | None:
        vals = [next((p["valid_auc"] for p in h["history"] if p["epoch"] == epoch), None) for h in histories]
        return float(np.mean(vals)) if all(v is not None for v in vals) else None

    rows = [r for r in result["rows"] if r["merge"] == "mean" and r["kind"] in ("tts", "tts_balanced")]
    single = next(r for r in rows if r["M"] == 1)
    top = max(rows, key=lambda r: r["M"])
    first = torch.load(files[0], weights_only=True)
    return {"data": dataset, "init": init, "ids": int(sum(first["vocab_sizes"])), "seeds": len(files),
            "val_auc_ep1": at(1.0), "val_auc_ep2": at(2.0), "val_auc_ep5": at(5.0),
            "best_epoch": float(np.mean([h["best"]["epoch"] for h in histories])),
            "stop": sorted({h.get("stop_reason", "?") for h in histories}),
            "test_auc_m1": single["auc"], "test_auc_m1_std": single["auc_std"], "M": top["M"],
            "test_auc_merged": top["auc"], "gain": top["auc"] - single["auc"], "js_mean": group["js_mean"],
            "trained_abs_mean": float(np.mean([w.abs().mean().item() for w in weights]))}


@app.command()
def main(folder: Annotated[Path, typer.Argument(help="OUT of init_compare.sh.")],
         claims: Annotated[Path, typer.Option(help="OUT of converged_claims.sh.")] = Path("out/claims"),
         seeds: Annotated[int, typer.Option(help="Members per arm.")] = 4) -> None:
    """Print and write the init comparison."""
    rows = [r for d, i in ARMS if (r := arm_row(folder, claims, d, i, seeds)) is not None]
    if not rows:
        raise UserError(f"no reports under {folder}/reports (run benchmarks/init_compare.sh first)")

    def f(v: float | None, spec: str = ".4f") -> str:
        return "" if v is None else format(v, spec)

    table = Table("embedding init at convergence (small DCNv2, mean over seeds)",
                  [Column("data", numeric=False), Column("init", numeric=False), Column("ids"),
                   Column("ep1"), Column("ep2"), Column("ep5"), Column("best ep"), Column("M=1"),
                   Column("merged"), Column("gain"), Column("JS bits")],
                  caption="ep1/2/5: validation AUC after that many epochs; M=1, merged: test AUC of one "
                          "member and of all seeds merged")
    for r in rows:
        table.add_row(r["data"], r["init"], f"{r['ids']:,}", f(r["val_auc_ep1"]), f(r["val_auc_ep2"]),
                      f(r["val_auc_ep5"]), f(r["best_epoch"], ".1f"), f(r["test_auc_m1"]),
                      f"{r['test_auc_merged']:.4f} (M={r['M']})", f(r["gain"], "+.4f"),
                      f(r["js_mean"], ".5f"))
    results.table(table)
    pl.DataFrame([{k: (",".join(v) if isinstance(v, list) else v) for k, v in r.items()} for r in rows]
                 ).write_csv(folder / "init_compare.csv")
    (folder / "init_compare.json").write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    run_app(app)
