"""`tts-bench`: throughput and latency per scaling factor M, in perf_analyzer's vocabulary."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ttsrec.bench.config import configs_for
from ttsrec.bench.measure import MeasureSettings
from ttsrec.bench.outputs import OutputPaths, finish
from ttsrec.bench.plan import Point
from ttsrec.bench.report import table
from ttsrec.bench.result import combine
from ttsrec.bench.row import Row
from ttsrec.bench.sweep import Sweep
from ttsrec.cli.common import console, reporter, run_app
from ttsrec.cli.reporter import render_table
from ttsrec.ensemble.modes import CLI_MODES
from ttsrec.errors import UserError
from ttsrec.utils import common

app = typer.Typer(add_completion=False, help=__doc__)


def parse_int_list(text: str, what: str) -> list[int]:
    """A required positive integer list (the shared parser; empty is an error here)."""
    values = common.parse_int_list(text, what)
    if not values:
        raise UserError(f"{what}: expected positive integers, got {text!r}")
    return values


def parse_concurrency(text: str) -> list[int]:
    """perf_analyzer's `start:end:step` (linear: 1:8:2 is 1,3,5,7), or a list `1,2,4,8`."""
    if ":" not in text:
        return parse_int_list(text, "--concurrency-range")
    parts = text.split(":")
    try:
        start, end, step = (int(p) for p in [*parts, "1"][:3]) if len(parts) in (2, 3) else (0, 0, 0)
    except ValueError:
        start = end = step = 0
    if start < 1 or end < start or step < 1:
        raise UserError(
            f"--concurrency-range: expected start:end[:step] with 1 <= start <= end, got {text!r}"
        )
    return list(range(start, end + 1, step))


def parse_modes(values: list[str]) -> list[str]:
    """Comma lists or repeated `--mode`s, flattened; `SweepConfig` says which names it takes."""
    return [m for v in values for m in v.replace(" ", "").split(",") if m]


@app.command()
def bench(
    url: Annotated[
        str | None,
        typer.Option(
            "-u",
            "--url",
            help="Running server (host:port); without it "
            "tts-bench starts the bundled tritonserver on --repository.",
        ),
    ] = None,
    protocol: Annotated[str, typer.Option("-i", "--protocol", help="grpc or http.")] = "grpc",
    batch_size: Annotated[str, typer.Option("-b", "--batch-size", help="Batch sizes, e.g. 1,64,256.")] = "1",
    concurrency_range: Annotated[
        str, typer.Option("--concurrency-range", help="start:end[:step] (linear) or a list.")
    ] = "1",
    measurement_interval: Annotated[
        int, typer.Option("-p", "--measurement-interval", help="Measurement window in ms.")
    ] = 1000,
    stability_percentage: Annotated[
        float, typer.Option("-s", "--stability-percentage", help="Max spread of the last 3 windows, in %.")
    ] = 10.0,
    max_trials: Annotated[
        int, typer.Option("--max-trials", help="Windows before a row is reported unstable.")
    ] = 10,
    percentile: Annotated[
        int | None,
        typer.Option(
            "--percentile", help="Latency percentile for stability (50, 90, 95, 99); default the average."
        ),
    ] = None,
    warmup_request_count: Annotated[
        int, typer.Option("--warmup-request-count", help="Requests before the first window.")
    ] = 20,
    latency_report_file: Annotated[
        Path | None, typer.Option("-f", "--latency-report-file", help="CSV of all rows.")
    ] = None,
    m_list: Annotated[
        str | None,
        typer.Option("--m-list", help="M values, e.g. 1,2,4,8,16 (default: all in the repository)."),
    ] = None,
    mode: Annotated[
        list[str] | None,
        typer.Option(
            "--mode",
            help=f"Any of {', '.join(CLI_MODES)} (comma list or repeated); default ensemble,fused,inprocess.",
        ),
    ] = None,
    repository: Annotated[
        list[str] | None,
        typer.Option(
            "--repository",
            help="Exported repository; several (comma list or repeated, e.g. an fp32 and an int8 export) "
            "are benched in one run and one table.",
        ),
    ] = None,
    shards_repository: Annotated[
        Path | None,
        typer.Option("--shards-repository", help="A `tts-export --shards K` output (sharded mode)."),
    ] = None,
    shard_url: Annotated[
        list[str] | None,
        typer.Option("--shard-url", help="Running shard servers instead of --shards-repository (repeat)."),
    ] = None,
    pin_cores: Annotated[
        bool,
        typer.Option(
            "--pin-cores",
            help="Sharded mode: pin shard server i to its own cores (cores // K each) and compare with "
            "each shard alone on those cores: K machines modelled on one (K <= usable cores).",
        ),
    ] = False,
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Prepared data dir: send its test rows instead of random valid ids."),
    ] = None,
    raw: Annotated[
        bool,
        typer.Option(
            "--raw",
            help="Measure each ensemble/fused row again with raw records sent to its raw_ensemble_mM / "
            "raw_fused_mM (tts-export --raw-inputs), next to it (inputs column: ids/raw): the test rows of "
            "--data read again from its raw files, else rows covering the vocabulary; the id rows send the "
            "same rows' ids.",
        ),
    ] = False,
    json_out: Annotated[
        Path | None, typer.Option("--json", help="JSON report (rows, machine, versions).")
    ] = None,
    markdown_out: Annotated[
        Path | None, typer.Option("--markdown", help="Markdown tables of the rows and derived figures.")
    ] = None,
    plot_out: Annotated[
        Path | None, typer.Option("--plot", help="PNG: throughput and p99 against M.")
    ] = None,
    eval_data: Annotated[
        Path | None,
        typer.Option("--eval-data", help="Prepared data dir: AUC/logloss per M through the served models."),
    ] = None,
    eval_rows: Annotated[int, typer.Option("--eval-rows", help="Test rows for --eval-data.")] = 20_000,
    engine: Annotated[
        str,
        typer.Option(
            "--engine",
            help="native; perf_analyzer (installed by `make perf-analyzer`); auto: perf_analyzer for the "
            "served batch-1 rows when installed, native for the rest (the engine column says which).",
        ),
    ] = "native",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random request ids.")] = 0,
    budget_ms: Annotated[
        float | None,
        typer.Option(
            "--budget-ms",
            help="With --eval-data: print the configuration with the best AUC whose p99 stays under this.",
        ),
    ] = None,
    frontier_out: Annotated[
        Path | None,
        typer.Option("--frontier", help="With --eval-data: PNG of served AUC against throughput and p99."),
    ] = None,
) -> None:
    """Sweep modes × M × batch × concurrency; rows in µs and inferences/s, like perf_analyzer."""
    # The sweep's own options are checked by SweepConfig; these are about this command's outputs.
    if (budget_ms is not None or frontier_out is not None) and eval_data is None:
        raise UserError("--budget-ms and --frontier need --eval-data (the AUC of each configuration)")
    if budget_ms is not None and not budget_ms > 0:
        raise UserError(f"--budget-ms must be > 0, got {budget_ms}")
    repositories = [Path(p) for v in (repository or ["model_repository"]) for p in v.split(",") if p.strip()]
    configs = configs_for(
        repositories,
        modes=parse_modes(mode or ["ensemble,fused,inprocess"]),
        m_list=parse_int_list(m_list, "--m-list") if m_list else None,
        batches=parse_int_list(batch_size, "-b/--batch-size"),
        concurrencies=parse_concurrency(concurrency_range),
        shards_repository=shards_repository,
        url=url,
        shard_urls=list(shard_url or []),
        protocol=protocol,
        data=data,
        raw=raw,
        eval_data=eval_data,
        eval_rows=eval_rows,
        engine=engine,
        seed=seed,
        pin_cores=pin_cores,
        settings=MeasureSettings(
            window_ms=measurement_interval,
            stability_pct=stability_percentage,
            max_trials=max_trials,
            percentile=percentile,
            warmup_requests=warmup_request_count,
        ),
    )
    paths = OutputPaths(csv=latency_report_file, json=json_out, plot=plot_out, markdown=markdown_out,
                        frontier=frontier_out)
    paths.check()
    sweeps = [Sweep(config) for config in configs]
    precisions = [s.precision for s in sweeps]

    rows: list[Row] = []
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )
    task = progress.add_task("preparing", total=None)

    def view() -> Group:
        """The bar and, in a terminal, the rows so far (a log gets them once, see `_rows_in_logs`)."""
        if not console.is_terminal:
            return Group(progress)
        return Group(progress, render_table(table(rows, precisions), console.width)[0])

    with _rows_in_logs(rows, precisions), Live(view(), console=console, refresh_per_second=4) as live:

        def on_status(text: str) -> None:
            progress.update(task, description=text)

        planned = 0

        def on_plan(points: list[Point]) -> None:
            nonlocal planned
            planned += len(points)
            progress.update(task, total=planned)

        def on_start(point: Point) -> None:
            progress.update(task, description=f"measuring {point}")

        def on_row(point: Point, row: Row) -> None:
            rows.append(row)
            progress.advance(task)
            live.update(view())

        result = combine(
            [s.run(on_plan=on_plan, on_start=on_start, on_row=on_row, on_status=on_status) for s in sweeps]
        )
        progress.update(task, description="done")

    if console.is_terminal:
        console.print()  # after the live rows (a log's are drawn by the reporter, a blank line after them)
    finish(result, paths, reporter, budget_ms)


@contextlib.contextmanager
def _rows_in_logs(rows: list[Row], precisions: list[str]) -> Iterator[None]:
    """Where the live view is not drawn (a log, a pipe), the rows table once the sweep ends or stops."""
    try:
        yield
    finally:
        if not console.is_terminal:
            console.line()  # ends the bar's last line (a terminal gets it from Live)
            if rows:
                reporter.table(table(rows, precisions))


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
