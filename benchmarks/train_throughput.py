"""Training rows/s per backbone x precision x jobs (default hparams) through the real trainer, here.

    .venv/bin/python benchmarks/train_throughput.py --data out/demo/data     # a prepared dataset
    .venv/bin/python benchmarks/train_throughput.py --synth-rows 100000      # synth + prepare first
    .venv/bin/python benchmarks/train_throughput.py --backbones dcnv2,fnn --precisions fp32,bf16 \
        --jobs 1,2 --threads 2 --repeat 2

Each cell trains `--steps` batches with Adam (`ttsrec.train.fit`, as `tts-train` does) after one warm-up
batch; rows/s counts forward + backward + optimiser step only (validation excluded). `--jobs N` runs N
members at once in spawned processes with `threads // N` torch threads each (what `tts-train --jobs`
does) and reports their summed rows/s. The per-step split (data, forward, backward, optimiser, and CPU ms
over all threads) comes from a second pass over the same loop. Precisions alternate cell by cell and
`--repeat` runs the whole sweep again, so ratios come from neighbouring cells of one run: on a shared
machine absolute figures move with the load, ratios much less. Prints a table, writes CSV/JSON.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import torch
import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ttsrec.bench.meta import cpu_model
from ttsrec.cli.common import console, run_app
from ttsrec.errors import UserError
from ttsrec.models import BACKBONES, model_cost
from ttsrec.train.device import check_precision, cpu_bf16_units
from ttsrec.train.fit import fit, make_adam
from ttsrec.train.member import build_member
from ttsrec.train.options import TrainOptions
from ttsrec.utils.atomic import atomic_write_text
from ttsrec.utils.common import parse_int_list

app = typer.Typer(add_completion=False, help=__doc__)


def step_split(model, data, batch_size: int, steps: int, precision: str) -> dict[str, float]:
    """Mean ms per step getting the batch, in forward, backward and the Adam step (the loop of `fit`), and
    CPU ms per step over all threads: with other work on the cores wall time stretches, CPU time less."""
    from torch.nn.functional import binary_cross_entropy_with_logits

    from ttsrec.data.loader import iter_batches
    from ttsrec.train.device import autocast

    optimiser = make_adam(list(model.parameters()), TrainOptions())
    parts = dict.fromkeys(("data_ms", "forward_ms", "backward_ms", "optimiser_ms"), 0.0)
    batches = iter_batches(data, "train", batch_size, shuffle=True, seed=2, limit=batch_size * steps)
    done, cpu_started = 0, time.process_time()
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
    split = {k: round(v / max(1, done), 2) for k, v in parts.items()}
    split["cpu_ms"] = round(1000 * (time.process_time() - cpu_started) / max(1, done), 2)
    return split


def cell(data_dir: str, backbone: str, precision: str, batch_size: int, steps: int, threads: int,
         barrier: Any = None) -> dict[str, Any]:
    """One member trained in this process: warm-up batch, `steps` timed batches through `fit`, the split.

    `barrier` (parallel jobs): wait after the warm-up so the timed parts of all jobs overlap."""
    from ttsrec.data.prepared import PreparedData

    torch.set_num_threads(threads)
    data = PreparedData(Path(data_dir))
    warm = TrainOptions(epochs=1, batch_size=batch_size, train_limit=batch_size, valid_limit=batch_size,
                        precision=precision)
    timed = TrainOptions(epochs=1, batch_size=batch_size, train_limit=batch_size * steps,
                         valid_limit=batch_size, precision=precision)
    model = build_member(backbone, data.feature_map, 0, {})
    fit([model], data, warm, seed=0)
    if barrier is not None:
        barrier.wait()
    result = fit([model], data, timed, seed=1)
    split = step_split(model, data, batch_size, steps, precision)
    cost = model_cost(model)
    return {"samples_per_s": result.samples_per_s,
            "ms_per_step": 1000 * result.step_time_s / max(1, result.steps), "steps": result.steps,
            **split, "params": cost.params, "macs_per_sample": cost.macs_per_sample}


def _job(queue: Any, barrier: Any, *args: Any) -> None:
    try:
        queue.put(cell(*args, barrier=barrier))
    except BaseException as err:  # reported by the parent, which would otherwise wait forever
        barrier.abort()
        queue.put({"error": f"{type(err).__name__}: {err}"})
        raise


def parallel_cell(data_dir: str, backbone: str, precision: str, batch_size: int, steps: int,
                  threads: int, jobs: int) -> dict[str, Any]:
    """`jobs` members at once in spawned processes (as `tts-train --jobs`): summed rows/s, mean split."""
    if jobs == 1:
        return cell(data_dir, backbone, precision, batch_size, steps, threads)
    ctx = mp.get_context("spawn")
    queue, barrier = ctx.Queue(), ctx.Barrier(jobs)
    procs = [ctx.Process(target=_job, args=(queue, barrier, data_dir, backbone, precision, batch_size,
                                            steps, threads)) for _ in range(jobs)]
    for proc in procs:
        proc.start()
    parts = [queue.get() for _ in procs]
    for proc in procs:
        proc.join()
    failed = [p["error"] for p in parts if "error" in p]
    if failed:
        raise RuntimeError(f"a parallel job failed: {failed[0]}")
    mean = {k: sum(p[k] for p in parts) / jobs for k in parts[0]}
    return {**mean, "samples_per_s": sum(p["samples_per_s"] for p in parts), "steps": parts[0]["steps"],
            "params": parts[0]["params"], "macs_per_sample": parts[0]["macs_per_sample"]}


def measure(data_dir: Path, backbones: list[str], batch_size: int, steps: int,
            precisions: tuple[str, ...] = ("fp32",), jobs: tuple[int, ...] = (1,), threads: int = 1,
            repeat: int = 1) -> list[dict]:
    """One row per round x backbone x jobs x precision; precisions alternate within each (backbone, jobs)
    so each bf16 cell has its fp32 neighbour (`x_fp32`: rows/s over that neighbour's)."""
    rows: list[dict] = []
    cells = [(r, b, j, p) for r in range(repeat) for b in backbones for j in jobs for p in precisions]
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("training", total=len(cells))
        for round_, name, n_jobs, precision in cells:
            per_job = max(1, threads // n_jobs)
            progress.update(task, description=f"round {round_ + 1}: {name} {precision} x{n_jobs}")
            got = parallel_cell(str(data_dir), name, precision, batch_size, steps, per_job, n_jobs)
            rows.append({"round": round_ + 1, "backbone": name, "precision": precision, "jobs": n_jobs,
                         "threads_per_job": per_job, "batch_size": batch_size, **got})
            progress.advance(task)
    for row in rows:
        base = next((r for r in rows if r["precision"] == "fp32" and
                     all(r[k] == row[k] for k in ("round", "backbone", "jobs"))), None)
        row["x_fp32"] = round(row["samples_per_s"] / base["samples_per_s"], 2) if base else None
        row["cpu_x_fp32"] = round(base["cpu_ms"] / row["cpu_ms"], 2) if base and row["cpu_ms"] else None
        for key in ("samples_per_s", "ms_per_step", "data_ms", "forward_ms", "backward_ms", "optimiser_ms",
                    "cpu_ms"):
            row[key] = round(row[key], 1 if key == "samples_per_s" else 2)
    return rows


def _ints(text: str, flag: str) -> tuple[int, ...]:
    values = parse_int_list(text, flag)
    if not values:
        raise UserError(f"{flag} expects integers >= 1, got {text!r}")
    return tuple(values)


@app.command()
def main(
    data: Annotated[Path | None, typer.Option(help="Prepared dataset dir.")] = None,
    synth_rows: Annotated[int, typer.Option(help="Without --data: synthesise+prepare N rows.")] = 60_000,
    backbones: Annotated[str, typer.Option(help="Comma-separated backbones.")] = ",".join(BACKBONES),
    batch_size: Annotated[int, typer.Option(help="Training batch size.")] = 4096,
    steps: Annotated[int, typer.Option(help="Timed steps per cell (as many again for the split).")] = 8,
    threads: Annotated[int | None, typer.Option(
        help="torch threads in all, split over --jobs [default: torch's].")] = None,
    precisions: Annotated[str, typer.Option(
        help="Comma-separated: fp32,bf16 (bf16 is emulated, slow, on CPUs without avx512_bf16/amx_bf16).")
    ] = "fp32",
    jobs: Annotated[str, typer.Option(help="Comma-separated numbers of members trained at once.")] = "1",
    repeat: Annotated[int, typer.Option(help="Rounds of the whole sweep (to see the noise).")] = 1,
    out: Annotated[Path, typer.Option(help="Output prefix for .csv/.json.")] = Path("out/train_throughput"),
) -> None:
    names = [b.strip() for b in backbones.split(",") if b.strip()]
    unknown = sorted(set(names) - set(BACKBONES))
    if unknown:
        raise UserError(f"unknown backbone(s) {', '.join(unknown)}; choose from {', '.join(BACKBONES)}")
    chosen = tuple(p.strip() for p in precisions.split(",") if p.strip())
    for p in chosen:
        check_precision(p, "cpu")
    job_counts = _ints(jobs, "--jobs")
    if repeat < 1:
        raise UserError(f"--repeat must be >= 1, got {repeat}")
    total_threads = threads or torch.get_num_threads()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="tts-train-bench-") as tmp:
        if data is None:
            from ttsrec.data.prepare import prepare
            from ttsrec.data.synth import write_synthetic_criteo

            tsv = write_synthetic_criteo(Path(tmp) / "synth.tsv", rows=synth_rows, seed=0)
            data = Path(tmp) / "data"
            prepare("criteo", [tsv], data)
        rows = measure(data, names, batch_size, steps, chosen, job_counts, total_threads, repeat)
    machine = {"python": platform.python_version(), "torch": torch.__version__, "threads": total_threads,
               "cpus": os.cpu_count(), "cpu_model": cpu_model(), "cpu_bf16_units": cpu_bf16_units(),
               "loadavg_before": [round(x, 2) for x in load_before],
               "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
    table = Table(title=f"training throughput, batch {batch_size}, {total_threads} torch threads in all, "
                        f"{machine['cpu_model']} (bf16 units: {'yes' if cpu_bf16_units() else 'no'})")
    columns = ("round", "backbone", "precision", "jobs", "thr/job", "rows/s", "x fp32", "ms/step", "cpu ms",
               "cpu x", "data", "fwd", "bwd", "optim", "params")
    for col in columns:
        table.add_column(col, justify="left" if col in ("backbone", "precision") else "right")
    for r in rows:
        table.add_row(str(r["round"]), r["backbone"], r["precision"], str(r["jobs"]),
                      str(r["threads_per_job"]),
                      f"{r['samples_per_s']:,.0f}", f"{r['x_fp32']:.2f}" if r["x_fp32"] else "",
                      f"{r['ms_per_step']:.1f}", f"{r['cpu_ms']:.0f}",
                      f"{r['cpu_x_fp32']:.2f}" if r["cpu_x_fp32"] else "",
                      *(f"{r[k]:.1f}" for k in ("data_ms", "forward_ms", "backward_ms", "optimiser_ms")),
                      f"{r['params']:,}")
    Console(width=max(Console().width, 170)).print(table)
    console.print(f"load average before {machine['loadavg_before']}, after {machine['loadavg_after']}")
    atomic_write_text(out.with_suffix(".csv"), pl.DataFrame(rows).write_csv())
    report = {"machine": machine, "rows": rows}
    atomic_write_text(out.with_suffix(".json"), json.dumps(report, indent=1) + "\n")
    console.print(f"[green]wrote[/] {out.with_suffix('.csv')} and .json")


if __name__ == "__main__":
    run_app(app)
