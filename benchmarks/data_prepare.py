"""Benchmark `tts-data prepare` end to end on synthetic Criteo files of two sizes.

Prints rows/s and peak RSS per size (each prepare runs in a fresh child process, so its peak RSS
is its own). The claim to check: >= 300k rows/s, and peak memory that follows the vocabulary, not
the number of rows.

    .venv/bin/python benchmarks/data_prepare.py                      # 500k and 2M rows
    .venv/bin/python benchmarks/data_prepare.py --rows 2000000 --rows 4000000 --json out.json
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console(width=120)
app = typer.Typer(add_completion=False)


def child(tsv: Path, out: Path) -> None:
    """Prepare in this process and print one JSON line with timings and peak RSS."""
    from ttsrec.data.prepare import prepare

    wall, cpu = time.perf_counter(), time.process_time()
    summary = prepare("criteo", [tsv], out, force=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(
        json.dumps(
            {
                "rows": summary.rows_read,
                "seconds": round(wall, 2),
                "cpu_seconds": round(cpu, 2),
                "rows_per_s": round(summary.rows_read / wall),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                "vocab_total": sum(summary.vocab_sizes.values()),
                "input_mb": round(tsv.stat().st_size / 1e6, 1),
            }
        )
    )


@app.command()
def main(
    rows: Annotated[list[int] | None, typer.Option("--rows", help="File sizes in rows (repeat).")] = None,
    workdir: Annotated[
        Path | None, typer.Option(help="Where to write the files (default: a temp dir).")
    ] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the results here.")] = None,
    seed: int = 0,
    _child: Annotated[list[Path] | None, typer.Option("--child", hidden=True)] = None,
) -> None:
    if _child:
        child(*_child)
        return
    from ttsrec.data.synth import write_synthetic_criteo

    sizes = rows or [500_000, 2_000_000]
    results = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        for n in sizes:
            tsv = Path(tmp) / f"criteo_{n}.tsv"
            with console.status(f"synthesising {n:,} rows"):
                started = time.perf_counter()
                write_synthetic_criteo(tsv, rows=n, seed=seed)
                synth_s = time.perf_counter() - started
            load = os.getloadavg()[0]
            with console.status(f"preparing {n:,} rows"):
                proc = subprocess.run(
                    [sys.executable, __file__, "--child", str(tsv), "--child", str(Path(tmp) / f"out_{n}")],
                    capture_output=True,
                    text=True,
                    check=False,
                )
            if proc.returncode:
                console.print(proc.stderr)
                raise typer.Exit(1)
            result = {
                **json.loads(proc.stdout.strip().splitlines()[-1]),
                "synth_seconds": round(synth_s, 2),
                "load_avg_before": round(load, 2),
            }
            results.append(result)
            tsv.unlink()

    table = Table(title="tts-data prepare (criteo preset, synthetic data)")
    for col in ("rows", "input MB", "wall s", "rows/s", "CPU s", "peak RSS MB", "vocab (ids)", "load avg"):
        table.add_column(col, justify="right")
    for r in results:
        table.add_row(
            f"{r['rows']:,}",
            f"{r['input_mb']:,.0f}",
            f"{r['seconds']:.1f}",
            f"{r['rows_per_s']:,}",
            f"{r['cpu_seconds']:.1f}",
            f"{r['peak_rss_mb']:,}",
            f"{r['vocab_total']:,}",
            f"{r['load_avg_before']:.1f}",
        )
    console.print(table)
    console.print(f"{os.cpu_count()} CPUs, {platform.platform()}, python {platform.python_version()}")
    if json_out:
        machine = {"cpus": os.cpu_count(), "platform": platform.platform()}
        json_out.write_text(json.dumps({"machine": machine, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    app()
