"""`tts-eval`: what test-time scaling buys: AUC/logloss against M, diversity, cascades, parameter scaling, and
the compute-AUC frontier."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ttsrec.cli.common import console, results, run_app
from ttsrec.cli.reporter import RichReporter
from ttsrec.errors import UserError

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def evaluate(
    sources: Annotated[list[Path], typer.Argument(help="Run dirs (runs/NAME) and/or member checkpoints.")],
    data: Annotated[Path, typer.Option("--data", help="Prepared data dir whose test split is scored.")],
    out: Annotated[Path, typer.Option("--out", help="Report dir, e.g. reports/NAME.")],
    m_list: Annotated[str | None, typer.Option(
        "--m-list", help="Comma-separated M values (default: 1,2,4,8,16 up to the run size).")] = None,
    subsets: Annotated[int, typer.Option(help="Random member subsets per M (homogeneous runs).")] = 10,
    seed: Annotated[int, typer.Option(help="Seed of the subset draws.")] = 0,
    param_scaling: Annotated[bool, typer.Option(
        "--param-scaling/--no-param-scaling",
        help="Train deeper/wider single models at the MACs of M members (costs training time).")] = False,
    scaling_m: Annotated[str | None, typer.Option(
        "--scaling-m", help="M values for parameter scaling (default: every evaluated M > 1).")] = None,
    scaling_kinds: Annotated[str, typer.Option(
        help="Comma-separated: depth, width (deeper/wider MLP), module_depth, module_width (the paper's: "
        "stacked interaction modules; K parallel modules with their own tables).")] = "depth,width",
    merges: Annotated[str, typer.Option(
        "--merges", help="Comma-separated merges per M: mean (the paper), weighted and selection (fitted "
        "on the validation split).")] = "mean,weighted,selection",
    soup: Annotated[bool, typer.Option(
        "--soup/--no-soup", help="Also score a weight-averaged soup of same-architecture members.")] = True,
    cascade: Annotated[bool, typer.Option(
        "--cascade/--no-cascade", help="Also score cascaded merging per group of 2+ members: members in "
        "stages, settled rows stop (rule and threshold fitted on the validation split).")] = False,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: torch's).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing report dir.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Score members on the test split; writes report.md, results.csv/json and PNG plots into --out."""
    from ttsrec.evaluate import evaluate_runs
    from ttsrec.evaluate.cascade import fitted_rows
    from ttsrec.evaluate.report import tables
    from ttsrec.utils.common import parse_int_list

    if threads is not None:
        import torch

        if threads < 1:
            raise UserError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    result = evaluate_runs(
        sources, data, out, m_list=parse_int_list(m_list, "--m-list"), subsets=subsets, seed=seed,
        param_scaling=param_scaling, scaling_m=parse_int_list(scaling_m, "--scaling-m"),
        scaling_kinds=[k.strip() for k in scaling_kinds.split(",") if k.strip()],
        merges=[k.strip() for k in merges.split(",") if k.strip()], soup=soup, cascade=cascade, force=force,
        reporter=RichReporter(console, show_progress=not quiet))
    for table in tables(result):
        results.table(table)
    for g in result["groups"]:
        gain = g["gain"]
        console.print(f"{g['name']}: mean pairwise JS {g['js_mean']:.3g} bits; M={gain['M']} AUC gain "
                      f"{gain['auc']:+.4f} over the {g['reference']['kind'].replace('_', ' ')}")
    sizes = {g["name"]: len(g["members"]) for g in result["groups"]}
    for r in fitted_rows(result.get("cascade") or []):
        full = next(f for f in result["cascade"] if f["kind"] == "full" and f["group"] == r["group"]
                    and f["merge"] == "mean")
        console.print(f"{r['group']}: cascade ({r['merge']}, {r['order']} order, rule {r['rule']}) "
                      f"{r['avg_members']:.2f} members/row, test AUC {r['auc'] - full['auc']:+.5f} against "
                      f"the mean of all {sizes[r['group']]}")
    extra = ", cascade.csv, cascade_<group>.png" if result.get("cascade") else ""
    console.print(f"[green]wrote[/] {out}: report.md, results.csv/json{extra}, auc_vs_m.png, frontier.png")


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
