"""A sweep's files and its closing report: what `tts-bench` writes and says after the rows, for a Python
user of `Sweep` too.

    result = combine([Sweep(config).run() for config in configs])
    finish(result, OutputPaths(csv=Path("r.csv"), json=Path("r.json")), reporter, budget_ms=5)

writes the same files and reports the same tables and lines as `tts-bench -f r.csv --json r.json
--budget-ms 5` (the reporter decides how they are drawn; the default says nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ttsrec.bench.config import OutputPaths
from ttsrec.bench.frontier import best_within, frontier_points, plot_frontier
from ttsrec.bench.markdown import markdown
from ttsrec.bench.plot import plot
from ttsrec.bench.result import SweepResult
from ttsrec.bench.rows_csv import write_csv
from ttsrec.bench.tables import summary_tables
from ttsrec.utils.atomic import atomic_write_text, write_json
from ttsrec.utils.report import SILENT, Reporter


def _json(path: Path, result: SweepResult) -> None:
    write_json(path, result.to_json(), default=str)


def _markdown(path: Path, result: SweepResult) -> None:
    atomic_write_text(path, markdown(result))


def _frontier(path: Path, result: SweepResult) -> None:
    plot_frontier(path, frontier_points(result.rows, result.accuracy))


WRITERS: dict[str, Callable[[Path, SweepResult], None]] = {
    "csv": lambda path, result: write_csv(path, result.rows),
    "json": _json,
    "plot": lambda path, result: plot(path, result.rows),
    "markdown": _markdown,
    "frontier": _frontier,
}
"""One writer per format, by its `OutputPaths` field, in the order they are written."""


def write_outputs(result: SweepResult, paths: OutputPaths, reporter: Reporter = SILENT) -> list[Path]:
    """Write the files `paths` names (each atomically), saying `wrote PATH` after each; returns them."""
    written = []
    for name, write in WRITERS.items():
        path = getattr(paths, name)
        if path is not None:
            write(Path(path), result)
            reporter.note(f"wrote {path}")
            written.append(Path(path))
    return written


def report_summary(result: SweepResult, reporter: Reporter) -> None:
    """The derived figures' tables, and where the shard servers were pinned (`--pin-cores`)."""
    for table in summary_tables(result):
        reporter.table(table)
    pinned = result.notes.get("pinning")
    if pinned:
        reporter.note(
            f"pinned: shard servers on cores {pinned['core_sets']} (servers and stubs checked in /proc); "
            f"the bench client unpinned on {pinned['client_cpus']}"
            + (f"; warning: {pinned['warning']}" if pinned.get("warning") else "")
        )


def report_budget(result: SweepResult, budget_ms: float, reporter: Reporter) -> list[dict[str, Any]]:
    """Per batch size and concurrency, the configuration with the best served AUC whose p99 stays under
    `budget_ms` (see `frontier.best_within`), one line each; returns them."""
    best = best_within(frontier_points(result.rows, result.accuracy), budget_ms)
    if not best:
        reporter.note(f"no configuration keeps p99 under {budget_ms:g} ms")
    for p in best:
        reporter.note(
            f"budget {budget_ms:g} ms, batch {p['batch']}, concurrency {p['concurrency']}: {p['mode']}"
            f"{' (raw records)' if p.get('inputs') == 'raw' else ''} "
            f"M={p['m']} {p['precision']} (AUC {p['auc']:.4f}, p99 {p['p99_ms']:.2f} ms, "
            f"{p['throughput']:,.0f} infer/s) from {p['repository']}"
        )
    return best


def finish(result: SweepResult, paths: OutputPaths, reporter: Reporter = SILENT,
           budget_ms: float | None = None) -> list[Path]:
    """What `tts-bench` does after the rows: the summary tables, the files, the budget's answer."""
    report_summary(result, reporter)
    written = write_outputs(result, paths, reporter)
    if budget_ms is not None:
        report_budget(result, budget_ms, reporter)
    return written
