"""`tts-bench`: throughput and latency per scaling factor M, in perf_analyzer's vocabulary."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from dataclasses import MISSING
from typing import Annotated, Any

import typer
from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from ttsrec.bench.config import BenchConfig, flag_fields
from ttsrec.bench.flags import parse_concurrency, parse_int_list, parse_modes
from ttsrec.bench.outputs import finish
from ttsrec.bench.plan import Point
from ttsrec.bench.result import combine
from ttsrec.bench.row import Row
from ttsrec.bench.sweep import Sweep
from ttsrec.bench.tables import table
from ttsrec.cli.common import console, reporter, run_app
from ttsrec.cli.reporter import render_table

__all__ = ["app", "bench", "main", "parse_concurrency", "parse_int_list", "parse_modes"]

app = typer.Typer(add_completion=False, help=__doc__)


def bench(**flags: Any) -> None:
    """Sweep modes × M × batch × concurrency; rows in µs and inferences/s, like perf_analyzer."""
    config = BenchConfig.from_flags(flags)
    sweeps = [Sweep(c) for c in config.sweeps]
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
    finish(result, config.outputs, reporter, config.budget_ms)


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


def _options() -> inspect.Signature:
    """`bench`'s options, one per flag field of `BenchConfig` (`bench.flags`), in `--help` order: as
    TorchRec's benchmark CLI, the flags come from the config dataclass."""
    params = []
    for f, flag, field_type in sorted(flag_fields(), key=lambda entry: entry[1].order):
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        kind, default = (flag.text, flag.text_default) if flag.parse else (field_type, default)
        option = typer.Option(*flag.decls, help=flag.help)
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=Annotated[kind, option]))
    return inspect.Signature(params, return_annotation=None)


bench.__signature__ = _options()  # type: ignore[attr-defined]
app.command()(bench)


def main() -> None:
    run_app(app)


if __name__ == "__main__":
    main()
