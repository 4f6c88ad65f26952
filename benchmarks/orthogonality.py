"""Orthogonality (the paper's Wukong/RankMixer table): merge M seeds of a base, a deeper and a wider member.

    .venv/bin/python benchmarks/orthogonality.py --data runs/data --out reports/ortho --backbone wukong \\
        --members 4 --epochs 2

Deeper = more stacked interaction modules (--depth-add layers), wider = K parallel interaction modules
with their own embedding tables (--width-modules). Writes orthogonality.md (the table), orthogonality.png,
orthogonality.json, and the runs and tts-eval reports it made, into --out.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ttsrec.cli.common import console, run_app
from ttsrec.cli.reporter import RichReporter

app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    data: Annotated[Path, typer.Option("--data", help="Prepared data dir.")],
    out: Annotated[Path, typer.Option("--out", help="Output dir.")],
    backbone: Annotated[str, typer.Option(help="dcn, dcnv2, wukong or rankmixer.")] = "wukong",
    members: Annotated[int, typer.Option(help="Seeds per variant (the largest M).")] = 4,
    m_list: Annotated[str | None, typer.Option("--m-list", help="M values (default 1,2,4,...).")] = None,
    depth_add: Annotated[int, typer.Option(help="Interaction layers added for the deeper variant.")] = 3,
    width_modules: Annotated[int, typer.Option(help="Parallel modules K of the wider variant.")] = 2,
    hparam: Annotated[list[str] | None, typer.Option("--hparam", help="Base hparam key=JSON (repeatable).")]
    = None,
    epochs: Annotated[int, typer.Option(help="Training epochs per member.")] = 2,
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 4096,
    threads: Annotated[int | None, typer.Option(help="torch threads.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output dir.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    from ttsrec.experiments.orthogonality import markdown, run_orthogonality
    from ttsrec.train.options import parse_hparams, parse_int_list

    if threads is not None:
        import torch

        torch.set_num_threads(max(1, threads))
    summary = run_orthogonality(
        data, out, backbone=backbone, members=members, m_list=parse_int_list(m_list, "--m-list"),
        hparams=parse_hparams(hparam), depth_add=depth_add, width_modules=width_modules,
        train_options={"epochs": epochs,
                       "batch_size": batch_size}, force=force, reporter=RichReporter(console,
                                                                                     show_progress=not quiet),
        on_stage=lambda s: console.print(f"[cyan]{s}[/]"))
    Console().print(Markdown(markdown(summary)))
    console.print(f"[green]wrote[/] {out}")


if __name__ == "__main__":
    run_app(app)
