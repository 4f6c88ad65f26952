"""Training samples/s per backbone (default hparams) through the real trainer, on this machine.

    .venv/bin/python benchmarks/train_throughput.py --data out/demo/data     # a prepared dataset
    .venv/bin/python benchmarks/train_throughput.py --synth-rows 100000      # synth + prepare first

Each backbone trains `--steps` batches with Adam (`ttsrec.train.fit`, as `tts-train` does) after one
warm-up batch; samples/s counts forward + backward + optimiser step only (validation excluded).
Prints a table and writes CSV/JSON next to `--out`.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Annotated

import polars as pl
import torch
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ttsrec.cli.common import console, run_app
from ttsrec.errors import UserError
from ttsrec.models import BACKBONES, model_cost
from ttsrec.train.device import check_precision, cpu_bf16_units
from ttsrec.train.fit import fit
from ttsrec.train.member import build_member
from ttsrec.train.options import TrainOptions
from ttsrec.utils.atomic import atomic_write_text

app = typer.Typer(add_completion=False, help=__doc__)


def step_split(model, data, batch_size: int, steps: int, precision: str) -> dict[str, float]:
    """Mean ms per step spent getting the batch, in forward, backward and the Adam step (same loop as fit)."""
    import time

    from torch.nn.functional import binary_cross_entropy_with_logits

    from ttsrec.data.loader import iter_batches
    from ttsrec.train.device import autocast

    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    parts = dict.fromkeys(("data_ms", "forward_ms", "backward_ms", "optimiser_ms"), 0.0)
    batches = iter_batches(data, "train", batch_size, shuffle=True, seed=2, limit=batch_size * steps)
    done = 0
    while True:
        t0 = time.perf_counter()
        try:
            feat_ids, labels = next(batches)
        except StopIteration:
            break
        t1 = time.perf_counter()
        with autocast(precision, "cpu"):
            logit = model(feat_ids).reshape(-1)
        loss = binary_cross_entropy_with_logits(logit.float(), labels.reshape(-1))
        t2 = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        t3 = time.perf_counter()
        optimiser.step()
        t4 = time.perf_counter()
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            parts[key] += 1000 * dt
        done += 1
    return {k: round(v / max(1, done), 2) for k, v in parts.items()}


def measure(data, backbones: list[str], batch_size: int, steps: int,
            precisions: tuple[str, ...] = ("fp32",)) -> list[dict]:
    """One row per backbone x precision, side by side in one run: samples/s, ms per step, params, MACs."""
    rows = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("training", total=len(backbones) * len(precisions))
        for name, precision in [(b, p) for b in backbones for p in precisions]:
            warm = TrainOptions(epochs=1, batch_size=batch_size, train_limit=batch_size,
                                valid_limit=batch_size, precision=precision)
            timed = TrainOptions(epochs=1, batch_size=batch_size, train_limit=batch_size * steps,
                                 valid_limit=batch_size, precision=precision)
            progress.update(task, description=f"training {name} {precision}")
            model = build_member(name, data.feature_map, 0, {})
            fit([model], data, warm, seed=0)
            result = fit([model], data, timed, seed=1)
            cost = model_cost(model)
            split = step_split(model, data, batch_size, steps, precision)
            rows.append({"backbone": name, "precision": precision, **split,
                         "samples_per_s": round(result.samples_per_s, 1),
                         "ms_per_step": round(1000 * result.step_time_s / max(1, result.steps), 2),
                         "steps": result.steps, "batch_size": batch_size, "params": cost.params,
                         "macs_per_sample": cost.macs_per_sample})
            progress.advance(task)
    return rows


@app.command()
def main(
    data: Annotated[Path | None, typer.Option(help="Prepared dataset dir.")] = None,
    synth_rows: Annotated[int, typer.Option(help="Without --data: synthesise+prepare N rows.")] = 60_000,
    backbones: Annotated[str, typer.Option(help="Comma-separated backbones.")] = ",".join(BACKBONES),
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 4096,
    steps: Annotated[int, typer.Option(help="Timed training steps per backbone.")] = 8,
    threads: Annotated[int | None, typer.Option(help="torch threads [default: torch's].")] = None,
    precisions: Annotated[str, typer.Option(
        help="Comma-separated: fp32,bf16 (bf16 is emulated, slow, on CPUs without avx512_bf16/amx_bf16).")
    ] = "fp32",
    out: Annotated[Path, typer.Option(help="Output prefix for .csv/.json.")] = Path("out/train_throughput"),
) -> None:
    from ttsrec.data.prepared import PreparedData

    if threads:
        torch.set_num_threads(threads)
    names = [b.strip() for b in backbones.split(",") if b.strip()]
    unknown = sorted(set(names) - set(BACKBONES))
    if unknown:
        raise UserError(f"unknown backbone(s) {', '.join(unknown)}; choose from {', '.join(BACKBONES)}")
    with tempfile.TemporaryDirectory(prefix="tts-train-bench-") as tmp:
        if data is None:
            from ttsrec.data.prepare import prepare
            from ttsrec.data.synth import write_synthetic_criteo

            tsv = write_synthetic_criteo(Path(tmp) / "synth.tsv", rows=synth_rows, seed=0)
            data = Path(tmp) / "data"
            prepare("criteo", [tsv], data, progress=False)
        chosen = tuple(p.strip() for p in precisions.split(",") if p.strip())
        for p in chosen:
            check_precision(p, "cpu")
        rows = measure(PreparedData(data), names, batch_size, steps, chosen)
    machine = {"python": platform.python_version(), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
               "processor": platform.processor() or platform.machine(), "cpu_bf16_units": cpu_bf16_units()}
    table = Table(title=f"training throughput, batch {batch_size}, {machine['threads']} torch threads")
    columns = ("backbone", "precision", "samples/s", "ms/step", "data", "fwd", "bwd", "optim", "params",
               "MACs/sample")
    for col in columns:
        table.add_column(col, justify="left" if col == "backbone" else "right")
    for r in rows:
        table.add_row(r["backbone"], r["precision"], f"{r['samples_per_s']:,.0f}", f"{r['ms_per_step']:.1f}",
                      *(f"{r[k]:.1f}" for k in ("data_ms", "forward_ms", "backward_ms", "optimiser_ms")),
                      f"{r['params']:,}", f"{r['macs_per_sample']:,}")
    Console().print(table)
    atomic_write_text(out.with_suffix(".csv"), pl.DataFrame(rows).write_csv())
    report = {"machine": machine, "rows": rows}
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=1) + "\n")
    console.print(f"[green]wrote[/] {out.with_suffix('.csv')} and .json")


if __name__ == "__main__":
    run_app(app)
