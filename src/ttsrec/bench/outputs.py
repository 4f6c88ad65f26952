"""A sweep's files and its closing report: what `tts-bench` writes and says after the rows, for a Python
user of `Sweep` too.

    result = combine([Sweep(config).run() for config in configs])
    finish(result, OutputPaths(csv=Path("r.csv"), json=Path("r.json")), reporter, budget_ms=5)

writes the same files and reports the same tables and lines as `tts-bench -f r.csv --json r.json
--budget-ms 5` (the reporter decides how they are drawn; the default says nothing).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

from ttsrec.bench.frontier import best_within, frontier_points, plot_frontier
from ttsrec.bench.report import markdown, plot, summary_tables, write_csv
from ttsrec.bench.result import SweepResult
from ttsrec.errors import UserError
from ttsrec.utils.atomic import atomic_write_text, write_json
from ttsrec.utils.report import SILENT, Reporter


@dataclass(frozen=True)
class OutputPaths:
    """Where a sweep's files go; None: not written."""

    csv: Path | None = None
    """perf_analyzer's `-f` CSV of every row (`tts-bench -f/--latency-report-file`)."""
    json: Path | None = None
    """The rows with the run's metadata, roofline, derived figures and accuracy (`--json`)."""
    plot: Path | None = None
    """PNG: throughput and p99 against M (`--plot`)."""
    markdown: Path | None = None
    """The rows and derived figures as markdown tables (`--markdown`)."""
    frontier: Path | None = None
    """PNG: served AUC against throughput and p99; needs the sweep's accuracy (`--frontier`)."""

    def check(self) -> None:
        """Refuse a folder where a file goes, before anything is measured."""
        for path in astuple(self):
            if path is not None and Path(path).is_dir():
                raise UserError(f"{path} is a directory, expected a file path")


def write_outputs(result: SweepResult, paths: OutputPaths, reporter: Reporter = SILENT) -> list[Path]:
    """Write the files `paths` names (each atomically), saying `wrote PATH` after each; returns them."""
    writers = [
        (paths.csv, lambda path: write_csv(path, result.rows)),
        (paths.json, lambda path: write_json(path, result.to_json(), default=str)),
        (paths.plot, lambda path: plot(path, result.rows)),
        (paths.markdown, lambda path: atomic_write_text(path, markdown(result))),
        (paths.frontier, lambda path: plot_frontier(path, frontier_points(result.rows, result.accuracy))),
    ]
    written = []
    for path, write in writers:
        if path is not None:
            write(Path(path))
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
