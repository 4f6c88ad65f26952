"""Deployment comparison (the paper's claim, served): M members merged vs one parameter-scaled model.

    # members: a run dir (all its members are merged); scaled: one checkpoint of about M x the MACs,
    # e.g. the one `tts-eval --param-scaling` wrote into REPORT/param_scaling/
    .venv/bin/python benchmarks/deployment_compare.py --members runs/dcnv2x4 \\
        --scaled report/param_scaling/dcnv2_module_width_x4.pt --data runs/data --out reports/deploy

Exports both sides (`export_repository`), serves each on the bundled tritonserver and benches it with the
bench's Sweep (throughput, p50/p99 per batch x concurrency, served AUC on the test split). Writes
deployment.md (one table), deployment.png and deployment.json into --out. The machine is shared: read the
ratios between the two sides, measured in one run, not the absolute figures.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ttsrec.cli.common import console, run_app

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    members: Annotated[list[Path], typer.Option("--members", help="Run dir or member checkpoints (repeat).")],
    scaled: Annotated[Path, typer.Option("--scaled", help="Parameter-scaled single model (.pt).")],
    data: Annotated[Path, typer.Option("--data", help="Prepared data dir (inputs and served AUC).")],
    out: Annotated[Path, typer.Option("--out", help="Output dir.")],
    mode: Annotated[str, typer.Option(help="fused (one ONNX graph) or ensemble.")] = "fused",
    batches: Annotated[str, typer.Option("-b", "--batches", help="Comma-separated batch sizes.")] = "1,256",
    concurrency: Annotated[str, typer.Option("--concurrency", help="Comma-separated concurrencies.")] = "1",
    window_ms: Annotated[int, typer.Option("-p", "--measurement-interval", help="Window (ms).")] = 1000,
    eval_rows: Annotated[int, typer.Option(help="Test rows scored through the server.")] = 20_000,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output dir.")] = False,
) -> None:
    from ttsrec.experiments.deployment import compare_deployment, markdown
    from ttsrec.utils.common import parse_int_list

    result = compare_deployment(
        members, scaled, data, out, mode=mode, batches=parse_int_list(batches, "--batches"),
        concurrencies=parse_int_list(concurrency, "--concurrency"), window_ms=window_ms, eval_rows=eval_rows,
        force=force, on_status=lambda s: console.print(f"[cyan]{s}[/]"))
    print(markdown(result))
    console.print(f"[green]wrote[/] {out}")


if __name__ == "__main__":
    run_app(app)
