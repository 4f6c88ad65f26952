"""`--markdown`: the rows and the derived figures of a `SweepResult` as markdown tables (for a README's
performance section)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ttsrec.bench.cells import (
    PINNED_HEADER,
    beaten,
    floor_cells,
    numbers,
    pinned_cells,
    raw_cells,
    roof_cells,
    roofline_brief,
    roofline_figures,
    roofline_notes,
    several_inputs,
    texts,
)
from ttsrec.bench.result import SweepResult
from ttsrec.bench.roofline import Roofline
from ttsrec.bench.row import IDS
from ttsrec.utils.report import Column, Table


def markdown(result: SweepResult) -> str:
    """The rows and the derived figures as markdown tables (for a README's performance section)."""
    machine = result.metadata["machine"]
    several = several_inputs(r.inputs for r in result.rows)
    rows = Table("rows", [*texts("mode", *(["inputs"] if several else []), "precision", "engine"), *numbers(
        "M", "batch", "conc", "infer/s", "p50 µs", "p90 µs", "p99 µs", "server queue µs", "server compute µs",
        "client overhead µs", "client CPU %", "server CPU %"), *texts("stable")])
    for r in result.rows:
        compute = r.server_compute_input_us + r.server_compute_infer_us + r.server_compute_output_us
        queue, comp = (f"{r.server_queue_us:,.0f}", f"{compute:,.0f}") if compute else ("-", "-")
        overhead = "-" if r.client_overhead_us is None else f"{r.client_overhead_us:,.0f}"
        rows.add_row(r.mode, *([r.inputs] if several else []), r.precision, r.engine, r.m, r.batch,
                     r.concurrency, f"{r.throughput:,.0f}",
                     f"{r.p50_us:,.0f}", f"{r.p90_us:,.0f}", f"{r.p99_us:,.0f}", queue, comp, overhead,
                     f"{r.client_cpu:.0f}", "-" if r.server_cpu is None else f"{r.server_cpu:.0f}",
                     "yes" if r.stable else "no")
    lines = [
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} cores; "
        f"{roofline_brief(result.roofline)}; engine {result.config.engine}, "
        f"{result.config.protocol}; windows of {result.config.settings.window_ms} ms, "
        f"stability {result.config.settings.stability_pct:g} %.",
        "",
        rows.markdown(),
    ]
    summary = result.summary
    lines += _table("Scaling efficiency M·throughput(M)/throughput(1):",
                    [*texts("mode", *(["inputs"] if several else []), "precision"),
                     *numbers("batch", "conc", "M", "efficiency")],
                    [[e["mode"], *([e.get("inputs", IDS)] if several else []), e.get("precision", "fp32"),
                      e["batch"], e["concurrency"], e["m"], f"{e['efficiency']:.2f}"]
                     for e in summary["scaling_efficiency"]])
    raw = summary.get("raw_vs_ids", [])
    lines += _table("Raw records vs ids (--raw): a raw_* model against its id model at the same point:",
                    [*texts("mode", "precision"), *numbers("M", "batch", "conc", "ids infer/s",
                                                            "raw infer/s", "raw / ids", "ids p50 µs",
                                                            "raw p50 µs")],
                    [[c[0], e.get("precision", "fp32"), *c[1:]] for e, c in zip(raw, raw_cells(raw),
                                                                                   strict=True)])
    lines += _table("Best Triton mode vs in-process fused graph (throughput ratio):",
                    [*numbers("M"), *texts("precision"), *numbers("batch", "conc"), *texts("best mode"),
                     *numbers("ratio")],
                    [[e["m"], e.get("precision", "fp32"), e["batch"], e["concurrency"], e["best_mode"],
                      f"{e['ratio']:.2f}"] for e in summary["serving_ratio"]])
    if result.roofline is not None:
        lines += ["", "Roofline measured in this run (before the rows):", "",
                  *roofline_markdown(result.roofline)]
    lines += _table("Batch 1, concurrency 1: p50 against the read-bandwidth floor (weights in cache "
                    "or memory):", *_with_inputs(FLOOR_HEADER, summary["bandwidth_floor"],
                                                 _floor_rows(summary["bandwidth_floor"]), several))
    lines += _table("Achieved fraction of the compute roof (MACs/row × rows/s / roof):",
                    *_with_inputs(ROOF_HEADER, summary["compute_roof"], _roof_rows(summary["compute_roof"]),
                                  several))
    lines += [f"\n{note}" for note in beaten(summary)]
    lines += _table("Sharded fan-out overhead (sharded p50 − slowest shard's own p50):",
                    numbers("M", "batch", "conc", "sharded p50 µs", "slowest shard p50 µs", "overhead µs"),
                    [[e["m"], e["batch"], e["concurrency"], f"{e['sharded_p50_us']:,.0f}",
                      f"{e['slowest_shard_p50_us']:,.0f}", f"{e['overhead_us']:,.0f}"]
                     for e in summary["fanout_overhead"]])
    lines += _table("Parallel servers (--pin-cores): K shards on their own cores against one server "
                    "holding one member (the slowest shard alone) on as many cores:",
                    numbers(*PINNED_HEADER), pinned_cells(summary.get("parallel_servers", [])))
    lines += _table("What each M buys:", [*numbers("M"), *texts("precision", "model"),
                                          *numbers("rows", "AUC", "logloss")],
                    [[a["m"], a.get("precision", "fp32"), a["model"], a["rows"], f"{a['auc']:.4f}",
                      f"{a['logloss']:.4f}"]
                     for a in result.accuracy or []])
    return "\n".join(lines) + "\n"


FLOOR_HEADER = [*texts("mode", "precision"), *numbers("M", "dense MB"), *texts("weights in"),
                *numbers("read GB/s", "floor µs", "p50 µs", "p50 / floor")]


ROOF_HEADER = [*texts("mode", "precision"), *numbers("M", "batch", "conc", "MMAC/row", "GMAC/s",
                                                      "of runtime roof", "of hardware roof")]


def _with_inputs(header: Sequence[Column], entries: Sequence[dict[str, Any]], rows: list[list[str]],
                 several: bool) -> tuple[list[Column], list[list[str]]]:
    """A markdown table's header and rows with an `inputs` column after the mode when the run mixes them."""
    if not several:
        return list(header), rows
    return ([header[0], *texts("inputs"), *header[1:]],
            [[row[0], e.get("inputs", IDS), *row[1:]] for e, row in zip(entries, rows, strict=True)])


def _floor_rows(entries: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [[c[0], e.get("precision", "fp32"), *c[1:]] for e, c in zip(entries, floor_cells(entries),
                                                                       strict=True)]


def _roof_rows(entries: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [[c[0], e.get("precision", "fp32"), *c[1:]] for e, c in zip(entries, roof_cells(entries),
                                                                       strict=True)]


def roofline_markdown(roofline: Roofline) -> list[str]:
    t = Table("roofline", [*texts("figure"), *numbers("value")])
    for name, value in [*roofline_figures(roofline), *roofline_notes(roofline)]:
        t.add_row(name, value)
    return t.markdown().splitlines()


def _table(title: str, columns: Sequence[Column], rows: list[list[Any]]) -> list[str]:
    """A titled markdown table, or nothing when there are no rows."""
    if not rows:
        return []
    t = Table(title, list(columns))
    for row in rows:
        t.add_row(*row)
    return ["", title, "", t.markdown()]
